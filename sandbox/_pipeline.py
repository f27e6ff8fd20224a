"""The job pipeline: authorise → reserve → compute → disclosure control → release → log.

Transport-free: it takes domain objects and a ``Principal`` and raises ``SandboxError``s; the
gRPC servicer only converts. Every decision and release is appended to the audit log in the
same transaction as the state change it records, before the caller can observe it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import secrets
import sqlite3
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

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
from sandbox._review_flow import ReviewFlow
from sandbox.audit import AuditLog, Receipt
from sandbox.disclosure import (
    NeedsExactContributions,
    NoiseTerms,
    ReleasedCells,
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
from sandbox.policy import (
    Policy,
    canonicalize,
    decide,
    release_review_reasons,
    review_reasons,
)
from sandbox.state import (
    AtRestKeys,
    BudgetLimits,
    Catalogue,
    Database,
    DatasetRecord,
    Jobs,
    Ledger,
    PrivacyLedger,
    Projects,
    ReleaseRegister,
    Reviews,
    Shortfall,
)
from sandbox.state._exceptions import Exceptions

Today = Callable[[], dt.date]
T = TypeVar("T")
_UNSTARTED = {JobState.QUEUED: "queued", JobState.AWAITING_APPROVAL: "awaiting approval"}
"""States of a job that has read nothing yet (cancelling it charges nothing)."""
log = logging.getLogger("sandbox.jobs")
_CANCEL_POLL_S = 0.2
"""How often a process looks for cancellations of its running jobs asked of a sibling."""
_WAIT_POLL_FIRST_S = 0.01
_WAIT_POLL_MAX_S = 0.2
"""Polling of a job running in a sibling process: first interval, doubling up to this."""
_RECEIPTS_KEPT = 4096
"""Receipts of recent releases kept in memory for their waiting callers."""


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _ending(exc: Exception, job_id: str) -> tuple[JobState, SandboxError]:
    """How a job that raised ``exc`` ends, and the error it ends with (internals: type only)."""
    if isinstance(exc, DisclosureControl | PolicyDenied):
        return JobState.DENIED, exc
    if isinstance(exc, JobCancelled):
        return JobState.CANCELLED, exc
    if isinstance(exc, SandboxError):
        return JobState.FAILED, exc
    return JobState.FAILED, JobFailed(f"internal error ({type(exc).__name__})", job_id=job_id)


def _grants(project: Project, principal: Principal, dataset: str) -> bool:
    """Whether ``principal`` is a member of ``project`` and it holds a grant on ``dataset``."""
    return principal.name in project.members and any(d == dataset for d, _ in project.grants)


class JobPipeline(ReviewFlow):
    def __init__(
        self,
        db: Database,
        engine: Engine,
        policies: dict[str, Policy],
        *,
        workers: int = 2,
        today: Today = _utc_today,
        at_rest: AtRestKeys,
        policy_source: Callable[[DatasetRecord], Policy | None] | None = None,
    ) -> None:
        """``at_rest``: the data-at-rest keys that seal stored results. ``policy_source``: the
        policy of a registered dataset as registered (None if its file changed since), for
        datasets registered or re-registered by another server process after this one
        loaded its policies."""
        self._db = db
        self._engine = engine
        self._policies = policies
        self._policy_source = policy_source
        self._catalogue = Catalogue(db)
        self._projects = Projects(db)
        self._exceptions = Exceptions(db)
        self._jobs = Jobs(db, at_rest)
        self._ledger = Ledger()
        self._budget = PrivacyLedger()
        self._releases = ReleaseRegister(ReleasedCells)
        self._reviews = Reviews(db)
        self._audit = AuditLog(db)
        self._today = today
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-job")
        self._waiting: dict[str, _Waiters] = {}
        self._receipts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Receipts of this process's latest releases, by job id (under ``_waiting_lock``)."""
        self._waiting_lock = threading.Lock()
        self._local: set[str] = set()
        """Jobs queued or running in this process (others may run in sibling processes), and
        jobs being admitted with a worker claimed for them (see ``_claim_worker``)."""
        self._queued: deque[_Task] = deque()
        """This process's jobs not yet started, oldest first (under ``_waiting_lock``)."""
        self._closing = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch_cancellations, name="sandbox-cancel-watch", daemon=True
        )
        self._watcher.start()

    # ---- visibility -------------------------------------------------------------------
    def visible_dataset(
        self, principal: Principal, dataset: str, project: Project | None = None
    ) -> DatasetRecord:
        """The dataset if the caller may see it; otherwise exactly the not-found error.

        ``project``, if given, is checked first: membership of it with a grant on the dataset
        settles visibility without reading every project.
        """
        record = self._catalogue.get(dataset)
        if record is not None and self._policy_source is not None:
            loaded = self._policies.get(dataset)
            if loaded is None or loaded.version_label != record.policy_version:
                fresh = self._policy_source(record)  # registered by a sibling process
                if fresh is not None:
                    self._policies[dataset] = fresh
        if (
            record is None
            or dataset not in self._policies
            or not self._may_see(principal, dataset, project)
        ):
            raise NotFound(f"dataset '{dataset}' not found")
        return record

    def _may_see(self, principal: Principal, dataset: str, project: Project | None) -> bool:
        if principal.role != Role.RESEARCHER:
            return True
        projects = [project] if project is not None else []
        return any(_grants(p, principal, dataset) for p in projects) or any(
            _grants(p, principal, dataset) for p in self._projects.list()
        )

    def _visible_job(self, principal: Principal, job_id: str) -> JobInfo:
        info = self._jobs.get(job_id)
        if info is None or (principal.role == Role.RESEARCHER and info.principal != principal.name):
            raise NotFound(f"job '{job_id}' not found")
        return info

    # ---- submit -----------------------------------------------------------------------
    def submit(self, principal: Principal, spec: JobSpec, request_id: str = "") -> JobInfo:
        info, run = self._admit_job(principal, spec, request_id)
        if run is not None:
            started = info.state == JobState.RUNNING  # a worker was claimed for it
            self._enqueue(info, run.plan, run.record, run.policy, run.terms, started=started)
        return info

    def _claim_worker(self, job_id: str) -> bool:
        """Claim an idle worker for a job about to be admitted, so that it can be recorded as
        RUNNING in its admission transaction (one write fewer); False if every worker is
        busy (it is then recorded as QUEUED). Undo with ``_unclaim`` unless it is enqueued."""
        with self._waiting_lock:
            if len(self._local) >= self._workers or self._closing.is_set():
                return False
            self._local.add(job_id)
            return True

    def _unclaim(self, job_id: str) -> None:
        with self._waiting_lock:
            self._local.discard(job_id)

    def run_partial(
        self,
        principal: Principal,
        spec: JobSpec,
        publish: Callable[[RawTable], tuple[T, str]],
        request_id: str = "",
    ) -> tuple[JobInfo, T]:
        """Federation, node side: run a job's aggregation and hand its cells to ``publish``.

        The job is checked, charged and logged like any other, but its cells are not released
        here: ``publish`` turns them into what leaves the node (encrypted partials) and names
        its digest, which the log records. Disclosure control applies to the combined table,
        so a dataset in differential-privacy mode takes no part (its noise is per release).
        Runs on a job worker; the caller blocks until it ends.
        """
        info, run = self._admit_job(principal, spec, request_id, federated=True)
        if run is None:
            raise InvalidArgument("request id was already used: partials are sent only once")
        with self._waiting_lock:
            self._local.add(info.job_id)
        future = self._executor.submit(
            self._execute_partial, info, run.plan, run.record, run.policy, publish
        )
        return future.result()

    def _admit_job(
        self, principal: Principal, spec: JobSpec, request_id: str, *, federated: bool = False
    ) -> tuple[JobInfo, _Run | None]:
        """Check, then record and charge a job (or its refusal); what to run, unless it was
        answered already (a replay) or the request id names an earlier submission."""
        request_id = request_id or secrets.token_hex(16)
        if len(request_id) > 128:
            raise InvalidArgument("request ids are at most 128 characters")
        existing = self._jobs.by_request(principal.name, request_id)
        if existing is not None:
            return self._replay(existing, spec), None
        job_id = secrets.token_hex(16)
        try:
            vetted = self.vet(principal, spec)
            if federated and vetted.terms is not None:
                raise PolicyDenied(
                    f"dataset '{spec.dataset}' is released with differential privacy only: it "
                    "takes no part in federated jobs",
                    rule_ids=("federation.dp",),
                )
        except SandboxError as exc:
            base = self._entry_fields(principal, spec, job_id)
            # A policy refusal comes after the visibility check: name the version that refused.
            known = isinstance(exc, PolicyDenied) and spec.dataset in self._policies
            version = self._policies[spec.dataset].version_label if known else ""
            with self._db.write() as conn:
                self._record_refusal(conn, principal, spec, job_id, request_id, exc, base, version)
            raise
        spec, record, policy, project = vetted.spec, vetted.record, vetted.policy, vetted.project
        terms = vetted.terms
        why = () if federated else review_reasons(policy.review, spec)
        base = self._entry_fields(principal, spec, job_id)
        admission = _Admission(principal, spec, job_id, request_id, base, record, policy, terms)
        claimed = not federated and not why and self._claim_worker(job_id)

        def admit(conn: sqlite3.Connection) -> JobInfo | SandboxError:
            """The job as recorded, the earlier job of its request id, or its recorded refusal."""
            existing = self._jobs.by_request(principal.name, request_id, conn)
            if existing is not None:
                return existing
            refusal = self._admit(conn, admission, project)
            if refusal is None and not self._consume_exception(conn, vetted, admission):
                refusal = PolicyDenied(
                    "the exception granted for this job was used meanwhile by another job",
                    rule_ids=vetted.waived,
                )
                self._record_refusal(
                    conn, principal, spec, job_id, request_id, refusal, base, policy.version_label
                )
            if refusal is not None:
                return refusal
            replayed = self._replay_answer(conn, admission) if terms is not None else None
            return replayed or self._accept(conn, admission, project, why, start=claimed)

        outcome: JobInfo | SandboxError | None = None
        try:
            outcome = self._db.write_together(admit)
        finally:
            if claimed and not (
                isinstance(outcome, JobInfo)
                and outcome.job_id == job_id
                and outcome.state == JobState.RUNNING
            ):
                self._unclaim(job_id)
        if isinstance(outcome, SandboxError):
            raise outcome  # recorded and committed: a refusal is logged before it is seen
        if outcome.job_id != job_id:
            return self._replay(outcome, spec), None
        if why or outcome.state == JobState.SUCCEEDED:  # held for review, or a replayed answer
            return outcome, None
        return outcome, _Run(vetted.plan, record, policy, terms)

    def vet(self, principal: Principal, spec: JobSpec) -> Vetted:
        """Every check a job passes before it is accepted; reads no data, writes nothing."""
        if principal.role != Role.RESEARCHER:
            raise PermissionDenied("only researchers submit jobs", rule_ids=("principal.role",))
        _check_shape(spec)
        project = self._projects.get(spec.project)
        record = self.visible_dataset(principal, spec.dataset, project)
        policy = self._policies[spec.dataset]
        decision = decide(policy, spec, principal, project, self._today())
        waived: tuple[str, ...] = ()
        waived_digest = ""
        if not decision.allowed:
            waived_digest = spec.digest()  # the job as asked: what an exception names
            covered = self._exceptions.covers(
                principal.name, spec.project, waived_digest, decision.rule_ids
            )
            if covered is None:
                raise PolicyDenied(
                    "; ".join(r.message for r in decision.reasons), rule_ids=decision.rule_ids
                )
            waived = decision.rule_ids
        # Rewrites of one query become one spec: what runs, is logged and is replayed.
        spec = canonicalize(spec, policy, column_types=record.column_types)
        job_plan = plan(spec, record, policy)
        _ensure_unchanged(record)
        terms = _noise_terms(spec, policy, record)
        assert project is not None
        return Vetted(spec, record, policy, project, job_plan, terms, waived, waived_digest)

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

    def _consume_exception(self, conn: sqlite3.Connection, vetted: Vetted, a: _Admission) -> bool:
        """Use up the granted exception a job relies on, inside its admission transaction (so
        a quota refusal leaves it, and two identical jobs cannot both use it)."""
        if not vetted.waived:
            return True
        return self._exceptions.consume(
            conn,
            a.principal.name,
            vetted.project.id,
            vetted.waived_digest,
            vetted.waived,
            job_id=a.job_id,
        )

    def _replay_answer(self, conn: sqlite3.Connection, a: _Admission) -> JobInfo | None:
        """Answer a repeated noised query with its first release: no new noise, no new charge."""
        earlier = self._jobs.released_answer(
            conn, a.spec.digest(), a.policy.version_label, a.record.file_fingerprint
        )
        if earlier is None:
            return None
        earlier_id, blob, digest = earlier
        info = self._jobs.insert(
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
        seq = self._audit.append(
            conn,
            "job.replayed",
            **a.base,
            decision="allow",
            policy_version=a.policy.version_label,
            replay_of=earlier_id,
            result_digest=digest,
            charged={"jobs": 0, "rows": 0, "epsilon": "0", "delta": "0"},
        )
        self._jobs.set_release_seq(conn, a.job_id, seq)
        return info

    def _accept(
        self,
        conn: sqlite3.Connection,
        a: _Admission,
        project: Project,
        why: tuple[str, ...] = (),
        *,
        start: bool = False,
    ) -> JobInfo:
        """Record the job as QUEUED (or, if ``why`` names reasons for human review, as
        AWAITING_APPROVAL; with ``start``, a worker claimed for it, as RUNNING, about to read)
        and reserve its quota (and budget) before any read."""
        today = self._today()
        state = JobState.RUNNING if start else JobState.QUEUED
        info = self._jobs.insert(
            conn,
            job_id=a.job_id,
            request_id=a.request_id,
            principal=a.principal.name,
            spec=a.spec,
            state=JobState.AWAITING_APPROVAL if why else state,
            policy_version=a.policy.version_label,
            data_version=a.record.file_fingerprint,
            message=f"awaiting approval: {'; '.join(why)}" if why else "",
        )
        held: dict[str, Any] = {}
        if why:
            required = a.policy.review.approvals if a.policy.review else 1
            self._reviews.hold(conn, a.job_id, required, why)
            held = {"review": list(why), "approvals_required": required}
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
            "job.held" if why else "job.accepted",
            **a.base,
            decision="review" if why else "allow",
            policy_version=a.policy.version_label,
            reserved=reserved,
            **held,
        )
        return info

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
    def _enqueue(
        self,
        info: JobInfo,
        job_plan: Plan,
        record: DatasetRecord,
        policy: Policy,
        terms: NoiseTerms | None,
        *,
        started: bool = False,
    ) -> None:
        """Run a job on a worker; ``started``: it is RUNNING already, on a claimed worker."""
        task = _Task(info, _Run(job_plan, record, policy, terms))
        with self._waiting_lock:
            self._local.add(info.job_id)
            if not started:
                self._queued.append(task)
        self._executor.submit(self._work, task if started else None)

    def _work(self, task: _Task | None) -> None:
        """A worker's turn: ``task`` (started already), else the oldest job still queued, then
        each job it starts in the transaction that releases the one before."""
        step: tuple[_Task, bool, JobInfo | None] | None = (task, True, task.info) if task else None
        if step is None:
            with self._waiting_lock:
                if not self._queued:
                    return  # a worker ending a job started it (see ``_start_next``)
                step = (self._queued.popleft(), False, None)
        while step is not None:
            step = self._execute(*step)

    def _start_next(self, conn: sqlite3.Connection) -> tuple[_Task, JobInfo | None] | None:
        """Start this process's oldest queued job in the open transaction of the worker that is
        ending one, which runs it next: one write fewer than starting it on its own. The job
        and its record as started (None: cancelled while queued), or None if none waits."""
        with self._waiting_lock:
            if self._closing.is_set() or not self._queued:
                return None  # shutting down: queued jobs stay QUEUED, resumed at next start
            task = self._queued.popleft()
        try:
            return task, self._jobs.start(conn, task.info)
        except Exception:  # its own turn will start it; the release goes on
            self._requeue(task)
            return None

    def _requeue(self, task: _Task) -> None:
        """Put back a job whose start was rolled back; its own turn may have passed."""
        with self._waiting_lock:
            self._queued.appendleft(task)
        with contextlib.suppress(RuntimeError):  # shut down: it stays QUEUED until restart
            self._executor.submit(self._work, None)

    def _is_local(self, job_id: str) -> bool:
        with self._waiting_lock:
            return job_id in self._local

    def _execute(
        self, task: _Task, started: bool, running: JobInfo | None
    ) -> tuple[_Task, bool, JobInfo | None] | None:
        """Run a job; ``started``: ``running`` is its record as started (None: it was cancelled
        while queued). Returns the next job to run, if its release started one."""
        info = task.info
        job_plan, record, policy, terms = (
            task.run.plan,
            task.run.record,
            task.run.policy,
            task.run.terms,
        )
        job_id = info.job_id
        released: ResultTable | None = None
        final: JobInfo | None = None
        following: tuple[_Task, JobInfo | None] | None = None
        try:
            if not started:
                running = self._db.write_together(lambda conn: self._jobs.start(conn, info))
            if running is None:
                return None  # cancelled while queued
            raw, table = self._compute(job_id, info.spec, job_plan, record, policy, terms)
            _ensure_unchanged(record)  # what was read is what was registered
            persons = None if terms is not None else {c.keys: c.persons for c in raw.cells}
            rules = {c.rule for r in table.rows for c in r.cells if c.rule}
            why = release_review_reasons(policy.review, rules)
            if why:
                self._hold_release(running, table, persons, policy, why)
                return None
            claimed: list[tuple[_Task, JobInfo | None]] = []
            released, final = self._release(running, table, record, policy, persons, claimed)
            following = claimed[0] if claimed else None
        except Exception as exc:
            state, error = _ending(exc, job_id)
            final = self._finish_unreleased(job_id, state, error, record.row_count)
        finally:
            with self._waiting_lock:
                self._local.discard(job_id)
            self._signal(job_id, released, final)
        return None if following is None else (following[0], True, following[1])

    def _execute_partial(
        self,
        info: JobInfo,
        job_plan: Plan,
        record: DatasetRecord,
        policy: Policy,
        publish: Callable[[RawTable], tuple[T, str]],
    ) -> tuple[JobInfo, T]:
        job_id = info.job_id
        final: JobInfo | None = None
        try:
            with self._db.write() as conn:
                running = self._jobs.start(conn, info)
            if running is None:
                raise JobCancelled("job was cancelled", job_id=job_id)
            raw = self._engine.run(job_id, job_plan, _record_key_pads(self._db, policy))
            _ensure_unchanged(record)
            payload, digest = publish(raw)
            rows = record.row_count
            with self._db.write() as conn:
                self._ledger.commit(conn, job_id, rows)
                final = self._jobs.finish(
                    conn, running, JobState.SUCCEEDED, rows_scanned=rows, result_digest=digest
                )
                self._audit.append(
                    conn,
                    "job.partial",
                    **self._entry_fields(info.submitter, info.spec, job_id),
                    policy_version=info.policy_version,
                    charged={"jobs": 1, "rows": rows},
                    result_digest=digest,
                    cells=len(raw.cells),
                )
            return final, payload
        except Exception as exc:
            state, error = _ending(exc, job_id)
            final = self._finish_unreleased(job_id, state, error, record.row_count)
            if error is exc:
                raise
            raise error from None
        finally:
            with self._waiting_lock:
                self._local.discard(job_id)
            self._signal(job_id, None, final)

    def _planned(
        self, spec: JobSpec, record: DatasetRecord, policy: Policy
    ) -> tuple[Plan, NoiseTerms | None]:
        """The plan and noise terms of an accepted (canonical) spec, as ``vet`` made them."""
        return plan(spec, record, policy), _noise_terms(spec, policy, record)

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
        claim: list[tuple[_Task, JobInfo | None]] | None = None,
    ) -> tuple[ResultTable, JobInfo]:
        """Release a protected table; the table as released and the job's final record.

        ``claim``: a worker's, to which the release's transaction adds the queued job it
        started for that worker to run next (see ``_start_next``).

        In rule-based mode (``persons`` given) the differencing guard checks it against the
        release register: against the committed register before the write lock, then, in the
        transaction that records the release, against the cells recorded since. Only noised
        jobs (``persons`` None) hold privacy budget.
        """
        rows = record.row_count
        table = replace(table, policy_version=info.policy_version)
        fields = self._entry_fields(info.submitter, info.spec, info.job_id)
        version = record.file_fingerprint
        entries: list[tuple[str, int]] = []
        seen = 0
        if persons is not None:
            with self._releases.committed(self._db.conn, record.id) as (prior, seen):
                table, entries = differencing_guard(
                    table, persons, info.spec, policy, prior, data_version=version
                )
        # Outside the write lock: the digest and the sealed copy of the table as it stands
        # (used unless the guard then suppresses more of it).
        as_is = table.digest(), self._jobs.seal_result(info.job_id, table.canonical_json().encode())

        def release(conn: sqlite3.Connection) -> tuple[ResultTable, JobInfo, Receipt]:
            released, cells = table, entries
            if persons is not None:
                if later := self._releases.since(conn, record.id, seen):
                    released, cells = differencing_guard(
                        table,
                        persons,
                        info.spec,
                        policy,
                        [released_cell(*row) for row in later],
                        data_version=version,
                    )
                self._releases.record(
                    conn,
                    dataset=record.id,
                    population=policy.population,
                    project=info.spec.project,
                    job_id=info.job_id,
                    data_version=version,
                    cells=cells,
                )
            digest, sealed = as_is
            if released is not table:
                digest = released.digest()
                sealed = self._jobs.seal_result(info.job_id, released.canonical_json().encode())
            statuses = [c.status for r in released.rows for c in r.cells]
            self._ledger.commit(conn, info.job_id, rows)
            charged: dict[str, int | str] = {"jobs": 1, "rows": rows}
            if persons is None:
                charged |= self._charge_budget(conn, info.job_id, True)
            receipt = self._audit.append_with_receipt(
                conn,
                "job.released",
                **fields,
                policy_version=info.policy_version,
                charged=charged,
                result_digest=digest,
                cells={s.value: statuses.count(s) for s in CellStatus},
            )
            final = self._jobs.finish(
                conn,
                info,
                JobState.SUCCEEDED,
                rows_scanned=rows,
                sealed_result=sealed,
                result_digest=digest,
                release_seq=receipt.seq,
            )
            if claim is not None and (following := self._start_next(conn)) is not None:
                claim.append(following)  # last in the body: nothing after it can fail
            return released, final, receipt

        def unclaim() -> None:  # the shared COMMIT failed: the start was rolled back too
            for task, _ in claim or ():
                self._requeue(task)
            if claim:
                claim.clear()

        table, final, receipt = self._db.write_together(release, on_rollback=unclaim)
        with self._waiting_lock:
            self._receipts[info.job_id] = receipt.to_dict()
            if len(self._receipts) > _RECEIPTS_KEPT:
                self._receipts.popitem(last=False)
        return table, final

    def _finish_unreleased(
        self, job_id: str, state: JobState, exc: SandboxError, rows: int
    ) -> JobInfo:
        """End a job without a release; charge it if data was read, else free the quota.

        Returns the job's final record."""
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
            final = self._jobs.finish(
                conn,
                info,
                state,
                reason=exc.reason,
                message=exc.message,
                rule_ids=exc.rule_ids,
                rows_scanned=rows if read else 0,
            )
            self._audit.append(
                conn,
                f"job.{state.value.lower()}",
                **self._entry_fields(info.submitter, info.spec, job_id),
                policy_version=info.policy_version,
                decision="deny" if state == JobState.DENIED else "none",
                reason=exc.reason,
                rule_ids=list(exc.rule_ids),
                message=exc.message,
                charged=charged,
            )
        return final

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

    def _waiters(self, job_id: str) -> tuple[_Waiters, bool]:
        """Register a caller's interest; also whether the job is queued or running in this
        process, so that its end is yet to be signalled to the waiters returned."""
        with self._waiting_lock:
            waiters = self._waiting.setdefault(job_id, _Waiters())
            waiters.count += 1
            return waiters, job_id in self._local

    def _unwait(self, job_id: str, waiters: _Waiters) -> None:
        """Withdraw one caller's interest; the last one out drops the bookkeeping."""
        with self._waiting_lock:
            waiters.count -= 1
            if waiters.count == 0 and self._waiting.get(job_id) is waiters:
                del self._waiting[job_id]

    def _signal(
        self, job_id: str, released: ResultTable | None = None, final: JobInfo | None = None
    ) -> None:
        """Wake the waiters of one job (called after its terminal state is committed), handing
        them the job's final record and released table when the caller has them."""
        with self._waiting_lock:
            waiters = self._waiting.pop(job_id, None)
        if waiters is not None:
            waiters.released = released
            waiters.final = final
            waiters.event.set()

    def wait(self, principal: Principal, job_id: str, timeout: float) -> JobInfo:
        """Long-poll: return when the job is terminal or ``timeout`` seconds have passed."""
        return self.wait_for_result(principal, job_id, timeout, with_result=False)[0]

    def wait_for_result(
        self,
        principal: Principal,
        job_id: str,
        timeout: float,
        *,
        with_result: bool = True,
        known: JobInfo | None = None,
    ) -> tuple[JobInfo, ResultTable | None]:
        """Long-poll like ``wait``; also the released table if the job succeeded.

        A waiter woken by the end of the job gets its final record and the table the worker
        just stored, without reading them back from the state store. ``known``: the record
        ``submit`` just returned to this principal; it stands for the first read while the
        job is still queued or running in this process (its end is then still to be signalled).
        """
        # Registered before the read, so no wake-up is lost.
        waiters, pending_here = self._waiters(job_id)
        try:
            if known is not None and known.job_id == job_id and pending_here:
                info = known
            else:
                info = self.get(principal, job_id)
            deadline = time.monotonic() + timeout
            poll = _WAIT_POLL_FIRST_S
            while not info.state.terminal and (left := deadline - time.monotonic()) > 0:
                # A job of this process signals its end; one in a sibling process is polled.
                local = self._is_local(job_id)
                if waiters.event.wait(left if local else min(poll, left)):
                    final = waiters.final
                    info = replace(final, progress=1.0) if final else self.get(principal, job_id)
                    if waiters.released is not None and info.state == JobState.SUCCEEDED:
                        return info, waiters.released if with_result else None
                    break
                if not local:
                    info = self.get(principal, job_id)
                    poll = min(poll * 2, _WAIT_POLL_MAX_S)
        finally:
            self._unwait(job_id, waiters)
        if not with_result or info.state != JobState.SUCCEEDED:
            return info, None
        return info, self.result(principal, job_id)

    def cancel(self, principal: Principal, job_id: str) -> JobInfo:
        info = self._visible_job(principal, job_id)
        if principal.role not in (Role.RESEARCHER, Role.ADMIN):
            raise PermissionDenied("only the submitting researcher or an admin cancels a job")
        if info.state in _UNSTARTED:
            with self._db.write() as conn:
                current = self._jobs.get(job_id, conn)
                if current is not None and current.state in _UNSTARTED:
                    self._ledger.release(conn, job_id)
                    self._charge_budget(conn, job_id, False)
                    self._jobs.finish(
                        conn,
                        current,
                        JobState.CANCELLED,
                        reason=JobCancelled.reason,
                        message=f"cancelled while {_UNSTARTED[current.state]}",
                    )
                    self._audit.append(
                        conn,
                        "job.cancelled",
                        **self._entry_fields(principal, info.spec, job_id),
                        policy_version=info.policy_version,
                        charged={"jobs": 0, "rows": 0},
                    )
            self._signal(job_id)
        elif info.state == JobState.RUNNING:
            with self._db.write() as conn:
                self._jobs.request_cancel(conn, job_id)  # for a sibling process running it
            if self._is_local(job_id):
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

    def receipt_of(self, info: JobInfo) -> dict[str, Any] | None:
        """The receipt of a job's release: its audit entry's index and leaf hash, a signed
        checkpoint covering it and the inclusion proof (None if nothing was released).

        ``info`` is a record the caller obtained through a visibility check (``get``,
        ``wait_for_result``). Recent releases answer from memory: the receipt made with the
        release is the one the log would give (its checkpoint is the first covering the entry).
        """
        with self._waiting_lock:
            kept = self._receipts.get(info.job_id)
        if kept is not None:
            return kept
        seq = self._jobs.release_seq(info.job_id)
        return None if seq is None else self._audit.receipt(seq).to_dict()

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
                job_plan, terms = self._planned(info.spec, record, policy)
            except SandboxError as exc:
                self._finish_unreleased(info.job_id, JobState.FAILED, exc, 0)
                continue
            self._enqueue(info, job_plan, record, policy, terms)

    def shutdown(self, wait: bool = True) -> None:
        """Stop: queued jobs stay QUEUED (resumed at next start); running ones are interrupted."""
        self._closing.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._engine.interrupt_all()
        self._executor.shutdown(wait=wait)
        self._watcher.join()

    def _watch_cancellations(self) -> None:
        """Interrupt this process's running jobs that a sibling process was asked to cancel."""
        try:
            while not self._closing.wait(_CANCEL_POLL_S):
                with self._waiting_lock:
                    local = set(self._local)
                if not local:
                    continue
                try:
                    asked = self._jobs.cancel_requested() & local
                except sqlite3.Error as exc:
                    log.warning("cancellation check failed (%s)", type(exc).__name__)
                    continue
                for job_id in asked:
                    self._engine.interrupt(job_id)
        finally:
            self._db.close()  # this thread's connection

    def stop_project_jobs(self, project_id: str, actor: Principal) -> int:
        """Stop a revoked project's jobs; how many were stopped.

        Queued jobs and jobs awaiting approval are cancelled as ``cancel`` cancels them (quota
        and budget freed, logged as ``job.cancelled`` by ``actor``); running ones are
        interrupted as ``cancel`` does (logged as ``job.stop_requested``; the worker then ends
        them CANCELLED). A queued job that starts meanwhile is found among the running ones.
        """
        stopped = 0
        unstarted = [i for state in _UNSTARTED for i in self._jobs.with_state(state)]
        for info in unstarted:
            if info.spec.project != project_id:
                continue
            with self._db.write() as conn:
                current = self._jobs.get(info.job_id, conn)
                if current is None or current.state not in _UNSTARTED:
                    continue
                self._ledger.release(conn, info.job_id)
                self._charge_budget(conn, info.job_id, False)
                self._jobs.finish(
                    conn,
                    current,
                    JobState.CANCELLED,
                    reason=JobCancelled.reason,
                    message=f"cancelled while {_UNSTARTED[current.state]}: project "
                    f"'{project_id}' was revoked",
                )
                self._audit.append(
                    conn,
                    "job.cancelled",
                    **self._entry_fields(actor, info.spec, info.job_id),
                    policy_version=info.policy_version,
                    cause="project.revoked",
                    charged={"jobs": 0, "rows": 0},
                )
            self._signal(info.job_id)
            log.info("job %s cancelled: project %s revoked", info.job_id, project_id)
            stopped += 1
        for info in self._jobs.with_state(JobState.RUNNING):
            if info.spec.project != project_id:
                continue
            with self._db.write() as conn:
                self._jobs.request_cancel(conn, info.job_id)  # for a sibling process running it
                self._audit.append(
                    conn,
                    "job.stop_requested",
                    **self._entry_fields(actor, info.spec, info.job_id),
                    policy_version=info.policy_version,
                    cause="project.revoked",
                )
            if self._is_local(info.job_id):
                self._engine.interrupt(info.job_id)
            log.info("job %s interrupted: project %s revoked", info.job_id, project_id)
            stopped += 1
        return stopped


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
    waived: tuple[str, ...] = ()
    """Policy rules a granted exception waives for this job (consumed at admission)."""
    waived_digest: str = ""
    """Digest of the spec as refused (before canonicalisation): what the exception names."""


@dataclass
class _Waiters:
    """Callers long-polling one job, and the table it released (set before ``event``)."""

    event: threading.Event = field(default_factory=threading.Event)
    released: ResultTable | None = None
    final: JobInfo | None = None
    count: int = 0
    """Callers registered; the last to leave drops the entry if no signal did."""


@dataclass(frozen=True)
class _Run:
    """What an accepted job's worker needs."""

    plan: Plan
    record: DatasetRecord
    policy: Policy
    terms: NoiseTerms | None


@dataclass(frozen=True)
class _Task:
    """A job for a worker: its record when enqueued, and what running it needs."""

    info: JobInfo
    run: _Run


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
