"""The columnar engine answers exactly as DuckDB does (real DuckDB, real Parquet and CSV files).

Random jobs over data with nulls, text, negative and out-of-bounds measures; every row the
columnar engine returns must equal, value and type, what the plan's SQL returns on the file.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox._errors import JobCancelled
from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, JobSpec
from sandbox.engine import Engine, Plan, RawCell, plan
from sandbox.engine import _columnar as columnar
from sandbox.engine._duckdb import _bind_source
from sandbox.policy import Policy, load_policy
from sandbox.state import DatasetRecord

PUMS = Path(__file__).resolve().parents[3] / "shared" / "data" / "pums"

POLICY = """\
dataset: {name}
version: 1
title: Test
steward: test-office
source: {name}.{fmt}
person_key: pid
population: test-persons
columns:
{columns}
purposes:
  research: {{columns: [{names}]}}
disclosure:
  min_persons_per_cell: 2
{rules}
"""

REGISTRY = {
    "pid": "{role: identifier}",
    "district": "{role: dimension}",
    "age": "{role: dimension, bins: [0, 18, 35, 65, 120]}",
    "visits": "{role: dimension}",
    "employed": "{role: dimension}",
    "score": "{role: dimension, bins: [0, 0.5, 1.5, 10]}",
    "income": "{role: measure, bounds: [-1000, 20000], aggregates: [sum, mean]}",
    "days": "{role: measure, bounds: [0, 400], aggregates: [sum, mean]}",
}
TEXT_PROBES = ["", "Eastbank", "Nord", "Zeta", "zeta", "Ärzte", "a b", "zz", "M"]


def _registry(rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    """One row per person; nulls in every kind of column, values beyond the measure bounds."""
    rng = np.random.default_rng(seed)
    districts = np.array(["Eastbank", "Nord", "Zeta", "zeta", "Ärzte", "a b", ""], dtype=object)
    frame = pd.DataFrame(
        {
            "pid": np.arange(1, rows + 1, dtype=np.int64),
            "district": districts[rng.integers(0, len(districts), rows)],
            "age": pd.array(rng.integers(0, 100, rows), dtype="Int16"),
            "visits": pd.array(rng.integers(0, 6, rows), dtype="Int32"),
            "employed": pd.array(rng.integers(0, 2, rows).astype(bool), dtype="boolean"),
            "score": rng.choice([0.0, 0.25, 0.5, 1.0, 1.5, 3.75, 9.5, 12.0], rows),
            "income": pd.array(rng.integers(-3000, 30000, rows), dtype="Int64"),
            "days": pd.array(rng.integers(0, 366, rows), dtype="Int64"),
        }
    )
    for column in ("district", "age", "visits", "employed", "score", "income"):
        frame.loc[rng.random(rows) < 0.05, column] = None
    return frame


def _world(
    where: Path, frame: pd.DataFrame, fmt: str, *, rules: str = "", columns: dict[str, str]
) -> tuple[DatasetRecord, Policy]:
    name = "registry"
    data = where / f"{name}.{fmt}"
    if fmt == "csv":
        frame.to_csv(data, index=False)
    else:
        frame.to_parquet(data, index=False)
    text = POLICY.format(
        name=name,
        fmt=fmt,
        columns="\n".join(f"  {c}: {role}" for c, role in columns.items()),
        names=", ".join(c for c in columns if c != "pid"),
        rules=rules,
    )
    (where / f"{name}.yaml").write_text(text, encoding="utf-8")
    policy = load_policy(where / f"{name}.yaml")
    engine = Engine(threads=1)
    measures = tuple(c for c, role in columns.items() if "measure" in role)
    facts = engine.inspect_source(data, fmt, "pid", measures)
    engine.close()
    return facts.record(name, data, fmt, policy.version_label), policy


@dataclasses.dataclass
class Copy:
    """A registered file, its in-memory copy in DuckDB, and that copy's columns."""

    record: DatasetRecord
    policy: Policy
    db: duckdb.DuckDBPyConnection
    columns: columnar.Columns

    def sql_rows(self, p: Plan) -> list[tuple[Any, ...]]:
        sql, bound = _bind_source(p, list(p.params), None)
        return self.db.execute(sql, bound).fetchall()


def _copy(record: DatasetRecord, policy: Policy) -> Copy:
    db = duckdb.connect(":memory:", config={"threads": 1})
    reader = "read_parquet(?)" if record.file_format == "parquet" else "read_csv(?, header = true)"
    cursor = db.execute(f"SELECT * FROM {reader}", [record.source])
    types = {str(d[0]): str(d[1]) for d in cursor.description or ()}
    return Copy(record, policy, db, columnar.Columns(cursor.fetchnumpy(), types))


@pytest.fixture(scope="module", params=["parquet", "csv"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Copy:
    where = tmp_path_factory.mktemp(f"registry-{request.param}")
    record, policy = _world(where, _registry(), request.param, columns=REGISTRY)
    return _copy(record, policy)


@pytest.fixture(scope="module")
def dominance(tmp_path_factory: pytest.TempPathFactory) -> Copy:
    """Sums and means under the dominance rules: the plan adds each cell's contributions."""
    where = tmp_path_factory.mktemp("dominance")
    rules = "  dominance: {n: 2, k: 0.85}"
    record, policy = _world(where, _registry(), "parquet", rules=rules, columns=REGISTRY)
    return _copy(record, policy)


def _typed(rows: list[tuple[Any, ...]]) -> list[tuple[tuple[str, Any], ...]]:
    """Rows with each value's type beside it, in a fixed order (nulls and NaN comparable)."""
    typed = [
        tuple(
            (type(v).__name__, "nan" if isinstance(v, float) and math.isnan(v) else v) for v in row
        )
        for row in rows
    ]
    return sorted(typed, key=repr)


def _values(column: str) -> st.SearchStrategy[Any]:
    if column == "district":
        return st.sampled_from(TEXT_PROBES)
    if column == "employed":
        return st.booleans()
    if column == "score":
        return st.one_of(
            st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 3.75, 9.5, 12.0]),
            st.floats(-1, 13, allow_nan=False),
            st.integers(-1, 13),
        )
    return st.one_of(
        st.integers(-5, 120),
        st.sampled_from([-(2**40), 2**40, 17.5, 18.0, -0.0]),
        st.floats(-5, 120, allow_nan=False),
    )


@st.composite
def _filters(draw: st.DrawFn) -> Filter:
    column = draw(st.sampled_from(["district", "age", "visits", "employed", "score", "income"]))
    op = draw(st.sampled_from(list(FilterOp)))
    count = {FilterOp.IN: draw(st.integers(1, 3)), FilterOp.BETWEEN: 2}.get(op, 1)
    return Filter(column, op, tuple(draw(_values(column)) for _ in range(count)))


_AGGREGATES = [
    Aggregate(AggFunc.COUNT),
    Aggregate(AggFunc.COUNT_DISTINCT, alias="persons"),
    Aggregate(AggFunc.SUM, "income"),
    Aggregate(AggFunc.MEAN, "income"),
    Aggregate(AggFunc.SUM, "days"),
    Aggregate(AggFunc.MEAN, "days"),
]


@st.composite
def _specs(draw: st.DrawFn) -> JobSpec:
    keys = draw(
        st.lists(
            st.sampled_from(["district", "age", "visits", "employed", "score"]),
            max_size=2,
            unique=True,
        )
    )
    aggregates = draw(st.lists(st.sampled_from(_AGGREGATES), min_size=1, max_size=3, unique=True))
    filters = draw(st.lists(_filters(), max_size=3))
    return JobSpec("registry", "p", "research", tuple(aggregates), tuple(keys), tuple(filters))


def _check(copy: Copy, spec: JobSpec) -> None:
    p = plan(spec, copy.record, copy.policy)
    assert p.columnar is not None, spec
    rows = columnar.run(p.columnar, copy.columns)
    assert rows is not None, spec
    assert _typed(rows) == _typed(copy.sql_rows(p)), spec


_EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_EXAMPLES
@given(spec=_specs())
def test_random_jobs_give_the_rows_duckdb_gives(registry: Copy, spec: JobSpec) -> None:
    _check(registry, spec)


@_EXAMPLES
@given(spec=_specs())
def test_contributions_under_the_dominance_rules_are_duckdbs(
    dominance: Copy, spec: JobSpec
) -> None:
    p = plan(spec, dominance.record, dominance.policy)
    if any(a.function in (AggFunc.SUM, AggFunc.MEAN) for a in spec.aggregates):
        assert p.columnar is not None and p.columnar.contributions
    _check(dominance, spec)


def test_the_pums_sample_with_nulls_gives_duckdbs_rows(tmp_path: Path) -> None:
    # Census rows with missing values; the first row of each person (the columnar engine
    # answers for files with one row per person).
    frame = pd.read_csv(PUMS / "PUMS_null.csv").dropna(subset=["pid"]).drop_duplicates("pid")
    frame = frame.astype("Int64")  # whole numbers, missing ones empty in the CSV
    columns = {
        "pid": "{role: identifier}",
        "sex": "{role: dimension}",
        "race": "{role: dimension}",
        "educ": "{role: dimension}",
        "married": "{role: dimension}",
        "age": "{role: dimension, bins: [0, 25, 45, 65, 100]}",
        "income": "{role: measure, bounds: [0, 200000], aggregates: [sum, mean]}",
    }
    record, policy = _world(tmp_path, frame, "csv", columns=columns)
    copy = _copy(record, policy)
    counted = 0
    for keys in [(), ("sex",), ("age", "married"), ("race", "educ")]:
        for filters in [
            (),
            (Filter("income", FilterOp.GT, (20000,)),),
            (Filter("age", FilterOp.BETWEEN, (30, 60)), Filter("educ", FilterOp.IN, (9, 13))),
        ]:
            for aggs in [
                (Aggregate(AggFunc.COUNT),),
                (Aggregate(AggFunc.SUM, "income"), Aggregate(AggFunc.MEAN, "income")),
            ]:
                _check(copy, JobSpec("registry", "p", "research", aggs, keys, filters))
                counted += 1
    assert counted == 24


def test_what_it_cannot_answer_exactly_goes_to_duckdb(tmp_path: Path) -> None:
    frame = _registry(200)[["pid", "age", "score", "income"]]
    frame["score"] = frame["score"].astype(object)
    frame.loc[3, "score"] = "nan"  # a NaN, which DuckDB orders above every number
    columns = {c: REGISTRY[c] for c in frame.columns}
    record, policy = _world(tmp_path, frame, "csv", columns=columns)
    assert record.column_types["score"] == "DOUBLE"
    copy = _copy(record, policy)
    spec = JobSpec(
        "registry",
        "p",
        "research",
        (Aggregate(AggFunc.COUNT),),
        (),
        (Filter("score", FilterOp.GT, (1.0,)),),
    )
    p = plan(spec, record, policy)
    assert p.columnar is not None and columnar.run(p.columnar, copy.columns) is None
    cached = Engine(threads=1, cache_rows=10_000)
    try:
        table = cached.run("job-1", p)
    finally:
        cached.close()
    assert table.cells[0].persons == copy.sql_rows(p)[0][0]  # NaN counted, as DuckDB does
    # A huge filter value, a person with several rows: no columnar plan at all.
    huge = dataclasses.replace(spec, filters=(Filter("income", FilterOp.LT, (2**60,)),))
    assert plan(huge, record, policy).columnar is None
    several = dataclasses.replace(record, persons_unique=False)
    assert plan(spec, several, policy).columnar is None


def test_the_engine_answers_a_small_file_from_its_copy_as_from_the_file(registry: Copy) -> None:
    spec = JobSpec(
        "registry",
        "p",
        "research",
        (Aggregate(AggFunc.COUNT), Aggregate(AggFunc.MEAN, "income")),
        ("district", "age"),
        (Filter("visits", FilterOp.NE, (3,)),),
    )
    p = plan(spec, registry.record, registry.policy)
    assert p.columnar is not None
    from_file, from_copy = Engine(threads=1), Engine(threads=1, cache_rows=10_000)

    def cells(engine: Engine, job_id: str) -> list[RawCell]:
        return sorted(engine.run(job_id, p).cells, key=repr)  # in no particular order

    try:
        assert cells(from_copy, "job-1") == cells(from_file, "job-1")
        from_copy.interrupt("job-2")  # cancelled before it starts
        with pytest.raises(JobCancelled):
            from_copy.run("job-2", p)
        assert cells(from_copy, "job-2") == cells(from_file, "job-2")  # the id is free again
    finally:
        from_file.close()
        from_copy.close()
