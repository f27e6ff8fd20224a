"""MockRows on the wire: the request round-trips, the table survives chunking exactly."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sandbox import (
    AggFunc,
    Aggregate,
    Filter,
    FilterOp,
    InvalidArgument,
    InvalidJobSpec,
    JobSpec,
    SandboxError,
)
from sandbox import _wire as wire
from sandbox.api.v1 import catalog_pb2, jobs_pb2
from sandbox.mock import MockRequest, mock_rows
from tests.unit.test_mock_rows import INFO

SPEC = JobSpec(
    "visits",
    "",
    "",
    (Aggregate(AggFunc.COUNT),),
    ("district",),
    (Filter("age", FilterOp.BETWEEN, (30, 60)), Filter("district", FilterOp.IN, ("a", "b"))),
)


@pytest.mark.parametrize(
    "req",
    [
        MockRequest("visits"),
        MockRequest("visits", 0, 0, None, 0.0),
        MockRequest("visits", 100_000, 2**63 - 1, SPEC, 0.25),
    ],
)
def test_request_round_trips(req: MockRequest) -> None:
    pb = catalog_pb2.MockRowsRequest.FromString(wire.mock_request_to_pb(req).SerializeToString())
    assert wire.mock_request_from_pb(pb) == req


def test_unset_fields_mean_defaults() -> None:
    got = wire.mock_request_from_pb(catalog_pb2.MockRowsRequest(dataset="visits", n=5))
    assert got == MockRequest("visits", 5, None, None, 1.0)


@pytest.mark.parametrize(
    "req",
    [
        MockRequest("visits", -1),
        MockRequest("visits", True),  # type: ignore[arg-type]
        MockRequest("visits", 5, -1),
        MockRequest("visits", 5, 2**63),
        MockRequest("visits", 5, None, None, "all"),  # type: ignore[arg-type]
    ],
)
def test_client_side_argument_checks(req: MockRequest) -> None:
    with pytest.raises(InvalidArgument):
        wire.mock_request_to_pb(req)


def test_job_in_the_request_is_validated_like_a_submitted_one() -> None:
    pb = catalog_pb2.MockRowsRequest(dataset="visits", n=5)
    pb.job.filters.add(column="age", op=jobs_pb2.FILTER_OP_EQ)  # a value-less filter
    pb.job.filters[0].values.add(null_value=True)
    with pytest.raises(InvalidJobSpec, match="missing, NaN"):
        wire.mock_request_from_pb(pb)


@pytest.mark.parametrize("max_bytes", [200, 4096, 1 << 20])
def test_chunks_reassemble_to_the_same_table(max_bytes: int) -> None:
    table = mock_rows(INFO, 3000, seed=1)
    chunks = wire.mock_to_chunks(table, 1, max_bytes)
    if max_bytes < 1 << 20:
        assert len(chunks) > 1
    if max_bytes > 1000:  # only tiny targets are exceeded (a single row is bigger)
        assert all(len(c.arrow_ipc) <= max_bytes for c in chunks)
    wired = [catalog_pb2.MockRowsChunk.FromString(c.SerializeToString()) for c in chunks]
    got, seed = wire.mock_from_chunks(wired)
    assert seed == 1 and got.equals(table) and got.schema.equals(table.schema)
    assert got.schema.metadata == {b"sandbox.mock": b"synthetic"}


def test_an_empty_table_still_carries_its_schema() -> None:
    table = mock_rows(INFO, 0, seed=2)
    chunks = wire.mock_to_chunks(table, 2)
    assert len(chunks) == 1
    got, _ = wire.mock_from_chunks(chunks)
    assert got.num_rows == 0 and got.schema.equals(table.schema)


def test_malformed_or_incomplete_streams_are_refused() -> None:
    with pytest.raises(SandboxError, match="malformed"):
        wire.mock_from_chunks([catalog_pb2.MockRowsChunk(arrow_ipc=b"nope", rows=1)])
    with pytest.raises(SandboxError, match="no mock rows"):
        wire.mock_from_chunks([])
    chunks = wire.mock_to_chunks(mock_rows(INFO, 100, seed=3), 3, 2000)
    with pytest.raises(SandboxError, match="incomplete"):
        wire.mock_from_chunks(chunks[:-1])
    other = wire.mock_to_chunks(pa.table({"x": [1]}), 3)
    with pytest.raises(SandboxError, match="differing schemas"):
        wire.mock_from_chunks([chunks[0], *other])
