"""Sealed results: a researcher with a registered public key gets every result sealed to it.

A real server on a loopback port, real keys, no mocks. A released table leaves the server only
as a seal to the submitting researcher's registered key (AES-256-GCM, the key wrapped with
RSA-OAEP-SHA256, job id and spec digest bound); the client opens it to exactly the table the
same job gives without sealing. A request never chooses the key: naming another one is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import duckdb
import grpc
import pandas as pd
import pytest
from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey

from sandbox import (
    AggFunc,
    Aggregate,
    Client,
    JobSpec,
    NotFound,
    PermissionDenied,
    PrivateKeyRequired,
    Result,
    Role,
    SealBroken,
)
from sandbox._errors import KeyInvalid, KeyMismatch
from sandbox._model import ResultTable
from sandbox._wire import SEALED_FIELDS
from sandbox.api.v1 import jobs_pb2, jobs_pb2_grpc
from sandbox.crypto import export_public_key, generate_key_pair, unseal
from sandbox.crypto._keys import key_fingerprint
from tests.conftest import PUMS_DIR, World, pums_policy

SQL = (
    "SELECT race, COUNT(*) AS n, SUM(income) AS total, AVG(income) AS mean FROM pums "
    "WHERE age >= 30 AND sex = 1 AND educ IN (9, 10, 11, 12, 13) GROUP BY race"
)
DIRECT = (
    "SELECT race, count(*) AS n, sum(income) AS total, avg(income) AS mean "
    f"FROM read_csv('{PUMS_DIR / 'PUMS_pid.csv'}') "
    "WHERE age >= 30 AND sex = 1 AND educ IN (9, 10, 11, 12, 13) GROUP BY race ORDER BY race"
)
SPEC = JobSpec(
    "pums",
    "p1",
    "research",
    (Aggregate(AggFunc.COUNT), Aggregate(AggFunc.MEAN, "income")),
    ("married",),
)


@pytest.fixture(scope="module")
def key_a() -> RsaKey:
    return generate_key_pair()


@pytest.fixture(scope="module")
def key_b() -> RsaKey:
    return generate_key_pair()


def fp(key: RsaKey) -> str:
    return key_fingerprint(key).hex()


@pytest.fixture
def world(world_factory) -> World:
    # k = 1 and rounding base 1: nothing suppressed or rounded, so values compare exactly.
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv", k=1)}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"}
    )
    world.register("pums")
    world.project("p1", (("pums", "research"),), members=("ana", "bob"))
    return world


@pytest.fixture
def stub(world: World) -> Iterator[jobs_pb2_grpc.JobServiceStub]:
    with grpc.insecure_channel(world.target) as channel:
        yield jobs_pb2_grpc.JobServiceStub(channel)


def bearer(world: World, name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {world.tokens[name]}"),)


def submit_raw(
    stub: jobs_pb2_grpc.JobServiceStub, world: World, name: str = "ana", expected: str = ""
) -> jobs_pb2.SubmitJobResponse:
    from sandbox import _wire as wire

    request = jobs_pb2.SubmitJobRequest(
        spec=wire.spec_to_pb(SPEC),
        wait_seconds=20,
        include_result=True,
        expected_key_fingerprint=expected,
    )
    response: jobs_pb2.SubmitJobResponse = stub.SubmitJob(
        request, metadata=bearer(world, name), timeout=30
    )
    return response


def registered(world: World, key: RsaKey, name: str = "ana") -> Client:
    """``name``'s client holding ``key``, whose public half it registers."""
    client = world.client(name, private_key=key)
    assert client.register_public_key() == fp(key)
    return client


def frame(result: Result) -> pd.DataFrame:
    return result.to_dataframe(status=True).sort_values("race").reset_index(drop=True)


# ---- the sealed result is the released table ----------------------------------------------------
def test_sealed_result_opens_to_exactly_the_unsealed_table(world: World, key_a: RsaKey) -> None:
    ana = registered(world, key_a)
    bob = world.client("bob")  # no key registered: plaintext, as before
    sealed = ana.sql(SQL, project="p1", purpose="research")
    plain = bob.sql(SQL, project="p1", purpose="research")
    assert sealed.sealed and not plain.sealed
    # The same released table: same digest (the server's digest of its canonical form), cells.
    assert sealed.digest == plain.digest
    pd.testing.assert_frame_equal(frame(sealed), frame(plain))
    assert sealed.table.key_columns == plain.table.key_columns
    assert sealed.table.settings == plain.table.settings
    # And both equal DuckDB on the same file.
    expected = duckdb.sql(DIRECT).df()
    got = frame(sealed)
    assert list(got["race"]) == list(expected["race"])
    assert list(got["n"]) == [float(v) for v in expected["n"]]
    assert got["total"].tolist() == pytest.approx(expected["total"].tolist())
    assert got["mean"].tolist() == pytest.approx(expected["mean"].tolist())


def test_the_wire_carries_only_the_seal(world: World, key_a: RsaKey, stub) -> None:
    registered(world, key_a)
    response = submit_raw(stub, world)  # a raw stub, asserting no key at all
    assert response.job.state == jobs_pb2.JOB_STATE_SUCCEEDED
    chunk = response.result
    assert [f.name for f, _ in chunk.ListFields()] == ["sealed_result", "receipt_json"]
    assert json.loads(chunk.receipt_json)["seq"] >= 0  # the receipt: log positions, no data
    assert not chunk.rows and not chunk.key_columns and not chunk.result_digest
    assert not chunk.settings and not chunk.privacy
    # Nothing of the table in clear: neither its column names, statuses nor its JSON form.
    wire_bytes = response.SerializeToString()
    for marker in (b"mean_income", b"count", b"released", b'"rows"', b"value_columns"):
        assert marker not in wire_bytes
    # The seal opens with the researcher's key, bound to this job and its spec digest.
    job_id = response.job.job_id
    table = ResultTable.from_json(
        json.loads(unseal(chunk.sealed_result, key_a, job_id=job_id, spec_digest=SPEC.digest()))
    )
    assert table.key_columns == ("married",)
    assert sum(r.cells[0].value or 0 for r in table.rows) == 1000
    # WaitJob and GetResult deliver the same way.
    wait = stub.WaitJob(
        jobs_pb2.WaitJobRequest(job_id=job_id, include_result=True),
        metadata=bearer(world, "ana"),
        timeout=10,
    )
    assert {f.name for f, _ in wait.result.ListFields()} == SEALED_FIELDS
    chunks = list(
        stub.GetResult(
            jobs_pb2.GetResultRequest(job_id=job_id), metadata=bearer(world, "ana"), timeout=10
        )
    )
    assert all({f.name for f, _ in c.ListFields()} <= SEALED_FIELDS for c in chunks)
    # A fresh seal each time (fresh AES key and nonce), all opening to the same table.
    blobs = [
        chunk.sealed_result,
        wait.result.sealed_result,
        b"".join(c.sealed_result for c in chunks),
    ]
    assert len(set(blobs)) == 3
    for blob in blobs:
        opened = unseal(blob, key_a, job_id=job_id, spec_digest=SPEC.digest())
        assert ResultTable.from_json(json.loads(opened)) == table


def test_a_result_sealed_for_a_cannot_be_opened_by_b(
    world: World, key_a: RsaKey, key_b: RsaKey, stub
) -> None:
    registered(world, key_a, "ana")
    registered(world, key_b, "bob")
    response = submit_raw(stub, world, "ana")
    blob, job_id = response.result.sealed_result, response.job.job_id
    with pytest.raises(SealBroken):
        unseal(blob, key_b, job_id=job_id, spec_digest=SPEC.digest())
    # Bound to the job and its spec: A's own key fails under another job id or spec digest.
    with pytest.raises(SealBroken):
        unseal(blob, key_a, job_id="0" * 32, spec_digest=SPEC.digest())
    other = JobSpec("pums", "p1", "research", (Aggregate(AggFunc.COUNT),), ("sex",))
    with pytest.raises(SealBroken):
        unseal(blob, key_a, job_id=job_id, spec_digest=other.digest())
    # Ana's own client holding B's key is refused by the server: it names a key that is not
    # the one registered for ana, and nothing is sealed to it.
    ana_with_b = world.client("ana", private_key=key_b)
    with pytest.raises(KeyMismatch) as err:
        ana_with_b.job(job_id).result(timeout=10)
    assert err.value.code == "PERMISSION_DENIED"
    assert "registered" in err.value.message
    # An admin may look at any job, but gets only the seal made for ana.
    root = world.client("root")
    with pytest.raises(PrivateKeyRequired):
        root._result(job_id)
    admin_chunks = list(
        stub.GetResult(
            jobs_pb2.GetResultRequest(job_id=job_id), metadata=bearer(world, "root"), timeout=10
        )
    )
    admin_blob = b"".join(c.sealed_result for c in admin_chunks)
    assert unseal(admin_blob, key_a, job_id=job_id, spec_digest=SPEC.digest())
    with pytest.raises(SealBroken):
        unseal(admin_blob, key_b, job_id=job_id, spec_digest=SPEC.digest())


def test_a_request_naming_another_key_is_refused(
    world: World, key_a: RsaKey, key_b: RsaKey, stub
) -> None:
    ana = registered(world, key_a)
    bob = registered(world, key_b, "bob")
    before = ana.quota("p1").jobs_total
    # Naming B's (registered, valid) key for ana's job: refused before anything runs.
    with pytest.raises(grpc.RpcError) as err:
        submit_raw(stub, world, "ana", expected=fp(key_b))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "registered" in (err.value.details() or "")
    assert ana.quota("p1").jobs_total == before and ana.jobs() == []
    # Not a fingerprint at all: invalid.
    with pytest.raises(grpc.RpcError) as err:
        submit_raw(stub, world, "ana", expected="not-a-fingerprint")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # WaitJob and GetResult of a finished job, naming B's key: refused, no result.
    job_id = ana.run(SPEC, timeout=30).job_id
    for call in (
        lambda: stub.WaitJob(
            jobs_pb2.WaitJobRequest(
                job_id=job_id, include_result=True, expected_key_fingerprint=fp(key_b)
            ),
            metadata=bearer(world, "ana"),
            timeout=10,
        ),
        lambda: list(
            stub.GetResult(
                jobs_pb2.GetResultRequest(job_id=job_id, expected_key_fingerprint=fp(key_b)),
                metadata=bearer(world, "ana"),
                timeout=10,
            )
        ),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Bob, asserting his own key, still sees nothing of ana's job.
    with pytest.raises(NotFound):
        bob.job(job_id)
    # A researcher without a registered key who holds one is refused too (no plaintext
    # fallback, no sealing to the key the client holds).
    world.add_principal("carol", Role.RESEARCHER)
    world.project("p2", (("pums", "research"),), members=("carol",))
    carol = world.client("carol", private_key=key_b)
    with pytest.raises(KeyMismatch) as mismatch:
        carol.run(replace(SPEC, project="p2"))
    assert "no public key is registered for 'carol'" in mismatch.value.message
    assert carol.jobs() == []


def test_a_client_without_its_key_is_told_to_pass_it(world: World, key_a: RsaKey) -> None:
    registered(world, key_a)
    keyless = world.client("ana")
    with pytest.raises(PrivateKeyRequired) as err:
        keyless.sql(SQL, project="p1", purpose="research")
    assert "private_key" in err.value.message and "load_private_key" in err.value.message
    assert err.value.job_id
    # The job ran and its result stays sealed: the key opens it afterwards.
    assert world.client("ana", private_key=key_a).job(err.value.job_id).result(timeout=10).sealed


def test_sealed_results_through_get_result_in_several_chunks(world_factory, key_a: RsaKey) -> None:
    # A small message limit: the seal exceeds one chunk, so it is not returned inline and
    # GetResult streams it in pieces, which the client joins and opens.
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv", k=1)},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
        max_message_bytes=4096,
    )
    world.register("pums")
    world.project("p1", (("pums", "research"),), members=("ana", "bob"))
    ana = registered(world, key_a)
    spec = JobSpec("pums", "p1", "research", (Aggregate(AggFunc.COUNT),), ("age",))
    job = ana.submit(spec)
    result = job.result(timeout=30)
    assert result.sealed
    plain = world.client("bob").run(spec, timeout=30)
    assert result.digest == plain.digest and len(result.table.rows) > 50
    with grpc.insecure_channel(world.target) as channel:
        chunks = list(
            jobs_pb2_grpc.JobServiceStub(channel).GetResult(
                jobs_pb2.GetResultRequest(job_id=job.job_id),
                metadata=bearer(world, "ana"),
                timeout=10,
            )
        )
    assert len(chunks) > 1
    assert all({f.name for f, _ in c.ListFields()} <= SEALED_FIELDS for c in chunks)
    assert all(len(c.sealed_result) <= 2048 for c in chunks)
    # The client's GetResult path (no inline result) opens it too.
    assert ana._result(job.job_id).digest == plain.digest


# ---- registering keys ---------------------------------------------------------------------------
def test_weak_and_malformed_keys_are_refused(world: World) -> None:
    ana = world.client("ana")
    weak = RSA.generate(2048).public_key().export_key(format="PEM")
    with pytest.raises(KeyInvalid) as err:
        ana.register_public_key(weak)
    assert "3072" in err.value.message and err.value.code == "INVALID_ARGUMENT"
    for bad in (b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"):
        with pytest.raises(KeyInvalid):
            ana.register_public_key(bad)
    with pytest.raises(KeyInvalid):
        ana.register_public_key(b"-" * 20_000)
    assert ana.public_key_fingerprint() is None
    events = [r.entry["event"] for r in world.client("chen").audit_entries()]
    assert not any(e.startswith("principal.key_") for e in events)
    # Results stay plaintext for a researcher whose registration failed.
    assert not ana.run(SPEC, timeout=30).sealed


def test_only_researchers_register_keys(world: World, key_a: RsaKey) -> None:
    pem = export_public_key(key_a)
    for name in ("sam", "chen", "root"):
        with pytest.raises(PermissionDenied):
            world.client(name).register_public_key(pem)


def test_key_replacement_is_audited_and_takes_effect(
    world: World, key_a: RsaKey, key_b: RsaKey
) -> None:
    old = registered(world, key_a)
    assert old.public_key_fingerprint() == fp(key_a)
    first = old.run(SPEC, timeout=30)
    assert first.sealed
    # Registering the same key again changes nothing and logs nothing new.
    assert old.register_public_key() == fp(key_a)
    new = registered(world, key_b)  # ana replaces her key
    assert new.public_key_fingerprint() == fp(key_b)
    entries = [
        r.entry
        for r in world.client("chen").audit_entries()
        if r.entry["event"].startswith("principal.key_")
    ]
    assert [e["event"] for e in entries] == ["principal.key_registered", "principal.key_replaced"]
    assert entries[0]["fingerprint"] == fp(key_a) and entries[0]["principal"] == "ana"
    assert entries[1]["fingerprint"] == fp(key_b)
    assert entries[1]["replaced_fingerprint"] == fp(key_a)
    assert entries[1]["bits"] == 3072 and entries[1]["actor"] == "ana"
    assert world.client("chen").audit_verify().ok
    # From now on results (also of the earlier job) are sealed to the new key only.
    with pytest.raises(KeyMismatch):
        old.job(first.job_id).result(timeout=10)
    again = new.job(first.job_id).result(timeout=10)
    assert again.sealed and again.digest == first.digest
