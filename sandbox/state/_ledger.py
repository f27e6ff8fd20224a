"""Quota ledger: reserve before any data is read, commit with the result, release if unread.

All calls take the open write transaction (``BEGIN IMMEDIATE``), so the check and the
reservation are one atomic step and concurrent submits can never overspend.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass

from sandbox._model import QuotaLimits, QuotaUsage

_UNLIMITED = QuotaLimits()


@dataclass(frozen=True)
class Shortfall:
    rule_id: str
    message: str


class Ledger:
    def usage(self, conn: sqlite3.Connection, project: str, today: dt.date) -> QuotaUsage:
        """Usage counting committed charges and open reservations (limits left unset).

        Read from per-day counters kept in step with the ledger rows, so the cost does not
        grow with the number of jobs.
        """
        row = conn.execute(
            "SELECT COALESCE(SUM(jobs), 0), COALESCE(SUM(rows), 0),"
            " COALESCE(SUM(CASE WHEN day = ? THEN jobs END), 0),"
            " COALESCE(SUM(CASE WHEN day = ? THEN rows END), 0)"
            " FROM usage WHERE project = ?",
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
        if limits == _UNLIMITED:
            return []  # nothing to check: skip reading the usage
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
        self._count(conn, project, today.isoformat(), 1, rows)

    def commit(self, conn: sqlite3.Connection, job_id: str, rows: int) -> None:
        """Turn the reservation into a charge of ``rows`` actually scanned."""
        charged_as_reserved = conn.execute(
            "UPDATE ledger SET state = 'committed' WHERE job_id = ? AND state = 'reserved'"
            " AND rows = ?",
            (job_id, rows),
        )
        if charged_as_reserved.rowcount == 1:  # the usual case: the counters hold already
            return
        held = self._reserved(conn, job_id)
        if held is None:
            return
        conn.execute(
            "UPDATE ledger SET state = 'committed', rows = ? WHERE job_id = ?", (rows, job_id)
        )
        if rows != held[2]:
            self._count(conn, held[0], held[1], 0, rows - held[2])

    def release(self, conn: sqlite3.Connection, job_id: str) -> None:
        """Give a reservation back (only when no data was read)."""
        held = self._reserved(conn, job_id)
        if held is None:
            return
        conn.execute("UPDATE ledger SET state = 'released' WHERE job_id = ?", (job_id,))
        self._count(conn, held[0], held[1], -1, -held[2])

    def _reserved(self, conn: sqlite3.Connection, job_id: str) -> tuple[str, str, int] | None:
        row = conn.execute(
            "SELECT project, day, rows FROM ledger WHERE job_id = ? AND state = 'reserved'",
            (job_id,),
        ).fetchone()
        return (str(row[0]), str(row[1]), int(row[2])) if row else None

    def _count(
        self, conn: sqlite3.Connection, project: str, day: str, jobs: int, rows: int
    ) -> None:
        conn.execute(
            "INSERT INTO usage (project, day, jobs, rows) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (project, day) DO UPDATE SET jobs = jobs + excluded.jobs,"
            " rows = rows + excluded.rows",
            (project, day, jobs, rows),
        )

    def charges(self, conn: sqlite3.Connection, project: str) -> dict[str, str]:
        """job_id → state, for reconciliation with the audit log."""
        rows = conn.execute(
            "SELECT job_id, state FROM ledger WHERE project = ?", (project,)
        ).fetchall()
        return {job: state for job, state in rows}
