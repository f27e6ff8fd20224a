"""Differential privacy mode through a real server: noise, public keys, an exact budget ledger.

Invariant 5 for ε: the budget is reserved atomically before data is read and can never be
overspent, also under 64 concurrent submits. Repeating a query gains nothing: the first noisy
answer is returned again, with no fresh noise and no charge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from fractions import Fraction

import pandas as pd
import pytest

from sandbox import (
    BudgetExhausted,
    CellStatus,
    Client,
    JobState,
    PolicyDenied,
    Query,
    SandboxError,
)
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import audit_entries, entries_for, epsilon_spent, pums_frame

WorldFactory = Callable[..., World]


def dp_policy(epsilon: str = "1", budget: str = "", **noise: str) -> str:
    """The PUMS test policy (age in bins) switched to DP mode with the given terms."""
    text = pums_policy("pums", "pums.csv", k=1, age_bins=True)
    extra = "".join(f", {k}: {v}" for k, v in noise.items())
    terms = f"noise: {{mechanism: discrete_laplace, epsilon_per_job: {epsilon}{extra}}}"
    if budget:
        terms += f", budget: {{{budget}}}"
    return text.replace("rounding_base: 1}", f"rounding_base: 1, {terms}}}")


def dp_world(world_factory: WorldFactory, policy: str, **settings: object) -> World:
    world = world_factory({"pums": policy}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"}, **settings)
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    return world


def _run(world: World, query: Query) -> pd.DataFrame:
    result = world.client("ana").run(query, project="census-study", purpose="research")
    return result.to_dataframe()


def test_counts_are_noised_integers_close_to_the_truth_with_intervals(
    world_factory: WorldFactory,
) -> None:
    world = dp_world(world_factory, dp_policy(epsilon="1"))
    result = world.client("ana").run(
        Query("pums").group_by("sex").count(), project="census-study", purpose="research"
    )
    truth = pums_frame().groupby("sex").size()
    assert result.table.privacy == {
        "mechanism": "discrete_laplace",
        "epsilon": "1",
        "delta": "0",
        "confidence": "0.95",
    }
    for row in result.table.rows:
        (cell,) = row.cells
        assert cell.status == CellStatus.NOISED and cell.rule == "disclosure.dp"
        assert cell.value is not None and float(cell.value).is_integer()
        # scale 1 (sensitivity 1, ε 1): |noise| > 30 has probability below 1e-12
        assert abs(cell.value - truth[row.keys[0]]) <= 30
        assert cell.ci is not None and 1 <= cell.ci <= 5
    assert epsilon_spent(world) == 1


def test_every_public_key_appears_and_no_key_only_in_the_data(
    world_factory: WorldFactory,
) -> None:
    # The policy's public set for `married` names 0 and 1; declare only {1, 7}: 0 exists only in
    # the data (never emitted), 7 exists only in the policy (emitted, noised like any cell).
    policy = dp_policy(epsilon="2").replace(
        "married: {role: dimension, values: [0, 1]}", "married: {role: dimension, values: [1, 7]}"
    )
    world = dp_world(world_factory, policy)
    df = _run(world, Query("pums").group_by("married").count())
    assert sorted(df["married"].tolist()) == [1, 7]


def test_group_by_without_a_public_key_set_is_refused(world_factory: WorldFactory) -> None:
    world = dp_world(world_factory, dp_policy())
    with pytest.raises(PolicyDenied) as err:
        _run(world, Query("pums").group_by("race").count())
    assert "dp.public_keys" in err.value.rule_ids
    assert epsilon_spent(world) == 0


def test_a_singling_out_filter_gets_noise_not_a_refusal_that_would_tell(
    world_factory: WorldFactory,
) -> None:
    # In rule-based mode a filter isolating < k persons is refused, and the refusal depends on
    # the exact count. Under DP nothing depends on it: both filters are answered alike.
    world = dp_world(world_factory, dp_policy(epsilon="1"))
    oldest = int(pums_frame()["age"].max())
    for age in (oldest, oldest + 1):  # one or more persons, then nobody
        df = _run(world, Query("pums").where("age", ">=", age).count())
        assert len(df) == 1
    assert epsilon_spent(world) == 2


def test_repeating_a_query_returns_the_first_answer_without_new_noise_or_charge(
    world_factory: WorldFactory,
) -> None:
    world = dp_world(world_factory, dp_policy(epsilon="1"))
    ana = world.client("ana")
    query = Query("pums").group_by("sex").count().mean("income")
    first = ana.run(query, project="census-study", purpose="research")
    repeats = [ana.run(query, project="census-study", purpose="research") for _ in range(20)]
    assert all(r.table == first.table for r in repeats)  # averaging gains nothing
    assert epsilon_spent(world) == 1
    events = [e["event"] for e in audit_entries(world) if e.get("event", "").startswith("job.")]
    assert events.count("job.released") == 1 and events.count("job.replayed") == 20


def test_budget_is_exact_and_exhaustion_refuses_before_reading(
    world_factory: WorldFactory,
) -> None:
    # 0.1 + 0.2 + ... in floats drifts; the ledger adds exact fractions, so ten jobs of 0.1 fit a
    # budget of exactly 1 and the eleventh does not.
    world = dp_world(world_factory, dp_policy(epsilon="0.1", budget="epsilon_per_project: 1"))
    for age in range(10):
        _run(world, Query("pums").where("age", ">=", 20 + age).count())
    assert epsilon_spent(world) == 1
    ana = world.client("ana")
    with pytest.raises(BudgetExhausted) as err:
        ana.run(
            Query("pums").where("age", ">=", 50).count(), project="census-study", purpose="research"
        )
    assert err.value.rule_ids == ("budget.epsilon_per_project",)
    assert [e["event"] for e in entries_for(world, err.value.job_id)] == ["job.denied"]
    assert ana.job(err.value.job_id).state == JobState.DENIED
    assert epsilon_spent(world) == 1


def test_population_ceiling_binds_across_projects(world_factory: WorldFactory) -> None:
    world = dp_world(world_factory, dp_policy(epsilon="1", budget="epsilon_per_population: 2"))
    world.project("second-study", (("pums", "research"),))
    ana = world.client("ana")
    ana.run(Query("pums").count(), project="census-study", purpose="research")
    ana.run(Query("pums").count(), project="second-study", purpose="research")
    with pytest.raises(BudgetExhausted) as err:
        ana.run(Query("pums").group_by("sex").count(), project="second-study", purpose="research")
    assert err.value.rule_ids == ("budget.epsilon_per_population",)


def test_64_concurrent_submits_never_overspend_epsilon(world_factory: WorldFactory) -> None:
    n_clients, ceiling = 64, 10
    world = dp_world(
        world_factory,
        dp_policy(epsilon="1", budget=f"epsilon_per_project: {ceiling}"),
        rpc_threads=n_clients + 8,
        max_concurrent_rpcs=n_clients + 16,
        workers=4,
    )
    start = threading.Barrier(n_clients)
    outcomes: list[object] = [None] * n_clients

    def worker(i: int) -> None:
        with Client(world.target, token=world.tokens["ana"], timeout=120) as client:
            query = Query("pums").where("age", ">=", 1 + i).count()  # 64 different queries
            start.wait(timeout=30)
            try:
                outcomes[i] = client.run(query, project="census-study", purpose="research")
            except SandboxError as exc:
                outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    refused = [o for o in outcomes if isinstance(o, BudgetExhausted)]
    succeeded = [o for o in outcomes if not isinstance(o, SandboxError)]
    assert len(succeeded) == ceiling and len(refused) == n_clients - ceiling
    assert epsilon_spent(world) == ceiling
    released = [e for e in audit_entries(world) if e.get("event") == "job.released"]
    assert sum(Fraction(e["charged"]["epsilon"]) for e in released) == ceiling


def test_semantic_rewrites_of_a_query_are_the_same_query(world_factory: WorldFactory) -> None:
    # Rewriting a filter (order, strict vs inclusive bounds, a duplicated or weaker condition)
    # does not buy fresh noise: the canonical query is recognised and its answer replayed.
    world = dp_world(world_factory, dp_policy(epsilon="1"))
    rewrites = [
        Query("pums").where("age", ">", 30).where("sex", "=", 1).count(),
        Query("pums").where("sex", "=", 1).where("age", ">=", 31).count(),
        Query("pums").where("age", ">=", 31).where("sex", "in", [1]).where("age", ">", 20).count(),
    ]
    answers = [_run(world, q)["count"].tolist() for q in rewrites]
    assert answers[0] == answers[1] == answers[2]
    assert epsilon_spent(world) == 1
    events = [e["event"] for e in audit_entries(world) if e.get("event", "").startswith("job.")]
    assert events.count("job.replayed") == 2
