"""Preview (EstimateJob): verdict, cost and a predicted pattern, without reading the data."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pandas as pd
import pytest

from sandbox import (
    CellStatus,
    JobSpec,
    JobState,
    NotFound,
    PolicyDenied,
    PreparedJob,
    Query,
    QuotaLimits,
    Role,
    SandboxError,
)
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import audit_entries, epsilon_spent, ledger_rows

BY_SEX = Query("pums").group_by("sex").count().mean("income")


def test_an_allowed_job_is_priced_and_patterned_without_values(pums_world: World) -> None:
    ana = pums_world.client("ana")
    estimate = ana.estimate(
        BY_SEX.where("age", ">", 17), project="census-study", purpose="research"
    )
    assert estimate.allowed and estimate.rule_ids == () and estimate.reasons == ()
    assert (estimate.jobs, estimate.rows, estimate.epsilon, estimate.delta) == (1, 1000, "0", "0")
    assert estimate.predicted is not None and estimate.mock_rows == 1000
    assert [r.keys for r in estimate.predicted.rows] == [(0,), (1,)]
    assert all(c.value is None for r in estimate.predicted.rows for c in r.cells)
    assert {c.status for r in estimate.predicted.rows for c in r.cells} <= set(CellStatus)
    # The digest is the canonical query's: `age > 17` and `age >= 18` are one query.
    job = ana.submit(BY_SEX.where("age", ">=", 18), project="census-study", purpose="research")
    assert job.info.spec.digest() == estimate.spec_digest
    # Nothing was charged by the preview; the submit was.
    assert len(ledger_rows(pums_world)) == 1


def test_a_refused_job_gives_the_same_rules_as_submitting_it(pums_world: World) -> None:
    ana = pums_world.client("ana")
    query = Query("pums").group_by("pid").count()  # grouping on the identifier
    estimate = ana.estimate(query, project="census-study", purpose="research")
    with pytest.raises(PolicyDenied) as err:
        ana.run(query, project="census-study", purpose="research")
    assert not estimate.allowed and estimate.predicted is None
    assert estimate.rule_ids == err.value.rule_ids and estimate.reasons


def test_quota_shortfalls_are_reported(pums_world: World) -> None:
    pums_world.client("sam").set_quota("census-study", QuotaLimits(jobs_total=1))
    ana = pums_world.client("ana")
    assert ana.estimate(BY_SEX, project="census-study", purpose="research").allowed
    ana.run(BY_SEX, project="census-study", purpose="research")
    estimate = ana.estimate(BY_SEX, project="census-study", purpose="research")
    assert not estimate.allowed and estimate.rule_ids == ("quota.jobs_total",)


def _dp_world(world_factory: Callable[..., World]) -> World:
    """PUMS in DP mode: ε 1/4 per job, 1/2 per project."""
    noised = pums_policy("pums", "pums.csv").replace(
        "rounding_base: 1}",
        "rounding_base: 1, noise: {mechanism: discrete_laplace, epsilon_per_job: 0.25},"
        " budget: {epsilon_per_project: 0.5}}",
    )
    world = world_factory({"pums": noised}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"})
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    return world


def test_dp_cost_and_budget(world_factory: Callable[..., World]) -> None:
    world = _dp_world(world_factory)
    ana = world.client("ana")
    estimate = ana.estimate(BY_SEX, project="census-study", purpose="research")
    assert estimate.allowed and estimate.epsilon == "1/4"
    assert estimate.predicted is not None
    assert {c.status for r in estimate.predicted.rows for c in r.cells} == {CellStatus.NOISED}
    for n in range(2):  # spend the budget with two different queries
        ana.run(BY_SEX.where("age", ">=", 20 + n), project="census-study", purpose="research")
    estimate = ana.estimate(BY_SEX, project="census-study", purpose="research")
    assert not estimate.allowed and estimate.rule_ids == ("budget.epsilon_per_project",)


def test_an_unseen_dataset_is_not_found_exactly_like_an_unknown_one(pums_world: World) -> None:
    pums_world.add_principal("eve", Role.RESEARCHER)  # in no project
    errors = []
    for who, dataset in (("eve", "pums"), ("ana", "no-such-dataset")):
        with pytest.raises(NotFound) as err:
            pums_world.client(who).estimate(
                Query(dataset).count(), project="census-study", purpose="research"
            )
        errors.append(str(err.value).replace(dataset, "X"))
    assert errors[0] == errors[1]


def test_the_prediction_does_not_depend_on_the_data(world_factory: Callable[..., World]) -> None:
    # Two datasets with the same policy and schema but very different rows: same preview.
    frame = pd.read_csv(PUMS_DIR / "PUMS_pid.csv")
    world = world_factory(
        {"a": pums_policy("a", "a.csv"), "b": pums_policy("b", "b.csv")},
        {"a.csv": PUMS_DIR / "PUMS_pid.csv", "b.csv": PUMS_DIR / "PUMS_pid.csv"},
    )
    skewed = frame.assign(educ=1, income=frame.income * 0 + 7)  # one education level only
    skewed.to_csv(world.root / "data" / "b.csv", index=False)
    world.register("a")
    world.register("b")
    world.project("census-study", (("a", "research"), ("b", "research")))
    ana = world.client("ana")
    previews = [
        ana.estimate(
            Query(ds).group_by("educ").count(), project="census-study", purpose="research"
        ).predicted
        for ds in ("a", "b")
    ]
    assert previews[0] is not None and previews[0] == previews[1]
    real = [
        ana.run(Query(ds).group_by("educ").count(), project="census-study", purpose="research")
        for ds in ("a", "b")
    ]
    assert len(real[0].table.rows) != len(real[1].table.rows)  # the data do differ


def test_previews_are_logged(pums_world: World) -> None:
    pums_world.client("ana").estimate(BY_SEX, project="census-study", purpose="research")
    entries = [e for e in audit_entries(pums_world) if e["event"] == "job.previewed"]
    assert len(entries) == 1 and entries[0]["decision"] == "allow"
    assert entries[0]["actor"] == "ana" and entries[0]["dataset"] == "pums"


# ---- job.preview(): a prepared job, previewed before it is sent ---------------------------
def test_a_prepared_job_previews_then_submits_and_runs(pums_world: World) -> None:
    ana = pums_world.client("ana")
    prepared = ana.prepare(BY_SEX, project="census-study", purpose="research")
    assert isinstance(prepared, PreparedJob) and isinstance(prepared.spec, JobSpec)
    assert (prepared.spec.project, prepared.spec.purpose) == ("census-study", "research")
    quota_before = ana.quota("census-study")
    estimate = prepared.preview()
    # The verdict, the cost and the predicted pattern (statuses only, no values).
    assert estimate.allowed and estimate.rule_ids == () and estimate.reasons == ()
    assert (estimate.jobs, estimate.rows, estimate.epsilon, estimate.delta) == (1, 1000, "0", "0")
    assert estimate.predicted is not None
    assert [r.keys for r in estimate.predicted.rows] == [(0,), (1,)]
    assert all(c.value is None for r in estimate.predicted.rows for c in r.cells)
    assert {c.status for r in estimate.predicted.rows for c in r.cells} <= set(CellStatus)
    assert prepared.preview() == estimate  # previews are repeatable and free
    assert ana.quota("census-study") == quota_before and ledger_rows(pums_world) == {}
    # Then the same prepared job is sent: once as a handle, once run to its result.
    job = prepared.submit()
    assert job.info.spec.digest() == estimate.spec_digest
    assert job.result(timeout=60).table.rows
    assert job.info.state == JobState.SUCCEEDED
    result = prepared.run(timeout=60)
    assert [r.keys for r in result.table.rows] == [(0,), (1,)]
    assert len(ledger_rows(pums_world)) == 2
    assert ana.quota("census-study").jobs_total == quota_before.jobs_total + 2


def test_a_prepared_refused_job_previews_the_refusal_and_its_rule(pums_world: World) -> None:
    ana = pums_world.client("ana")
    prepared = ana.prepare(
        Query("pums").group_by("pid").count(), project="census-study", purpose="research"
    )
    estimate = prepared.preview()
    assert not estimate.allowed and estimate.predicted is None
    assert estimate.rule_ids and len(estimate.reasons) == len(estimate.rule_ids)
    with pytest.raises(PolicyDenied) as err:
        prepared.run()
    assert err.value.rule_ids == estimate.rule_ids
    assert all(state != "committed" for _, state, _, _ in ledger_rows(pums_world).values())


def test_a_prepared_dp_job_previews_its_epsilon_without_spending_it(
    world_factory: Callable[..., World],
) -> None:
    world = _dp_world(world_factory)
    ana = world.client("ana")
    prepared = ana.prepare(BY_SEX, project="census-study", purpose="research")
    for _ in range(3):  # more previews than the budget has jobs: none of them spends ε
        estimate = prepared.preview()
        assert estimate.allowed and estimate.epsilon == "1/4"
    assert epsilon_spent(world) == 0 and ledger_rows(world) == {}
    assert estimate.predicted is not None
    assert {c.status for r in estimate.predicted.rows for c in r.cells} == {CellStatus.NOISED}
    prepared.run(timeout=60)
    assert epsilon_spent(world) == Fraction(1, 4)


def test_prepare_sql_and_the_project_needed_by_a_query(pums_world: World) -> None:
    ana = pums_world.client("ana")
    prepared = ana.prepare_sql(
        "SELECT sex, COUNT(*) FROM pums GROUP BY sex", project="census-study", purpose="research"
    )
    assert prepared.spec.dataset == "pums" and prepared.spec.group_by == ("sex",)
    assert prepared.preview().allowed
    assert [r.keys for r in prepared.run(timeout=60).table.rows] == [(0,), (1,)]
    # A JobSpec carries its project; a Query needs one.
    assert ana.prepare(prepared.spec).spec == prepared.spec
    with pytest.raises(SandboxError, match="project= and purpose="):
        ana.prepare(BY_SEX)
