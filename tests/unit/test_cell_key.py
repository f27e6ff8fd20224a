"""The cell-key method: p-table builder, lookup, perturbation of a table, record keys.

The engine tests run real DuckDB queries over real files and compare every cell key with the
keys computed independently in Python from the person keys.
"""

from __future__ import annotations

import hashlib
import hmac
import stat
import threading
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox._errors import JobFailed, PolicyDenied
from sandbox._model import (
    TOTAL,
    AggFunc,
    Aggregate,
    Cell,
    CellStatus,
    Filter,
    FilterOp,
    JobSpec,
    ResultRow,
    ResultTable,
)
from sandbox.disclosure import (
    RULE_CELL_KEY,
    PTable,
    RecordKeySecret,
    build_ptable,
    check_cell_key_job,
    perturb_counts,
    record_key_secret,
)
from sandbox.disclosure._cellkey import SECRET_FILE, _load_or_create
from sandbox.engine import RECORD_KEY_BITS, Engine, RawCell, RawTable, RecordKeySlot, plan
from sandbox.policy import Policy, PTableSpec, load_policy
from sandbox.state import DatasetRecord

SCALE = 1 << RECORD_KEY_BITS
D2V1 = (
    (-2, Fraction(1, 12)),
    (-1, Fraction(1, 6)),
    (0, Fraction(1, 2)),
    (1, Fraction(1, 6)),
    (2, Fraction(1, 12)),
)


def _mean(row: tuple[tuple[int, Fraction], ...]) -> Fraction:
    return sum((p * d for d, p in row), Fraction(0))


def _variance(row: tuple[tuple[int, Fraction], ...]) -> Fraction:
    return sum((p * d * d for d, p in row), Fraction(0)) - _mean(row) ** 2


# ---- the built p-table ----------------------------------------------------------------------


def test_the_d2_v1_table() -> None:
    table = build_ptable(PTableSpec(2, Fraction(1)), 10)
    assert table.default == D2V1
    assert table.default_from == 3 and table.min_positive == 1
    # Count 1 can go down by 1 only; it stays unbiased with variance 1.
    assert table.rows[1] == (
        (-1, Fraction(2, 5)),
        (0, Fraction(3, 10)),
        (1, Fraction(1, 5)),
        (2, Fraction(1, 10)),
    )
    assert table.rows[2] == D2V1
    assert (table.max_perturbation, table.variance) == (2, 1)


def test_block_small_starts_the_table_at_k() -> None:
    table = build_ptable(PTableSpec(2, Fraction(1), block_small=True), 10)
    assert (table.min_positive, table.default_from) == (10, 12)
    assert table.row(9) is None and table.row(1) is None
    assert table.rows[10] == ((0, Fraction(1)),)  # cannot move down, so cannot move unbiased
    assert {c + d for d, _ in table.rows[11] for c in [11]} == {10, 11, 12, 13}


@settings(max_examples=300, deadline=None)
@given(
    d_max=st.integers(1, 8),
    quarters=st.integers(1, 256),
    block=st.booleans(),
    k=st.integers(1, 15),
)
def test_built_rows_keep_every_constraint(d_max: int, quarters: int, block: bool, k: int) -> None:
    variance = min(Fraction(quarters, 4), Fraction(d_max * d_max))
    table = build_ptable(PTableSpec(d_max, variance, block_small=block), k)
    assert table.min_positive == (k if block else 1)
    for count in range(1, table.default_from + 3):
        row = table.row(count)
        if count < table.min_positive:
            assert row is None
            continue
        assert row is not None
        assert sum(p for _, p in row) == 1 and all(p > 0 for _, p in row)
        assert [d for d, _ in row] == sorted({d for d, _ in row})
        for d, _ in row:
            released = count + d
            assert abs(d) <= d_max and released >= 0
            assert released == 0 or released >= table.min_positive
        assert _mean(row) == 0  # unbiased
        assert _variance(row) <= variance
        if count >= table.default_from:
            assert row == table.default
            assert _variance(row) == variance
            assert dict(row) == {-d: p for d, p in row}  # symmetric


def test_lookup_slices_follow_the_probabilities_exactly() -> None:
    table = build_ptable(PTableSpec(2, Fraction(1)), 10)
    # Boundaries: the key picks the slice of [0, 1) holding key / 2**48.
    assert table.perturbation(50, 0) == -2
    assert table.perturbation(50, SCALE // 12) == -2  # just under 1/12
    assert table.perturbation(50, SCALE // 12 + 1) == -1
    assert table.perturbation(50, SCALE // 2 - 1) == 0  # cumulative 1/12 + 1/6 + 1/2 = 3/4
    assert table.perturbation(50, SCALE * 3 // 4) == 1
    assert table.perturbation(50, SCALE - 1) == 2
    # Keys spread evenly over [0, 2**48): each perturbation's share is its probability.
    n = 1 << 12
    shares = Counter(table.perturbation(50, i * (SCALE // n)) for i in range(n))
    for d, p in D2V1:
        assert abs(Fraction(shares[d], n) - p) <= Fraction(1, n)


def test_listed_rows_and_default() -> None:
    spec = PTableSpec(
        rows=((10, ((0, Fraction(1)),)), (11, ((-1, Fraction(1, 2)), (1, Fraction(1, 2))))),
        default=((-1, Fraction(1, 3)), (0, Fraction(1, 3)), (1, Fraction(1, 3))),
    )
    table = build_ptable(spec, 10)
    assert table.row(10) == ((0, Fraction(1)),)
    assert table.row(11) == ((-1, Fraction(1, 2)), (1, Fraction(1, 2)))
    assert table.row(12) == table.row(999) == table.default
    assert table.perturbation(11, SCALE // 2 - 1) == -1 and table.perturbation(11, SCALE // 2) == 1
    assert table.max_perturbation == 1 and table.variance == Fraction(2, 3)


# ---- perturbing a protected table -------------------------------------------------------------

SPEC = JobSpec(
    "d",
    "p",
    "r",
    (Aggregate(AggFunc.COUNT), Aggregate(AggFunc.SUM, "x"), Aggregate(AggFunc.COUNT_DISTINCT)),
    ("g",),
)


def _table(*rows: tuple[str, Cell]) -> ResultTable:
    other = Cell(7.0, CellStatus.RELEASED)
    return ResultTable(
        ("g",),
        ("count", "sum_x", "count_distinct"),
        tuple(ResultRow((g,), (c, other, c)) for g, c in rows),
        {"min_persons_per_cell": 10},
    )


def test_perturb_counts_touches_released_counts_only() -> None:
    ptable = build_ptable(PTableSpec(2, Fraction(1)), 10)
    high = SCALE - 1  # the last slice: +2
    raw = RawTable(
        (
            RawCell(("a",), 40, (40, 7, 40), cell_key=high),
            RawCell(("b",), 3, (3, 7, 3), cell_key=high),
            RawCell(("c",), 20, (20, 7, 20), cell_key=None),
        ),
        None,
    )
    table = _table(
        ("a", Cell(40.0, CellStatus.RELEASED)),
        ("b", Cell(None, CellStatus.SUPPRESSED, "disclosure.min_persons")),
        ("c", Cell(20.0, CellStatus.RELEASED)),
        ("z", Cell(0.0, CellStatus.RELEASED, "disclosure.zeros_not_disclosive")),
    )
    out = perturb_counts(table, raw, SPEC, ptable)
    a, b, c, z = (row.cells for row in out.rows)
    assert a[0] == a[2] == Cell(42.0, CellStatus.NOISED, RULE_CELL_KEY, 2.0)
    assert a[1] == Cell(7.0, CellStatus.RELEASED)  # not a count: left alone
    assert b[0] == Cell(None, CellStatus.SUPPRESSED, "disclosure.min_persons")
    assert c[0] == Cell(None, CellStatus.SUPPRESSED, RULE_CELL_KEY)  # no key: fail closed
    assert z[0] == Cell(0.0, CellStatus.RELEASED, "disclosure.zeros_not_disclosive")
    assert out.privacy == {
        "mechanism": "cell_key",
        "max_perturbation": "2",
        "variance": "1",
        "confidence": "1",
    }


def test_a_count_outside_the_table_is_suppressed() -> None:
    # Not a table a policy could hold (validation refuses it): the release still fails closed.
    ptable = PTable({}, ((-5, Fraction(1)),), 1, 10)
    raw = RawTable((RawCell(("a",), 12, (12, 7, 12), cell_key=0),), None)
    out = perturb_counts(_table(("a", Cell(12.0, CellStatus.RELEASED))), raw, SPEC, ptable)
    assert out.rows[0].cells[0] == Cell(None, CellStatus.SUPPRESSED, RULE_CELL_KEY)


@pytest.mark.parametrize("func", [f for f in AggFunc if f not in ("count", "count_distinct")])
def test_only_counts_are_allowed(func: AggFunc) -> None:
    check_cell_key_job(JobSpec("d", "p", "r", (Aggregate(AggFunc.COUNT_DISTINCT),)))
    spec = JobSpec("d", "p", "r", (Aggregate(AggFunc.COUNT), Aggregate(func, "x")))
    with pytest.raises(PolicyDenied) as info:
        check_cell_key_job(spec)
    assert info.value.rule_ids == ("cell_key.counts_only",)


# ---- the secret and record keys -------------------------------------------------------------


def test_record_keys_are_hmac_sha256_of_the_person_key() -> None:
    key = bytes(range(32))
    secret = RecordKeySecret(key)
    digest = hmac.new(key, b"1234", hashlib.sha256).hexdigest()
    assert secret.record_key("1234") == int(digest[: RECORD_KEY_BITS // 4], 16)
    assert (
        secret.cell_key(["1", "2", "2"])
        == (secret.record_key("1") + secret.record_key("2")) % SCALE
    )
    assert "hidden" in repr(secret) and key.hex() not in repr(secret)
    with pytest.raises(ValueError, match="32 bytes"):
        RecordKeySecret(b"short")


def test_the_secret_is_created_once_private_and_stable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    secret = record_key_secret(state)
    path = state / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text())) == 32
    assert record_key_secret(state) is secret
    again = _load_or_create(path)  # read back from disk, as a restarted server does
    assert again.record_key("42") == secret.record_key("42")
    assert [p.name for p in state.iterdir()] == [SECRET_FILE]  # no temporary file left


def test_concurrent_creation_agrees_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    results: list[int] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(_load_or_create(path).record_key("7"))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1


def test_a_malformed_secret_fails_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_text("not-hex-but-private")
    with pytest.raises(JobFailed) as info:
        _load_or_create(path)
    assert "not-hex" not in str(info.value) and "private" not in str(info.value)


# ---- record and cell keys in the engine ---------------------------------------------------

POLICY = """\
dataset: visits
version: 1
title: Visits
steward: test-office
source: visits.csv
person_key: pid
population: visit-persons
columns:
  pid: {role: identifier}
  region: {role: dimension}
  kind: {role: dimension}
  age: {role: dimension}
purposes:
  research: {columns: [region, kind, age]}
disclosure:
  min_persons_per_cell: 2
  noise: {mechanism: cell_key, ptable: {max_perturbation: 2, variance: 1}}
"""


def _frame(several_rows: bool) -> pd.DataFrame:
    rows = []
    for pid in range(1, 61):
        for r in range(1 + pid % 3 if several_rows else 1):
            rows.append((f"p{pid:03d}" if pid % 2 else pid, "NSEW"[pid % 4], "ab"[pid % 2], pid, r))
    frame = pd.DataFrame(rows, columns=["pid", "region", "kind", "age", "visit"])
    frame["pid"] = frame["pid"].astype(str)
    return frame


def _world(tmp_path: Path, frame: pd.DataFrame) -> tuple[Engine, DatasetRecord, Policy]:
    data = tmp_path / "visits.csv"
    frame.to_csv(data, index=False)
    (tmp_path / "visits.yaml").write_text(POLICY, encoding="utf-8")
    policy = load_policy(tmp_path / "visits.yaml")
    engine = Engine(threads=1)
    facts = engine.inspect_source(data, "csv", "pid")
    record = facts.record("visits", data, "csv", policy.version_label)
    return engine, record, policy


def _expected(
    frame: pd.DataFrame, secret: RecordKeySecret, group_by: list[str]
) -> dict[tuple[object, ...], int]:
    return {
        (k if isinstance(k, tuple) else (k,)): secret.cell_key(members.pid)
        for k, members in frame.groupby(group_by)
    }


@pytest.mark.parametrize("several_rows", [False, True], ids=["one-row", "several-rows"])
@pytest.mark.parametrize("filtered", [False, True], ids=["all", "filtered"])
def test_engine_cell_keys_match_the_reference(
    tmp_path: Path, several_rows: bool, filtered: bool
) -> None:
    frame = _frame(several_rows)
    engine, record, policy = _world(tmp_path, frame)
    assert record.persons_unique is not several_rows
    secret = RecordKeySecret(bytes(range(100, 132)))
    filters = (Filter("age", FilterOp.GE, (20,)),) if filtered else ()
    spec = JobSpec(
        "visits", "p", "research", (Aggregate(AggFunc.COUNT_DISTINCT),), ("region", "kind"), filters
    )
    job_plan = plan(spec, record, policy)
    assert job_plan.cell_keys
    # The plan holds slots, never the secret; the engine refuses to run without it.
    assert RecordKeySlot.OUTER in job_plan.params and RecordKeySlot.INNER in job_plan.params
    assert not any(isinstance(p, bytes) for p in job_plan.params)
    with pytest.raises(JobFailed, match="record-key secret"):
        engine.run("j0", job_plan)
    raw = engine.run("j1", job_plan, secret.pads())
    rows = frame[frame.age >= 20] if filtered else frame
    expected = _expected(rows, secret, ["region", "kind"])
    assert {c.keys: c.cell_key for c in raw.cells} == expected
    # The group order does not change a cell's key.
    swapped = plan(
        JobSpec(
            "visits", "p", "research", (Aggregate(AggFunc.COUNT),), ("kind", "region"), filters
        ),
        record,
        policy,
    )
    again = engine.run("j2", swapped, secret.pads())
    assert {(c.keys[1], c.keys[0]): c.cell_key for c in again.cells} == expected
    # Another secret, other keys.
    other = engine.run("j3", job_plan, RecordKeySecret(bytes(32)).pads())
    assert {c.keys: c.cell_key for c in other.cells} != expected


def test_engine_cell_keys_of_margins_and_the_grand_total(tmp_path: Path) -> None:
    frame = _frame(several_rows=False)
    engine, record, policy = _world(tmp_path, frame)
    secret = RecordKeySecret(bytes(range(32)))
    spec = JobSpec(
        "visits", "p", "research", (Aggregate(AggFunc.COUNT),), ("region", "kind"), margins=True
    )
    raw = engine.run("j", plan(spec, record, policy), secret.pads())
    keys = {c.keys: c.cell_key for c in raw.cells}
    assert keys[(TOTAL, TOTAL)] == secret.cell_key(frame.pid)
    for region, members in frame.groupby("region"):
        assert keys[(region, TOTAL)] == secret.cell_key(members.pid)
    assert {k: v for k, v in keys.items() if TOTAL not in k} == _expected(
        frame, secret, ["region", "kind"]
    )


def test_no_cell_keys_outside_cell_key_mode(tmp_path: Path) -> None:
    frame = _frame(several_rows=False)
    engine, record, policy = _world(tmp_path, frame)
    plain = Policy(**{**policy.__dict__, "disclosure": type(policy.disclosure)()})
    spec = JobSpec("visits", "p", "research", (Aggregate(AggFunc.COUNT),), ("region",))
    job_plan = plan(spec, record, plain)
    assert not job_plan.cell_keys and not any(isinstance(p, RecordKeySlot) for p in job_plan.params)
    assert all(c.cell_key is None for c in engine.run("j", job_plan).cells)
