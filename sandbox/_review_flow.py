"""Human review, a part of the job pipeline: jobs held before they run or before their
release, and the stewards' decisions on them.

A held job keeps its quota reserved (and, held before release, its protected table sealed at
rest, unreleased). Enough independent approvals run it (or release its table); one rejection
ends it DENIED. Nobody reviews their own job, nor one under a policy they registered. Every
hold and decision is logged in the transaction that makes it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sandbox._errors import (
    InvalidArgument,
    JobFailed,
    NotFound,
    PermissionDenied,
    ReviewRejected,
    SandboxError,
)
from sandbox._model import CellStatus, JobInfo, JobSpec, JobState, Principal, ResultTable, Role
from sandbox.state import Hold

if TYPE_CHECKING:
    from sandbox.audit import AuditLog
    from sandbox.disclosure import NoiseTerms
    from sandbox.engine import Plan
    from sandbox.policy import Policy
    from sandbox.state import Catalogue, Database, DatasetRecord, Jobs, Ledger, Reviews


class ReviewFlow:
    """Mixed into ``JobPipeline``: everything human review adds to a job's life."""

    if TYPE_CHECKING:  # provided by JobPipeline
        _audit: AuditLog
        _catalogue: Catalogue
        _db: Database
        _jobs: Jobs
        _ledger: Ledger
        _policies: dict[str, Policy]
        _reviews: Reviews

        def _charge_budget(self, conn: Any, job_id: str, read: bool) -> dict[str, str]: ...
        def _enqueue(
            self,
            info: JobInfo,
            job_plan: Plan,
            record: DatasetRecord,
            policy: Policy,
            terms: NoiseTerms | None,
        ) -> None: ...
        def _entry_fields(
            self, principal: Principal, spec: JobSpec, job_id: str
        ) -> dict[str, Any]: ...
        def _finish_unreleased(
            self, job_id: str, state: JobState, exc: SandboxError, rows: int
        ) -> JobInfo: ...
        def _planned(
            self, spec: JobSpec, record: DatasetRecord, policy: Policy
        ) -> tuple[Plan, NoiseTerms | None]: ...
        def _release(
            self,
            info: JobInfo,
            table: ResultTable,
            record: DatasetRecord,
            policy: Policy,
            persons: dict[tuple[Any, ...], int] | None,
        ) -> tuple[ResultTable, JobInfo]: ...
        def _signal(
            self, job_id: str, released: ResultTable | None = None, final: JobInfo | None = None
        ) -> None: ...

    def pending_reviews(self, principal: Principal) -> list[tuple[JobInfo, Hold]]:
        """Jobs awaiting approval, oldest first (stewards and admins)."""
        _require_reviewer(principal)
        out = []
        for hold in self._reviews.pending():
            info = self._jobs.get(hold.job_id)
            if info is not None and info.state == JobState.AWAITING_APPROVAL:
                out.append((info, hold))
        return out

    def decide_review(
        self, principal: Principal, job_id: str, approve: bool, reason: str
    ) -> JobInfo:
        """One reviewer's decision on a held job: it runs once enough independent reviewers
        approved; one rejection ends it DENIED, uncharged. Nobody reviews their own job or a
        job under a policy they registered."""
        _require_reviewer(principal)
        if not reason.strip():
            raise InvalidArgument("a review decision needs a reason")
        info = self._jobs.get(job_id)
        if info is None:
            raise NotFound(f"job '{job_id}' not found")
        if info.principal == principal.name:
            raise PermissionDenied("nobody reviews their own job", rule_ids=("review.own_job",))
        if self._catalogue.registered_by(info.spec.dataset) == principal.name:
            raise PermissionDenied(
                "you registered this dataset's policy: another steward must review its jobs",
                rule_ids=("review.policy_author",),
            )
        queued: JobInfo | None = None
        release: JobInfo | None = None
        final: JobInfo | None = None
        rejected = False
        with self._db.write() as conn:
            current = self._jobs.get(job_id, conn)
            hold = self._reviews.get(job_id, conn)
            if current is None or hold is None or current.state != JobState.AWAITING_APPROVAL:
                raise InvalidArgument(f"job '{job_id}' is not awaiting approval")
            if not self._reviews.decide(conn, job_id, principal.name, approve, reason):
                raise PermissionDenied(
                    "you already decided on this job: approvals must be independent",
                    rule_ids=("review.independent",),
                )
            approvals = len(hold.approvals) + int(approve)
            fields = self._entry_fields(principal, info.spec, job_id)
            self._audit.append(
                conn,
                "review.approved" if approve else "review.rejected",
                **fields,
                policy_version=info.policy_version,
                submitter=info.principal,
                reason=reason,
                approvals=approvals,
                approvals_required=hold.required,
            )
            if not approve and hold.stage == "release":
                rejected = True  # it read data: charged, like any job that ends unreleased
            elif not approve:
                self._ledger.release(conn, job_id)
                self._charge_budget(conn, job_id, False)
                final = self._jobs.finish(
                    conn,
                    current,
                    JobState.DENIED,
                    reason=ReviewRejected.reason,
                    message=f"rejected in review: {reason}",
                    rule_ids=("review.rejected",),
                )
            elif approvals >= hold.required and hold.stage == "release":
                release = current
            elif approvals >= hold.required:
                queued = self._jobs.queue_held(conn, current)
        if rejected:
            refusal = ReviewRejected(f"rejected in review: {reason}", rule_ids=("review.rejected",))
            record = self._catalogue.get(info.spec.dataset)
            rows = record.row_count if record else 0
            final = self._finish_unreleased(job_id, JobState.DENIED, refusal, rows)
        elif release is not None:
            final = self._release_approved(release)
        if final is not None:
            self._signal(job_id, None, final)
            return final
        if queued is not None:
            self._run_approved(queued)
        return self._jobs.get(job_id) or info

    def _run_approved(self, info: JobInfo) -> None:
        """Queue an approved job, unless its policy or data changed while it waited."""
        policy = self._policies.get(info.spec.dataset)
        record = self._catalogue.get(info.spec.dataset)
        if policy is None or record is None or policy.version_label != info.policy_version:
            failure = JobFailed("the dataset's policy changed while the job awaited approval")
            final = self._finish_unreleased(info.job_id, JobState.FAILED, failure, 0)
            self._signal(info.job_id, None, final)
            return
        try:
            job_plan, terms = self._planned(info.spec, record, policy)
        except SandboxError as exc:
            final = self._finish_unreleased(info.job_id, JobState.FAILED, exc, 0)
            self._signal(info.job_id, None, final)
            return
        self._enqueue(info, job_plan, record, policy, terms)

    def _hold_release(
        self,
        info: JobInfo,
        table: ResultTable,
        persons: dict[tuple[Any, ...], int] | None,
        policy: Policy,
        why: tuple[str, ...],
    ) -> None:
        """Keep a computed, protected table unreleased (sealed at rest) until stewards approve
        it; the job stays charged for the data it read, whatever they decide."""
        held = {
            "table": table.to_json(),
            "persons": None if persons is None else [persons.get(r.keys) for r in table.rows],
        }
        required = policy.review.approvals if policy.review else 1
        with self._db.write() as conn:
            self._jobs.hold_release(
                conn,
                info,
                json.dumps(held).encode(),
                f"awaiting approval of its release: {'; '.join(why)}",
            )
            self._reviews.hold(conn, info.job_id, required, why, stage="release")
            statuses = [c.status for r in table.rows for c in r.cells]
            self._audit.append(
                conn,
                "job.held",
                **self._entry_fields(info.submitter, info.spec, info.job_id),
                decision="review",
                stage="release",
                policy_version=info.policy_version,
                review=list(why),
                approvals_required=required,
                cells={s.value: statuses.count(s) for s in CellStatus},
            )

    def _release_approved(self, info: JobInfo) -> JobInfo:
        """Release the table an approved job held (its differencing guard runs now)."""
        policy = self._policies.get(info.spec.dataset)
        record = self._catalogue.get(info.spec.dataset)
        blob = self._jobs.result(info.job_id)  # the held table, opened (server side only)
        if policy is None or record is None or blob is None:
            failure = JobFailed("the dataset changed while the release awaited approval")
            return self._finish_unreleased(info.job_id, JobState.FAILED, failure, 0)
        held = json.loads(blob)
        table = ResultTable.from_json(held["table"])
        persons = None
        if held["persons"] is not None:
            persons = {r.keys: n for r, n in zip(table.rows, held["persons"], strict=True)}
        try:
            _, final = self._release(info, table, record, policy, persons)
        except SandboxError as exc:
            return self._finish_unreleased(info.job_id, JobState.DENIED, exc, record.row_count)
        return final


def _require_reviewer(principal: Principal) -> None:
    if principal.role not in (Role.STEWARD, Role.ADMIN):
        raise PermissionDenied("only stewards and admins review jobs", rule_ids=("review.role",))
