"""Exceptions to policy refusals: a researcher asks, a steward decides, one job uses it.

Transport-free. A request names a job the requester submitted that the decision engine refused
(reason ``POLICY_DENIED``) and the rule ids to waive, each among that job's refusal rules and
each a waivable policy rule (never membership, revocation, structure, disclosure control, quota
or budget: those are not decided by the policy and cannot be excepted). A granted exception is
bounded: it admits exactly one later job of the requester, in the same project, with the same
spec digest, whose every refusal rule is among the waived ones; admitting that job consumes it
(``consume``, inside the job's admission transaction).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Iterable
from typing import Any

from sandbox._errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from sandbox._model import ExceptionRequest, ExceptionState, JobInfo, JobState
from sandbox.audit import AuditLog
from sandbox.state._db import Database

POLICY_DENIED = "POLICY_DENIED"
"""The only refusal reason that can be excepted (``PolicyDenied.reason``)."""
WAIVABLE_RULES = frozenset(
    {
        "column.not_in_purpose",
        "aggregate.not_allowed",
        "operator.not_allowed",
        "limits.max_filters",
        "limits.max_group_by",
        "limits.max_groups",
        "project.expired",
        "project.purpose_not_granted",
        "project.purpose_expired",
    }
)
"""Decision-engine rules a steward may waive for one job, besides every ``deny.<id>`` rule.

Not waivable: who may submit (``principal.role``, ``project.membership``, ``project.revoked``),
what exists (``purpose.unknown``, ``column.unknown``, ``column.identifier``, ``column.role``,
``spec.*``, ``filter.*``) and everything outside the decision engine (disclosure control,
quota, privacy budget, federation)."""
MAX_JUSTIFICATION = 4000
MAX_REASON = 2000
_COLUMNS = (
    "id, job_id, principal, project, dataset, purpose, spec_digest, rule_ids, justification,"
    " state, requested_at, decided_by, decision_reason, decided_at, used_by_job"
)


def waivable(rule_id: str) -> bool:
    """Whether a steward may waive ``rule_id`` for one job."""
    return rule_id in WAIVABLE_RULES or (rule_id.startswith("deny.") and len(rule_id) > 5)


class Exceptions:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._audit = AuditLog(db)

    # ---- researcher -------------------------------------------------------------------
    def request(
        self,
        conn: sqlite3.Connection,
        requester: str,
        job: JobInfo,
        rule_ids: Iterable[str],
        justification: str,
    ) -> ExceptionRequest:
        """Record a request for an exception to ``job``'s refusal (the caller logs it).

        Raises:
            NotFound: ``job`` is not the requester's.
            InvalidArgument: the job was not refused by policy, a rule is not among its
                refusal rules or cannot be waived, or the justification is missing or too long.
            AlreadyExists: an exception was already requested for this job.
        """
        if job.principal != requester:
            raise NotFound(f"job '{job.job_id}' not found")
        if job.state != JobState.DENIED or job.reason != POLICY_DENIED:
            raise InvalidArgument(
                f"job '{job.job_id}' was not refused by policy (it is {job.state.value}"
                f"{', ' + job.reason if job.reason else ''}): only policy refusals can be "
                "excepted, never disclosure control, quota or budget"
            )
        rules = tuple(dict.fromkeys(r.strip() for r in rule_ids))
        if not rules or not all(rules):
            raise InvalidArgument(
                "name the rule ids to waive (from the job's refusal: "
                f"{', '.join(job.rule_ids) or 'none'})"
            )
        for rule in rules:
            if rule not in job.rule_ids:
                raise InvalidArgument(
                    f"rule '{rule}' is not among the refusal rules of job '{job.job_id}' "
                    f"({', '.join(job.rule_ids)})"
                )
            if not waivable(rule):
                raise InvalidArgument(f"rule '{rule}' cannot be waived by an exception")
        text = justification.strip()
        if not text:
            raise InvalidArgument("an exception request needs a justification")
        if len(text) > MAX_JUSTIFICATION:
            raise InvalidArgument(f"a justification is at most {MAX_JUSTIFICATION} characters")
        request_id = secrets.token_hex(16)
        now = _now()
        try:
            conn.execute(
                "INSERT INTO exception_requests (id, job_id, principal, project, dataset, purpose,"
                " spec_digest, rule_ids, justification, state, requested_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request_id,
                    job.job_id,
                    requester,
                    job.spec.project,
                    job.spec.dataset,
                    job.spec.purpose,
                    job.spec.digest(),
                    json.dumps(list(rules)),
                    text,
                    str(ExceptionState.PENDING),
                    now,
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(
                f"an exception was already requested for job '{job.job_id}'"
            ) from None
        created = self.get(request_id, conn)
        assert created is not None
        return created

    # ---- steward ----------------------------------------------------------------------
    def decide(
        self, conn: sqlite3.Connection, request_id: str, decider: str, grant: bool, reason: str
    ) -> ExceptionRequest:
        """Grant or reject a pending request (the caller checks the role and logs it).

        Raises:
            NotFound: no such request.
            PermissionDenied: ``decider`` made the request (nobody decides their own).
            InvalidArgument: it was decided already, or ``reason`` is missing or too long.
        """
        current = self.get(request_id, conn)
        if current is None:
            raise NotFound(f"exception request '{request_id}' not found")
        if current.principal == decider:
            raise PermissionDenied("nobody decides their own exception request")
        if current.state != ExceptionState.PENDING:
            raise InvalidArgument(
                f"exception request '{request_id}' was decided already ({current.state.value})"
            )
        text = reason.strip()
        if not text:
            raise InvalidArgument("a decision on an exception request needs a reason")
        if len(text) > MAX_REASON:
            raise InvalidArgument(f"a decision reason is at most {MAX_REASON} characters")
        state = ExceptionState.GRANTED if grant else ExceptionState.REJECTED
        cur = conn.execute(
            "UPDATE exception_requests SET state = ?, decided_by = ?, decision_reason = ?,"
            " decided_at = ? WHERE id = ? AND state = ?",
            (str(state), decider, text, _now(), request_id, str(ExceptionState.PENDING)),
        )
        assert cur.rowcount == 1  # the write transaction serialises deciders
        decided = self.get(request_id, conn)
        assert decided is not None
        return decided

    # ---- reads ------------------------------------------------------------------------
    def get(
        self, request_id: str, conn: sqlite3.Connection | None = None
    ) -> ExceptionRequest | None:
        row = (
            (conn or self._db.conn)
            .execute(
                f"SELECT {_COLUMNS} FROM exception_requests WHERE id = ?",  # noqa: S608
                (request_id,),
            )
            .fetchone()
        )
        return _request(row) if row else None

    def list(
        self,
        principal: str | None = None,
        state: ExceptionState | None = None,
        project: str = "",
        limit: int = 100,
    ) -> list[ExceptionRequest]:
        """Requests, newest first; only ``principal``'s when given."""
        where, args = [], []
        if principal is not None:
            where.append("principal = ?")
            args.append(principal)
        if state is not None:
            where.append("state = ?")
            args.append(str(state))
        if project:
            where.append("project = ?")
            args.append(project)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._db.conn.execute(
            f"SELECT {_COLUMNS} FROM exception_requests {clause}"  # noqa: S608 - fixed fragments
            " ORDER BY requested_at DESC, id LIMIT ?",
            (*args, max(1, min(limit, 1000))),
        ).fetchall()
        return [_request(r) for r in rows]

    # ---- admission --------------------------------------------------------------------
    def covers(
        self,
        principal: str,
        project: str,
        spec_digest: str,
        rule_ids: Iterable[str],
        conn: sqlite3.Connection | None = None,
    ) -> str | None:
        """The id of an unused granted exception that waives every one of ``rule_ids`` for
        this principal, project and spec digest; None if there is none. Read only."""
        rules = set(rule_ids)
        if not rules or not all(waivable(r) for r in rules):
            return None
        rows = (
            (conn or self._db.conn)
            .execute(
                "SELECT id, rule_ids FROM exception_requests WHERE principal = ? AND project = ?"
                " AND spec_digest = ? AND state = ? ORDER BY decided_at, id",
                (principal, project, spec_digest, str(ExceptionState.GRANTED)),
            )
            .fetchall()
        )
        for request_id, waived in rows:
            if rules <= set(json.loads(waived)):
                return str(request_id)
        return None

    def consume(
        self,
        conn: sqlite3.Connection,
        principal: str,
        project: str,
        spec_digest: str,
        rule_ids: Iterable[str],
        *,
        job_id: str,
    ) -> bool:
        """Use up the exception that admits this job, within its admission transaction.

        True if an unused granted exception waiving every one of ``rule_ids`` (the job's
        refusal rules, non-empty) for this principal, project and spec digest existed; it is
        then marked used by ``job_id`` and ``exception.used`` is logged in ``conn``. False if
        none did (never granted, already used, another rule is involved): refuse the job.
        """
        rules = tuple(dict.fromkeys(rule_ids))
        request_id = self.covers(principal, project, spec_digest, rules, conn)
        if request_id is None:
            return False
        cur = conn.execute(
            "UPDATE exception_requests SET state = ?, used_by_job = ?, used_at = ?"
            " WHERE id = ? AND state = ?",
            (str(ExceptionState.USED), job_id, _now(), request_id, str(ExceptionState.GRANTED)),
        )
        if cur.rowcount != 1:
            return False
        self._audit.append(
            conn,
            "exception.used",
            actor=principal,
            project=project,
            exception_id=request_id,
            job_id=job_id,
            spec_digest=spec_digest,
            rule_ids=list(rules),
        )
        return True


def entry_fields(request: ExceptionRequest) -> dict[str, Any]:
    """What the audit log records of a request (the justification and reason too: they are
    the researcher's and the steward's own words, never data values)."""
    return {
        "exception_id": request.id,
        "job_id": request.job_id,
        "principal": request.principal,
        "project": request.project,
        "dataset": request.dataset,
        "purpose": request.purpose,
        "spec_digest": request.spec_digest,
        "rule_ids": list(request.rule_ids),
    }


def _ts(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _request(row: tuple[Any, ...]) -> ExceptionRequest:
    requested = _ts(row[10])
    assert requested is not None
    return ExceptionRequest(
        id=row[0],
        job_id=row[1],
        principal=row[2],
        project=row[3],
        dataset=row[4],
        purpose=row[5],
        spec_digest=row[6],
        rule_ids=tuple(json.loads(row[7])),
        justification=row[8],
        state=ExceptionState(row[9]),
        requested_at=requested,
        decided_by=row[11],
        decision_reason=row[12],
        decided_at=_ts(row[13]),
        used_by_job=row[14],
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
