"""Cell-key perturbation against a real server on loopback (no mocks on the job path).

The same cell (the same persons) always gets the same perturbation, whatever the query text,
filter order or group order, so repeating a query and averaging gains nothing. Distinct cells get
independent perturbations distributed as the p-table says (goodness-of-fit tests that fail when
the table is ignored). Record keys come from a per-server secret that never leaves the server.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import statistics
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sandbox import CellStatus, PolicyDenied, Query, Result
from sandbox.disclosure import build_ptable, record_key_secret
from sandbox.disclosure._cellkey import SECRET_FILE
from sandbox.policy import PTableSpec
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import audit_entries, csv_world, pums_frame

K = 10
RULE = "disclosure.cell_key"
PROJECT = "census-study"
BUILT = "{max_perturbation: 2, variance: 1}"
DEFAULT_ROW = {
    -2: Fraction(1, 12),
    -1: Fraction(1, 6),
    0: Fraction(1, 2),
    1: Fraction(1, 6),
    2: Fraction(1, 12),
}
# Chi-square critical values at a false-alarm rate of 1e-6 (scipy.stats.chi2.isf(1e-6, df)).
CHI2_CRITICAL = {2: 27.631, 4: 33.377, 16: 56.772}

WorldFactory = Callable[..., World]


def cell_key_policy(name: str, source: str, ptable: str = BUILT, *, max_groups: int = 1000) -> str:
    """The PUMS policy of ``tests.conftest`` in cell-key mode."""
    text = pums_policy(name, source, k=K)
    disclosure = f"disclosure: {{min_persons_per_cell: {K}, rounding_base: 1}}"
    assert disclosure in text
    text = text.replace(
        disclosure,
        f"disclosure:\n  min_persons_per_cell: {K}\n"
        f"  noise: {{mechanism: cell_key, ptable: {ptable}}}",
    )
    return text.replace("max_groups: 1000", f"max_groups: {max_groups}")


def grant(world: World, *datasets: str) -> None:
    grants = tuple((d, p) for d in datasets for p in ("research", "demography"))
    world.project(PROJECT, grants)


@pytest.fixture
def ck_world(world_factory: WorldFactory) -> World:
    """PUMS_pid (one row per person) as 'pums', k = 10, p-table D = 2, V = 1."""
    world = world_factory(
        {"pums": cell_key_policy("pums", "pums.csv")}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"}
    )
    world.register("pums")
    grant(world, "pums")
    return world


def run(world: World, query: Query | str) -> Result:
    ana = world.client("ana")
    if isinstance(query, str):
        return ana.sql(query, project=PROJECT, purpose="research")
    return ana.run(query, project=PROJECT, purpose="research")


def by_key(result: Result, order: tuple[str, ...] | None = None) -> dict[tuple[object, ...], float]:
    """Released values of the first aggregate by group key (keys put in ``order``)."""
    table = result.table
    out: dict[tuple[object, ...], float] = {}
    for row in table.rows:
        keys = dict(zip(table.key_columns, row.keys, strict=True))
        cell = row.cells[0]
        if cell.value is not None:
            out[tuple(keys[c] for c in order or table.key_columns)] = float(cell.value)
    return out


def truth(frame: pd.DataFrame, columns: list[str]) -> dict[tuple[object, ...], int]:
    sizes = frame.groupby(columns).pid.nunique()
    return {(k if isinstance(k, tuple) else (k,)): int(v) for k, v in sizes.items()}


def synthetic(groups: int, seed: int, low: int = 12, high: int = 40) -> pd.DataFrame:
    """One row per person; ``grp`` holds ``groups`` groups of ``low``..``high`` persons each."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(low, high + 1, size=groups)
    grp = np.repeat(np.arange(groups), sizes)
    n = len(grp)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "sex": rng.integers(0, 2, n),
            "educ": grp,
            "race": rng.integers(1, 7, n),
            "income": rng.integers(0, 100_000, n),
            "married": rng.integers(0, 2, n),
            "pid": rng.permutation(n) + 1,
        }
    )


def synthetic_world(
    world_factory: WorldFactory, tmp_path: Path, frame: pd.DataFrame, ptable: str = BUILT
) -> World:
    policy = cell_key_policy("groups", "groups.csv", ptable, max_groups=5000)
    tmp_path.mkdir(parents=True, exist_ok=True)
    world = csv_world(world_factory, tmp_path, {"groups": (frame, policy)})
    grant(world, "groups")
    return world


def perturbations(world: World, frame: pd.DataFrame) -> list[int]:
    """Released minus true count of every group of the ``groups`` dataset, in group order."""
    released = by_key(run(world, Query("groups").group_by("educ").count()))
    true = truth(frame, ["educ"])
    assert set(released) == set(true)  # every group is at least 12 persons: none suppressed
    return [int(released[k]) - true[k] for k in sorted(true)]


def chi2(observed: Counter[int], probabilities: dict[int, Fraction]) -> float:
    """Pearson's statistic of ``observed`` against ``probabilities`` (a value outside: inf)."""
    if set(observed) - set(probabilities):
        return float("inf")
    n = sum(observed.values())
    return sum(
        (observed.get(d, 0) - n * float(p)) ** 2 / (n * float(p)) for d, p in probabilities.items()
    )


# ---- what a released cell is --------------------------------------------------------------


def test_counts_are_perturbed_by_the_cells_own_key(ck_world: World) -> None:
    frame = pums_frame()
    result = run(ck_world, Query("pums").group_by("sex", "married").count())
    assert result.table.privacy == {
        "mechanism": "cell_key",
        "max_perturbation": "2",
        "variance": "1",
        "confidence": "1",
    }
    # Recompute each perturbation independently: the server's secret, the cell's person keys,
    # the p-table. The engine's SQL key derivation must agree exactly.
    secret = record_key_secret(ck_world.config.state_dir)
    ptable = build_ptable(PTableSpec(2, Fraction(1)), K)
    for row in result.table.rows:
        (cell,) = row.cells
        members = frame[(frame.sex == row.keys[0]) & (frame.married == row.keys[1])]
        n = len(members)
        d = ptable.perturbation(n, secret.cell_key(str(p) for p in members.pid))
        assert (cell.value, cell.status, cell.rule, cell.ci) == (
            n + d,
            CellStatus.NOISED,
            RULE,
            2.0,
        )
        assert abs(cell.value - n) <= 2


def test_small_cells_are_suppressed_before_perturbation(ck_world: World) -> None:
    frame = pums_frame()
    result = run(ck_world, Query("pums").group_by("race").count_persons())
    true = truth(frame, ["race"])
    statuses = {row.keys[0]: row.cells[0] for row in result.table.rows}
    for race, n in true.items():
        cell = statuses[race[0]]
        if n < K:  # races 5 and 6 hold 1 and 5 persons
            assert (cell.value, cell.status, cell.rule) == (
                None,
                CellStatus.SUPPRESSED,
                "disclosure.min_persons",
            )
        else:
            assert cell.status == CellStatus.NOISED and abs(cell.value - n) <= 2


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_magnitude_aggregates_are_refused(ck_world: World, aggregate: str) -> None:
    query = getattr(Query("pums").group_by("sex"), aggregate)("income")
    with pytest.raises(PolicyDenied) as info:
        run(ck_world, query)
    assert info.value.rule_ids == ("cell_key.counts_only",)
    assert "counts only" in info.value.message
    denied = [e for e in audit_entries(ck_world) if e.get("event") == "job.denied"]
    assert denied and denied[-1]["rule_ids"] == ["cell_key.counts_only"]


# ---- the same cell, the same answer -----------------------------------------------------


@pytest.mark.slow
def test_a_thousand_repeats_give_one_answer_and_averaging_gains_nothing(ck_world: World) -> None:
    query = Query("pums").where("age", ">=", 30).group_by("educ").count()
    first = run(ck_world, query)
    clients = [ck_world.client("ana") for _ in range(8)]

    def repeat(i: int) -> dict[tuple[object, ...], float]:
        ana = clients[i % len(clients)]
        return by_key(ana.run(query, project=PROJECT, purpose="research"))

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        answers = list(pool.map(repeat, range(999)))
    single = by_key(first)
    assert all(a == single for a in answers)
    frame = pums_frame()
    true = truth(frame[frame.age >= 30], ["educ"])
    moved = 0
    for key, value in single.items():
        mean = statistics.fmean(a[key] for a in [single, *answers])
        assert mean == value  # the average of the repeats is the single answer...
        moved += mean != true[key]
    assert moved >= 3  # ...not the truth, wherever the cell's perturbation is not 0


def test_rewrites_of_a_query_give_the_same_cells(ck_world: World) -> None:
    order = ("sex", "educ")
    base = by_key(
        run(
            ck_world,
            Query("pums")
            .where("age", ">=", 30)
            .where("married", "=", 1)
            .group_by("sex", "educ")
            .count(),
        ),
        order,
    )
    rewrites: list[Query | str] = [
        # Filters in the other order, groups in the other order.
        Query("pums")
        .where("married", "=", 1)
        .where("age", ">=", 30)
        .group_by("educ", "sex")
        .count(),
        # A different but equivalent filter, and the count of persons instead of rows.
        Query("pums")
        .where("married", "in", [1])
        .where("age", ">", 29)
        .group_by("sex", "educ")
        .count_persons(),
        # SQL text.
        "SELECT educ, sex, COUNT(*) FROM pums WHERE married = 1 AND age >= 30 GROUP BY educ, sex",
        "SELECT sex, educ, COUNT(*) FROM pums WHERE 30 <= age AND married IN (1) "
        "GROUP BY sex, educ",
    ]
    assert len(base) >= 10
    for query in rewrites:
        assert by_key(run(ck_world, query), order) == base


def test_the_same_persons_in_another_dataset_get_the_same_perturbation(
    world_factory: WorldFactory,
) -> None:
    """PUMS_dup holds the same persons on ~2 rows each: a person counts once per cell."""
    world = world_factory(
        {
            "pums": cell_key_policy("pums", "pums.csv"),
            "pums_dup": cell_key_policy("pums_dup", "pums_dup.csv"),
        },
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv", "pums_dup.csv": PUMS_DIR / "PUMS_dup.csv"},
    )
    world.register("pums")
    world.register("pums_dup")
    grant(world, "pums", "pums_dup")
    one = by_key(run(world, Query("pums").group_by("sex", "married").count()))
    dup = run(world, Query("pums_dup").group_by("sex", "married").count_persons().count())
    assert by_key(dup) == one  # count_persons: the same persons, the same cell keys
    rows = {row.keys: row.cells[1] for row in dup.table.rows}
    true_rows = pd.read_csv(PUMS_DIR / "PUMS_dup.csv").groupby(["sex", "married"]).size()
    for key, cell in rows.items():  # the row count is perturbed too, within the bound
        assert cell.status == CellStatus.NOISED and abs(cell.value - true_rows[key]) <= 2


# ---- distinct cells, independent perturbations as the table says ---------------------------


def test_perturbations_over_distinct_cells_follow_the_built_ptable(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    frame = synthetic(2000, seed=1)
    observed = perturbations(synthetic_world(world_factory, tmp_path, frame), frame)
    counts = Counter(observed)
    assert chi2(counts, DEFAULT_ROW) < CHI2_CRITICAL[4]
    # The test has power: had the table been ignored, it would fail.
    assert chi2(counts, {0: Fraction(1)}) == float("inf")  # no perturbation at all
    uniform = {d: Fraction(1, 5) for d in range(-2, 3)}
    assert chi2(counts, uniform) > CHI2_CRITICAL[4]
    # Neighbouring cells are independent: a contingency test on pairs of groups.
    pairs = Counter(zip(observed[0::2], observed[1::2], strict=True))
    n = sum(pairs.values())
    left = Counter(observed[0::2])
    right = Counter(observed[1::2])
    statistic = sum(
        (pairs.get((a, b), 0) - left[a] * right[b] / n) ** 2 / (left[a] * right[b] / n)
        for a in left
        for b in right
    )
    assert statistic < CHI2_CRITICAL[16]


def test_perturbations_follow_a_listed_asymmetric_ptable(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    listed = {-1: Fraction(1, 5), 0: Fraction(3, 10), 2: Fraction(1, 2)}
    ptable = '{default: [[-1, 0.2], [0, "3/10"], [2, 0.5]]}'
    frame = synthetic(2000, seed=2)
    counts = Counter(perturbations(synthetic_world(world_factory, tmp_path, frame, ptable), frame))
    assert chi2(counts, listed) < CHI2_CRITICAL[2]
    assert chi2(counts, DEFAULT_ROW) > CHI2_CRITICAL[4]  # not the built table's distribution


def test_block_small_never_releases_counts_under_k(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    frame = synthetic(600, seed=3, low=10, high=12)  # every cell at or just above k
    blocked = synthetic_world(
        world_factory,
        tmp_path / "blocked",
        frame,
        "{max_perturbation: 2, variance: 1, block_small: true}",
    )
    released = [n + d for n, d in zip(_sizes(frame), perturbations(blocked, frame), strict=True)]
    assert min(released) >= K and any(r != n for r, n in zip(released, _sizes(frame), strict=True))
    # Without block_small the same cells can come out under k.
    plain = synthetic_world(world_factory, tmp_path / "plain", frame)
    released = [n + d for n, d in zip(_sizes(frame), perturbations(plain, frame), strict=True)]
    assert min(released) < K


def _sizes(frame: pd.DataFrame) -> list[int]:
    sizes = truth(frame, ["educ"])
    return [sizes[k] for k in sorted(sizes)]


# ---- the secret -------------------------------------------------------------------------


def test_keys_differ_across_servers_and_survive_a_restart(
    world_factory: WorldFactory, tmp_path: Path
) -> None:
    frame = synthetic(1000, seed=4)
    first = synthetic_world(world_factory, tmp_path / "a", frame)
    other = synthetic_world(world_factory, tmp_path / "b", frame)
    a, b = perturbations(first, frame), perturbations(other, frame)
    same = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    assert same < 0.45  # independent keys agree with probability 0.32 (sum of p squared)
    # A server given the first one's secret (e.g. restored from its backup) answers as it did.
    restored = synthetic_world(world_factory, tmp_path / "c", frame)
    state = restored.config.state_dir
    assert not (state / SECRET_FILE).exists()  # created at the first cell-key job only
    (state / SECRET_FILE).write_bytes((first.config.state_dir / SECRET_FILE).read_bytes())
    assert perturbations(restored, frame) == a


def test_the_secret_never_leaves_the_server(
    ck_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    frame = pums_frame()
    ana = ck_world.client("ana")
    results = [
        run(ck_world, Query("pums").group_by("sex", "married").count()),
        run(ck_world, Query("pums").where("age", ">=", 40).group_by("educ").count_persons()),
        run(ck_world, Query("pums").count()),
    ]
    with pytest.raises(PolicyDenied):
        run(ck_world, Query("pums").sum("income"))
    path = ck_world.config.state_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = record_key_secret(ck_world.config.state_dir)
    assert "hidden" in repr(secret)
    raw = bytes.fromhex(path.read_text().strip())
    outer, inner = secret.pads()
    needles = [raw.hex(), outer.hex(), inner.hex(), raw.hex().upper()]
    # Cell keys are secret too (they would let anyone undo the perturbation).
    needles += [str(secret.cell_key(str(p) for p in frame.pid)), str(secret.record_key("1"))]
    released = [json.dumps(r.table.to_json()) for r in results]
    released += [json.dumps(r.report.to_dict("records"), default=str) for r in results]
    infos = [repr(j) for j in ana.jobs(PROJECT)]
    audit = [json.dumps(e) for e in audit_entries(ck_world)]
    logs = [r.getMessage() for r in caplog.records]
    haystack = "\n".join([*released, *infos, *audit, *logs])
    for needle in needles:
        assert needle not in haystack
    # Nor is it kept in the state store (the secret has a file of its own).
    for file in ck_world.config.state_dir.iterdir():
        if file.name != SECRET_FILE:
            blob = file.read_bytes()
            assert raw not in blob and outer not in blob and inner not in blob
            assert raw.hex().encode() not in blob
    assert os.listdir(ck_world.config.state_dir)


def test_the_differencing_guard_stays_on(ck_world: World) -> None:
    frame = pums_frame()
    old = frame[frame.age >= 60]
    sizes = old.groupby("educ").size()
    educ = int(sizes[(sizes > 0) & (sizes < K)].index[0])
    base = Query("pums").where("age", ">=", 60)
    first = run(ck_world, base.count()).table.rows[0].cells[0]
    assert first.status == CellStatus.NOISED
    minus = run(ck_world, base.where("educ", "!=", educ).count()).table.rows[0].cells[0]
    # N vs N - (1..k-1): perturbation alone would leave the difference half-visible.
    assert (minus.value, minus.status, minus.rule) == (
        None,
        CellStatus.SUPPRESSED,
        "disclosure.differencing",
    )
