"""gRPC side of federation: the node and coordinator servicers, and the coordinator's calls to
its nodes. Thin: convert, call ``sandbox.federation``, convert back.

Both services are always registered (``add_services`` calls :func:`add_federation_services`);
what they do comes from the server's federation config (``federation_config``): a node answers
only the coordinator principals it names, and a coordinator knows only the federated datasets
it lists. Without that config every call is refused (PERMISSION_DENIED / NOT_FOUND).
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

import grpc

from sandbox import _wire as wire
from sandbox._app import Sandbox
from sandbox._config import FederationConfig, FederationNodeConfig, load_federation_config
from sandbox._errors import InvalidArgument, Unavailable
from sandbox._model import Key
from sandbox.api.v1 import federation_pb2, federation_pb2_grpc
from sandbox.client._errors import raise_from_rpc
from sandbox.federation._coordinator import Coordinator
from sandbox.federation._encoding import JobEncoding
from sandbox.federation._node import FederationNode, PartialsReply, PartialsRequest
from sandbox.federation._paillier import JobPublicKey
from sandbox.server._auth import current_principal
from sandbox.server._status import rpc

_COORDINATORS: weakref.WeakKeyDictionary[Sandbox, Coordinator] = weakref.WeakKeyDictionary()
MAX_CIPHERTEXTS = 1 << 20
MAX_KEY_BYTES = 1024
"""Largest job modulus a node accepts: 8192 bits."""


# ---- conversion ---------------------------------------------------------------------------
def partials_request_to_pb(req: PartialsRequest) -> federation_pb2.PartialsRequest:
    return federation_pb2.PartialsRequest(
        federated_job_id=req.federated_job_id,
        party=req.party,
        spec=wire.spec_to_pb(req.spec),
        public_key=req.public_key.to_bytes(),
        encoding=req.encoding.to_json(),
        cells=[
            federation_pb2.CellKey(keys=[wire.key_to_pb(k) for k in cell]) for cell in req.cells
        ],
        query_set=req.query_set,
        on_behalf_of=req.on_behalf_of,
    )


def partials_request_from_pb(pb: federation_pb2.PartialsRequest) -> PartialsRequest:
    """Raises ``InvalidArgument`` for a malformed key, encoding or cell."""
    if len(pb.public_key) > MAX_KEY_BYTES:
        raise InvalidArgument(f"job keys have at most {MAX_KEY_BYTES * 8} bits")
    cells: list[tuple[Key, ...]] = []
    for cell in pb.cells:
        keys = tuple(wire.key_from_pb(k) for k in cell.keys)
        if any(not isinstance(k, str | int | float | bool) or k is None for k in keys):
            raise InvalidArgument("a federated cell key must be a value (no null or margin)")
        cells.append(keys)
    return PartialsRequest(
        federated_job_id=pb.federated_job_id,
        party=pb.party,
        spec=wire.spec_from_pb(pb.spec),
        public_key=JobPublicKey.from_bytes(pb.public_key),
        encoding=JobEncoding.from_json(pb.encoding),
        cells=tuple(cells),
        query_set=pb.query_set,
        on_behalf_of=pb.on_behalf_of,
    )


def partials_reply_to_pb(reply: PartialsReply) -> federation_pb2.PartialsResponse:
    return federation_pb2.PartialsResponse(
        party=reply.party,
        key_fingerprint=reply.key_fingerprint,
        encoding_fingerprint=reply.encoding_fingerprint,
        ciphertexts=list(reply.ciphertexts),
        digest=reply.digest,
        node_job_id=reply.node_job_id,
        policy_version=reply.policy_version,
        data_version=reply.data_version,
    )


def partials_reply_from_pb(pb: federation_pb2.PartialsResponse) -> PartialsReply:
    """As received: nothing is trusted yet (the coordinator validates every field)."""
    if len(pb.ciphertexts) > MAX_CIPHERTEXTS:
        raise InvalidArgument("too many ciphertexts")
    return PartialsReply(
        party=pb.party,
        key_fingerprint=bytes(pb.key_fingerprint),
        encoding_fingerprint=bytes(pb.encoding_fingerprint),
        ciphertexts=tuple(bytes(c) for c in pb.ciphertexts),
        digest=pb.digest,
        node_job_id=pb.node_job_id,
        policy_version=pb.policy_version,
        data_version=pb.data_version,
    )


# ---- servicers ----------------------------------------------------------------------------
class FederationNodeServicer(federation_pb2_grpc.FederationNodeServiceServicer):  # type: ignore[misc]
    def __init__(self, node: FederationNode) -> None:
        self.node = node

    @rpc
    def ComputePartials(self, request: Any, context: Any) -> federation_pb2.PartialsResponse:
        principal = current_principal()
        self.node.authorize(principal)  # before the request is even parsed
        reply = self.node.compute_partials(principal, partials_request_from_pb(request))
        return partials_reply_to_pb(reply)


class FederationServicer(federation_pb2_grpc.FederationServiceServicer):  # type: ignore[misc]
    def __init__(self, app: Sandbox, coordinator: Coordinator) -> None:
        self.app = app
        self.coordinator = coordinator

    @rpc
    def RunFederatedJob(self, request: Any, context: Any) -> federation_pb2.RunFederatedJobResponse:
        principal = current_principal()
        expected = request.expected_key_fingerprint
        self.app.check_result_key(principal.name, expected)  # before anything runs
        result = self.coordinator.run(principal, wire.spec_from_pb(request.spec))
        blob = self.app.seal_result(result.info, result.table, expected)
        if blob is None:
            chunks = list(wire.result_to_chunks(result.table))
        else:
            max_bytes = min(wire.SEALED_CHUNK_BYTES, self.app.config.max_message_bytes // 2)
            chunks = wire.sealed_to_chunks(blob, max_bytes)
        if chunks and result.release_seq >= 0:
            receipt = self.app.audit.receipt(result.release_seq).to_dict()
            chunks[0].receipt_json = json.dumps(receipt, sort_keys=True)
        return federation_pb2.RunFederatedJobResponse(
            job=wire.job_to_pb(result.info),
            result=chunks,
            parties=list(result.parties),
            missing=list(result.missing),
        )


# ---- the coordinator's calls to nodes -----------------------------------------------------
class GrpcNodeCaller:
    """``NodeCall`` over gRPC: one channel per node, kept open, each call with a deadline."""

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._channels: dict[str, tuple[grpc.Channel, Any]] = {}
        self._lock = threading.Lock()

    def _stub(self, node: FederationNodeConfig) -> Any:
        with self._lock:
            held = self._channels.get(node.name)
            if held is None:
                held = (
                    (channel := _channel(node, self._max)),
                    (federation_pb2_grpc.FederationNodeServiceStub(channel)),
                )
                self._channels[node.name] = held
            return held[1]

    def __call__(
        self, node: FederationNodeConfig, request: PartialsRequest, timeout: float
    ) -> PartialsReply:
        metadata = (("authorization", f"Bearer {node.token}"),) if node.token else ()
        try:
            pb = self._stub(node).ComputePartials(
                partials_request_to_pb(request), timeout=timeout, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise_from_rpc(exc)
        except (OSError, ValueError) as exc:
            raise Unavailable(f"node '{node.name}' cannot be reached") from exc
        return partials_reply_from_pb(pb)

    def close(self) -> None:
        with self._lock:
            for channel, _ in self._channels.values():
                channel.close()
            self._channels.clear()


def _channel(node: FederationNodeConfig, max_bytes: int) -> grpc.Channel:
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if node.tls or node.ca is not None or node.cert is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=node.ca.read_bytes() if node.ca else None,
            private_key=node.key.read_bytes() if node.key else None,
            certificate_chain=node.cert.read_bytes() if node.cert else None,
        )
        if node.server_name:
            options.append(("grpc.ssl_target_name_override", node.server_name))
        return grpc.secure_channel(node.target, creds, options=options)
    return grpc.insecure_channel(node.target, options=options)


def coordinator_of(app: Sandbox) -> Coordinator | None:
    """The coordinator registered for ``app`` (benchmarks read its ``last_timings``)."""
    return _COORDINATORS.get(app)


def federation_config_of(app: Sandbox) -> FederationConfig:
    path = getattr(app.config, "federation_config", None)
    return load_federation_config(path) if path is not None else FederationConfig()


def add_federation_services(server: Any, app: Sandbox) -> None:
    """Register the federation servicers on ``server`` (called from ``add_services``).

    Raises:
        ConfigError: the federation config or a federated dataset's policy is invalid.
        PolicyInvalid: a federated dataset's policy file fails validation.
    """
    config = federation_config_of(app)
    node = FederationNode(app, config.coordinators)
    coordinator = Coordinator(app, config, GrpcNodeCaller(app.config.max_message_bytes))
    _COORDINATORS[app] = coordinator
    federation_pb2_grpc.add_FederationNodeServiceServicer_to_server(
        FederationNodeServicer(node), server
    )
    federation_pb2_grpc.add_FederationServiceServicer_to_server(
        FederationServicer(app, coordinator), server
    )
