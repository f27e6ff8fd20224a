"""DP mode on a dataset with several rows per person: contribution bounding, through a server.

Each person keeps at most L cells and counts for at most R rows in each; their sum in a cell is
scaled to those rows. The true bounded values are computed here independently (DuckDB for the
per-person aggregates, exact fractions for the scaling) and every released number must lie
within its reported interval. The intervals are at confidence 1 - 1e-8, so a test with n cells
fails by chance with probability below n * 1e-8.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from sandbox import PolicyDenied, Query
from sandbox.disclosure._dp import calibrate, half_width
from tests.conftest import World
from tests.security._support import csv_world

WorldFactory = Callable[..., World]
DEPARTMENTS = ["A", "B", "C", "D"]
LO, HI = 0, 500
CONFIDENCE = 0.99999999


def visits_policy(name: str, noise: str) -> str:
    return f"""\
dataset: {name}
version: 1
title: Visits
steward: test-office
source: {name}.csv
person_key: pid
population: visit-persons
columns:
  pid: {{role: identifier}}
  department: {{role: dimension, values: [A, B, C, D]}}
  cost: {{role: measure, bounds: [{LO}, {HI}], aggregates: [sum, mean]}}
purposes:
  research: {{description: Research, columns: [department, cost]}}
disclosure:
  min_persons_per_cell: 1
  rounding_base: 1
  noise: {{mechanism: discrete_laplace, confidence: {CONFIDENCE}, {noise}}}
limits: {{max_groups: 100, max_filters: 4, max_group_by: 2}}
"""


def visits(n: int = 400, seed: int = 5) -> pd.DataFrame:
    """1 to 6 visits per person, costs partly above the upper bound (clamped)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, str, float]] = []
    for pid in range(n):
        for _ in range(int(rng.integers(1, 7))):
            dept = DEPARTMENTS[int(rng.integers(0, 4))]
            rows.append((pid, dept, round(float(rng.uniform(0, 700)), 2)))
    return pd.DataFrame(rows, columns=["pid", "department", "cost"])


def world_of(world_factory: WorldFactory, tmp_path: Path, **datasets: Any) -> World:
    world = csv_world(world_factory, tmp_path, datasets)
    world.project("study", tuple((name, "research") for name in datasets))
    return world


def bounded_truth(frame: pd.DataFrame, rows_cap: int) -> dict[str, dict[str, Fraction]]:
    """Per department: persons, capped rows, bounded sum (every person keeps all cells)."""
    per_person = duckdb.sql(
        f"""SELECT department, pid, count(*) AS c,
                   sum(CAST(round(least(greatest(cost, {LO}), {HI})) AS BIGINT)) AS s
            FROM frame GROUP BY department, pid"""
    ).fetchall()
    out: dict[str, dict[str, Fraction]] = {
        d: {"persons": Fraction(0), "rows": Fraction(0), "sum": Fraction(0)} for d in DEPARTMENTS
    }
    for dept, _, c, s in per_person:
        m = min(c, rows_cap)
        scaled = Fraction(int(s) * m, c)
        rounded = int(scaled + Fraction(1, 2)) if scaled >= 0 else -int(-scaled + Fraction(1, 2))
        out[dept]["persons"] += 1
        out[dept]["rows"] += m
        out[dept]["sum"] += rounded
    return out


def run(world: World, query: Query) -> Any:
    return world.client("ana").run(query, project="study", purpose="research")


def within(cell: Any, truth: Fraction) -> bool:
    return cell.value is not None and cell.ci is not None and abs(cell.value - truth) <= cell.ci


def test_several_rows_per_person_are_released_within_intervals_of_the_bounded_truth(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    frame = visits()
    assert frame.groupby("pid").size().max() > 3  # some persons exceed R
    policy = visits_policy(
        "visits", "epsilon_per_job: 30, max_groups_per_person: 4, max_rows_per_person: 3"
    )
    world = world_of(world_factory, tmp_path, visits=(frame, policy))
    query = (
        Query("visits")
        .group_by("department")
        .count("rows")
        .count_persons("persons")
        .sum("cost", "total")
        .mean("cost", "average")
    )
    result = run(world, query)
    truth = bounded_truth(frame, rows_cap=3)
    assert result.table.privacy == {
        "mechanism": "discrete_laplace",
        "epsilon": "30",
        "delta": "0",
        "confidence": str(CONFIDENCE),
        "max_groups_per_person": "4",
        "max_rows_per_person": "3",
        "sensitivity_persons": "4",
        "sensitivity_rows": "12",
        "sensitivity_sum.cost": "6000",  # L * R * max|bound| = 4 * 3 * 500
    }
    assert sorted(r.keys[0] for r in result.table.rows) == DEPARTMENTS
    for row in result.table.rows:
        rows, persons, total, average = row.cells
        t = truth[row.keys[0]]
        assert within(rows, t["rows"]) and within(persons, t["persons"])
        assert within(total, t["sum"]) and within(average, t["sum"] / t["rows"])
        # three measurements share epsilon 30: each has scale sensitivity / 10
        assert persons.ci == half_width(
            calibrate("discrete_laplace", Fraction(10), Fraction(0), 4), CONFIDENCE
        )
        assert rows.ci == half_width(
            calibrate("discrete_laplace", Fraction(10), Fraction(0), 12), CONFIDENCE
        )
    # Rows above R are not counted (and the released counts were within reach of those).
    assert sum(t["rows"] for t in truth.values()) < len(frame)


def test_a_person_with_a_thousand_rows_moves_a_sum_by_at_most_the_sensitivity(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    frame = visits(n=200, seed=9)
    planted = pd.DataFrame(
        {"pid": [10_000] * 1000, "department": ["A"] * 1000, "cost": [HI] * 1000}
    )
    noise = "epsilon_per_job: 300, max_groups_per_person: 4, max_rows_per_person: 3"
    world = world_of(
        world_factory,
        tmp_path,
        without=(frame, visits_policy("without", noise)),
        planted=(pd.concat([frame, planted]), visits_policy("planted", noise)),
    )

    def released(dataset: str) -> dict[str, tuple[Any, Any]]:
        q = Query(dataset).group_by("department").count("rows").sum("cost", "total")
        table = run(world, q).table
        return {r.keys[0]: (r.cells[0], r.cells[1]) for r in table.rows}

    before, after = released("without"), released("planted")
    sensitivity = 4 * 3 * HI
    for dept in DEPARTMENTS:
        (rows0, sum0), (rows1, sum1) = before[dept], after[dept]
        assert abs(sum1.value - sum0.value) <= sensitivity + sum0.ci + sum1.ci
        assert abs(rows1.value - rows0.value) <= 4 * 3 + rows0.ci + rows1.ci
    # The bounded truth itself moves by R * HI in the one cell the person holds, not 1000 * HI.
    t0, t1 = bounded_truth(frame, 3), bounded_truth(pd.concat([frame, planted]), 3)
    assert t1["A"]["sum"] - t0["A"]["sum"] == 3 * HI and t1["A"]["rows"] - t0["A"]["rows"] == 3
    assert within(after["A"][1], t1["A"]["sum"]) and within(after["A"][0], t1["A"]["rows"])
    assert after["A"][1].value - before["A"][1].value < 100 * HI  # far from 1000 * HI


def test_each_person_keeps_at_most_L_cells_and_the_noise_is_scaled_to_L(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    # Every person visits all four departments once; with L = 2 each keeps exactly two cells,
    # so the persons over all cells add up to 2n, split about evenly (a salted hash chooses).
    n = 400
    frame = pd.DataFrame(
        [(pid, d, 100.0) for pid in range(n) for d in DEPARTMENTS],
        columns=["pid", "department", "cost"],
    )
    policy = visits_policy("visits", "epsilon_per_job: 2, max_groups_per_person: 2")
    world = world_of(world_factory, tmp_path, visits=(frame, policy))
    table = run(
        world, Query("visits").group_by("department").count("rows").count_persons("persons")
    ).table
    assert table.privacy["sensitivity_persons"] == "2" and "sensitivity_rows" not in table.privacy
    # R = 1: a count of rows is the count of persons, one measurement with all of epsilon.
    ci = half_width(calibrate("discrete_laplace", Fraction(2), Fraction(0), 2), CONFIDENCE)
    total = 0.0
    for row in table.rows:
        rows, persons = row.cells
        assert rows.value == persons.value and persons.ci == ci
        # Binomial(400, 1/2) around 200: 6 standard deviations (10 each) plus the noise.
        assert abs(persons.value - n / 2) <= 60 + ci
        total += persons.value
    assert abs(total - 2 * n) <= 4 * ci
    spent = world.db.conn.execute("SELECT epsilon, delta FROM privacy_ledger").fetchall()
    assert [(Fraction(e), Fraction(d)) for e, d in spent] == [(Fraction(2), Fraction(0))]


def test_several_rows_per_person_without_bounds_is_refused(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    world = world_of(
        world_factory,
        tmp_path,
        visits=(visits(n=50), visits_policy("visits", "epsilon_per_job: 1")),
    )
    with pytest.raises(PolicyDenied) as err:
        run(world, Query("visits").group_by("department").count())
    assert err.value.rule_ids == ("dp.one_row_per_person",)


def test_bounded_mode_offers_counts_sums_and_means_only(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    policy = visits_policy("visits", "epsilon_per_job: 1, max_rows_per_person: 2").replace(
        "aggregates: [sum, mean]", "aggregates: [sum, mean, variance]"
    )
    world = world_of(world_factory, tmp_path, visits=(visits(n=50), policy))
    with pytest.raises(PolicyDenied) as err:
        run(world, Query("visits").group_by("department").variance("cost"))
    assert err.value.rule_ids == ("dp.aggregate",)
