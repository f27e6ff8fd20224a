"""Thin gRPC servicers: authenticate (interceptor) → convert → call the app → convert back."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from sandbox import _wire as wire
from sandbox._app import Sandbox
from sandbox._errors import InvalidArgument
from sandbox._model import JobInfo, JobState, ResultTable
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
)
from sandbox.audit import canonical_json
from sandbox.mock import mock_rows
from sandbox.server._auth import current_principal
from sandbox.server._status import rpc


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):  # type: ignore[misc]
    def __init__(self, app: Sandbox) -> None:
        self.app = app

    @rpc
    def ListDatasets(self, request: Any, context: Any) -> catalog_pb2.ListDatasetsResponse:
        datasets = self.app.list_datasets(current_principal())
        return catalog_pb2.ListDatasetsResponse(datasets=[wire.dataset_to_pb(d) for d in datasets])

    @rpc
    def DescribeDataset(self, request: Any, context: Any) -> catalog_pb2.Dataset:
        return wire.dataset_to_pb(self.app.describe_dataset(current_principal(), request.dataset))

    @rpc
    def RegisterDataset(self, request: Any, context: Any) -> catalog_pb2.Dataset:
        return wire.dataset_to_pb(self.app.register_dataset(current_principal(), request.dataset))

    @rpc
    def MockRows(self, request: Any, context: Any) -> Iterator[catalog_pb2.MockRowsChunk]:
        """Synthetic rows from the dataset's public description (``describe``), never its data.

        Visibility is ``describe``'s: an unknown or unseen dataset is the same NOT_FOUND. The
        whole table is built (and any error raised) before the first chunk is sent.
        """
        req = wire.mock_request_from_pb(request)
        info = self.app.describe_dataset(current_principal(), req.dataset)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**63)
        table = mock_rows(
            info,
            req.n,
            seed=seed,
            job=req.job,
            matching=req.matching,
            limit=self.app.config.max_mock_rows,
        )
        max_bytes = min(wire.MOCK_CHUNK_BYTES, self.app.config.max_message_bytes // 2)
        return iter(wire.mock_to_chunks(table, seed, max_bytes))


class JobServicer(jobs_pb2_grpc.JobServiceServicer):  # type: ignore[misc]
    def __init__(self, app: Sandbox, process_port: Callable[[], int] = lambda: 0) -> None:
        self.app = app
        self._process_port = process_port

    def _wait_seconds(self, requested: float, context: Any) -> float:
        timeout = min(max(requested, 0.0), self.app.config.max_wait_s)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(0.0, remaining - 0.05))
        return float(timeout)

    def _chunks(
        self, info: JobInfo, table: ResultTable, expected_key: str
    ) -> list[jobs_pb2.ResultChunk]:
        """The released table as it leaves the server: sealed to the submitter's registered
        key when there is one (nothing else is sent then), else in plaintext."""
        blob = self.app.seal_result(info, table, expected_key)
        if blob is None:
            chunks = list(wire.result_to_chunks(table))
        else:
            max_bytes = min(wire.SEALED_CHUNK_BYTES, self.app.config.max_message_bytes // 2)
            chunks = wire.sealed_to_chunks(blob, max_bytes)
        receipt = self.app.jobs.receipt_of(info)  # info came through a visibility check
        if receipt is not None and chunks:
            chunks[0].receipt_json = json.dumps(receipt, sort_keys=True)
        return chunks

    def _wait(
        self,
        job_id: str,
        seconds: float,
        include_result: bool,
        expected_key: str,
        known: JobInfo | None = None,
    ) -> tuple[jobs_pb2.Job, jobs_pb2.ResultChunk | None]:
        """Long-poll; the whole released table as one chunk if wanted, ready and small enough.
        ``known``: the job's record as this request just submitted it."""
        info, table = self.app.jobs.wait_for_result(
            current_principal(), job_id, seconds, with_result=include_result, known=known
        )
        if table is None or len(table.rows) > wire.ROWS_PER_CHUNK:
            return wire.job_to_pb(info), None
        chunks = self._chunks(info, table, expected_key)
        return wire.job_to_pb(info), chunks[0] if len(chunks) == 1 else None

    @rpc
    def SubmitJob(self, request: Any, context: Any) -> jobs_pb2.SubmitJobResponse:
        principal = current_principal()
        # Before anything is charged or run: the client's key must be the one registered.
        self.app.check_result_key(principal.name, request.expected_key_fingerprint)
        spec = wire.spec_from_pb(request.spec)
        info = self.app.submit(principal, spec, request.request_id)
        wait = self._wait_seconds(request.wait_seconds, context)
        if info.state == JobState.AWAITING_APPROVAL:  # waits for people, not for the engine
            return jobs_pb2.SubmitJobResponse(job=wire.job_to_pb(info))
        if info.state.terminal or wait > 0 or request.include_result:
            job, result = self._wait(
                info.job_id, wait, request.include_result, request.expected_key_fingerprint, info
            )
        else:
            job, result = wire.job_to_pb(info), None
        return jobs_pb2.SubmitJobResponse(job=job, result=result)

    @rpc
    def GetJob(self, request: Any, context: Any) -> jobs_pb2.Job:
        return wire.job_to_pb(self.app.jobs.get(current_principal(), request.job_id))

    @rpc
    def WaitJob(self, request: Any, context: Any) -> jobs_pb2.WaitJobResponse:
        expected = request.expected_key_fingerprint
        if expected:  # refused at once, not after the wait
            info = self.app.jobs.get(current_principal(), request.job_id)
            self.app.check_result_key(info.principal, expected)
        timeout = self._wait_seconds(request.timeout_seconds, context)
        job, result = self._wait(request.job_id, timeout, request.include_result, expected)
        return jobs_pb2.WaitJobResponse(job=job, result=result)

    @rpc
    def CancelJob(self, request: Any, context: Any) -> jobs_pb2.Job:
        return wire.job_to_pb(self.app.jobs.cancel(current_principal(), request.job_id))

    @rpc
    def ListJobs(self, request: Any, context: Any) -> jobs_pb2.ListJobsResponse:
        jobs = self.app.jobs.find(current_principal(), request.project, request.limit or 100)
        return jobs_pb2.ListJobsResponse(jobs=[wire.job_to_pb(j) for j in jobs])

    @rpc
    def EstimateJob(self, request: Any, context: Any) -> jobs_pb2.JobEstimate:
        spec = wire.spec_from_pb(request.spec)
        return wire.estimate_to_pb(self.app.estimate(current_principal(), spec))

    @rpc
    def GetResult(self, request: Any, context: Any) -> Iterator[jobs_pb2.ResultChunk]:
        principal = current_principal()
        table = self.app.result(principal, request.job_id)
        info = self.app.jobs.get(principal, request.job_id)
        return iter(self._chunks(info, table, request.expected_key_fingerprint))

    @rpc
    def GetProcessPort(self, request: Any, context: Any) -> jobs_pb2.GetProcessPortResponse:
        return jobs_pb2.GetProcessPortResponse(port=self._process_port())


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):  # type: ignore[misc]
    def __init__(self, app: Sandbox) -> None:
        self.app = app

    @rpc
    def RegisterPublicKey(self, request: Any, context: Any) -> keys_pb2.PublicKeyInfo:
        info = self.app.register_public_key(current_principal(), request.public_key_pem)
        return wire.key_info_to_pb(info)

    @rpc
    def GetPublicKey(self, request: Any, context: Any) -> keys_pb2.PublicKeyInfo:
        return wire.key_info_to_pb(self.app.public_key_info(current_principal()))


class ProjectServicer(projects_pb2_grpc.ProjectServiceServicer):  # type: ignore[misc]
    def __init__(self, app: Sandbox) -> None:
        self.app = app

    @rpc
    def CreateProject(self, request: Any, context: Any) -> projects_pb2.Project:
        project = wire.project_from_pb(request.project)
        return wire.project_to_pb(self.app.create_project(current_principal(), project))

    @rpc
    def ListProjects(self, request: Any, context: Any) -> projects_pb2.ListProjectsResponse:
        projects = self.app.list_projects(current_principal())
        return projects_pb2.ListProjectsResponse(projects=[wire.project_to_pb(p) for p in projects])

    @rpc
    def SetQuota(self, request: Any, context: Any) -> projects_pb2.Project:
        quota = wire.quota_from_pb(request.quota)
        return wire.project_to_pb(self.app.set_quota(current_principal(), request.project, quota))

    @rpc
    def GetQuota(self, request: Any, context: Any) -> projects_pb2.QuotaUsage:
        return wire.usage_to_pb(self.app.quota(current_principal(), request.project))

    @rpc
    def UpdateProject(self, request: Any, context: Any) -> projects_pb2.Project:
        project_id, update = wire.update_from_pb(request)
        return wire.project_to_pb(self.app.update_project(current_principal(), project_id, update))

    @rpc
    def ExpireProject(self, request: Any, context: Any) -> projects_pb2.Project:
        expired = self.app.expire_project(current_principal(), request.project, request.reason)
        return wire.project_to_pb(expired)

    @rpc
    def RevokeProject(self, request: Any, context: Any) -> projects_pb2.RevokeProjectResponse:
        project, stopped = self.app.revoke_project(
            current_principal(), request.project, request.reason
        )
        return projects_pb2.RevokeProjectResponse(
            project=wire.project_to_pb(project), jobs_stopped=stopped
        )

    @rpc
    def RequestException(self, request: Any, context: Any) -> projects_pb2.ExceptionRequest:
        made = self.app.request_exception(
            current_principal(), request.job_id, tuple(request.rule_ids), request.justification
        )
        return wire.exception_to_pb(made)

    @rpc
    def ListExceptionRequests(
        self, request: Any, context: Any
    ) -> projects_pb2.ListExceptionRequestsResponse:
        if request.limit < 0:
            raise InvalidArgument("limit must not be negative")
        found = self.app.list_exception_requests(
            current_principal(),
            wire.exception_state_from_pb(request.state),
            request.project,
            request.limit or 100,
        )
        return projects_pb2.ListExceptionRequestsResponse(
            requests=[wire.exception_to_pb(r) for r in found]
        )

    @rpc
    def DecideException(self, request: Any, context: Any) -> projects_pb2.ExceptionRequest:
        decided = self.app.decide_exception(
            current_principal(), request.request_id, request.grant, request.reason
        )
        return wire.exception_to_pb(decided)


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):  # type: ignore[misc]
    def __init__(self, app: Sandbox) -> None:
        self.app = app

    @rpc
    def ListAuditEntries(self, request: Any, context: Any) -> audit_pb2.ListAuditEntriesResponse:
        if request.limit < 0:
            raise InvalidArgument("limit must not be negative")
        after = request.after_seq if request.HasField("after_seq") else -1
        records = self.app.audit_entries(current_principal(), after, request.limit or 1000)
        return audit_pb2.ListAuditEntriesResponse(
            entries=[
                audit_pb2.AuditEntry(
                    seq=r.seq,
                    canonical_json=canonical_json(r.entry).decode(),
                    leaf_hash=r.leaf_hash,
                )
                for r in records
            ]
        )

    @rpc
    def VerifyAuditLog(self, request: Any, context: Any) -> audit_pb2.VerifyAuditLogResponse:
        report = self.app.audit_verify(current_principal())
        return audit_pb2.VerifyAuditLogResponse(
            ok=report.ok,
            size=report.size,
            root=report.root,
            has_first_bad_seq=report.first_bad_seq is not None,
            first_bad_seq=report.first_bad_seq or 0,
            problem=report.problem,
        )


def add_services(
    server: grpc.Server, app: Sandbox, process_port: Callable[[], int] = lambda: 0
) -> None:
    """Register every sandbox service (not health) on ``server``; ``process_port`` answers
    which process port a client should use (0: none)."""
    from sandbox.server._federation import add_federation_services  # it imports this module
    from sandbox.server._review import add_review_service  # it imports this module

    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(app), server)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(app, process_port), server)
    projects_pb2_grpc.add_ProjectServiceServicer_to_server(ProjectServicer(app), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(app), server)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(app), server)
    add_federation_services(server, app)
    add_review_service(server, app)
