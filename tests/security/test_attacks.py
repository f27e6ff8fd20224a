"""Known attacks on aggregate query systems, tried through a real server on the PUMS sample.

The other attack tests live beside the rule they defeat: differencing, trackers, re-split groups
and re-runs in ``test_differencing.py``; small cells, singling-out filters and refusals that look
the same whether or not the target exists in ``test_disclosure.py``; dominant contributors in
``test_dominance.py``; reconstruction in ``test_dp_reconstruction.py``; averaging under cell-key
perturbation in ``test_cell_key.py``. Here: averaging over 1,000 repeats and rewrites in DP mode,
and group-by on high-cardinality columns.
"""

from __future__ import annotations

import itertools
import statistics
from fractions import Fraction

from sandbox import CellStatus, PolicyDenied, Query
from tests.conftest import World
from tests.security._support import WorldFactory, audit_entries, epsilon_spent, pums_frame
from tests.security.test_dp_mode import dp_policy, dp_world

# Spellings of "persons aged over 30 by sex": strict vs inclusive bounds, order, and conditions
# implied by the others. Canonicalisation makes them one query.
REWRITES = [
    Query("pums").where("age", ">", 30).group_by("sex").count(),
    Query("pums").where("age", ">=", 31).group_by("sex").count(),
    Query("pums").where("age", ">", 30).where("age", ">", 20).group_by("sex").count(),
    Query("pums").where("age", ">", 29).where("age", ">=", 31).group_by("sex").count(),
    Query("pums").where("age", ">=", 10).where("age", ">", 30).group_by("sex").count(),
    Query("pums").where("age", ">", 30.5).group_by("sex").count(),
]


def test_averaging_a_thousand_repeats_and_rewrites_gains_nothing_in_dp_mode(
    world_factory: WorldFactory,
) -> None:
    world = dp_world(world_factory, dp_policy(epsilon="0.5"))
    ana = world.client("ana")
    truth = pums_frame().query("age > 30").groupby("sex").size().to_dict()
    answers: dict[int, list[float]] = {0: [], 1: []}
    for query in itertools.islice(itertools.cycle(REWRITES), 1000):
        df = ana.run(query, project="census-study", purpose="research").to_dataframe()
        for sex, n in zip(df["sex"], df["count"], strict=True):
            answers[int(sex)].append(float(n))
    for sex, seen in answers.items():
        assert len(seen) == 1000
        assert len(set(seen)) == 1  # one noisy answer, replayed: no fresh noise to average away
        # The averaging attacker's estimate is the single noisy answer, as far from the truth
        # as it was after one query (with fresh noise, the error would shrink ~30-fold).
        assert statistics.fmean(seen) == seen[0]
        assert abs(seen[0] - truth[sex]) < 60  # one discrete Laplace draw at ε = 1/2
    assert epsilon_spent(world) == Fraction(1, 2)  # charged once, for the first run
    events = [e["event"] for e in audit_entries(world) if e.get("event", "").startswith("job.")]
    assert events.count("job.released") == 1 and events.count("job.replayed") == 999


def test_group_by_high_cardinality_columns_releases_no_cell_under_k(pums_world: World) -> None:
    # age (unbinned, ~75 values) x race: 236 cells, 214 of them under k = 10 persons.
    frame = pums_frame()
    truth = frame.groupby(["age", "race"])["pid"].nunique().to_dict()
    assert sum(1 for n in truth.values() if n < 10) > 200  # the attack has plenty to aim at
    result = pums_world.client("ana").run(
        Query("pums").group_by("age", "race").count().count_persons(),
        project="census-study",
        purpose="research",
    )
    df = result.to_dataframe()
    released = df[df["count"].notna()]
    assert len(released) > 0
    for row in released.itertuples():
        persons = truth[(row.age, row.race)]
        assert persons >= 10 and row.count == persons and row.count_distinct == persons
    statuses = set(result.report["status"])
    assert CellStatus.SUPPRESSED.value in statuses
    # Cells under k are marked, with the rule, never silently dropped.
    suppressed = result.report[result.report["status"] == CellStatus.SUPPRESSED.value]
    assert set(suppressed["rule"]) == {"disclosure.min_persons"}
    assert len(df) == len(truth)


def test_group_by_an_identifier_is_refused_before_any_data_is_read(pums_world: World) -> None:
    ana = pums_world.client("ana")
    try:
        ana.run(Query("pums").group_by("pid").count(), project="census-study", purpose="research")
    except PolicyDenied as exc:
        assert "pid" in exc.message and exc.rule_ids
    else:
        raise AssertionError("grouping by the person key was not refused")
    jobs = pums_world.db.conn.execute("SELECT state, data_read FROM jobs").fetchall()
    assert jobs == [("DENIED", 0)]
