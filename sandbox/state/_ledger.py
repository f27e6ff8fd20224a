"""Quota ledger: reserve before any data is read, commit with the result, release if unread.

All calls take the open write transaction (``BEGIN IMMEDIATE``), so the check and the
reservation are one atomic step and concurrent submits can never overspend.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass

from sandbox._model import QuotaLimits, QuotaUsage


@dataclass(frozen=True)
class Shortfall:
    rule_id: str
    message: str


class Ledger:
    def usage(self, conn: sqlite3.Connection, project: str, today: dt.date) -> QuotaUsage:
        """Usage counting committed charges and open reservations (limits left unset)."""
        row = conn.execute(
            "SELECT COALESCE(SUM(jobs), 0), COALESCE(SUM(rows), 0),"
            " COALESCE(SUM(CASE WHEN day = ? THEN jobs END), 0),"
            " COALESCE(SUM(CASE WHEN day = ? THEN rows END), 0)"
            " FROM ledger WHERE project = ? AND state != 'released'",
            (today.isoformat(), today.isoformat(), project),
        ).fetchone()
        return QuotaUsage(
            project=project,
            limits=QuotaLimits(),
            jobs_total=row[0],
            rows_total=row[1],
            jobs_today=row[2],
            rows_today=row[3],
        )

    def shortfalls(
        self,
        conn: sqlite3.Connection,
        project: str,
        limits: QuotaLimits,
        rows: int,
        today: dt.date,
    ) -> list[Shortfall]:
        """Which limits one more job scanning ``rows`` rows would exceed."""
        used = self.usage(conn, project, today)
        checks = [
            ("quota.jobs_per_day", limits.jobs_per_day, used.jobs_today + 1, "jobs today"),
            ("quota.jobs_total", limits.jobs_total, used.jobs_total + 1, "jobs in total"),
            ("quota.rows_per_day", limits.rows_per_day, used.rows_today + rows, "rows today"),
            ("quota.rows_total", limits.rows_total, used.rows_total + rows, "rows in total"),
        ]
        return [
            Shortfall(rule, f"project '{project}' would exceed its limit of {limit} {what}")
            for rule, limit, needed, what in checks
            if limit is not None and needed > limit
        ]

    def reserve(
        self, conn: sqlite3.Connection, project: str, job_id: str, rows: int, today: dt.date
    ) -> None:
        conn.execute(
            "INSERT INTO ledger (project, job_id, day, jobs, rows, state)"
            " VALUES (?, ?, ?, 1, ?, 'reserved')",
            (project, job_id, today.isoformat(), rows),
        )

    def commit(self, conn: sqlite3.Connection, job_id: str, rows: int) -> None:
        conn.execute(
            "UPDATE ledger SET state = 'committed', rows = ? WHERE job_id = ? AND state = 'reserved'",
            (rows, job_id),
        )

    def release(self, conn: sqlite3.Connection, job_id: str) -> None:
        conn.execute(
            "UPDATE ledger SET state = 'released' WHERE job_id = ? AND state = 'reserved'",
            (job_id,),
        )

    def charges(self, conn: sqlite3.Connection, project: str) -> dict[str, str]:
        """job_id → state, for reconciliation with the audit log."""
        rows = conn.execute(
            "SELECT job_id, state FROM ledger WHERE project = ?", (project,)
        ).fetchall()
        return {job: state for job, state in rows}
