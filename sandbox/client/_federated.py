"""Running a federated job from the researcher's side: one call to the coordinator, which fans
the job out to the nodes and releases only the combined table (``sandbox.federation``)."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox import _wire as wire
from sandbox._model import JobSpec
from sandbox.api.v1 import federation_pb2, federation_pb2_grpc
from sandbox.client._client import Client
from sandbox.client._query import Query
from sandbox.client._result import Result


@dataclass(frozen=True)
class FederatedResult(Result):
    """A released federated table (as :class:`sandbox.client.Result`), and who contributed."""

    parties: tuple[str, ...] = ()
    """The nodes whose partials were combined."""
    missing: tuple[str, ...] = ()
    """Nodes that did not answer (only when the dataset's policy lets a job proceed)."""


def run_federated(
    client: Client,
    job: JobSpec | Query,
    *,
    project: str | None = None,
    purpose: str | None = None,
    timeout: float | None = None,
) -> FederatedResult:
    """Run a federated job on a coordinator and return its released table.

    ``client`` is connected to the coordinator; ``job`` names the federated dataset and the
    researcher's project and purpose there. Blocks until the nodes have answered (deadline:
    ``timeout``, by default the client's, at least 120 s). A sealed result is opened with the
    client's private key, as by ``Client.run``.
    """
    spec = client._spec(job, project, purpose)
    request = federation_pb2.RunFederatedJobRequest(
        spec=wire.spec_to_pb(spec), expected_key_fingerprint=client._key_fingerprint
    )
    stub = federation_pb2_grpc.FederationServiceStub(client._channel)
    wait = timeout if timeout is not None else max(client._timeout, 120.0)
    response = client._call(stub.RunFederatedJob, request, timeout=wait)
    result = client._open(wire.job_from_pb(response.job), list(response.result))
    return FederatedResult(
        result.job_id,
        result.table,
        result.digest,
        result.sealed,
        result.receipt,
        parties=tuple(response.parties),
        missing=tuple(response.missing),
    )
