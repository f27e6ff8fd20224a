"""The application: role checks plus catalogue, projects and audit, around the job pipeline.

Transport-free. The gRPC servicer calls these methods with the authenticated ``Principal``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from sandbox._config import ServerConfig
from sandbox._errors import (
    InvalidArgument,
    KeyInvalid,
    KeyMismatch,
    NotFound,
    PermissionDenied,
    PolicyInvalid,
    SandboxError,
)
from sandbox._model import AuditRecord as AuditRecord
from sandbox._model import (
    ColumnInfo,
    ColumnRole,
    DatasetInfo,
    Estimate,
    ExceptionRequest,
    ExceptionState,
    JobInfo,
    JobSpec,
    Principal,
    Project,
    ProjectUpdate,
    PublicKeyInfo,
    QuotaLimits,
    QuotaUsage,
    ResultTable,
    Role,
    VerifyReport,
)
from sandbox._pipeline import JobPipeline, Today, _utc_today
from sandbox.audit import AuditLog, Checkpointer
from sandbox.crypto import export_public_key, load_public_key, seal
from sandbox.crypto._keys import key_fingerprint
from sandbox.engine import Engine
from sandbox.mock import mock_rows
from sandbox.policy import Policy, load_policy
from sandbox.state import (
    AtRestKeys,
    Catalogue,
    Database,
    DatasetRecord,
    Ledger,
    Principals,
    Projects,
)
from sandbox.state._exceptions import Exceptions
from sandbox.state._exceptions import entry_fields as exception_fields

STEWARDS = frozenset({Role.STEWARD, Role.ADMIN})
PREVIEW_MOCK_ROWS = 10_000
"""Mock rows a preview runs on (fewer if the dataset is smaller)."""
AUDITORS = frozenset({Role.COMPLIANCE, Role.ADMIN})
KEY_HOLDERS = frozenset({Role.RESEARCHER})
"""Who registers a public key: results are sealed only to the researcher who submitted."""
REQUESTERS = frozenset({Role.RESEARCHER})
"""Who asks for an exception: only the researcher whose job was refused."""
MAX_PUBLIC_KEY_PEM_BYTES = 16 * 1024
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_WAL_CHECKPOINT_S = 0.05
"""How often a server copies its state store's write-ahead log into the database."""


def require(principal: Principal, roles: frozenset[Role], action: str) -> None:
    if principal.role not in roles:
        raise PermissionDenied(f"role '{principal.role}' may not {action}")


def coarse(n: int) -> int:
    """Round to two significant figures (catalogue row counts are coarse)."""
    if n < 100:
        return n
    digits = len(str(n)) - 2
    return int(round(n, -digits))


class Sandbox:
    def __init__(self, config: ServerConfig, *, today: Today = _utc_today) -> None:
        self.config = config
        self.db = Database(config.db_path, checkpoint_every_s=_WAL_CHECKPOINT_S)
        self.engine = Engine(
            config.engine_threads,
            config.engine_memory_limit,
            config.engine_cache_rows,
        )
        self.principals = Principals(self.db, allow_plaintext_tokens=config.allow_plaintext_tokens)
        self.projects = Projects(self.db)
        self.exceptions = Exceptions(self.db)
        self.catalogue = Catalogue(self.db)
        self.audit = AuditLog(self.db)
        self.checkpointer = Checkpointer(
            self.audit,
            every_entries=config.checkpoint_every_entries,
            every_seconds=config.checkpoint_every_s,
        )
        self._ledger = Ledger()
        self._today = today
        self.policies: dict[str, Policy] = {}
        self.stale_policies: set[str] = set()
        self._load_registered_policies()
        self.jobs = JobPipeline(
            self.db,
            self.engine,
            self.policies,
            workers=config.workers,
            today=today,
            at_rest=AtRestKeys.configured(
                config.at_rest_key_file, config.at_rest_keys, config.state_dir
            ),
            policy_source=self._registered_policy,
        )

    def _load_registered_policies(self) -> None:
        """Load each registered dataset's policy; a changed file needs re-registration."""
        for record in self.catalogue.list():
            policy = self._registered_policy(record)
            if policy is None:
                self.stale_policies.add(record.id)
            else:
                self.policies[record.id] = policy

    def _registered_policy(self, record: DatasetRecord) -> Policy | None:
        """The policy file of a registered dataset, if it is still the version registered."""
        try:
            policy = load_policy(self.config.policy_dir / f"{record.id}.yaml")
        except (PolicyInvalid, OSError):
            return None
        if policy.version_label != record.policy_version:
            return None
        self.stale_policies.discard(record.id)
        return policy

    def close(self) -> None:
        self.jobs.shutdown(wait=True)
        self.checkpointer.stop()  # signs a final checkpoint (errors are logged, not raised)
        self.engine.close()
        self.db.close()

    # ---- catalogue ----------------------------------------------------------------------
    def register_dataset(self, principal: Principal, dataset: str) -> DatasetInfo:
        require(principal, STEWARDS, "register datasets")
        path = self.config.policy_dir / f"{dataset}.yaml"
        if not path.is_file() or Path(dataset).name != dataset:
            raise NotFound(f"no policy file for dataset '{dataset}' in the policy directory")
        policy = load_policy(path)
        root = self.config.data_root.resolve()
        source = (root / policy.source).resolve()
        if not source.is_relative_to(root) or not source.is_file():
            raise NotFound(f"source file of dataset '{dataset}' not found under the data root")
        fmt = "parquet" if source.suffix == ".parquet" else "csv"
        measures = tuple(c.name for c in policy.columns if c.role == ColumnRole.MEASURE)
        facts = self.engine.inspect_source(source, fmt, policy.person_key, measures)
        missing = [c.name for c in policy.columns if c.name not in facts.column_types]
        if missing:
            raise PolicyInvalid(
                f"{path}: columns {', '.join(missing)} are in the policy but not in the source"
            )
        record = facts.record(dataset, source, fmt, policy.version_label)
        with self.db.write() as conn:
            self.catalogue.put(conn, record, principal.name)
            self.audit.append(
                conn,
                "dataset.registered",
                actor=principal.name,
                role=str(principal.role),
                dataset=dataset,
                policy_version=policy.version_label,
                policy_digest=policy.digest,
                file_digest=facts.file_digest,
            )
        self.policies[dataset] = policy
        self.stale_policies.discard(dataset)
        return self._info(record, policy)

    def list_datasets(self, principal: Principal) -> list[DatasetInfo]:
        out = []
        for record in self.catalogue.list():
            try:
                self.jobs.visible_dataset(principal, record.id)
            except NotFound:
                continue
            out.append(self._info(record, self.policies[record.id]))
        return out

    def describe_dataset(self, principal: Principal, dataset: str) -> DatasetInfo:
        record = self.jobs.visible_dataset(principal, dataset)
        return self._info(record, self.policies[dataset])

    def _info(self, record: DatasetRecord, policy: Policy) -> DatasetInfo:
        columns = []
        for col in policy.columns:
            if col.role == ColumnRole.HIDDEN:
                continue
            columns.append(
                ColumnInfo(
                    name=col.name,
                    type=record.column_types.get(col.name, ""),
                    role=col.role,
                    description=col.description,
                    bins=col.bins,
                    values=col.values,
                    bounds=col.bounds,
                    aggregates=col.aggregates,
                )
            )
        return DatasetInfo(
            id=record.id,
            title=policy.title,
            description=policy.description,
            person_key=policy.person_key,
            population=policy.population,
            row_count=coarse(record.row_count),
            columns=tuple(columns),
            purposes=tuple(p.id for p in policy.purposes),
            policy_version=policy.version_label,
        )

    # ---- projects ----------------------------------------------------------------------
    def create_project(self, principal: Principal, project: Project) -> Project:
        require(principal, STEWARDS, "create projects")
        with self.db.write() as conn:
            self.projects.create(conn, project, principal.name)
            self.audit.append(
                conn,
                "project.created",
                actor=principal.name,
                role=str(principal.role),
                project=project.id,
                members=sorted(project.members),
                grants=sorted([d, p] for d, p in project.grants),
                expires=project.expires.isoformat(),
                quota=_quota_json(project.quota),
                **(
                    {"grant_expiry": [[d, u, e.isoformat()] for d, u, e in project.grant_expiry]}
                    if project.grant_expiry
                    else {}
                ),
            )
        created = self.projects.get(project.id)
        assert created is not None
        return created

    def set_quota(self, principal: Principal, project_id: str, quota: QuotaLimits) -> Project:
        require(principal, STEWARDS, "set quotas")
        with self.db.write() as conn:
            self.projects.set_quota(conn, project_id, quota)
            self.audit.append(
                conn,
                "project.quota_set",
                actor=principal.name,
                role=str(principal.role),
                project=project_id,
                quota=_quota_json(quota),
            )
        updated = self.projects.get(project_id)
        assert updated is not None
        return updated

    def update_project(
        self, principal: Principal, project_id: str, update: ProjectUpdate
    ) -> Project:
        """Change members, grants (and their own expiry), title, expiry or quota; the next
        job is decided on the new project. Logged as ``project.updated`` with what changed."""
        require(principal, STEWARDS, "update projects")
        with self.db.write() as conn:
            updated, changes = self.projects.update(conn, project_id, update)
            self.audit.append(
                conn,
                "project.updated",
                actor=principal.name,
                role=str(principal.role),
                project=project_id,
                changes=changes,
            )
        return updated

    def expire_project(self, principal: Principal, project_id: str, reason: str = "") -> Project:
        """End the project now: its last day becomes yesterday, so every new job is refused
        (rule ``project.expired``). Jobs already accepted run. Logged as ``project.expired``."""
        require(principal, STEWARDS, "expire projects")
        with self.db.write() as conn:
            expired, before = self.projects.expire(
                conn, project_id, self._today() - dt.timedelta(days=1)
            )
            self.audit.append(
                conn,
                "project.expired",
                actor=principal.name,
                role=str(principal.role),
                project=project_id,
                changes={
                    "expires": {"from": before.isoformat(), "to": expired.expires.isoformat()}
                },
                reason=reason,
            )
        return expired

    def revoke_project(
        self, principal: Principal, project_id: str, reason: str = ""
    ) -> tuple[Project, int]:
        """Revoke the project (final): every new job is refused (rule ``project.revoked``) and
        its queued jobs are cancelled uncharged, its running ones interrupted. The project and
        how many jobs were stopped. Revoking again stops any job left and logs nothing new."""
        require(principal, STEWARDS, "revoke projects")
        with self.db.write() as conn:
            revoked, newly = self.projects.revoke(conn, project_id, principal.name)
            if newly:
                self.audit.append(
                    conn,
                    "project.revoked",
                    actor=principal.name,
                    role=str(principal.role),
                    project=project_id,
                    changes={"revoked": {"from": False, "to": True}},
                    reason=reason,
                )
        return revoked, self.jobs.stop_project_jobs(project_id, principal)

    def list_projects(self, principal: Principal) -> list[Project]:
        projects = self.projects.list()
        if principal.role == Role.RESEARCHER:
            return [p for p in projects if principal.name in p.members]
        return projects

    def quota(self, principal: Principal, project_id: str) -> QuotaUsage:
        project = self.projects.get(project_id)
        if project is None or (
            principal.role == Role.RESEARCHER and principal.name not in project.members
        ):
            raise NotFound(f"project '{project_id}' not found")
        used = self._ledger.usage(self.db.conn, project_id, self._today())
        return QuotaUsage(
            project=project_id,
            limits=project.quota,
            jobs_today=used.jobs_today,
            jobs_total=used.jobs_total,
            rows_today=used.rows_today,
            rows_total=used.rows_total,
        )

    # ---- exceptions to policy refusals ---------------------------------------------------
    def request_exception(
        self, principal: Principal, job_id: str, rule_ids: tuple[str, ...], justification: str
    ) -> ExceptionRequest:
        """Ask for an exception to a policy refusal of one's own job, naming the rules to
        waive. Logged as ``exception.requested``."""
        require(principal, REQUESTERS, "request exceptions (only the researcher refused can)")
        job = self.jobs.get(principal, job_id)
        with self.db.write() as conn:
            request = self.exceptions.request(conn, principal.name, job, rule_ids, justification)
            self.audit.append(
                conn,
                "exception.requested",
                actor=principal.name,
                role=str(principal.role),
                **exception_fields(request),
                justification=request.justification,
            )
        return request

    def list_exception_requests(
        self,
        principal: Principal,
        state: ExceptionState | None = None,
        project: str = "",
        limit: int = 100,
    ) -> list[ExceptionRequest]:
        """Newest first: a researcher sees their own requests, stewards and reviewers all."""
        owner = principal.name if principal.role == Role.RESEARCHER else None
        return self.exceptions.list(owner, state, project, limit)

    def decide_exception(
        self, principal: Principal, request_id: str, grant: bool, reason: str
    ) -> ExceptionRequest:
        """A steward grants or rejects a pending request (never their own); logged as
        ``exception.granted`` or ``exception.rejected``. A grant admits one job (see
        ``sandbox.state._exceptions``)."""
        require(principal, STEWARDS, "decide exception requests")
        with self.db.write() as conn:
            decided = self.exceptions.decide(conn, request_id, principal.name, grant, reason)
            self.audit.append(
                conn,
                "exception.granted" if grant else "exception.rejected",
                actor=principal.name,
                role=str(principal.role),
                **exception_fields(decided),
                decision="allow" if grant else "deny",
                reason=decided.decision_reason,
            )
        return decided

    # ---- jobs (delegated) ----------------------------------------------------------------
    def submit(self, principal: Principal, spec: JobSpec, request_id: str = "") -> JobInfo:
        return self.jobs.submit(principal, spec, request_id)

    def result(self, principal: Principal, job_id: str) -> ResultTable:
        return self.jobs.result(principal, job_id)

    def estimate(self, principal: Principal, spec: JobSpec) -> Estimate:
        """Preview a job without reading its data (logged as ``job.previewed``).

        A dataset the caller may not see is not found, exactly as for a submit; every other
        refusal becomes a reason in the estimate.
        """
        try:
            vetted = self.jobs.vet(principal, spec)
        except (NotFound, PermissionDenied):
            raise
        except SandboxError as exc:
            estimate = Estimate(False, exc.rule_ids or (exc.reason,), (exc.message,))
        else:
            short = self.jobs.shortfalls(vetted)
            terms = vetted.terms
            info = self._info(vetted.record, vetted.policy)
            n = min(vetted.record.row_count, PREVIEW_MOCK_ROWS)
            # Half the mock rows match the filters, so both sides of the query set exist.
            share = 0.5 if vetted.spec.filters else 1.0
            mock = mock_rows(
                info, n, seed=0, job=vetted.spec, matching=share, limit=PREVIEW_MOCK_ROWS
            )
            try:
                predicted: ResultTable | None = self.jobs.predict(
                    vetted, mock, self.config.state_dir
                )
            except SandboxError:  # e.g. the filters leave too few mock persons: no pattern
                predicted = None
            estimate = Estimate(
                allowed=not short,
                rule_ids=tuple(s.rule_id for s in short),
                reasons=tuple(s.message for s in short),
                jobs=1,
                rows=vetted.record.row_count,
                epsilon=str(terms.epsilon) if terms else "0",
                delta=str(terms.delta) if terms else "0",
                spec_digest=vetted.spec.digest(),
                predicted=predicted,
                mock_rows=n,
            )
        with self.db.write() as conn:
            self.audit.append(
                conn,
                "job.previewed",
                actor=principal.name,
                role=str(principal.role),
                dataset=spec.dataset,
                project=spec.project,
                purpose=spec.purpose,
                decision="allow" if estimate.allowed else "deny",
                rule_ids=list(estimate.rule_ids),
            )
        return estimate

    # ---- researcher keys and sealed results ----------------------------------------------
    def register_public_key(self, principal: Principal, pem: bytes) -> PublicKeyInfo:
        """Register (or replace) the caller's public key; later results are sealed to it.

        Only researchers hold keys. The key must pass ``load_public_key`` (RSA of 3072 to 8192
        bits, e = 65537). A replacement is logged with the fingerprint it replaced.
        """
        require(principal, KEY_HOLDERS, "register a public key (only researchers get results)")
        if len(pem) > MAX_PUBLIC_KEY_PEM_BYTES:
            raise KeyInvalid(f"a public key PEM is at most {MAX_PUBLIC_KEY_PEM_BYTES} bytes")
        key = load_public_key(bytes(pem))
        canonical = export_public_key(key).decode("ascii")
        fingerprint = key_fingerprint(key).hex()
        bits = key.size_in_bits()
        with self.db.write() as conn:
            previous = self.principals.set_public_key(conn, principal.name, canonical, fingerprint)
            if previous != fingerprint:
                self.audit.append(
                    conn,
                    "principal.key_replaced" if previous else "principal.key_registered",
                    actor=principal.name,
                    role=str(principal.role),
                    principal=principal.name,
                    fingerprint=fingerprint,
                    bits=bits,
                    **({"replaced_fingerprint": previous} if previous else {}),
                )
        replaced = previous if previous and previous != fingerprint else ""
        return PublicKeyInfo(principal.name, fingerprint, bits, replaced)

    def public_key_info(self, principal: Principal) -> PublicKeyInfo:
        """The caller's registered key (``fingerprint`` empty when there is none)."""
        stored = self.principals.public_key(principal.name)
        if stored is None:
            return PublicKeyInfo(principal.name)
        pem, fingerprint = stored
        return PublicKeyInfo(principal.name, fingerprint, load_public_key(pem).size_in_bits())

    def check_result_key(self, submitter: str, expected_fingerprint: str) -> None:
        """Refuse a request asserting a key other than the one registered for ``submitter``.

        A request never chooses the key a result is sealed to; it may only state which key the
        client holds (``expected_fingerprint``, empty for none), and a mismatch is refused.
        """
        if not expected_fingerprint:
            return
        if not _FINGERPRINT.fullmatch(expected_fingerprint):
            raise InvalidArgument(
                "expected_key_fingerprint must be 64 lower-case hex digits (the SHA-256 of "
                "the public key's DER SubjectPublicKeyInfo)"
            )
        stored = self.principals.public_key(submitter)
        if stored is None:
            raise KeyMismatch(
                f"no public key is registered for '{submitter}': results are sealed only to "
                "the submitter's registered key (register it with `sandbox keys register`)"
            )
        if stored[1] != expected_fingerprint:
            raise KeyMismatch(
                f"the request names a key other than the one registered for '{submitter}' "
                f"(fingerprint {stored[1][:16]}…): results are sealed only to the submitter's "
                "registered key"
            )

    def seal_result(
        self, info: JobInfo, table: ResultTable, expected_fingerprint: str = ""
    ) -> bytes | None:
        """The released table sealed to the key its submitter registered, or None if none is.

        The plaintext is the table's canonical JSON; the seal binds the job id and the digest
        of the job's spec. The key is the one registered when the result is delivered.
        """
        self.check_result_key(info.principal, expected_fingerprint)
        stored = self.principals.public_key(info.principal)
        if stored is None:
            return None
        return seal(
            table.canonical_json().encode(),
            stored[0],
            job_id=info.job_id,
            spec_digest=info.spec.digest(),
        )

    # ---- audit -------------------------------------------------------------------------
    def audit_entries(
        self, principal: Principal, after_seq: int = -1, limit: int = 1000
    ) -> list[AuditRecord]:
        require(principal, AUDITORS, "read the audit log")
        return self.audit.entries(after_seq, max(1, min(limit, 10_000)))

    def audit_verify(self, principal: Principal) -> VerifyReport:
        require(principal, AUDITORS, "verify the audit log")
        return self.audit.verify()


def _quota_json(q: QuotaLimits) -> dict[str, int | None]:
    return {
        "jobs_per_day": q.jobs_per_day,
        "jobs_total": q.jobs_total,
        "rows_per_day": q.rows_per_day,
        "rows_total": q.rows_total,
    }


__all__ = ["AUDITORS", "KEY_HOLDERS", "REQUESTERS", "STEWARDS", "Sandbox", "coarse", "require"]
