"""Domain objects survive the trip through protobuf (and its serialised bytes) unchanged."""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction

import pytest
from google.protobuf.message import Message

from sandbox import _wire as wire
from sandbox._model import (
    TOTAL,
    AggFunc,
    Aggregate,
    Cell,
    CellStatus,
    ColumnInfo,
    ColumnRole,
    DatasetInfo,
    Filter,
    FilterOp,
    JobInfo,
    JobSpec,
    JobState,
    Project,
    QuotaLimits,
    QuotaUsage,
    ResultRow,
    ResultTable,
)
from sandbox.api.v1 import jobs_pb2


def bytes_trip(msg: Message) -> Message:
    """Serialise and parse again, as the transport does."""
    return type(msg).FromString(msg.SerializeToString())


def full_spec() -> JobSpec:
    filters = (
        Filter("age", FilterOp.EQ, (42,)),
        Filter("age", FilterOp.NE, (-7,)),
        Filter("income", FilterOp.LT, (1234.5,)),
        Filter("income", FilterOp.LE, (0.0,)),
        Filter("educ", FilterOp.GT, (2**40,)),
        Filter("educ", FilterOp.GE, (-1e-9,)),
        Filter("district", FilterOp.IN, ("Old Harbor", "Île-de-Ré", "", "quote ' \" ;")),
        Filter("married", FilterOp.IN, (True, False)),
        Filter("age", FilterOp.BETWEEN, (18, 64.5)),
    )
    aggregates = (
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.COUNT_DISTINCT, alias="persons"),
        Aggregate(AggFunc.SUM, "income"),
        Aggregate(AggFunc.MEAN, "income", alias="avg_income"),
        Aggregate(AggFunc.VARIANCE, "income"),
        Aggregate(AggFunc.STDDEV, "income"),
        Aggregate(AggFunc.MEDIAN, "income"),
        Aggregate(AggFunc.QUANTILE, "income", q=Fraction(9, 10)),
    )
    return JobSpec("pums", "p1", "research", aggregates, ("sex", "race"), filters, margins=True)


def test_every_op_function_and_value_type_round_trips() -> None:
    spec = full_spec()
    assert {f.op for f in spec.filters} == set(FilterOp)
    assert {a.function for a in spec.aggregates} == set(AggFunc)
    back = wire.spec_from_pb(bytes_trip(wire.spec_to_pb(spec)))
    assert back == spec
    assert back.digest() == spec.digest()
    # Value types are preserved exactly (a bool is not an int, an int is not a float).
    for f_in, f_out in zip(spec.filters, back.filters, strict=True):
        assert [type(v) for v in f_out.values] == [type(v) for v in f_in.values]


def test_values() -> None:
    for v in (None, True, False, 0, -(2**62), 3.25, "", "x"):
        out = wire.value_from_pb(bytes_trip(wire.value_to_pb(v)))
        assert out == v and type(out) is type(v)
    # Dates travel as ISO strings.
    assert wire.value_from_pb(wire.value_to_pb(dt.date(2024, 2, 29))) == "2024-02-29"


@pytest.mark.parametrize("v", [2**63, -(2**63) - 1, 2**64])
def test_integers_outside_int64_are_invalid_job_specs(v: int) -> None:
    # The wire's int64 cannot carry them; the conversion must fail as a SandboxError, not as
    # protobuf's ValueError. (The int64 limits themselves travel fine.)
    from sandbox import InvalidJobSpec

    for ok in (2**63 - 1, -(2**63)):
        assert wire.value_from_pb(wire.value_to_pb(ok)) == ok
    with pytest.raises(InvalidJobSpec):
        wire.value_to_pb(v)


def test_unknown_enums_and_nan_are_refused() -> None:
    from sandbox import InvalidJobSpec

    pb = wire.spec_to_pb(full_spec())
    pb.filters[0].op = 99
    with pytest.raises(InvalidJobSpec):
        wire.spec_from_pb(pb)
    pb = wire.spec_to_pb(full_spec())
    pb.aggregates[0].function = 99
    with pytest.raises(InvalidJobSpec):
        wire.spec_from_pb(pb)
    nan = JobSpec(
        "d", "p", "u", (Aggregate(AggFunc.COUNT),), (), (Filter("x", FilterOp.GT, (float("nan"),)),)
    )
    with pytest.raises(InvalidJobSpec):
        wire.spec_from_pb(wire.spec_to_pb(nan))


def test_job_info_round_trips() -> None:
    created = dt.datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    info = JobInfo(
        job_id="a" * 32,
        request_id="req-1",
        principal="ana",
        spec=full_spec(),
        state=JobState.DENIED,
        created_at=created,
        started_at=created + dt.timedelta(seconds=1),
        finished_at=created + dt.timedelta(seconds=2, microseconds=7),
        reason="POLICY_DENIED",
        message="column 'income' is not available",
        rule_ids=("column.not_in_purpose", "deny.x"),
        rows_scanned=1000,
        policy_version="pums@1",
        progress=0.75,
    )
    assert wire.job_from_pb(bytes_trip(wire.job_to_pb(info))) == info
    queued = JobInfo("b" * 32, "r", "bob", full_spec(), JobState.QUEUED, created)
    back = wire.job_from_pb(bytes_trip(wire.job_to_pb(queued)))
    assert back == queued
    assert back.started_at is None and back.finished_at is None
    for state in JobState:
        one = JobInfo("c", "r", "p", full_spec(), state, created)
        assert wire.job_from_pb(wire.job_to_pb(one)).state == state


def sample_table(n: int) -> ResultTable:
    rows = []
    for i in range(n):
        if i % 3 == 0:
            cells = (
                Cell(None, CellStatus.SUPPRESSED, "disclosure.min_persons"),
                Cell(None, CellStatus.SUPPRESSED, "disclosure.min_persons"),
            )
        elif i % 3 == 1:
            cells = (
                Cell(float(i * 5), CellStatus.ROUNDED, "disclosure.rounding"),
                Cell(i / 7, CellStatus.RELEASED),
            )
        else:
            cells = (Cell(float(i), CellStatus.RELEASED), Cell(0.0, CellStatus.RELEASED))
        key = None if i == n - 1 else f"g{i}"
        rows.append(ResultRow((key, i % 2 == 0, i), cells))
    return ResultTable(
        key_columns=("group", "flag", "n"),
        value_columns=("count", "mean_income"),
        rows=tuple(rows),
        settings={"min_persons_per_cell": 10, "rounding_base": 5},
    )


@pytest.mark.parametrize(
    ("n", "per_chunk", "chunks"), [(0, 3, 1), (1, 3, 1), (10, 3, 4), (9, 3, 3)]
)
def test_result_chunks_round_trip(n: int, per_chunk: int, chunks: int) -> None:
    table = sample_table(n)
    produced = [bytes_trip(c) for c in wire.result_to_chunks(table, rows_per_chunk=per_chunk)]
    assert len(produced) == chunks
    assert all(len(c.rows) <= per_chunk for c in produced)
    back, digest = wire.result_from_chunks(iter(produced))
    assert back == table
    assert digest == table.digest() == back.digest()
    suppressed = [c for r in back.rows for c in r.cells if c.status == CellStatus.SUPPRESSED]
    assert all(c.value is None and c.rule == "disclosure.min_persons" for c in suppressed)
    assert len(suppressed) == 2 * len(range(0, n, 3))


def test_empty_result_stream_is_an_error() -> None:
    from sandbox import SandboxError

    with pytest.raises(SandboxError):
        wire.result_from_chunks(iter([]))
    # A header with no rows is a valid empty table.
    table, _ = wire.result_from_chunks([jobs_pb2.ResultChunk(key_columns=["k"])])
    assert table.rows == () and table.key_columns == ("k",)


def test_project_and_quota_round_trip() -> None:
    project = Project(
        id="census-study",
        title="Census study",
        members=("ana", "bob"),
        grants=(("pums", "research"), ("pums", "demography")),
        expires=dt.date(2030, 12, 31),
        quota=QuotaLimits(jobs_per_day=5, rows_total=0),
    )
    back = wire.project_from_pb(bytes_trip(wire.project_to_pb(project)))
    assert back == project
    # Unset limits stay None (unlimited); an explicit 0 stays 0.
    assert back.quota.jobs_total is None and back.quota.rows_per_day is None
    assert back.quota.rows_total == 0
    assert wire.quota_from_pb(bytes_trip(wire.quota_to_pb(QuotaLimits()))) == QuotaLimits()
    full = QuotaLimits(1, 2, 3, 2**40)
    assert wire.quota_from_pb(bytes_trip(wire.quota_to_pb(full))) == full


def test_bad_project_expiry_is_invalid_argument() -> None:
    from sandbox import InvalidArgument

    pb = wire.project_to_pb(Project("p", "p", ("ana",), (("d", "u"),), dt.date(2030, 1, 1)))
    pb.expires = "next tuesday"
    with pytest.raises(InvalidArgument):
        wire.project_from_pb(pb)


def test_quota_usage_round_trips() -> None:
    usage = QuotaUsage("p1", QuotaLimits(jobs_per_day=3), 1, 2, 1000, 2000)
    assert wire.usage_from_pb(bytes_trip(wire.usage_to_pb(usage))) == usage


def test_dataset_info_round_trips() -> None:
    info = DatasetInfo(
        id="pums",
        title="PUMS",
        description="sample",
        person_key="pid",
        population="pums-persons",
        row_count=1000,
        columns=(
            ColumnInfo("age", "BIGINT", ColumnRole.DIMENSION, "age", bins=(0.0, 18.0, 65.0)),
            ColumnInfo("sex", "BIGINT", ColumnRole.DIMENSION, values=(0, 1)),
            ColumnInfo("district", "VARCHAR", ColumnRole.DIMENSION, values=("A", "B")),
            ColumnInfo(
                "income",
                "DOUBLE",
                ColumnRole.MEASURE,
                bounds=(0.0, 500000.0),
                aggregates=(AggFunc.SUM, AggFunc.MEAN),
            ),
            ColumnInfo("pid", "BIGINT", ColumnRole.IDENTIFIER),
        ),
        purposes=("research", "demography"),
        policy_version="pums@1",
    )
    assert wire.dataset_from_pb(bytes_trip(wire.dataset_to_pb(info))) == info


def test_margin_keys_round_trip_apart_from_nulls() -> None:
    table = ResultTable(
        ("sex", "married"),
        ("count",),
        (
            ResultRow((0, None), (Cell(12.0, CellStatus.RELEASED),)),
            ResultRow((0, TOTAL), (Cell(30.0, CellStatus.RELEASED),)),
            ResultRow((TOTAL, TOTAL), (Cell(None, CellStatus.SUPPRESSED, "disclosure.secondary"),)),
        ),
    )
    back, digest = wire.result_from_chunks(bytes_trip(c) for c in wire.result_to_chunks(table))
    assert back == table and digest == table.digest()
    assert back.rows[0].keys[1] is None and back.rows[1].keys[1] is TOTAL
    assert ResultTable.from_json(json.loads(table.canonical_json())) == table
