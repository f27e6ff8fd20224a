"""The researcher's (and steward's, and reviewer's) Python client."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pandas as pd
from Crypto.PublicKey.RSA import RsaKey

from sandbox import _wire as wire
from sandbox._errors import (
    AwaitingApproval,
    InvalidArgument,
    JobCancelled,
    JobFailed,
    PrivateKeyRequired,
    SandboxError,
    Timeout,
    error_for_reason,
)
from sandbox._model import (
    AuditRecord,
    DatasetInfo,
    Estimate,
    ExceptionRequest,
    ExceptionState,
    JobInfo,
    JobSpec,
    JobState,
    PendingReview,
    Project,
    ProjectUpdate,
    QuotaLimits,
    QuotaUsage,
    ResultTable,
    VerifyReport,
)
from sandbox.api.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    projects_pb2,
    projects_pb2_grpc,
    review_pb2,
    review_pb2_grpc,
)
from sandbox.client._errors import raise_from_rpc
from sandbox.client._query import Query
from sandbox.client._result import Result
from sandbox.client._sql import sql_to_spec
from sandbox.crypto import export_public_key, unseal
from sandbox.crypto import load_private_key as _load_private_key
from sandbox.crypto._keys import key_fingerprint
from sandbox.mock import MockRequest

T = TypeVar("T")
_WAIT_SLICE_S = 10.0
_HOST_PORT = re.compile(r"(?:dns:///)?(\[[^\]]+\]|[^:/\[\]]+):\d+")


@dataclass(frozen=True)
class TLS:
    """TLS settings: a CA bundle to trust, and optionally a client certificate (mutual TLS)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""


class Client:
    """Connect to a sandbox server.

    Args:
        target: ``host:port``. A multi-process server with ``process_port_base`` set hands
            the client, on its first call, the port of one of its processes; later calls go
            there.
        token: bearer token printed by ``sandbox principals add``.
        tls: ``True`` for the system trust store, a ``TLS`` for a private CA / client cert,
            ``None``/``False`` for plaintext (local use only).
        timeout: default deadline in seconds for each call.
        private_key: the researcher's private key (see :meth:`load_private_key`). Once the
            public half is registered (:meth:`register_public_key`), the server seals every
            result of this researcher's jobs to it and the client opens them transparently.
            With a key, the client also asks the server to refuse any request whose result
            would not be sealed to it.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool | TLS | None = None,
        timeout: float = 30.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        private_key: RsaKey | None = None,
    ) -> None:
        if private_key is not None and not (
            isinstance(private_key, RsaKey) and private_key.has_private()
        ):
            raise InvalidArgument("private_key must be an RSA private key (load_private_key)")
        self._private_key = private_key
        self._key_fingerprint = key_fingerprint(private_key).hex() if private_key else ""
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 60_000),
            # A connection of its own: gRPC otherwise shares one TCP connection among all
            # channels to a target in the process, which a multi-process server cannot spread.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._credentials: grpc.ChannelCredentials | None = None
        if tls:
            settings = tls if isinstance(tls, TLS) else TLS()
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=settings.ca.read_bytes() if settings.ca else None,
                private_key=settings.key.read_bytes() if settings.key else None,
                certificate_chain=settings.cert.read_bytes() if settings.cert else None,
            )
            if settings.server_name:
                options.append(("grpc.ssl_target_name_override", settings.server_name))
        self._options = options
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._channels: list[grpc.Channel] = []
        self._bind(self._connect(target))
        # A host:port target may be moved, on the first call, to the port of the server
        # process the server hands this client (see ``_place``).
        self._host = match[1] if (match := _HOST_PORT.fullmatch(target)) else ""
        self._placing = threading.Lock()
        self._placed = not self._host

    def _connect(self, target: str) -> grpc.Channel:
        if self._credentials is not None:
            channel = grpc.secure_channel(target, self._credentials, options=self._options)
        else:
            channel = grpc.insecure_channel(target, options=self._options)
        self._channels.append(channel)
        return channel

    def _bind(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._projects = projects_pb2_grpc.ProjectServiceStub(self._channel)
        self._audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self._keys = keys_pb2_grpc.KeyServiceStub(self._channel)
        self._review = review_pb2_grpc.ReviewServiceStub(self._channel)

    @staticmethod
    def load_private_key(path: str | Path, passphrase: str | bytes) -> RsaKey:
        """Read a private key written by ``sandbox keys new`` (passphrase-protected PKCS#8).

        Raises:
            KeyPassphraseInvalid: wrong passphrase (or a damaged file).
            KeyInvalid: not an encrypted PKCS#8 RSA private key.
        """
        return _load_private_key(Path(path).expanduser().read_bytes(), passphrase)

    # ---- plumbing ----------------------------------------------------------------------
    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        if not self._placed:
            self._place()  # this call still goes the way it was going; the next ones move
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._unplace()
            raise_from_rpc(exc)

    def _place(self) -> None:
        """Once: ask the server which of its processes' own ports to use, and use it.

        A multi-process server shares one port, over which the kernel spreads connections
        unevenly; with ``process_port_base`` set it hands its processes' own ports out in
        turn. Without (port 0), or from a server that predates this, the client stays.
        """
        with self._placing:
            if self._placed:
                return
            try:
                response = self._jobs.GetProcessPort(
                    jobs_pb2.GetProcessPortRequest(),
                    timeout=self._timeout,
                    metadata=self._metadata,
                )
            except grpc.RpcError as exc:
                # Unreachable, or a bad token: the call itself reports it; asked again next time.
                self._placed = exc.code() == grpc.StatusCode.UNIMPLEMENTED
                return
            self._placed = True
            if response.port:
                self._bind(self._connect(f"{self._host}:{response.port}"))

    def _unplace(self) -> None:
        """Back to the target, to be placed anew on the next call: the process port this
        client was handed is unreachable (e.g. the server restarted without it)."""
        with self._placing:
            if self._channel is not self._channels[0]:
                abandoned = self._channel
                self._bind(self._channels[0])
                self._channels.remove(abandoned)
                abandoned.close()
                self._placed = False

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, info: JobInfo, chunks: list[jobs_pb2.ResultChunk]) -> Result:
        """The released table from result chunks: in plaintext, or unsealed with our key."""
        blob = wire.sealed_from_chunks(chunks)
        receipt = json.loads(chunks[0].receipt_json) if chunks and chunks[0].receipt_json else None
        if blob is None:
            table, digest = wire.result_from_chunks(chunks)
            return Result(info.job_id, table, digest, receipt=receipt)
        if self._private_key is None:
            raise PrivateKeyRequired(
                f"the result of job {info.job_id} is sealed to the public key registered for "
                f"'{info.principal}': pass your private key, e.g. Client(..., private_key="
                "Client.load_private_key('private_key.pem', passphrase))",
                job_id=info.job_id,
            )
        plaintext = unseal(
            blob, self._private_key, job_id=info.job_id, spec_digest=info.spec.digest()
        )
        try:
            table = ResultTable.from_json(json.loads(plaintext))
        except (ValueError, KeyError, TypeError):
            raise SandboxError("the sealed result does not hold a result table") from None
        return Result(info.job_id, table, table.digest(), sealed=True, receipt=receipt)

    # ---- researcher keys ---------------------------------------------------------------
    def register_public_key(self, public_key_pem: bytes | str | None = None) -> str:
        """Register (or replace) your public key; returns its fingerprint.

        Without an argument, the public half of this client's ``private_key`` is registered.
        From then on every result of your jobs leaves the server sealed to this key.
        """
        if public_key_pem is None:
            if self._private_key is None:
                raise InvalidArgument("pass a public key PEM, or create the client with a key")
            public_key_pem = export_public_key(self._private_key)
        pem = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
        req = keys_pb2.RegisterPublicKeyRequest(public_key_pem=pem)
        return wire.key_info_from_pb(self._call(self._keys.RegisterPublicKey, req)).fingerprint

    def public_key_fingerprint(self) -> str | None:
        """The fingerprint of the public key registered for you, or None."""
        resp = self._call(self._keys.GetPublicKey, keys_pb2.GetPublicKeyRequest())
        return wire.key_info_from_pb(resp).fingerprint or None

    # ---- catalogue ---------------------------------------------------------------------
    def datasets(self) -> list[DatasetInfo]:
        resp = self._call(self._catalog.ListDatasets, catalog_pb2.ListDatasetsRequest())
        return [wire.dataset_from_pb(d) for d in resp.datasets]

    def describe(self, dataset: str) -> DatasetInfo:
        req = catalog_pb2.DescribeDatasetRequest(dataset=dataset)
        return wire.dataset_from_pb(self._call(self._catalog.DescribeDataset, req))

    def register_dataset(self, dataset: str) -> DatasetInfo:
        """Steward: register (or refresh) a dataset from its policy file on the server."""
        req = catalog_pb2.RegisterDatasetRequest(dataset=dataset)
        return wire.dataset_from_pb(self._call(self._catalog.RegisterDataset, req, timeout=600))

    def mock(
        self,
        dataset: str,
        n: int = 100,
        *,
        job: JobSpec | Query | None = None,
        seed: int | None = None,
        matching: float = 1.0,
    ) -> pd.DataFrame:
        """``n`` synthetic rows shaped like ``dataset``, to develop a job against locally.

        The server generates them from the dataset's public description only (column types,
        roles, declared values, bins and bounds), never from its data. Hidden columns are left
        out; identifiers are synthetic ids. With ``job`` (a ``JobSpec`` or a ``Query``) every
        row satisfies its filters, or only a ``matching`` share of the rows, the others each
        breaking one filter. The same ``seed`` gives the same rows; without one the server
        picks a seed, reported in ``df.attrs["seed"]``. ``n`` is capped by the server
        (``max_mock_rows``, 100 000 by default).
        """
        spec: JobSpec | None
        if isinstance(job, Query):
            spec = JobSpec(
                dataset=job.dataset,
                project="",
                purpose="",
                aggregates=job.aggregates,
                group_by=job.group_by_columns,
                filters=job.filters,
            )
        else:
            spec = job
        req = wire.mock_request_to_pb(MockRequest(dataset, n, seed, spec, matching))
        try:
            stream = self._catalog.MockRows(req, timeout=self._timeout, metadata=self._metadata)
            table, used = wire.mock_from_chunks(stream)
        except grpc.RpcError as exc:
            raise_from_rpc(exc)
        frame: pd.DataFrame = table.to_pandas()
        frame.attrs.update({"dataset": dataset, "seed": used, "mock": True})
        return frame

    # ---- jobs --------------------------------------------------------------------------
    def query(self, dataset: str) -> Query:
        """Start a query builder: ``client.query("residents").where(...).group_by(...)``."""
        return Query(dataset)

    def _spec(self, job: JobSpec | Query, project: str | None, purpose: str | None) -> JobSpec:
        if isinstance(job, JobSpec):
            return job
        if not project or not purpose:
            raise SandboxError("a query needs project= and purpose=")
        return job.to_spec(project=project, purpose=purpose)

    def submit(
        self,
        job: JobSpec | Query,
        *,
        project: str | None = None,
        purpose: str | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Submit a job; returns at once with a handle. Idempotent on ``request_id``."""
        spec = self._spec(job, project, purpose)
        req = jobs_pb2.SubmitJobRequest(
            request_id=request_id or secrets.token_hex(16),
            spec=wire.spec_to_pb(spec),
            expected_key_fingerprint=self._key_fingerprint,
        )
        return Job(self, wire.job_from_pb(self._call(self._jobs.SubmitJob, req).job))

    def run(
        self,
        job: JobSpec | Query,
        *,
        project: str | None = None,
        purpose: str | None = None,
        timeout: float | None = None,
        progress: bool = False,
    ) -> Result:
        """Submit and block until the released result is available.

        A small job completes in one round trip: the server long-polls and returns the
        released table inline; otherwise this falls back to waiting on the job handle.
        """
        spec = self._spec(job, project, purpose)
        first_wait = 0.0 if progress else min(timeout if timeout is not None else 10.0, 10.0)
        req = jobs_pb2.SubmitJobRequest(
            request_id=secrets.token_hex(16),
            spec=wire.spec_to_pb(spec),
            wait_seconds=first_wait,
            include_result=True,
            expected_key_fingerprint=self._key_fingerprint,
        )
        started = time.monotonic()
        resp = self._call(self._jobs.SubmitJob, req, timeout=first_wait + self._timeout)
        info = wire.job_from_pb(resp.job)
        if resp.HasField("result"):
            return self._open(info, [resp.result])
        if info.state == JobState.AWAITING_APPROVAL:
            # Human review may take days: say so now; fetch it later with client.job(id).
            raise AwaitingApproval(info.message, job_id=info.job_id)
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        return Job(self, info).result(left, progress=progress)

    def sql(
        self,
        sql: str,
        *,
        project: str,
        purpose: str,
        timeout: float | None = None,
        progress: bool = False,
    ) -> Result:
        """Run a query written in the documented SQL subset (see docs/sql.md)."""
        spec = sql_to_spec(sql, project=project, purpose=purpose)
        return self.run(spec, timeout=timeout, progress=progress)

    def estimate(
        self,
        job: JobSpec | Query,
        *,
        project: str | None = None,
        purpose: str | None = None,
    ) -> Estimate:
        """Preview a job without running it: the verdict with reasons, the quota and ε it would
        cost, and the suppression pattern it gets on mock rows (``Estimate.predicted``)."""
        spec = self._spec(job, project, purpose)
        req = jobs_pb2.EstimateJobRequest(spec=wire.spec_to_pb(spec))
        return wire.estimate_from_pb(self._call(self._jobs.EstimateJob, req))

    preview = estimate

    def prepare(
        self,
        job: JobSpec | Query,
        *,
        project: str | None = None,
        purpose: str | None = None,
    ) -> PreparedJob:
        """A job checked and bound to this client but not sent yet: preview it, then submit or
        run it (``project=``/``purpose=`` are needed for a ``Query``)."""
        return PreparedJob(self, self._spec(job, project, purpose))

    def prepare_sql(self, sql: str, *, project: str, purpose: str) -> PreparedJob:
        """:meth:`prepare` for a query in the documented SQL subset (see docs/sql.md)."""
        return PreparedJob(self, sql_to_spec(sql, project=project, purpose=purpose))

    def job(self, job_id: str) -> Job:
        return Job(self, self._get(job_id))

    def jobs(self, project: str = "", limit: int = 100) -> list[JobInfo]:
        req = jobs_pb2.ListJobsRequest(project=project, limit=limit)
        return [wire.job_from_pb(j) for j in self._call(self._jobs.ListJobs, req).jobs]

    def _get(self, job_id: str) -> JobInfo:
        return wire.job_from_pb(
            self._call(self._jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))
        )

    def _wait(
        self, job_id: str, seconds: float, include_result: bool = False
    ) -> tuple[JobInfo, Result | None]:
        req = jobs_pb2.WaitJobRequest(
            job_id=job_id,
            timeout_seconds=seconds,
            include_result=include_result,
            expected_key_fingerprint=self._key_fingerprint,
        )
        resp = self._call(self._jobs.WaitJob, req, timeout=seconds + self._timeout)
        info = wire.job_from_pb(resp.job)
        return info, self._open(info, [resp.result]) if resp.HasField("result") else None

    def _cancel(self, job_id: str) -> JobInfo:
        req = jobs_pb2.CancelJobRequest(job_id=job_id)
        return wire.job_from_pb(self._call(self._jobs.CancelJob, req))

    def _result(self, job_id: str, info: JobInfo | None = None) -> Result:
        req = jobs_pb2.GetResultRequest(
            job_id=job_id, expected_key_fingerprint=self._key_fingerprint
        )
        try:
            stream = self._jobs.GetResult(req, timeout=self._timeout, metadata=self._metadata)
            chunks = list(stream)
        except grpc.RpcError as exc:
            raise_from_rpc(exc)
        if info is None and wire.sealed_from_chunks(chunks) is not None:
            info = self._get(job_id)  # the spec digest the seal is bound to
        if info is None:
            table, digest = wire.result_from_chunks(chunks)
            return Result(job_id, table, digest)
        return self._open(info, chunks)

    # ---- projects ----------------------------------------------------------------------
    def quota(self, project: str) -> QuotaUsage:
        req = projects_pb2.GetQuotaRequest(project=project)
        return wire.usage_from_pb(self._call(self._projects.GetQuota, req))

    def projects(self) -> list[Project]:
        resp = self._call(self._projects.ListProjects, projects_pb2.ListProjectsRequest())
        return [wire.project_from_pb(p) for p in resp.projects]

    def create_project(self, project: Project) -> Project:
        req = projects_pb2.CreateProjectRequest(project=wire.project_to_pb(project))
        return wire.project_from_pb(self._call(self._projects.CreateProject, req))

    def set_quota(self, project: str, quota: QuotaLimits) -> Project:
        req = projects_pb2.SetQuotaRequest(project=project, quota=wire.quota_to_pb(quota))
        return wire.project_from_pb(self._call(self._projects.SetQuota, req))

    def update_project(self, project: str, update: ProjectUpdate) -> Project:
        """Steward: change members, grants (and their expiry), title, expiry or quota."""
        req = wire.update_to_pb(project, update)
        return wire.project_from_pb(self._call(self._projects.UpdateProject, req))

    def expire_project(self, project: str, reason: str = "") -> Project:
        """Steward: end the project now (its last day becomes yesterday)."""
        req = projects_pb2.ExpireProjectRequest(project=project, reason=reason)
        return wire.project_from_pb(self._call(self._projects.ExpireProject, req))

    def revoke_project(self, project: str, reason: str = "") -> tuple[Project, int]:
        """Steward: revoke the project (final) and stop its jobs; how many were stopped."""
        req = projects_pb2.RevokeProjectRequest(project=project, reason=reason)
        resp = self._call(self._projects.RevokeProject, req)
        return wire.project_from_pb(resp.project), int(resp.jobs_stopped)

    # ---- exceptions to policy refusals -----------------------------------------------
    def request_exception(
        self, job_id: str, rule_ids: list[str] | tuple[str, ...], justification: str
    ) -> ExceptionRequest:
        """Ask for an exception to the policy refusal of your job ``job_id``, waiving
        ``rule_ids`` (from ``job.info.rule_ids``). If granted, it admits that same job once."""
        req = projects_pb2.RequestExceptionRequest(
            job_id=job_id, rule_ids=list(rule_ids), justification=justification
        )
        return wire.exception_from_pb(self._call(self._projects.RequestException, req))

    def exception_requests(
        self, state: ExceptionState | None = None, project: str = "", limit: int = 100
    ) -> list[ExceptionRequest]:
        """Exception requests, newest first (a researcher sees their own)."""
        req = projects_pb2.ListExceptionRequestsRequest(
            state=wire.exception_state_to_pb(state), project=project, limit=limit
        )
        resp = self._call(self._projects.ListExceptionRequests, req)
        return [wire.exception_from_pb(r) for r in resp.requests]

    def decide_exception(self, request_id: str, grant: bool, reason: str) -> ExceptionRequest:
        """Steward: grant or reject an exception request (never your own)."""
        req = projects_pb2.DecideExceptionRequest(request_id=request_id, grant=grant, reason=reason)
        return wire.exception_from_pb(self._call(self._projects.DecideException, req))

    # ---- human review (stewards) ---------------------------------------------------------
    def pending_reviews(self) -> list[PendingReview]:
        """Jobs waiting for human review, oldest first, with why and who approved so far."""
        resp = self._call(self._review.ListPendingReviews, review_pb2.ListPendingReviewsRequest())
        return [
            PendingReview(
                job=wire.job_from_pb(r.job),
                why=tuple(r.why),
                approvals_required=r.approvals_required,
                approved_by=tuple(r.approved_by),
            )
            for r in resp.reviews
        ]

    def review(self, job_id: str, *, approve: bool, reason: str) -> JobInfo:
        """Approve or reject a held job, with a reason (logged; shown on a rejection)."""
        req = review_pb2.DecideReviewRequest(job_id=job_id, approve=approve, reason=reason)
        return wire.job_from_pb(self._call(self._review.DecideReview, req))

    # ---- audit -------------------------------------------------------------------------
    def audit_entries(self, after_seq: int = -1, limit: int = 1000) -> list[AuditRecord]:
        req = audit_pb2.ListAuditEntriesRequest(after_seq=after_seq, limit=limit)
        resp = self._call(self._audit.ListAuditEntries, req)
        return [AuditRecord(e.seq, json.loads(e.canonical_json), e.leaf_hash) for e in resp.entries]

    def audit_verify(self) -> VerifyReport:
        resp = self._call(self._audit.VerifyAuditLog, audit_pb2.VerifyAuditLogRequest(), 600)
        return VerifyReport(
            ok=resp.ok,
            size=resp.size,
            root=resp.root,
            first_bad_seq=resp.first_bad_seq if resp.has_first_bad_seq else None,
            problem=resp.problem,
        )


class PreparedJob:
    """A job spec bound to a client, not sent yet (from :meth:`Client.prepare`).

    ``preview()`` says how it would fare without reading data or charging anything;
    ``submit()`` and ``run()`` then send it, as :meth:`Client.submit` and :meth:`Client.run`.
    """

    def __init__(self, client: Client, spec: JobSpec) -> None:
        self._client = client
        self._spec = spec

    @property
    def spec(self) -> JobSpec:
        """The job spec that preview, submit and run send."""
        return self._spec

    def preview(self) -> Estimate:
        """The verdict with reasons, the quota and ε cost and the predicted suppression
        pattern (see :meth:`Client.estimate`); charges nothing."""
        return self._client.estimate(self._spec)

    def submit(self, *, request_id: str | None = None) -> Job:
        """Submit the job; returns at once with a handle (see :meth:`Client.submit`)."""
        return self._client.submit(self._spec, request_id=request_id)

    def run(self, *, timeout: float | None = None, progress: bool = False) -> Result:
        """Submit and wait for the released result (see :meth:`Client.run`)."""
        return self._client.run(self._spec, timeout=timeout, progress=progress)

    def __repr__(self) -> str:
        spec = self._spec
        return f"PreparedJob(dataset={spec.dataset!r}, project={spec.project!r})"


class Job:
    """A future-like handle on a submitted job."""

    def __init__(self, client: Client, info: JobInfo) -> None:
        self._client = client
        self.info = info

    @property
    def job_id(self) -> str:
        return self.info.job_id

    @property
    def state(self) -> JobState:
        """Current state (refreshed from the server unless already terminal)."""
        if not self.info.state.terminal:
            self.info = self._client._get(self.job_id)
        return self.info.state

    def done(self) -> bool:
        return self.state.terminal

    def cancel(self) -> bool:
        """Ask the server to cancel; True if the job ends up cancelled."""
        self.info = self._client._cancel(self.job_id)
        if not self.info.state.terminal:
            self.wait(timeout=30)
        return self.info.state == JobState.CANCELLED

    def wait(self, timeout: float | None = None, *, progress: bool = False) -> JobInfo:
        """Block (server long-poll) until the job ends or ``timeout`` seconds pass."""
        self._wait(timeout, progress=progress, include_result=False)
        return self.info

    def _wait(
        self, timeout: float | None, *, progress: bool, include_result: bool
    ) -> Result | None:
        inline: Result | None = None
        slice_s = 1.0 if progress else _WAIT_SLICE_S
        deadline = None if timeout is None else time.monotonic() + timeout
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=100, desc=f"job {self.job_id[:8]}", unit="%")
        try:
            while not self.info.state.terminal:
                left = slice_s if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                self.info, inline = self._client._wait(
                    self.job_id, min(left, slice_s), include_result
                )
                if bar is not None:
                    bar.set_postfix_str(self.info.state.value)
                    bar.update(max(0, int(self.info.progress * 100) - bar.n))
        finally:
            if bar is not None:
                bar.close()
        return inline

    def result(self, timeout: float | None = None, *, progress: bool = False) -> Result:
        """Wait for the job, then fetch its released result; raises if it did not succeed."""
        inline = self._wait(timeout, progress=progress, include_result=True)
        info = self.info
        if info.state == JobState.SUCCEEDED:
            return inline or self._client._result(self.job_id, info)
        if not info.state.terminal:
            raise Timeout(f"job {self.job_id} still {info.state.value}", job_id=self.job_id)
        if info.state == JobState.CANCELLED:
            raise JobCancelled(info.message or "job was cancelled", job_id=self.job_id)
        cls = error_for_reason(info.reason) if info.reason else JobFailed
        raise cls(info.message, rule_ids=info.rule_ids, job_id=self.job_id)

    def __repr__(self) -> str:
        return f"Job(job_id={self.job_id!r}, state={self.info.state.value})"
