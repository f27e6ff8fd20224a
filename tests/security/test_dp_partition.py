"""DP partition selection through a server: keys from the data, released above a threshold.

200 planted persons each hold a clinic of their own; 800 others share two clinics. A key held by
one person is released with probability at most delta / (L e^eps) per job (here below 4e-12),
so 200 jobs (40,000 such keys) emit none except with probability below 2e-7, while the two shared
clinics (400 persons each, threshold 28) are always emitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sandbox import PolicyDenied, Query
from tests.conftest import World
from tests.security._support import csv_world

WorldFactory = Callable[..., World]
RARE = 200
DELTA = "0.00000000001"


def clinics_policy(name: str, noise: str) -> str:
    return f"""\
dataset: {name}
version: 1
title: Clinics
steward: test-office
source: {name}.csv
person_key: pid
population: clinic-persons
columns:
  pid: {{role: identifier}}
  clinic: {{role: dimension}}
  sex: {{role: dimension, values: [0, 1]}}
  cost: {{role: measure, bounds: [0, 100], aggregates: [sum, mean]}}
purposes:
  research: {{description: Research, columns: [clinic, sex, cost]}}
disclosure:
  min_persons_per_cell: 1
  rounding_base: 1
  noise: {{{noise}}}
limits: {{max_groups: 1000, max_filters: 4, max_group_by: 2}}
"""


def clinics(rows_per_rare: int = 1) -> pd.DataFrame:
    rows: list[tuple[int, str, int, float]] = []
    for pid in range(800):
        rows.append((pid, "north" if pid % 2 else "south", pid % 2, 50.0))
    for i in range(RARE):
        rows += [(10_000 + i, f"rare-{i:03d}", i % 2, 100.0)] * rows_per_rare
    return pd.DataFrame(rows, columns=["pid", "clinic", "sex", "cost"])


def world_of(world_factory: WorldFactory, tmp_path: Path, frame: pd.DataFrame, noise: str) -> World:
    world = csv_world(
        world_factory, tmp_path, {"clinics": (frame, clinics_policy("clinics", noise))}
    )
    world.project("study", (("clinics", "research"),))
    return world


def laplace_selection(epsilon: int) -> str:
    return (
        f"mechanism: discrete_laplace, epsilon_per_job: {epsilon}, delta_per_job: {DELTA}, "
        "partition_selection: true"
    )


def run(world: World, query: Query) -> Any:
    return world.client("ana").run(query, project="study", purpose="research").table


def test_a_key_held_by_one_person_is_never_emitted_and_a_common_key_always_is(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    noise = laplace_selection(1)
    world = world_of(world_factory, tmp_path, clinics(), noise)
    for i in range(200):  # 200 distinct queries (aliases differ): fresh noise each time
        table = run(world, Query("clinics").group_by("clinic").count(f"n{i}"))
        assert sorted(r.keys[0] for r in table.rows) == ["north", "south"]
        assert table.privacy["partition_selection"] == "true"
        # scale 1, L 1: tau - 1 = ceil(ln(e / ((1 + e^-1) delta))) = 27
        expected = 1 + math.ceil(math.log(math.e / ((1 + math.exp(-1)) * float(DELTA))))
        assert table.privacy["partition_threshold"] == str(expected) == "28"
        assert table.privacy["partition_delta"] == table.privacy["delta"] == "1/100000000000"
        for row in table.rows:
            assert abs(row.cells[0].value - 400) <= 30
    spent = world.db.conn.execute("SELECT epsilon, delta FROM privacy_ledger").fetchall()
    assert sum(Fraction(d) for _, d in spent) == 200 * Fraction(DELTA)


def test_public_key_jobs_under_a_partition_policy_spend_no_delta(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    noise = laplace_selection(1)
    world = world_of(world_factory, tmp_path, clinics(), noise)
    table = run(world, Query("clinics").group_by("sex").count())
    assert sorted(r.keys[0] for r in table.rows) == [0, 1]
    assert table.privacy["delta"] == "0" and "partition_selection" not in table.privacy


def test_declared_columns_keep_their_public_keys_beside_selected_ones(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    noise = laplace_selection(2)
    world = world_of(world_factory, tmp_path, clinics(), noise)
    table = run(world, Query("clinics").group_by("clinic", "sex").count().sum("cost"))
    # north holds sex 1 only, south sex 0 only: a cell (north, 0) has no one and is not a key.
    assert sorted(r.keys for r in table.rows) == [("north", 1), ("south", 0)]
    for row in table.rows:
        count, total = row.cells
        # scales 1 and 100 (epsilon 1 each): beyond 30 scales with probability below 1e-12
        assert abs(count.value - 400) <= 30 and abs(total.value - 20_000) <= 3000


def test_gaussian_partition_selection_splits_delta(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    noise = (
        "mechanism: discrete_gaussian, epsilon_per_job: 1, delta_per_job: 0.000000001, "
        "partition_selection: true"
    )
    world = world_of(world_factory, tmp_path, clinics(), noise)
    for i in range(5):
        table = run(world, Query("clinics").group_by("clinic").count(f"n{i}"))
        assert sorted(r.keys[0] for r in table.rows) == ["north", "south"]
    assert table.privacy["delta"] == "1/1000000000"
    assert table.privacy["partition_delta"] == "1/2000000000"


def test_bounded_partition_selection_never_emits_a_heavy_single_person_key(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    # 50 rows each for the 200 planted persons: still one person per key, never emitted.
    noise = (
        f"mechanism: discrete_laplace, epsilon_per_job: 1, delta_per_job: {DELTA}, "
        "partition_selection: true, max_groups_per_person: 2, max_rows_per_person: 5"
    )
    world = world_of(world_factory, tmp_path, clinics(rows_per_rare=50), noise)
    for i in range(10):
        table = run(world, Query("clinics").group_by("clinic").count(f"n{i}").sum("cost"))
        assert sorted(r.keys[0] for r in table.rows) == ["north", "south"]
    assert table.privacy["sensitivity_persons"] == "2"


def test_without_partition_selection_a_key_set_from_the_data_is_refused(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    world = world_of(
        world_factory,
        tmp_path,
        clinics(),
        "mechanism: discrete_laplace, epsilon_per_job: 1, partition_selection: false",
    )
    with pytest.raises(PolicyDenied) as err:
        run(world, Query("clinics").group_by("clinic").count())
    assert err.value.rule_ids == ("dp.public_keys",)
    assert world.db.conn.execute("SELECT count(*) FROM privacy_ledger").fetchone() == (0,)
