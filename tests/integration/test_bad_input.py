"""Bad input of every kind is refused cleanly: precise errors, no state left half-written."""

from __future__ import annotations

import datetime as dt
import math
import random

import grpc
import pytest

from sandbox import (
    AggFunc,
    Aggregate,
    Filter,
    FilterOp,
    InvalidArgument,
    InvalidJobSpec,
    JobSpec,
    JobState,
    NotFound,
    PolicyInvalid,
    Project,
    QuotaLimits,
    SandboxError,
)
from sandbox import _wire as wire
from sandbox.api.v1 import jobs_pb2, jobs_pb2_grpc
from sandbox.client._errors import raise_from_rpc
from tests.conftest import World, pums_policy

COUNT = (Aggregate(AggFunc.COUNT),)
SUBMIT = "/sandbox.api.v1.JobService/SubmitJob"


def spec(
    *filters: Filter, aggregates: tuple[Aggregate, ...] = COUNT, dataset: str = "pums"
) -> JobSpec:
    return JobSpec(dataset, "census-study", "research", aggregates, ("sex",), filters)


def bearer(world: World, name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {world.tokens[name]}"),)


def assert_clean(world: World) -> None:
    """No job left QUEUED/RUNNING, the audit log verifies, and a normal job still succeeds."""
    (open_jobs,) = world.db.conn.execute(
        "SELECT count(*) FROM jobs WHERE state IN ('QUEUED', 'RUNNING')"
    ).fetchone()
    assert open_jobs == 0
    assert world.client("chen").audit_verify().ok
    result = world.client("ana").run(spec(), timeout=30)
    assert sum(r.cells[0].value or 0 for r in result.table.rows) == 1000


def snapshot(world: World) -> tuple[object, ...]:
    """Everything a failed request must not change."""
    rows = world.db.conn.execute(
        "SELECT id, policy_version, file_digest FROM datasets ORDER BY id"
    ).fetchall()
    return (
        world.client("sam").datasets(),
        rows,
        [r.seq for r in world.client("chen").audit_entries()],
        world.client("chen").audit_verify().root,
    )


def submit_pb(world: World, request: jobs_pb2.SubmitJobRequest) -> None:
    with grpc.insecure_channel(world.target) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        try:
            stub.SubmitJob(request, metadata=bearer(world, "ana"), timeout=10)
        except grpc.RpcError as exc:
            raise_from_rpc(exc)


# ---- policies ---------------------------------------------------------------------------------
def test_malformed_policy_yaml_names_file_and_line(pums_world: World) -> None:
    sam = pums_world.client("sam")
    before = snapshot(pums_world)
    policies = pums_world.root / "policies"
    # 1. Not YAML at all.
    (policies / "broken.yaml").write_text("dataset: broken\nversion: 1\ntitle: [unclosed\n")
    with pytest.raises(PolicyInvalid) as err:
        sam.register_dataset("broken")
    assert "broken.yaml:" in str(err.value)
    assert any(f"broken.yaml:{n}:" in str(err.value) for n in (3, 4))
    # 2. Valid YAML, but a bad value on a known line.
    lines = pums_policy("broken", "pums.csv").splitlines()
    bad = next(i for i, line in enumerate(lines) if line.strip().startswith("race:"))
    lines[bad] = "  race: {role: dimenson}"
    (policies / "broken.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(PolicyInvalid) as err:
        sam.register_dataset("broken")
    assert f"broken.yaml:{bad + 1}:" in str(err.value)
    assert "race" in str(err.value)
    # 3. An already registered dataset whose file turned bad keeps its registration.
    good = (policies / "pums.yaml").read_text()
    (policies / "pums.yaml").write_text(good.replace("version: 1", "version: -1"))
    with pytest.raises(PolicyInvalid) as err:
        sam.register_dataset("pums")
    assert "pums.yaml:2:" in str(err.value)

    assert snapshot(pums_world) == before  # no half-written dataset, no audit entry
    assert [d.id for d in sam.datasets()] == ["pums"]
    assert_clean(pums_world)


# ---- unknown datasets -------------------------------------------------------------------------
def test_unknown_dataset_is_not_found_and_logged(pums_world: World) -> None:
    ana, bob, sam = (pums_world.client(n) for n in ("ana", "bob", "sam"))
    with pytest.raises(NotFound) as described:
        ana.describe("nosuch")
    with pytest.raises(NotFound) as submitted:
        ana.submit(spec(dataset="nosuch"))
    with pytest.raises(NotFound) as steward:
        sam.describe("nosuch")
    with pytest.raises(NotFound) as hidden:
        bob.describe("pums")  # exists, but bob holds no grant: indistinguishable
    with pytest.raises(NotFound) as hidden_submit:
        bob.submit(spec())
    norm = [
        str(e.value).replace("nosuch", "X").replace("pums", "X")
        for e in (described, submitted, steward, hidden, hidden_submit)
    ]
    assert len(set(norm)) == 1, norm
    assert "nosuch" in str(submitted.value)
    # The refused submission is logged (and kept as a DENIED job for its owner).
    denied = [
        r.entry
        for r in pums_world.client("chen").audit_entries()
        if r.entry.get("event") == "job.denied"
    ]
    by_dataset = {(e["actor"], e["dataset"]): e for e in denied}
    assert by_dataset[("ana", "nosuch")]["reason"] == "NOT_FOUND"
    assert by_dataset[("bob", "pums")]["reason"] == "NOT_FOUND"
    assert [j.state for j in ana.jobs()] == [JobState.DENIED]
    assert_clean(pums_world)


# ---- malformed requests -----------------------------------------------------------------------
def test_garbage_protobuf_is_an_error_not_a_crash(pums_world: World) -> None:
    rng = random.Random(1234)
    payloads = [
        b"\x0a\xff\xff\xff\xff\x0f",  # field 1, length far beyond the message
        b"\x12\x05abc",  # field 2 (spec) truncated
        b"\xff" * 32,  # invalid wire types
        *(bytes([0x0F]) + rng.randbytes(rng.randint(1, 200)) for _ in range(5)),
    ]
    with grpc.insecure_channel(pums_world.target) as channel:
        raw = channel.unary_unary(
            SUBMIT, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        for payload in payloads:
            with pytest.raises(grpc.RpcError) as err:
                raw(payload, metadata=bearer(pums_world, "ana"), timeout=10)
            assert err.value.code() in (
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.INVALID_ARGUMENT,
            ), payload
            with pytest.raises(SandboxError):
                raise_from_rpc(err.value)
    assert pums_world.client("ana").jobs() == []
    assert_clean(pums_world)


@pytest.mark.parametrize(
    "where", ["filter-op", "filter-op-unspecified", "function", "function-unspecified"]
)
def test_unknown_enum_values_are_invalid_job_specs(pums_world: World, where: str) -> None:
    pb = wire.spec_to_pb(spec(Filter("age", FilterOp.GE, (30,))))
    if where == "filter-op":
        pb.filters[0].op = 99
    elif where == "filter-op-unspecified":
        pb.filters[0].op = jobs_pb2.FILTER_OP_UNSPECIFIED
    elif where == "function":
        pb.aggregates[0].function = 99
    else:
        pb.aggregates[0].function = jobs_pb2.AGGREGATE_FUNCTION_UNSPECIFIED
    with pytest.raises(InvalidJobSpec):
        submit_pb(pums_world, jobs_pb2.SubmitJobRequest(request_id="r1", spec=pb))
    assert_clean(pums_world)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_filter_value_is_invalid(pums_world: World, value: float) -> None:
    with pytest.raises(InvalidJobSpec):
        pums_world.client("ana").submit(spec(Filter("age", FilterOp.GT, (value,))))
    # A null value sent on the wire is refused the same way.
    pb = wire.spec_to_pb(spec(Filter("age", FilterOp.GT, (1,))))
    pb.filters[0].values[0].null_value = True
    with pytest.raises(InvalidJobSpec):
        submit_pb(pums_world, jobs_pb2.SubmitJobRequest(request_id="r-null", spec=pb))
    assert_clean(pums_world)


def test_wrong_value_type_is_refused_without_echoing_it(pums_world: World) -> None:
    ana = pums_world.client("ana")
    secret = "Zq9-canary-value"
    for bad in (
        Filter("age", FilterOp.EQ, (secret,)),
        Filter("age", FilterOp.IN, (30, secret)),
        Filter("educ", FilterOp.BETWEEN, (1, secret)),
    ):
        with pytest.raises(InvalidJobSpec) as err:
            ana.submit(spec(bad))
        assert secret not in str(err.value)
        assert bad.column in str(err.value)
    for job in ana.jobs():
        assert job.state == JobState.DENIED and secret not in job.message
    assert_clean(pums_world)


def test_job_without_aggregates_is_invalid(pums_world: World) -> None:
    with pytest.raises(InvalidJobSpec) as err:
        pums_world.client("ana").submit(spec(aggregates=()))
    assert "aggregate" in str(err.value)
    assert_clean(pums_world)


def test_integer_beyond_int64_is_an_invalid_job_spec(pums_world: World) -> None:
    # The value cannot be represented on the wire: it must be refused as a SandboxError, not
    # escape as a protobuf ValueError from inside the client.
    ana = pums_world.client("ana")
    with pytest.raises(InvalidJobSpec):
        ana.submit(spec(Filter("age", FilterOp.GT, (2**64,))))
    with pytest.raises(InvalidJobSpec):
        ana.sql(
            "SELECT COUNT(*) FROM pums WHERE age > 99999999999999999999",
            project="census-study",
            purpose="research",
        )
    assert_clean(pums_world)


def test_negative_quota_limits_are_refused(pums_world: World) -> None:
    # A limit is a count (the CLI only accepts >= 0); a negative one is malformed input, not
    # "refuse everything", and must not be stored or logged as if it were a policy decision.
    sam = pums_world.client("sam")
    before = snapshot(pums_world)
    projects_before = sam.projects()
    project = Project(
        "neg-quota",
        "negative quota",
        ("ana",),
        (("pums", "research"),),
        dt.date.today() + dt.timedelta(days=30),
        QuotaLimits(jobs_per_day=-1),
    )
    with pytest.raises(InvalidArgument):
        sam.create_project(project)
    with pytest.raises(InvalidArgument):
        sam.set_quota("census-study", QuotaLimits(rows_total=-5))
    assert sam.projects() == projects_before
    assert snapshot(pums_world) == before
    assert_clean(pums_world)
