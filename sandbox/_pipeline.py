"""The job pipeline: authorise → reserve → compute → disclosure control → release → log.

Transport-free: it takes domain objects and a ``Principal`` and raises ``SandboxError``s; the
gRPC servicer only converts. Every decision and release is appended to the audit log in the
same transaction as the state change it records, before the caller can observe it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox._errors import (
    BudgetExhausted,
    DatasetChanged,
    DisclosureControl,
    InvalidArgument,
    InvalidJobSpec,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    QuotaExceeded,
    SandboxError,
)
from sandbox._model import (
    CellStatus,
    JobInfo,
    JobSpec,
    JobState,
    Principal,
    Project,
    ResultTable,
    Role,
    quantile_problem,
)
from sandbox.audit import AuditLog
from sandbox.disclosure import (
    NeedsExactContributions,
    NoiseTerms,
    Settings,
    cell_key_table,
    check_cell_key_job,
    check_query_set,
    differencing_guard,
    noise_terms,
    perturb_counts,
    protect,
    protect_noised,
    record_key_secret,
    released_cell,
)
from sandbox.engine import Engine, Plan, RawTable, file_fingerprint, plan
from sandbox.policy import Policy, canonicalize, decide
from sandbox.state import (
    BudgetLimits,
    Catalogue,
    Database,
    DatasetRecord,
    Jobs,
    Ledger,
    PrivacyLedger,
    Projects,
    ReleaseRegister,
    Shortfall,
)

Today = Callable[[], dt.date]


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class JobPipeline:
    def __init__(
        self,
        db: Database,
        engine: Engine,
        policies: dict[str, Policy],
        *,
        workers: int = 2,
        today: Today = _utc_today,
    ) -> None:
        self._db = db
        self._engine = engine
        self._policies = policies
        self._catalogue = Catalogue(db)
        self._projects = Projects(db)
        self._jobs = Jobs(db)
        self._ledger = Ledger()
        self._budget = PrivacyLedger()
        self._releases = ReleaseRegister(released_cell)
        self._audit = AuditLog(db)
        self._today = today
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-job")
        self._waiting: dict[str, _Waiters] = {}
        self._waiting_lock = threading.Lock()

    # ---- visibility -------------------------------------------------------------------
    def visible_dataset(self, principal: Principal, dataset: str) -> DatasetRecord:
        """The dataset if the caller may see it; otherwise exactly the not-found error."""
        record = self._catalogue.get(dataset)
        if record is None or dataset not in self._policies or not self._may_see(principal, dataset):
            raise NotFound(f"dataset '{dataset}' not found")
        return record

    def _may_see(self, principal: Principal, dataset: str) -> bool:
        if principal.role != Role.RESEARCHER:
            return True
        return any(
            principal.name in p.members and any(d == dataset for d, _ in p.grants)
            for p in self._projects.list()
        )

    def _visible_job(self, principal: Principal, job_id: str) -> JobInfo:
        info = self._jobs.get(job_id)
        if info is None or (principal.role == Role.RESEARCHER and info.principal != principal.name):
            raise NotFound(f"job '{job_id}' not found")
        return info

    # ---- submit -----------------------------------------------------------------------
    def submit(self, principal: Principal, spec: JobSpec, request_id: str = "") -> JobInfo:
        request_id = request_id or secrets.token_hex(16)
        if len(request_id) > 128:
            raise InvalidArgument("request ids are at most 128 characters")
        existing = self._jobs.by_request(principal.name, request_id)
        if existing is not None:
            return self._replay(existing, spec)
        job_id = secrets.token_hex(16)
        try:
            vetted = self.vet(principal, spec)
        except SandboxError as exc:
            base = self._entry_fields(principal, spec, job_id)
            with self._db.write() as conn:
                self._record_refusal(conn, principal, spec, job_id, request_id, exc, base, "")
            raise
        spec, record, policy, project = vetted.spec, vetted.record, vetted.policy, vetted.project
        job_plan, terms = vetted.plan, vetted.terms
        base = self._entry_fields(principal, spec, job_id)
        admission = _Admission(principal, spec, job_id, request_id, base, record, policy, terms)
        with self._db.write() as conn:
            existing = self._jobs.by_request(principal.name, request_id)
            if existing is not None:
                return self._replay(existing, spec)
            refusal = self._admit(conn, admission, project)
            replayed = (
                refusal is None and terms is not None and self._replay_answer(conn, admission)
            )
            if refusal is None and not replayed:
                self._accept(conn, admission, project)
        if refusal is not None:
            raise refusal
        info = self._jobs.get(job_id)
        assert info is not None
        if not replayed:
            self._executor.submit(self._execute, info, job_plan, record, policy, terms)
        return info

    def vet(self, principal: Principal, spec: JobSpec) -> Vetted:
        """Every check a job passes before it is accepted; reads no data, writes nothing."""
        if principal.role != Role.RESEARCHER:
            raise PermissionDenied("only researchers submit jobs", rule_ids=("principal.role",))
        _check_shape(spec)
        record = self.visible_dataset(principal, spec.dataset)
        policy = self._policies[spec.dataset]
        project = self._projects.get(spec.project)
        decision = decide(policy, spec, principal, project, self._today())
        if not decision.allowed:
            raise PolicyDenied(
                "; ".join(r.message for r in decision.reasons), rule_ids=decision.rule_ids
            )
        # Rewrites of one query become one spec: what runs, is logged and is replayed.
        spec = canonicalize(spec, policy, column_types=record.column_types)
        job_plan = plan(spec, record, policy)
        _ensure_unchanged(record)
        terms = _noise_terms(spec, policy, record)
        assert project is not None
        return Vetted(spec, record, policy, project, job_plan, terms)

    def predict(self, vetted: Vetted, mock: pa.Table, workdir: Path) -> ResultTable:
        """The job's disclosure pattern on mock rows: statuses and rules, values removed.

        The mock table stands in for the dataset (one row per person); the real file is
        never opened. Noise and rules run as for a real job, so the pattern is realistic.
        """
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = Path(tmp) / "mock.parquet"
            pq.write_table(mock, path)
            record = replace(
                vetted.record,
                source=str(path),
                file_format="parquet",
                row_count=mock.num_rows,
                persons=mock.num_rows,
                persons_unique=True,
                measure_ranges={},
            )
            job_plan = plan(vetted.spec, record, vetted.policy)
            _, table = self._compute(
                f"preview-{secrets.token_hex(8)}",
                vetted.spec,
                job_plan,
                record,
                vetted.policy,
                vetted.terms,
            )
        rows = tuple(
            replace(r, cells=tuple(replace(c, value=None, ci=None) for c in r.cells))
            for r in table.rows
        )
        return replace(table, rows=rows)

    def shortfalls(self, vetted: Vetted) -> list[Shortfall]:
        """The quota and budget limits the job would exceed now (read only)."""
        conn, today = self._db.conn, self._today()
        project = vetted.project
        out = self._ledger.shortfalls(
            conn, project.id, project.quota, vetted.record.row_count, today
        )
        if vetted.terms is not None:
            out += self._budget.shortfalls(
                conn,
                vetted.policy.population,
                project.id,
                vetted.terms.epsilon,
                vetted.terms.delta,
                _budget_limits(vetted.policy),
                today,
            )
        return out

    def _admit(
        self, conn: sqlite3.Connection, a: _Admission, project: Project
    ) -> SandboxError | None:
        """Check quota and privacy budget inside the write transaction; log any refusal."""
        today = self._today()
        refusal: SandboxError | None = None
        shortfalls = self._ledger.shortfalls(
            conn, project.id, project.quota, a.record.row_count, today
        )
        if shortfalls:
            refusal = QuotaExceeded(
                "; ".join(s.message for s in shortfalls),
                rule_ids=tuple(s.rule_id for s in shortfalls),
            )
        elif a.terms is not None:
            shortfalls = self._budget.shortfalls(
                conn,
                a.policy.population,
                project.id,
                a.terms.epsilon,
                a.terms.delta,
                _budget_limits(a.policy),
                today,
            )
            if shortfalls:
                refusal = BudgetExhausted(
                    "; ".join(s.message for s in shortfalls),
                    rule_ids=tuple(s.rule_id for s in shortfalls),
                )
        if refusal is not None:
            self._record_refusal(
                conn,
                a.principal,
                a.spec,
                a.job_id,
                a.request_id,
                refusal,
                a.base,
                a.policy.version_label,
            )
        return refusal

    def _replay_answer(self, conn: sqlite3.Connection, a: _Admission) -> bool:
        """Answer a repeated noised query with its first release: no new noise, no new charge."""
        earlier = self._jobs.released_answer(
            conn, a.spec.digest(), a.policy.version_label, a.record.file_fingerprint
        )
        if earlier is None:
            return False
        earlier_id, blob, digest = earlier
        self._jobs.insert(
            conn,
            job_id=a.job_id,
            request_id=a.request_id,
            principal=a.principal.name,
            spec=a.spec,
            state=JobState.SUCCEEDED,
            policy_version=a.policy.version_label,
            data_version=a.record.file_fingerprint,
            result=blob,
            result_digest=digest,
        )
        self._audit.append(
            conn,
            "job.replayed",
            **a.base,
            decision="allow",
            policy_version=a.policy.version_label,
            replay_of=earlier_id,
            result_digest=digest,
            charged={"jobs": 0, "rows": 0, "epsilon": "0", "delta": "0"},
        )
        return True

    def _accept(self, conn: sqlite3.Connection, a: _Admission, project: Project) -> None:
        """Record the job as QUEUED and reserve its quota (and budget) before any read."""
        today = self._today()
        self._jobs.insert(
            conn,
            job_id=a.job_id,
            request_id=a.request_id,
            principal=a.principal.name,
            spec=a.spec,
            state=JobState.QUEUED,
            policy_version=a.policy.version_label,
            data_version=a.record.file_fingerprint,
        )
        self._ledger.reserve(conn, project.id, a.job_id, a.record.row_count, today)
        reserved: dict[str, Any] = {"jobs": 1, "rows": a.record.row_count}
        if a.terms is not None:
            self._budget.reserve(
                conn,
                a.policy.population,
                project.id,
                a.job_id,
                a.terms.epsilon,
                a.terms.delta,
                today,
            )
            reserved |= {"epsilon": str(a.terms.epsilon), "delta": str(a.terms.delta)}
        self._audit.append(
            conn,
            "job.accepted",
            **a.base,
            decision="allow",
            policy_version=a.policy.version_label,
            reserved=reserved,
        )

    def _replay(self, existing: JobInfo, spec: JobSpec) -> JobInfo:
        policy = self._policies.get(spec.dataset)
        record = self._catalogue.get(spec.dataset)
        if policy is not None and record is not None:
            with contextlib.suppress(SandboxError):
                spec = canonicalize(spec, policy, column_types=record.column_types)
        if existing.spec.digest() != spec.digest():
            raise InvalidArgument("request id was already used for a different job")
        return existing

    def _entry_fields(self, principal: Principal, spec: JobSpec, job_id: str) -> dict[str, Any]:
        return {
            "actor": principal.name,
            "role": str(principal.role),
            "job_id": job_id,
            "dataset": spec.dataset,
            "project": spec.project,
            "purpose": spec.purpose,
            "spec_digest": spec.digest(),
            "spec": spec.canonical(),
        }

    def _record_refusal(
        self,
        conn: sqlite3.Connection,
        principal: Principal,
        spec: JobSpec,
        job_id: str,
        request_id: str,
        exc: SandboxError,
        base: dict[str, Any],
        policy_version: str,
    ) -> None:
        """Log a refusal (and keep a DENIED job record) within ``conn``'s transaction."""
        exc.job_id = job_id
        # A concurrent submit with the same request id may already have recorded it.
        with contextlib.suppress(sqlite3.IntegrityError):
            self._jobs.insert(
                conn,
                job_id=job_id,
                request_id=request_id,
                principal=principal.name,
                spec=spec,
                state=JobState.DENIED,
                policy_version=policy_version,
                reason=exc.reason,
                message=exc.message,
                rule_ids=exc.rule_ids,
            )
        self._audit.append(
            conn,
            "job.denied",
            **base,
            decision="deny",
            reason=exc.reason,
            rule_ids=list(exc.rule_ids),
            message=exc.message,
            policy_version=policy_version,
        )

    # ---- execute (worker threads) -----------------------------------------------------
    def _execute(
        self,
        info: JobInfo,
        job_plan: Plan,
        record: DatasetRecord,
        policy: Policy,
        terms: NoiseTerms | None,
    ) -> None:
        job_id = info.job_id
        released: ResultTable | None = None
        try:
            with self._db.write() as conn:
                if not self._jobs.start(conn, job_id):
                    return  # cancelled while queued
            raw, table = self._compute(job_id, info.spec, job_plan, record, policy, terms)
            _ensure_unchanged(record)  # what was read is what was registered
            persons = None if terms is not None else {c.keys: c.persons for c in raw.cells}
            released = self._release(info, table, record, policy, persons)
        except (DisclosureControl, PolicyDenied) as exc:
            self._finish_unreleased(job_id, JobState.DENIED, exc, record.row_count)
        except JobCancelled as exc:
            self._finish_unreleased(job_id, JobState.CANCELLED, exc, record.row_count)
        except SandboxError as exc:
            self._finish_unreleased(job_id, JobState.FAILED, exc, record.row_count)
        except Exception as exc:  # never leak internals: record the type only
            failure = JobFailed(f"internal error ({type(exc).__name__})", job_id=job_id)
            self._finish_unreleased(job_id, JobState.FAILED, failure, record.row_count)
        finally:
            self._signal(job_id, released)

    def _compute(
        self,
        job_id: str,
        spec: JobSpec,
        job_plan: Plan,
        record: DatasetRecord,
        policy: Policy,
        terms: NoiseTerms | None,
    ) -> tuple[RawTable, ResultTable]:
        """Run a plan and protect its table; where the dominance screen cannot clear a cell,
        run the plan that reports each cell's largest contributions exactly, and use that."""
        pads = _record_key_pads(self._db, policy)
        raw = self._engine.run(job_id, job_plan, pads)
        try:
            return raw, disclose(raw, spec, job_plan, record, policy, terms)
        except NeedsExactContributions:
            exact = plan(spec, record, policy, screen=False)
            raw = self._engine.run(job_id, exact, pads)
            return raw, disclose(raw, spec, exact, record, policy, terms)

    def _release(
        self,
        info: JobInfo,
        table: ResultTable,
        record: DatasetRecord,
        policy: Policy,
        persons: dict[tuple[Any, ...], int] | None,
    ) -> ResultTable:
        """Release a protected table and return it as released.

        In rule-based mode (``persons`` given) the differencing guard first checks it against
        the release register, in the same transaction that records the release.
        """
        rows = record.row_count
        with self._db.write() as conn:
            if persons is not None:
                table, entries = differencing_guard(
                    table,
                    persons,
                    info.spec,
                    policy,
                    self._releases.cells(conn, record.id),
                    data_version=record.file_fingerprint,
                )
                self._releases.record(
                    conn,
                    dataset=record.id,
                    population=policy.population,
                    project=info.spec.project,
                    job_id=info.job_id,
                    data_version=record.file_fingerprint,
                    cells=entries,
                )
            blob = table.canonical_json().encode()
            digest = hashlib.sha256(blob).hexdigest()
            statuses = [c.status for r in table.rows for c in r.cells]
            self._ledger.commit(conn, info.job_id, rows)
            charged = {"jobs": 1, "rows": rows, **self._charge_budget(conn, info.job_id, True)}
            self._jobs.finish(
                conn,
                info.job_id,
                JobState.SUCCEEDED,
                rows_scanned=rows,
                result=blob,
                result_digest=digest,
            )
            self._audit.append(
                conn,
                "job.released",
                **self._entry_fields(_principal_of(info), info.spec, info.job_id),
                policy_version=info.policy_version,
                charged=charged,
                result_digest=digest,
                cells={s.value: statuses.count(s) for s in CellStatus},
            )
        return table

    def _finish_unreleased(
        self, job_id: str, state: JobState, exc: SandboxError, rows: int
    ) -> None:
        """End a job without a release; charge it if data was read, else free the quota."""
        info = self._jobs.get(job_id)
        assert info is not None
        with self._db.write() as conn:
            read = self._jobs.data_read(conn, job_id)
            if read:
                self._ledger.commit(conn, job_id, rows)
            else:
                self._ledger.release(conn, job_id)
            charged: dict[str, int | str] = {"jobs": int(read), "rows": rows if read else 0}
            charged |= self._charge_budget(conn, job_id, read)
            self._jobs.finish(
                conn,
                job_id,
                state,
                reason=exc.reason,
                message=exc.message,
                rule_ids=exc.rule_ids,
                rows_scanned=rows if read else 0,
            )
            self._audit.append(
                conn,
                f"job.{state.value.lower()}",
                **self._entry_fields(_principal_of(info), info.spec, job_id),
                decision="deny" if state == JobState.DENIED else "none",
                reason=exc.reason,
                rule_ids=list(exc.rule_ids),
                message=exc.message,
                charged=charged,
            )

    def _charge_budget(self, conn: sqlite3.Connection, job_id: str, read: bool) -> dict[str, str]:
        """Commit a job's privacy budget if data was read, else give it back; what was charged."""
        held = self._budget.charged(conn, job_id)
        if held is None:
            return {}
        if read:
            self._budget.commit(conn, job_id)
            return {"epsilon": str(held[0]), "delta": str(held[1])}
        self._budget.release(conn, job_id)
        return {"epsilon": "0", "delta": "0"}

    # ---- queries ----------------------------------------------------------------------
    def get(self, principal: Principal, job_id: str) -> JobInfo:
        info = self._visible_job(principal, job_id)
        if info.state == JobState.RUNNING:
            return replace(info, progress=self._engine.progress(job_id))
        return replace(info, progress=1.0) if info.state.terminal else info

    def _waiters(self, job_id: str) -> _Waiters:
        with self._waiting_lock:
            return self._waiting.setdefault(job_id, _Waiters())

    def _signal(self, job_id: str, released: ResultTable | None = None) -> None:
        """Wake the waiters of one job (called after its terminal state is committed)."""
        with self._waiting_lock:
            waiters = self._waiting.pop(job_id, None)
        if waiters is not None:
            waiters.released = released
            waiters.event.set()

    def wait(self, principal: Principal, job_id: str, timeout: float) -> JobInfo:
        """Long-poll: return when the job is terminal or ``timeout`` seconds have passed."""
        return self.wait_for_result(principal, job_id, timeout, with_result=False)[0]

    def wait_for_result(
        self, principal: Principal, job_id: str, timeout: float, *, with_result: bool = True
    ) -> tuple[JobInfo, ResultTable | None]:
        """Long-poll like ``wait``; also the released table if the job succeeded.

        A waiter woken by the release gets the table the worker just stored, without reading
        it back from the state store.
        """
        self._visible_job(principal, job_id)
        waiters = self._waiters(job_id)  # registered before the check, so no wake-up is lost
        info = self.get(principal, job_id)
        if info.state.terminal:
            self._signal(job_id)  # drop the bookkeeping: nothing will set it any more
        elif timeout > 0 and waiters.event.wait(timeout):
            info = self.get(principal, job_id)
            if waiters.released is not None and info.state == JobState.SUCCEEDED:
                return info, waiters.released
        if not with_result or info.state != JobState.SUCCEEDED:
            return info, None
        return info, self.result(principal, job_id)

    def cancel(self, principal: Principal, job_id: str) -> JobInfo:
        info = self._visible_job(principal, job_id)
        if principal.role not in (Role.RESEARCHER, Role.ADMIN):
            raise PermissionDenied("only the submitting researcher or an admin cancels a job")
        if info.state == JobState.QUEUED:
            with self._db.write() as conn:
                current = self._jobs.get(job_id, conn)
                if current is not None and current.state == JobState.QUEUED:
                    self._ledger.release(conn, job_id)
                    self._charge_budget(conn, job_id, False)
                    self._jobs.finish(
                        conn,
                        job_id,
                        JobState.CANCELLED,
                        reason=JobCancelled.reason,
                        message="cancelled while queued",
                    )
                    self._audit.append(
                        conn,
                        "job.cancelled",
                        **self._entry_fields(principal, info.spec, job_id),
                        charged={"jobs": 0, "rows": 0},
                    )
            self._signal(job_id)
        elif info.state == JobState.RUNNING:
            self._engine.interrupt(job_id)
        return self.get(principal, job_id)

    def find(self, principal: Principal, project: str = "", limit: int = 100) -> list[JobInfo]:
        owner = principal.name if principal.role == Role.RESEARCHER else None
        return self._jobs.find(owner, project, max(1, min(limit, 1000)))

    def result(self, principal: Principal, job_id: str) -> ResultTable:
        info = self._visible_job(principal, job_id)
        if info.state != JobState.SUCCEEDED:
            if info.state.terminal:
                raise JobNotFinished(f"job ended as {info.state.value}: no result", job_id=job_id)
            raise JobNotFinished(f"job is {info.state.value}", job_id=job_id)
        blob = self._jobs.result(job_id)
        if blob is None:
            raise JobFailed("result missing", job_id=job_id)
        return ResultTable.from_json(json.loads(blob))

    # ---- lifecycle --------------------------------------------------------------------
    def recover(self) -> None:
        """After a restart: fail jobs that were mid-read, re-queue those never started."""
        for info in self._jobs.with_state(JobState.RUNNING):
            record = self._catalogue.get(info.spec.dataset)
            self._finish_unreleased(
                info.job_id,
                JobState.FAILED,
                JobFailed("server restarted while the job was running"),
                record.row_count if record else 0,
            )
        for info in self._jobs.with_state(JobState.QUEUED):
            record = self._catalogue.get(info.spec.dataset)
            policy = self._policies.get(info.spec.dataset)
            if record is None or policy is None:
                self._finish_unreleased(
                    info.job_id, JobState.FAILED, JobFailed("dataset no longer registered"), 0
                )
                continue
            try:
                job_plan = plan(info.spec, record, policy)
                terms = _noise_terms(info.spec, policy, record)
            except SandboxError as exc:
                self._finish_unreleased(info.job_id, JobState.FAILED, exc, 0)
                continue
            self._executor.submit(self._execute, info, job_plan, record, policy, terms)

    def shutdown(self, wait: bool = True) -> None:
        """Stop: queued jobs stay QUEUED (resumed at next start); running ones are interrupted."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._engine.interrupt_all()
        self._executor.shutdown(wait=wait)


def disclose(
    raw: RawTable,
    spec: JobSpec,
    job_plan: Plan,
    record: DatasetRecord,
    policy: Policy,
    terms: NoiseTerms | None,
) -> ResultTable:
    """Disclosure control of one computed table: DP noise, or rules (plus cell-key noise)."""
    if terms is not None:
        return protect_noised(raw, spec, job_plan.key_spaces, terms)
    check_query_set(raw, record.persons, policy.disclosure.min_persons_per_cell)
    table = protect(
        raw,
        spec,
        job_plan.key_spaces,
        Settings(
            min_persons=policy.disclosure.min_persons_per_cell,
            rounding_base=policy.disclosure.rounding_base,
            max_groups=policy.limits.max_groups,
            zeros_disclosive=policy.disclosure.zeros_disclosive,
            dominance=policy.disclosure.dominance,
            p_percent=policy.disclosure.p_percent,
        ),
    )
    if policy.disclosure.noise.cell_key:  # after suppression, on true counts
        table = perturb_counts(table, raw, spec, cell_key_table(policy))
    return table


def _check_shape(spec: JobSpec) -> None:
    if not spec.dataset or not spec.project or not spec.purpose:
        raise InvalidJobSpec("a job needs a dataset, a project and a purpose")
    if not spec.aggregates:
        raise InvalidJobSpec("a job needs at least one aggregate")
    names = [a.name for a in spec.aggregates]
    if len(set(names)) != len(names) or set(names) & set(spec.group_by):
        raise InvalidJobSpec("output column names must be unique (set an alias)")
    if spec.margins and not spec.group_by:
        raise InvalidJobSpec("margins need at least one group-by column")
    for agg in spec.aggregates:
        problem = quantile_problem(agg)
        if problem:
            raise InvalidJobSpec(problem)


@dataclass(frozen=True)
class Vetted:
    """A job that passed every check before acceptance: its canonical spec and plan."""

    spec: JobSpec
    record: DatasetRecord
    policy: Policy
    project: Project
    plan: Plan
    terms: NoiseTerms | None


@dataclass
class _Waiters:
    """Callers long-polling one job, and the table it released (set before ``event``)."""

    event: threading.Event = field(default_factory=threading.Event)
    released: ResultTable | None = None


@dataclass(frozen=True)
class _Admission:
    """What the write transaction of a submit needs to know about the job."""

    principal: Principal
    spec: JobSpec
    job_id: str
    request_id: str
    base: dict[str, Any]
    record: DatasetRecord
    policy: Policy
    terms: NoiseTerms | None


def _noise_terms(spec: JobSpec, policy: Policy, record: DatasetRecord) -> NoiseTerms | None:
    if policy.disclosure.noise.cell_key:
        check_cell_key_job(spec)
    if not policy.disclosure.noise.enabled:
        return None
    return noise_terms(spec, policy, record.persons_unique)


def _record_key_pads(db: Database, policy: Policy) -> tuple[bytes, bytes] | None:
    """A cell-key dataset's record-key pads (the secret lives beside the state store)."""
    if not policy.disclosure.noise.cell_key:
        return None
    return record_key_secret(db.path.parent).pads()


def _budget_limits(policy: Policy) -> BudgetLimits:
    b = policy.disclosure.budget
    return BudgetLimits(
        epsilon_per_project=b.epsilon_per_project,
        epsilon_per_population=b.epsilon_per_population,
        delta_per_project=b.delta_per_project,
        delta_per_population=b.delta_per_population,
        window_days=b.window_days,
    )


def _ensure_unchanged(record: DatasetRecord) -> None:
    """Refuse a source file that is not the version registered (its facts would be stale)."""
    if file_fingerprint(record.source) != record.file_fingerprint:
        raise DatasetChanged(
            f"the source of dataset '{record.id}' changed after it was registered: "
            "a steward must register it again"
        )


def _principal_of(info: JobInfo) -> Principal:
    return Principal(info.principal, Role.RESEARCHER)
