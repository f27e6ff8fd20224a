"""Job records: state machine, idempotency on (principal, request id), stored results."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import replace
from fractions import Fraction
from typing import Any

from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, JobInfo, JobSpec, JobState
from sandbox.crypto import blob_key_id
from sandbox.state._at_rest import AtRestKeys, result_context
from sandbox.state._db import Database

_INFO = (
    "job_id, request_id, principal, spec, state, created_at, started_at, finished_at,"
    " reason, message, rule_ids, rows_scanned, policy_version"
)


class Jobs:
    """Job records; released results are stored sealed under the data-at-rest keys."""

    def __init__(self, db: Database, keys: AtRestKeys | None = None) -> None:
        self._db = db
        self._keys = keys

    def _seal(self, job_id: str, result: bytes | None) -> bytes | None:
        if result is None:
            return None
        if self._keys is None:
            raise RuntimeError("results are stored only sealed: no data-at-rest keys")
        return self._keys.seal(result, result_context(job_id))

    def seal_result(self, job_id: str, result: bytes) -> bytes:
        """A job's result sealed at rest, as ``finish(sealed_result=...)`` stores it (so that
        the sealing can be done before the write transaction)."""
        sealed = self._seal(job_id, result)
        assert sealed is not None
        return sealed

    def _open(self, job_id: str, blob: bytes) -> bytes:
        if self._keys is None:
            raise RuntimeError("results are stored only sealed: no data-at-rest keys")
        return self._keys.open(blob, result_context(job_id))

    def insert(
        self,
        conn: sqlite3.Connection,
        *,
        job_id: str,
        request_id: str,
        principal: str,
        spec: JobSpec,
        state: JobState,
        policy_version: str,
        reason: str = "",
        message: str = "",
        rule_ids: tuple[str, ...] = (),
        data_version: str = "",
        result: bytes | None = None,
        result_digest: str = "",
    ) -> JobInfo:
        """Insert a job; returns the record as ``get`` would now read it back.

        A job inserted RUNNING is marked as reading data from now (see ``start``)."""
        now = _now()
        running = state == JobState.RUNNING
        conn.execute(
            "INSERT INTO jobs (job_id, request_id, principal, project, dataset, spec, spec_digest,"
            " state, reason, message, rule_ids, created_at, finished_at, policy_version,"
            " data_version, result, result_digest, started_at, data_read)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                request_id,
                principal,
                spec.project,
                spec.dataset,
                json.dumps(spec_to_json(spec)),
                spec.digest(),
                str(state),
                reason,
                message,
                json.dumps(list(rule_ids)),
                now,
                now if state.terminal else None,
                policy_version,
                data_version,
                self._seal(job_id, result),
                result_digest,
                now if running else None,
                int(running),
            ),
        )
        created = _ts(now)
        assert created is not None
        return JobInfo(
            job_id=job_id,
            request_id=request_id,
            principal=principal,
            spec=spec,
            state=state,
            created_at=created,
            started_at=created if running else None,
            finished_at=created if state.terminal else None,
            reason=reason,
            message=message,
            rule_ids=tuple(rule_ids),
            policy_version=policy_version,
        )

    def released_answer(
        self, conn: sqlite3.Connection, spec_digest: str, policy_version: str, data_version: str
    ) -> tuple[str, bytes, str] | None:
        """(job id, result, digest) of the first release of this exact query on this data."""
        row = conn.execute(
            "SELECT job_id, result, result_digest FROM jobs WHERE spec_digest = ?"
            " AND state = 'SUCCEEDED' AND policy_version = ? AND data_version = ?"
            " AND result IS NOT NULL ORDER BY created_at LIMIT 1",
            (spec_digest, policy_version, data_version),
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), self._open(str(row[0]), bytes(row[1])), str(row[2])

    def by_request(
        self, principal: str, request_id: str, conn: sqlite3.Connection | None = None
    ) -> JobInfo | None:
        row = (
            (conn or self._db.conn)
            .execute(
                f"SELECT {_INFO} FROM jobs WHERE principal = ? AND request_id = ?",  # noqa: S608
                (principal, request_id),
            )
            .fetchone()
        )
        return _info(row) if row else None

    def get(self, job_id: str, conn: sqlite3.Connection | None = None) -> JobInfo | None:
        row = (
            (conn or self._db.conn)
            .execute(
                f"SELECT {_INFO} FROM jobs WHERE job_id = ?",  # noqa: S608 - fixed column list
                (job_id,),
            )
            .fetchone()
        )
        return _info(row) if row else None

    def find(self, principal: str | None, project: str = "", limit: int = 100) -> list[JobInfo]:
        where, args = [], []
        if principal is not None:
            where.append("principal = ?")
            args.append(principal)
        if project:
            where.append("project = ?")
            args.append(project)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._db.conn.execute(
            f"SELECT {_INFO} FROM jobs {clause} ORDER BY created_at DESC, job_id LIMIT ?",  # noqa: S608 - fixed fragments
            (*args, limit),
        ).fetchall()
        return [_info(r) for r in rows]

    def with_state(self, state: JobState) -> list[JobInfo]:
        rows = self._db.conn.execute(
            f"SELECT {_INFO} FROM jobs WHERE state = ? ORDER BY created_at",  # noqa: S608
            (str(state),),
        ).fetchall()
        return [_info(r) for r in rows]

    def start(self, conn: sqlite3.Connection, info: JobInfo) -> JobInfo | None:
        """QUEUED → RUNNING and mark that data is about to be read; the record as it now reads,
        or None if the job was no longer queued."""
        now = _now()
        cur = conn.execute(
            "UPDATE jobs SET state = 'RUNNING', started_at = ?, data_read = 1"
            " WHERE job_id = ? AND state = 'QUEUED'",
            (now, info.job_id),
        )
        if cur.rowcount != 1:
            return None
        return replace(info, state=JobState.RUNNING, started_at=_ts(now))

    def hold_release(
        self, conn: sqlite3.Connection, info: JobInfo, held: bytes, message: str
    ) -> JobInfo:
        """RUNNING → AWAITING_APPROVAL with its protected table ``held`` (sealed at rest; no
        API returns the result of a job that has not SUCCEEDED)."""
        conn.execute(
            "UPDATE jobs SET state = 'AWAITING_APPROVAL', message = ?, result = ? WHERE job_id = ?",
            (message, self._seal(info.job_id, held), info.job_id),
        )
        return replace(info, state=JobState.AWAITING_APPROVAL, message=message)

    def set_release_seq(self, conn: sqlite3.Connection, job_id: str, seq: int) -> None:
        """Remember the audit entry that records the job's release (for its receipt)."""
        conn.execute("UPDATE jobs SET release_seq = ? WHERE job_id = ?", (seq, job_id))

    def release_seq(self, job_id: str) -> int | None:
        row = self._db.conn.execute(
            "SELECT release_seq FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def queue_held(self, conn: sqlite3.Connection, info: JobInfo) -> JobInfo | None:
        """AWAITING_APPROVAL → QUEUED; the record as it now reads, or None if not held."""
        cur = conn.execute(
            "UPDATE jobs SET state = 'QUEUED', message = '' WHERE job_id = ?"
            " AND state = 'AWAITING_APPROVAL'",
            (info.job_id,),
        )
        return replace(info, state=JobState.QUEUED, message="") if cur.rowcount == 1 else None

    def request_cancel(self, conn: sqlite3.Connection, job_id: str) -> None:
        """Ask whichever server process runs the job to interrupt it."""
        conn.execute(
            "UPDATE jobs SET cancel_requested = 1 WHERE job_id = ? AND state = 'RUNNING'",
            (job_id,),
        )

    def cancel_requested(self) -> set[str]:
        """Running jobs someone asked to cancel."""
        rows = self._db.conn.execute(
            "SELECT job_id FROM jobs WHERE state = 'RUNNING' AND cancel_requested = 1"
        ).fetchall()
        return {str(r[0]) for r in rows}

    def data_read(self, conn: sqlite3.Connection, job_id: str) -> bool:
        row = conn.execute("SELECT data_read FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def finish(
        self,
        conn: sqlite3.Connection,
        info: JobInfo,
        state: JobState,
        *,
        reason: str = "",
        message: str = "",
        rule_ids: tuple[str, ...] = (),
        rows_scanned: int = 0,
        sealed_result: bytes | None = None,
        result_digest: str = "",
        release_seq: int | None = None,
    ) -> JobInfo:
        """End the job ``info`` describes; returns the record as ``get`` would now read it.

        ``sealed_result``: its released result, as ``seal_result`` sealed it (outside the write
        transaction); ``release_seq``: the audit entry recording its release."""
        now = _now()
        conn.execute(
            "UPDATE jobs SET state = ?, finished_at = ?, reason = ?, message = ?, rule_ids = ?,"
            " rows_scanned = ?, result = ?, result_digest = ?,"
            " release_seq = COALESCE(?, release_seq) WHERE job_id = ?",
            (
                str(state),
                now,
                reason,
                message,
                json.dumps(list(rule_ids)),
                rows_scanned,
                sealed_result,
                result_digest,
                release_seq,
                info.job_id,
            ),
        )
        return replace(
            info,
            state=state,
            finished_at=_ts(now),
            reason=reason,
            message=message,
            rule_ids=tuple(rule_ids),
            rows_scanned=rows_scanned,
        )

    def result(self, job_id: str) -> bytes | None:
        row = self._db.conn.execute(
            "SELECT result FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return self._open(job_id, bytes(row[0])) if row and row[0] is not None else None

    def rewrap_results(self, batch: int = 500) -> int:
        """Move every stored result to the active data-at-rest key; how many moved.

        Each batch is one write transaction; a blob already under the active key is left as
        it is, so an interrupted run can simply be repeated.
        """
        if self._keys is None:
            raise RuntimeError("results are stored only sealed: no data-at-rest keys")
        ring = self._keys.ring()
        moved, after = 0, ""
        while True:
            with self._db.write() as conn:
                rows = conn.execute(
                    "SELECT job_id, result FROM jobs WHERE result IS NOT NULL AND job_id > ?"
                    " ORDER BY job_id LIMIT ?",
                    (after, batch),
                ).fetchall()
                for job_id, blob in rows:
                    if blob_key_id(bytes(blob)) != ring.active_key_id:
                        context = result_context(str(job_id))
                        conn.execute(
                            "UPDATE jobs SET result = ? WHERE job_id = ?",
                            (ring.rewrap(bytes(blob), context=context), job_id),
                        )
                        moved += 1
            if len(rows) < batch:
                return moved
            after = str(rows[-1][0])


def spec_to_json(spec: JobSpec) -> dict[str, Any]:
    return {
        "dataset": spec.dataset,
        "project": spec.project,
        "purpose": spec.purpose,
        "group_by": list(spec.group_by),
        "aggregates": [
            [str(a.function), a.column, a.alias, *([str(a.q)] if a.q is not None else [])]
            for a in spec.aggregates
        ],
        "filters": [[f.column, str(f.op), list(f.values)] for f in spec.filters],
        **({"margins": True} if spec.margins else {}),
    }


def spec_from_json(data: dict[str, Any]) -> JobSpec:
    return JobSpec(
        dataset=data["dataset"],
        project=data["project"],
        purpose=data["purpose"],
        group_by=tuple(data["group_by"]),
        aggregates=tuple(
            Aggregate(AggFunc(f), c, a, Fraction(q[0]) if q else None)
            for f, c, a, *q in data["aggregates"]
        ),
        filters=tuple(Filter(c, FilterOp(o), tuple(v)) for c, o, v in data["filters"]),
        margins=bool(data.get("margins", False)),
    )


def _ts(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _info(row: tuple[Any, ...]) -> JobInfo:
    created = _ts(row[5])
    assert created is not None
    return JobInfo(
        job_id=row[0],
        request_id=row[1],
        principal=row[2],
        spec=spec_from_json(json.loads(row[3])),
        state=JobState(row[4]),
        created_at=created,
        started_at=_ts(row[6]),
        finished_at=_ts(row[7]),
        reason=row[8],
        message=row[9],
        rule_ids=tuple(json.loads(row[10])),
        rows_scanned=row[11],
        policy_version=row[12],
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
