"""Federation attacks: a malicious node's malformed ciphertexts or fingerprints fail the job
before anything is decrypted; no RPC decrypts one node's partial; a node computes nothing its
own policy refuses, and nothing for a caller that is not its configured coordinator."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

import sandbox.federation._coordinator as coordinator_module
from sandbox._errors import (
    AggregateCorrupt,
    EncodingMismatch,
    InvalidArgument,
    InvalidCiphertext,
    JobKeyMismatch,
    PermissionDenied,
    PolicyDenied,
    SandboxError,
    ValueOutOfBound,
)
from sandbox._model import AggFunc, Aggregate, JobSpec, Role
from sandbox.api.v1 import (
    audit_pb2,
    catalog_pb2,
    federation_pb2,
    federation_pb2_grpc,
    jobs_pb2,
    keys_pb2,
    projects_pb2,
)
from sandbox.federation import (
    FieldSpec,
    JobEncoding,
    PartialsRequest,
    generate_job_keys,
    run_federated,
)
from sandbox.server._federation import partials_reply_from_pb, partials_request_to_pb
from tests.conftest import REPO, World
from tests.integration.test_federation import (
    FedDataset,
    spec,
    split_pums,
    start_coordinator,
    start_node,
)


class Evil(federation_pb2_grpc.FederationNodeServiceServicer):  # type: ignore[misc]
    """A node that runs the real east node's computation, then tampers with the answer."""

    def __init__(self, target: str, token: str) -> None:
        self.mode = ""
        self._channel = grpc.insecure_channel(target)
        self._stub = federation_pb2_grpc.FederationNodeServiceStub(self._channel)
        self._token = token

    def ComputePartials(self, request: Any, context: Any) -> Any:
        resp = self._stub.ComputePartials(
            request, timeout=30, metadata=(("authorization", f"Bearer {self._token}"),)
        )
        n = int.from_bytes(request.public_key, "big")
        size = len(resp.ciphertexts[0])
        cts = list(resp.ciphertexts)
        mode = self.mode
        if mode == "zero":
            cts[0] = bytes(size)
        elif mode == "n_square":
            cts[0] = (n * n).to_bytes(size, "big")
        elif mode == "above_n_square":
            cts[0] = (n * n + 1).to_bytes(size, "big")
        elif mode == "multiple_of_n":
            cts[0] = (n * 12345).to_bytes(size, "big")
        elif mode == "short":
            cts[0] = cts[0][1:]
        elif mode == "long":
            cts[0] = cts[0] + b"\x00"
        elif mode == "missing":
            cts = cts[:-1]
        elif mode == "extra":
            cts = [*cts, cts[0]]
        elif mode == "overflow":  # a valid ciphertext of a plaintext outside the slot layout
            plain = 1 << (n.bit_length() - 2)  # a bit above every slot
            cts[0] = ((1 + plain * n) % (n * n)).to_bytes(size, "big")
        if mode in ("zero", "n_square", "above_n_square", "multiple_of_n", "overflow"):
            digest = hashlib.sha256(b"".join(cts)).hexdigest()
        else:
            digest = resp.digest
        out = federation_pb2.PartialsResponse()
        out.CopyFrom(resp)
        del out.ciphertexts[:]
        out.ciphertexts.extend(cts)
        out.digest = digest
        if mode == "key_fingerprint":
            out.key_fingerprint = hashlib.sha256(b"another key").digest()
        elif mode == "encoding_fingerprint":
            out.encoding_fingerprint = hashlib.sha256(b"another encoding").digest()
        elif mode == "digest":
            out.digest = "0" * 64
        elif mode == "party":
            out.party = "north"
        return out


@dataclass
class Rig:
    nodes: dict[str, World]
    coordinator: World
    evil: Evil

    def run(self, job: JobSpec) -> Any:
        return run_federated(self.coordinator.client("ana"), job, timeout=60)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("federation-attacks")
    parts = split_pums(root / "parts")
    nodes: dict[str, World] = {}
    coordinator: World | None = None
    server = grpc.server(ThreadPoolExecutor(4))
    try:
        for i, name in enumerate(("north", "south", "east")):
            nodes[name] = start_node(root / name, parts[i])
        evil = Evil(nodes["east"].target, nodes["east"].tokens["coordinator"])
        federation_pb2_grpc.add_FederationNodeServiceServicer_to_server(evil, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        targets = {"north": nodes["north"].target, "south": nodes["south"].target}
        targets["evil"] = f"127.0.0.1:{port}"
        tokens = {n: nodes[n].tokens["coordinator"] for n in ("north", "south")}
        datasets = (FedDataset("pums", nodes=("north", "south", "evil")),)
        coordinator = start_coordinator(root / "coordinator", targets, tokens, datasets)
        yield Rig(nodes, coordinator, evil)
    finally:
        server.stop(0)
        for w in [*nodes.values(), *([coordinator] if coordinator else [])]:
            w.stop()


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the coordinator's only decryption (the servers run in this process)."""
    calls: list[int] = []
    real = coordinator_module.decrypt_combined

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(coordinator_module, "decrypt_combined", counting)
    return calls


def events(world: World, job_id: str) -> list[dict[str, Any]]:
    entries = world.client("chen").audit_entries(limit=100_000)
    return [r.entry for r in entries if r.entry.get("job_id") == job_id]


MALFORMED = {
    "zero": InvalidCiphertext,
    "n_square": InvalidCiphertext,
    "above_n_square": InvalidCiphertext,
    "multiple_of_n": InvalidCiphertext,
    "short": InvalidCiphertext,
    "long": InvalidCiphertext,
    "missing": EncodingMismatch,
    "extra": EncodingMismatch,
    "key_fingerprint": JobKeyMismatch,
    "encoding_fingerprint": EncodingMismatch,
    "digest": InvalidCiphertext,
    "party": InvalidCiphertext,
}


@pytest.mark.parametrize("mode", sorted(MALFORMED))
def test_malformed_answer_fails_the_job_before_any_decryption(
    rig: Rig, decryptions: list[int], mode: str
) -> None:
    rig.evil.mode = mode
    try:
        with pytest.raises(MALFORMED[mode], match="evil") as info:
            rig.run(spec(group_by=("sex",)))
    finally:
        rig.evil.mode = ""
    assert decryptions == []
    job = events(rig.coordinator, info.value.job_id)
    assert [e["event"] for e in job] == ["federation.accepted", "federation.failed"]
    assert job[1]["reason"] == MALFORMED[mode].reason


def test_the_rig_works_without_tampering(rig: Rig, decryptions: list[int]) -> None:
    result = rig.run(spec(group_by=("sex",)))
    assert set(result.parties) == {"north", "south", "evil"} and decryptions == [1]


def test_a_contribution_outside_the_slot_layout_is_detected(
    rig: Rig, decryptions: list[int]
) -> None:
    # A valid unit below n^2, but of a plaintext no honest encoding produces: the combined
    # total is decrypted (the sum of three parties) but fails decoding, and nothing is released.
    rig.evil.mode = "overflow"
    try:
        with pytest.raises(AggregateCorrupt) as info:
            rig.run(spec(group_by=("sex",)))
    finally:
        rig.evil.mode = ""
    assert decryptions == [1]
    assert [e["event"] for e in events(rig.coordinator, info.value.job_id)][-1] == (
        "federation.failed"
    )


# ---- no API path decrypts one node's partial ----------------------------------------------
def _fields(message: Descriptor, seen: set[str] | None = None) -> Iterator[FieldDescriptor]:
    seen = seen if seen is not None else set()
    if message.full_name in seen:
        return
    seen.add(message.full_name)
    for f in message.fields:
        yield f
        if f.message_type is not None:
            yield from _fields(f.message_type, seen)


def test_no_rpc_takes_ciphertexts_and_returns_plaintext() -> None:
    modules = (audit_pb2, catalog_pb2, federation_pb2, jobs_pb2, keys_pb2, projects_pb2)
    carrying = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                inputs = {f.name for f in _fields(method.input_type)}
                outputs = {f.name for f in _fields(method.output_type)}
                assert not any("cipher" in name for name in inputs), method.full_name
                if any("cipher" in name for name in outputs):
                    carrying.append(method.full_name)
    # Only the node's method returns ciphertexts (and it takes none).
    assert carrying == ["sandbox.api.v1.FederationNodeService.ComputePartials"]


def test_only_the_coordinator_core_decrypts() -> None:
    """Source scan: the only decryption is ``decrypt_combined`` (of ``combine``'s tagged
    output), called only by the coordinator; nothing else touches the phe secret key."""
    sources = {p: p.read_text() for p in (REPO / "sandbox").rglob("*.py") if "api/v1" not in str(p)}
    callers = {p.name for p, s in sources.items() if re.search(r"\bdecrypt_combined\(", s)}
    assert callers <= {"_paillier.py", "_coordinator.py"}
    raw = {p.name for p, s in sources.items() if re.search(r"raw_decrypt|\._phe\b", s)}
    assert raw == {"_paillier.py"}


# ---- what a node computes -----------------------------------------------------------------
def _request(
    world: World,
    job: JobSpec,
    *,
    fields: tuple[FieldSpec, ...] = (FieldSpec("persons", 0, 10**9),),
    cells: tuple[tuple[Any, ...], ...] = ((0,), (1,)),
    job_id: str = "",
) -> PartialsRequest:
    pub, _ = generate_job_keys()
    job_id = job_id or hashlib.sha256(repr((job, cells)).encode()).hexdigest()[:32]
    enc = JobEncoding(job_id, fields, cells=len(cells), max_parties=3)
    return PartialsRequest(job_id, "north", job, pub, enc, cells, on_behalf_of="ana")


def _ask(world: World, principal: str, req: PartialsRequest) -> Any:
    client = world.client(principal)
    stub = federation_pb2_grpc.FederationNodeServiceStub(client._channel)
    return client._call(stub.ComputePartials, partials_request_to_pb(req))


def node_spec(purpose: str = "research", *aggs: Aggregate) -> JobSpec:
    return JobSpec(
        dataset="pums",
        project="federation",
        purpose=purpose,
        aggregates=aggs or (Aggregate(AggFunc.COUNT, alias="rows"),),
        group_by=("sex",),
    )


def test_a_researcher_who_is_not_the_coordinator_gets_no_partials(rig: Rig) -> None:
    # With partials under a key of their own choosing, any researcher could decrypt them.
    north = rig.nodes["north"]
    north.add_principal("mallory", Role.RESEARCHER)
    north.project("mallory-p", (("pums", "research"),), members=("mallory",))
    req = _request(north, replace(node_spec(), project="mallory-p"))
    with pytest.raises(PermissionDenied, match="not a federation coordinator"):
        _ask(north, "mallory", req)
    assert not [
        r
        for r in north.client("chen").audit_entries(limit=100_000)
        if r.entry.get("actor") == "mallory" and r.entry["event"].startswith("job.")
    ]


def test_a_node_refuses_a_spec_its_policy_refuses(rig: Rig) -> None:
    north = rig.nodes["north"]
    denied = node_spec("demography", Aggregate(AggFunc.SUM, "income", alias="s"))
    req = _request(north, denied, fields=(FieldSpec("s", 0, 10**12, decimals=2),))
    with pytest.raises(PolicyDenied) as info:
        _ask(north, "coordinator", req)
    assert "deny.no-income-sum-demography" in info.value.rule_ids
    entries = [r.entry for r in north.client("chen").audit_entries(limit=100_000)]
    assert entries[-1]["event"] == "job.denied"


def test_a_node_refuses_a_group_outside_the_cells(rig: Rig) -> None:
    north = rig.nodes["north"]
    req = _request(north, node_spec(), cells=((0,),))  # sex 1 is in the data but not a cell
    with pytest.raises(PolicyDenied) as info:
        _ask(north, "coordinator", req)
    assert info.value.rule_ids == ("federation.cells",)


def test_a_node_refuses_values_outside_the_encoding_bounds(rig: Rig) -> None:
    north = rig.nodes["north"]
    req = _request(north, node_spec(), fields=(FieldSpec("persons", 0, 3),))
    with pytest.raises(ValueOutOfBound):
        _ask(north, "coordinator", req)


def test_a_node_answers_each_federated_job_once(rig: Rig) -> None:
    north = rig.nodes["north"]
    req = _request(north, node_spec(), job_id="f" * 32)
    reply = partials_reply_from_pb(_ask(north, "coordinator", req))
    assert reply.party == "north" and len(reply.ciphertexts) == 1
    again = replace(req, public_key=generate_job_keys()[0])
    with pytest.raises(InvalidArgument, match="already used"):
        _ask(north, "coordinator", again)


def test_a_node_refuses_non_additive_fields(rig: Rig) -> None:
    north = rig.nodes["north"]
    job = node_spec("research", Aggregate(AggFunc.MEAN, "income", alias="m"))
    req = _request(north, job, fields=(FieldSpec("m", 0, 10**9),))
    with pytest.raises(SandboxError, match="not an additive aggregate"):
        _ask(north, "coordinator", req)


def test_a_mean_over_a_measure_with_missing_values_is_refused() -> None:
    """The coordinator's mean is combined sum / combined rows: a node refuses a cell whose
    measure is missing in some rows (there sum / mean is not its row count)."""
    from sandbox.engine import RawCell, RawTable
    from sandbox.federation._node import cell_values

    job = JobSpec(
        dataset="pums",
        project="federation",
        purpose="research",
        aggregates=(
            Aggregate(AggFunc.COUNT, alias="rows"),
            Aggregate(AggFunc.SUM, "income", alias="sum_0"),
            Aggregate(AggFunc.MEAN, "income", alias="mean_0"),
        ),
        group_by=("sex",),
    )
    fields = (
        FieldSpec("persons", 0, 1000),
        FieldSpec("rows", 0, 1000),
        FieldSpec("sum_0", 0, 10**9, decimals=2),
    )
    req = _request_for(job, fields, ((0,), (1,)))
    complete = RawTable((RawCell((0,), 4, (4, 400.0, 100.0)), RawCell((1,), 2, (2, 0, 0.0))), None)
    assert cell_values(complete, req, 6) == [[4, 4, 400.0], [2, 2, 0]]
    gaps = RawTable((RawCell((0,), 4, (4, 300.0, 100.0)),), None)  # 3 values in 4 rows
    with pytest.raises(PolicyDenied) as info:
        cell_values(gaps, req, 6)
    assert info.value.rule_ids == ("federation.mean_missing",)
    outside = RawTable((RawCell((None,), 1, (1, 5.0, 5.0)),), None)  # a missing key
    with pytest.raises(PolicyDenied) as info:
        cell_values(outside, req, 6)
    assert info.value.rule_ids == ("federation.cells",)


def _request_for(
    job: JobSpec, fields: tuple[FieldSpec, ...], cells: tuple[tuple[Any, ...], ...]
) -> PartialsRequest:
    pub, _ = generate_job_keys()
    enc = JobEncoding("j" * 32, fields, cells=len(cells), max_parties=3)
    return PartialsRequest("j" * 32, "north", job, pub, enc, cells)
