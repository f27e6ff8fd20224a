"""Medians and quantiles through a real server: grid points only, k persons on either side.

Rule-based mode releases the midpoint of the public grid interval holding the quantile, and
only when at least k persons lie strictly below that interval and k strictly above it. DP mode
picks a grid point with OpenDP's exponential mechanism (noisy max over quantile scores) and
charges it as one more measurement of the job's ε.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from sandbox import CellStatus, InvalidJobSpec, PolicyDenied, Query
from sandbox.disclosure._dp import calibrate, half_width
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import csv_world, pums_frame

WorldFactory = Callable[..., World]
K = 10
STEP = 5000.0  # the PUMS income grid: 100 intervals over the bounds [0, 500000]


def _policy(aggregates: str = "[sum, mean, median, quantile]", **kw: object) -> str:
    text = pums_policy("pums", "pums.csv", **kw)  # type: ignore[arg-type]
    return text.replace("aggregates: [sum, mean]", f"aggregates: {aggregates}")


def _world(world_factory: WorldFactory, policy: str, source: Path | None = None) -> World:
    world = world_factory({"pums": policy}, {"pums.csv": source or PUMS_DIR / "PUMS_pid.csv"})
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    return world


def _expected(values: pd.Series, q: float) -> float:
    """The grid midpoint of the interval holding the q-quantile (inverted CDF), on its own."""
    true = float(np.quantile(values.to_numpy(dtype=float), q, method="inverted_cdf"))
    index = min(int(true // STEP), 99)
    return index * STEP + STEP / 2


def _sides(values: pd.Series, released: float) -> tuple[int, int]:
    """Persons strictly below and strictly above the interval around a released midpoint."""
    lo, hi = released - STEP / 2, released + STEP / 2
    return int((values < lo).sum()), int((values >= hi).sum())


def test_median_is_the_midpoint_of_the_interval_holding_the_true_median(
    world_factory: WorldFactory,
) -> None:
    world = _world(world_factory, _policy())
    ana = world.client("ana")
    frame = pums_frame()
    query = Query("pums").group_by("sex").count().median("income").quantile("income", 0.9)
    result = ana.run(query, project="census-study", purpose="research")
    assert result.table.value_columns == ("count", "median_income", "quantile_0_9_income")
    for row in result.table.rows:
        values = frame.loc[frame.sex == row.keys[0], "income"]
        for cell, q in zip(row.cells[1:], (0.5, 0.9), strict=True):
            assert cell.status == CellStatus.RELEASED and cell.rule == ""
            assert cell.value == _expected(values, q)
            below, above = _sides(values, cell.value)
            assert below >= K and above >= K
    # The whole population, checked against DuckDB on the same file.
    (overall,) = ana.run(
        Query("pums").median("income"), project="census-study", purpose="research"
    ).table.rows
    with duckdb.connect() as con:
        true = con.execute(
            "SELECT quantile_disc(income, 0.5) FROM read_csv(?)",
            [str(PUMS_DIR / "PUMS_pid.csv")],
        ).fetchone()
    assert true is not None
    assert overall.cells[0].value == (true[0] // STEP) * STEP + STEP / 2


def test_sql_median_and_quantile_cont_match_the_builder(world_factory: WorldFactory) -> None:
    world = _world(world_factory, _policy())
    ana = world.client("ana")
    built = ana.run(
        Query("pums").group_by("married").median("income").quantile("income", 0.25, "p25"),
        project="census-study",
        purpose="research",
    )
    sql = ana.sql(
        "SELECT married, MEDIAN(income), QUANTILE_CONT(income, 0.25) AS p25 FROM pums "
        "GROUP BY married",
        project="census-study",
        purpose="research",
    )
    within = ana.sql(
        "SELECT married, MEDIAN(income), PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY income) "
        "AS p25 FROM pums GROUP BY married",
        project="census-study",
        purpose="research",
    )
    assert sql.table == built.table == within.table


def test_an_integer_measure_gets_half_integer_points(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    """Income stored as integers: intervals of odd whole width 5001, so no point is a value."""
    frame = pums_frame()
    frame["income"] = frame.income.round().astype("int64")
    policy = _policy().replace("source: pums.csv", "source: pums.csv")
    world = csv_world(world_factory, tmp_path, {"pums": (frame, policy)})
    world.project("census-study", (("pums", "research"),))
    result = world.client("ana").run(
        Query("pums").group_by("sex").median("income"), project="census-study", purpose="research"
    )
    for row in result.table.rows:
        (cell,) = row.cells
        assert cell.value is not None and cell.value % 1 == 0.5
        values = frame.loc[frame.sex == row.keys[0], "income"]
        true = int(np.quantile(values.to_numpy(), 0.5, method="inverted_cdf"))
        assert cell.value == (true // 5001) * 5001 + 2500.5


PEOPLE_POLICY = """\
dataset: people
version: 1
title: Planted people
steward: test
source: people.csv
person_key: pid
population: people
columns:
  pid: {role: identifier}
  grp: {role: dimension, values: [a, b, c]}
  income: {role: measure, bounds: [0, 500000], aggregates: [median, quantile]}
purposes:
  research: {description: Research, columns: [grp, income]}
disclosure: {min_persons_per_cell: 5}
"""


def test_planted_person_is_never_the_answer_and_thin_sides_are_suppressed(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    # Group "a": 30 persons; a planted person far above everyone else.
    body = rng.uniform(1000, 60000, size=30).round(2)
    planted = 487654.32
    # Group "b": 12 persons: the median has fewer than k below or above it (k = 5 here: 6/6
    # persons would pass, so pile them into one interval to leave a thin side).
    thin = np.array([20100.5 + i for i in range(12)])
    frame = pd.DataFrame(
        {
            "pid": range(1, 30 + 1 + 1 + 12 + 1),
            "grp": ["a"] * 31 + ["b"] * 12 + ["c"],
            "income": [*body, planted, *thin, 1.0],
        }
    )
    world = csv_world(world_factory, tmp_path, {"people": (frame, PEOPLE_POLICY)})
    world.project("census-study", (("people", "research"),))
    ana = world.client("ana")
    query = (
        Query("people")
        .group_by("grp")
        .median("income")
        .quantile("income", 0.99)
        .quantile("income", 0.02)
    )
    result = ana.run(query, project="census-study", purpose="research")
    rows = {row.keys[0]: row.cells for row in result.table.rows}
    exact = set(frame.income.astype(float))
    for cells in rows.values():
        for cell in cells:
            assert cell.value is None or cell.value not in exact
    median_a, top_a, bottom_a = rows["a"]
    assert median_a.status == CellStatus.RELEASED and median_a.value is not None
    assert median_a.value != planted
    # The 0.99-quantile of group a is the planted person: nobody above, so suppressed.
    assert (top_a.status, top_a.rule) == (CellStatus.SUPPRESSED, "disclosure.quantile")
    # Fewer than k persons below the 0.02-quantile's interval.
    assert (bottom_a.status, bottom_a.rule) == (CellStatus.SUPPRESSED, "disclosure.quantile")
    # Group b sits in one interval: no one strictly below or above it.
    assert all(c.rule == "disclosure.quantile" for c in rows["b"])
    # Group c holds one person: suppressed for the cell size before any quantile rule.
    assert all(c.rule == "disclosure.min_persons" for c in rows["c"])
    report = result.report
    reasons = set(report.loc[report.rule == "disclosure.quantile", "reason"])
    assert reasons == {"fewer than 5 persons below or above the grid interval holding the quantile"}


def test_quantiles_must_be_allowed_by_the_policy(world_factory: WorldFactory) -> None:
    world = _world(world_factory, _policy("[sum, mean, median]"))
    ana = world.client("ana")
    ana.run(Query("pums").median("income"), project="census-study", purpose="research")
    with pytest.raises(PolicyDenied) as denied:
        ana.run(Query("pums").quantile("income", 0.9), project="census-study", purpose="research")
    assert denied.value.rule_ids == ("aggregate.not_allowed",)
    assert "quantile is not allowed on measure 'income'" in denied.value.message
    with pytest.raises(PolicyDenied) as denied:
        ana.run(Query("pums").median("age"), project="census-study", purpose="research")
    assert denied.value.rule_ids == ("column.role",)


def test_several_rows_per_person_are_refused(world_factory: WorldFactory) -> None:
    policy = _policy().replace("source: pums.csv", "source: pums.csv")
    world = _world(world_factory, policy, PUMS_DIR / "PUMS_dup.csv")
    with pytest.raises(PolicyDenied) as denied:
        world.client("ana").run(
            Query("pums").median("income"), project="census-study", purpose="research"
        )
    assert denied.value.rule_ids == ("quantile.one_row_per_person",)


def test_a_bad_level_is_refused_before_it_is_sent() -> None:
    with pytest.raises(InvalidJobSpec):
        Query("pums").quantile("income", 1.0)
    with pytest.raises(InvalidJobSpec):
        Query("pums").quantile("income", "1/100000")


# ---- differential privacy --------------------------------------------------------------


def _dp_policy(epsilon: str) -> str:
    text = _policy(k=1, age_bins=True)
    terms = f"noise: {{mechanism: discrete_laplace, epsilon_per_job: {epsilon}}}"
    return text.replace("rounding_base: 1}", f"rounding_base: 1, {terms}}}")


def test_dp_median_lands_near_the_true_median_and_takes_its_share_of_epsilon(
    world_factory: WorldFactory,
) -> None:
    world = _world(world_factory, _dp_policy("2"))
    ana = world.client("ana")
    result = ana.run(
        Query("pums").group_by("sex").count().median("income"),
        project="census-study",
        purpose="research",
    )
    frame = pums_frame()
    # ε 2 over two measurements (the count and the median): each gets exactly 1.
    share = calibrate("discrete_laplace", Fraction(1), Fraction(0), 1)
    for row in result.table.rows:
        count, median = row.cells
        assert count.ci == half_width(share, 0.95)
        assert (median.status, median.rule, median.ci) == (
            CellStatus.NOISED,
            "disclosure.dp",
            None,
        )
        assert median.value is not None and (median.value - STEP / 2) % STEP == 0
        true = float(frame.loc[frame.sex == row.keys[0], "income"].median())
        assert abs(median.value - true) <= 3 * STEP
    assert result.table.privacy["epsilon"] == "2"
    spent = world.db.conn.execute(
        "SELECT epsilon FROM privacy_ledger WHERE state = 'committed'"
    ).fetchall()
    assert [Fraction(e) for (e,) in spent] == [Fraction(2)]


def test_a_quantile_job_can_be_previewed_and_mocked(world_factory: WorldFactory) -> None:
    world = _world(world_factory, _policy())
    ana = world.client("ana")
    query = Query("pums").group_by("sex").count().median("income").quantile("income", "3/4")
    estimate = ana.estimate(query, project="census-study", purpose="research")
    assert estimate.allowed and estimate.predicted is not None
    assert estimate.predicted.value_columns == ("count", "median_income", "quantile_0_75_income")
    assert all(c.value is None for r in estimate.predicted.rows for c in r.cells)
    job = ana.submit(query, project="census-study", purpose="research")
    assert job.info.spec.digest() == estimate.spec_digest
    assert job.info.spec.aggregates[2].q == Fraction(3, 4)  # the level survives the state store
    mock = ana.mock("pums", 200, job=query, seed=3)
    assert mock["income"].between(0, 500000).all()
    dp_world = _world(world_factory, _dp_policy("1"))
    dp_estimate = dp_world.client("ana").estimate(query, project="census-study", purpose="research")
    assert dp_estimate.allowed and dp_estimate.epsilon == "1"
    assert dp_estimate.predicted is not None
    statuses = {c.status for r in dp_estimate.predicted.rows for c in r.cells}
    assert statuses <= {CellStatus.NOISED, CellStatus.SUPPRESSED}


def test_a_suppressed_quantile_hides_no_count_in_a_table_with_margins(
    world_factory: WorldFactory,
) -> None:
    world = _world(world_factory, _policy())
    ana = world.client("ana")
    counts = ana.run(
        Query("pums").group_by("sex", "married").margins().count(),
        project="census-study",
        purpose="research",
    )
    both = ana.run(
        Query("pums").group_by("sex", "married").margins().count().quantile("income", 0.99),
        project="census-study",
        purpose="research",
    )
    # The same count pattern: a quantile suppressed for thin sides needs no complement.
    assert [r.cells[0] for r in both.table.rows] == [r.cells[0] for r in counts.table.rows]
    rules = {r.cells[1].rule for r in both.table.rows}
    assert "disclosure.quantile" in rules
    assert rules <= {"", "disclosure.quantile", "disclosure.min_persons"}
