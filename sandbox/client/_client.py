"""The researcher's (and steward's, and reviewer's) Python client."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pandas as pd

from sandbox import _wire as wire
from sandbox._errors import JobCancelled, JobFailed, SandboxError, Timeout, error_for_reason
from sandbox._model import (
    AuditRecord,
    DatasetInfo,
    Estimate,
    JobInfo,
    JobSpec,
    JobState,
    Project,
    QuotaLimits,
    QuotaUsage,
    VerifyReport,
)
from sandbox.api.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    projects_pb2,
    projects_pb2_grpc,
)
from sandbox.client._errors import raise_from_rpc
from sandbox.client._query import Query
from sandbox.client._result import Result
from sandbox.client._sql import sql_to_spec
from sandbox.mock import MockRequest

T = TypeVar("T")
_WAIT_SLICE_S = 10.0


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
        target: ``host:port``.
        token: bearer token printed by ``sandbox principals add``.
        tls: ``True`` for the system trust store, a ``TLS`` for a private CA / client cert,
            ``None``/``False`` for plaintext (local use only).
        timeout: default deadline in seconds for each call.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool | TLS | None = None,
        timeout: float = 30.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 60_000),
        ]
        if tls:
            settings = tls if isinstance(tls, TLS) else TLS()
            creds = grpc.ssl_channel_credentials(
                root_certificates=settings.ca.read_bytes() if settings.ca else None,
                private_key=settings.key.read_bytes() if settings.key else None,
                certificate_chain=settings.cert.read_bytes() if settings.cert else None,
            )
            if settings.server_name:
                options.append(("grpc.ssl_target_name_override", settings.server_name))
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._projects = projects_pb2_grpc.ProjectServiceStub(self._channel)
        self._audit = audit_pb2_grpc.AuditServiceStub(self._channel)

    # ---- plumbing ----------------------------------------------------------------------
    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise_from_rpc(exc)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            request_id=request_id or secrets.token_hex(16), spec=wire.spec_to_pb(spec)
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
        )
        started = time.monotonic()
        resp = self._call(self._jobs.SubmitJob, req, timeout=first_wait + self._timeout)
        info = wire.job_from_pb(resp.job)
        if resp.HasField("result"):
            return _inline_result(info.job_id, resp.result)
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
            job_id=job_id, timeout_seconds=seconds, include_result=include_result
        )
        resp = self._call(self._jobs.WaitJob, req, timeout=seconds + self._timeout)
        info = wire.job_from_pb(resp.job)
        return info, _inline_result(job_id, resp.result) if resp.HasField("result") else None

    def _cancel(self, job_id: str) -> JobInfo:
        req = jobs_pb2.CancelJobRequest(job_id=job_id)
        return wire.job_from_pb(self._call(self._jobs.CancelJob, req))

    def _result(self, job_id: str) -> Result:
        req = jobs_pb2.GetResultRequest(job_id=job_id)
        try:
            stream = self._jobs.GetResult(req, timeout=self._timeout, metadata=self._metadata)
            table, digest = wire.result_from_chunks(stream)
        except grpc.RpcError as exc:
            raise_from_rpc(exc)
        return Result(job_id, table, digest)

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


def _inline_result(job_id: str, chunk: jobs_pb2.ResultChunk) -> Result:
    table, digest = wire.result_from_chunks([chunk])
    return Result(job_id, table, digest)


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
            return inline or self._client._result(self.job_id)
        if not info.state.terminal:
            raise Timeout(f"job {self.job_id} still {info.state.value}", job_id=self.job_id)
        if info.state == JobState.CANCELLED:
            raise JobCancelled(info.message or "job was cancelled", job_id=self.job_id)
        cls = error_for_reason(info.reason) if info.reason else JobFailed
        raise cls(info.message, rule_ids=info.rule_ids, job_id=self.job_id)

    def __repr__(self) -> str:
        return f"Job(job_id={self.job_id!r}, state={self.info.state.value})"
