"""Every RPC by every role: a role that may not call an RPC gets PERMISSION_DENIED, always.

The table below is the access-control specification; an RPC missing from it fails the test, so
a new RPC must be classified. Requests are well formed (real dataset, project and job ids), so
that it is the role check, not input validation, that answers. For a role that may call an RPC
the test only requires that the answer is not a role refusal (it may still be NOT_FOUND, a
policy refusal, and so on). Compliance is read-only: it may read the log and nothing else
changes state.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

import grpc
import pytest

from sandbox import AggFunc, Aggregate, JobSpec, PermissionDenied, Role
from sandbox import _wire as wire
from sandbox.api.v1 import (
    audit_pb2,
    catalog_pb2,
    federation_pb2,
    jobs_pb2,
    keys_pb2,
    projects_pb2,
    review_pb2,
)
from sandbox.client._errors import raise_from_rpc
from sandbox.crypto import export_public_key, generate_key_pair
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.integration.test_server import bearer, call_raw

R, S, C, A = Role.RESEARCHER, Role.STEWARD, Role.COMPLIANCE, Role.ADMIN
EVERYONE = frozenset({R, S, C, A})
STEWARDS = frozenset({S, A})
AUDITORS = frozenset({C, A})
WHO = {R: "ana", S: "sam", C: "chen", A: "root"}
SPEC = JobSpec("pums", "census-study", "research", (Aggregate(AggFunc.COUNT),), ("sex",))

Build = Callable[[World, Role], object]

MATRIX: dict[str, tuple[frozenset[Role], Build]] = {
    "CatalogService/ListDatasets": (EVERYONE, lambda w, r: catalog_pb2.ListDatasetsRequest()),
    "CatalogService/DescribeDataset": (
        EVERYONE,
        lambda w, r: catalog_pb2.DescribeDatasetRequest(dataset="pums"),
    ),
    "CatalogService/RegisterDataset": (
        STEWARDS,
        lambda w, r: catalog_pb2.RegisterDatasetRequest(dataset="pums2"),  # not pums: see below
    ),
    "CatalogService/MockRows": (
        EVERYONE,
        lambda w, r: catalog_pb2.MockRowsRequest(dataset="pums", n=5),
    ),
    "JobService/SubmitJob": (
        frozenset({R}),
        lambda w, r: jobs_pb2.SubmitJobRequest(
            request_id=secrets.token_hex(8), spec=wire.spec_to_pb(SPEC)
        ),
    ),
    "JobService/GetJob": (EVERYONE, lambda w, r: jobs_pb2.GetJobRequest(job_id=_job(w))),
    "JobService/WaitJob": (EVERYONE, lambda w, r: jobs_pb2.WaitJobRequest(job_id=_job(w))),
    "JobService/CancelJob": (
        frozenset({R, A}),
        lambda w, r: jobs_pb2.CancelJobRequest(job_id=_job(w)),
    ),
    "JobService/ListJobs": (EVERYONE, lambda w, r: jobs_pb2.ListJobsRequest()),
    "JobService/GetResult": (EVERYONE, lambda w, r: jobs_pb2.GetResultRequest(job_id=_job(w))),
    "JobService/EstimateJob": (
        frozenset({R}),
        lambda w, r: jobs_pb2.EstimateJobRequest(spec=wire.spec_to_pb(SPEC)),
    ),
    "JobService/GetProcessPort": (EVERYONE, lambda w, r: jobs_pb2.GetProcessPortRequest()),
    "ProjectService/CreateProject": (
        STEWARDS,
        lambda w, r: projects_pb2.CreateProjectRequest(
            project=wire.project_to_pb(_project(f"new-{secrets.token_hex(4)}"))
        ),
    ),
    "ProjectService/ListProjects": (EVERYONE, lambda w, r: projects_pb2.ListProjectsRequest()),
    "ProjectService/SetQuota": (
        STEWARDS,
        lambda w, r: projects_pb2.SetQuotaRequest(project="spare"),
    ),
    "ProjectService/GetQuota": (
        EVERYONE,
        lambda w, r: projects_pb2.GetQuotaRequest(project="census-study"),
    ),
    "ProjectService/UpdateProject": (
        STEWARDS,
        lambda w, r: projects_pb2.UpdateProjectRequest(project="spare", title="Renamed"),
    ),
    "ProjectService/ExpireProject": (
        STEWARDS,
        lambda w, r: projects_pb2.ExpireProjectRequest(project=_spare(w), reason="done"),
    ),
    "ProjectService/RevokeProject": (
        STEWARDS,
        lambda w, r: projects_pb2.RevokeProjectRequest(project=_spare(w), reason="misuse"),
    ),
    "ProjectService/RequestException": (
        frozenset({R}),
        lambda w, r: projects_pb2.RequestExceptionRequest(
            job_id=_job(w), rule_ids=["deny.x"], justification="needed for the study"
        ),
    ),
    "ProjectService/ListExceptionRequests": (
        EVERYONE,
        lambda w, r: projects_pb2.ListExceptionRequestsRequest(),
    ),
    "ProjectService/DecideException": (
        STEWARDS,
        lambda w, r: projects_pb2.DecideExceptionRequest(
            request_id="unknown", grant=True, reason="ok"
        ),
    ),
    "AuditService/ListAuditEntries": (AUDITORS, lambda w, r: audit_pb2.ListAuditEntriesRequest()),
    "AuditService/VerifyAuditLog": (AUDITORS, lambda w, r: audit_pb2.VerifyAuditLogRequest()),
    "KeyService/RegisterPublicKey": (
        frozenset({R}),
        lambda w, r: keys_pb2.RegisterPublicKeyRequest(public_key_pem=_public_pem()),
    ),
    "KeyService/GetPublicKey": (EVERYONE, lambda w, r: keys_pb2.GetPublicKeyRequest()),
    "ReviewService/ListPendingReviews": (
        STEWARDS,
        lambda w, r: review_pb2.ListPendingReviewsRequest(),
    ),
    "ReviewService/DecideReview": (
        STEWARDS,
        lambda w, r: review_pb2.DecideReviewRequest(job_id=_job(w), approve=True, reason="ok"),
    ),
    # No node serves a coordinator unless its federation config names one: nobody, here.
    "FederationNodeService/ComputePartials": (
        frozenset(),
        lambda w, r: federation_pb2.PartialsRequest(
            federated_job_id="f1", party="node", spec=wire.spec_to_pb(SPEC)
        ),
    ),
    "FederationService/RunFederatedJob": (
        frozenset({R}),
        lambda w, r: federation_pb2.RunFederatedJobRequest(spec=wire.spec_to_pb(SPEC)),
    ),
}


def _project(project_id: str) -> object:
    from sandbox import Project, QuotaLimits

    return Project(
        project_id,
        project_id,
        ("ana",),
        (("pums", "research"),),
        dt.date.today() + dt.timedelta(days=30),
        QuotaLimits(),
    )


_KEY: list[bytes] = []


def _public_pem() -> bytes:
    if not _KEY:
        _KEY.append(export_public_key(generate_key_pair()))
    return _KEY[0]


def _job(world: World) -> str:
    """A finished job of ana's (its result may be sealed: it is not read here)."""
    job = world.client("ana").submit(SPEC)
    job.wait(30)
    return job.job_id


def _spare(world: World) -> str:
    """A fresh project to expire or revoke, so that other calls keep theirs."""
    project_id = f"spare-{secrets.token_hex(4)}"
    world.project(project_id, (("pums", "research"),))
    return project_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> object:
    from tests.conftest import make_world

    w = make_world(
        tmp_path_factory.mktemp("matrix"),
        {"pums": pums_policy("pums", "pums.csv"), "pums2": pums_policy("pums2", "pums.csv")},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
        allow_plaintext_tokens=True,
    )
    # A steward who only registers, so that sam may review (nobody reviews under a policy
    # they registered).
    w.add_principal("reg", Role.STEWARD)
    Client = type(w.client("reg"))
    with Client(w.target, token=w.tokens["reg"]) as reg:
        reg.register_dataset("pums")
    w.project("census-study", (("pums", "research"),))
    w.project("spare", (("pums", "research"),))
    yield w
    w.stop()


def _services() -> list[str]:
    out = []
    for module in (
        catalog_pb2,
        jobs_pb2,
        projects_pb2,
        audit_pb2,
        keys_pb2,
        review_pb2,
        federation_pb2,
    ):
        for service in module.DESCRIPTOR.services_by_name.values():
            out += [f"{service.name}/{m.name}" for m in service.methods]
    return out


def test_every_rpc_is_classified() -> None:
    assert sorted(_services()) == sorted(MATRIX)


@pytest.mark.parametrize("method", sorted(MATRIX))
def test_a_role_that_may_not_call_an_rpc_is_refused(world: World, method: str) -> None:
    allowed, build = MATRIX[method]
    service = next(s for s in _full_names() if s.endswith("." + method.split("/")[0]))
    path = f"/{service}/{method.split('/')[1]}"
    streaming = method in {"CatalogService/MockRows", "JobService/GetResult"}
    with grpc.insecure_channel(world.target) as channel:
        for role in (R, S, C, A):
            request = build(world, role)
            metadata = bearer(world.tokens[WHO[role]])
            try:
                call_raw(channel, path, request, streaming, metadata=metadata, timeout=30)
                refused: BaseException | None = None
            except grpc.RpcError as exc:
                try:
                    raise_from_rpc(exc)
                except Exception as err:
                    refused = err
            role_refusal = type(refused) is PermissionDenied
            if role in allowed:
                assert not role_refusal, f"{method}: {role} refused: {refused}"
            else:
                assert role_refusal, f"{method}: {role} not refused ({refused!r})"
                assert (
                    getattr(refused, "code", "") == "PERMISSION_DENIED"
                    and refused.reason == "PERMISSION_DENIED"  # type: ignore[union-attr]
                )


def _full_names() -> list[str]:
    return [
        s.full_name
        for m in (
            catalog_pb2,
            jobs_pb2,
            projects_pb2,
            audit_pb2,
            keys_pb2,
            review_pb2,
            federation_pb2,
        )
        for s in m.DESCRIPTOR.services_by_name.values()
    ]
