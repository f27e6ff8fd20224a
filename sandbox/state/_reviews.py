"""Human review: jobs held for approval, and each reviewer's decision (one per reviewer)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass

from sandbox.state._db import Database


@dataclass(frozen=True)
class Hold:
    job_id: str
    required: int
    """Independent approvals the job needs."""
    why: tuple[str, ...]
    approvals: tuple[str, ...]
    """Reviewers who approved so far."""
    held_at: str
    stage: str = "run"
    """"run": held before it ran; "release": computed, its protected table held unreleased."""


class Reviews:
    def __init__(self, db: Database) -> None:
        self._db = db

    def hold(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        required: int,
        why: tuple[str, ...],
        stage: str = "run",
    ) -> None:
        conn.execute(
            "INSERT INTO review_holds (job_id, required, why, held_at, stage)"
            " VALUES (?, ?, ?, ?, ?)",
            (job_id, required, json.dumps(list(why)), _now(), stage),
        )

    def get(self, job_id: str, conn: sqlite3.Connection | None = None) -> Hold | None:
        c = conn or self._db.conn
        row = c.execute(
            "SELECT job_id, required, why, held_at, stage FROM review_holds WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        return self._hold(c, row) if row else None

    def pending(self) -> list[Hold]:
        """Holds of jobs still awaiting approval, oldest first."""
        c = self._db.conn
        rows = c.execute(
            "SELECT h.job_id, h.required, h.why, h.held_at, h.stage FROM review_holds h"
            " JOIN jobs j ON j.job_id = h.job_id WHERE j.state = 'AWAITING_APPROVAL'"
            " ORDER BY h.held_at, h.job_id"
        ).fetchall()
        return [self._hold(c, r) for r in rows]

    def decide(
        self, conn: sqlite3.Connection, job_id: str, reviewer: str, approve: bool, reason: str
    ) -> bool:
        """Record one reviewer's decision; False if that reviewer had already decided."""
        try:
            conn.execute(
                "INSERT INTO review_decisions (job_id, reviewer, approve, reason, decided_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (job_id, reviewer, int(approve), reason, _now()),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def _hold(self, conn: sqlite3.Connection, row: tuple[object, ...]) -> Hold:
        approvals = conn.execute(
            "SELECT reviewer FROM review_decisions WHERE job_id = ? AND approve = 1"
            " ORDER BY decided_at, reviewer",
            (row[0],),
        ).fetchall()
        return Hold(
            job_id=str(row[0]),
            required=int(str(row[1])),
            why=tuple(json.loads(str(row[2]))),
            approvals=tuple(str(a[0]) for a in approvals),
            held_at=str(row[3]),
            stage=str(row[4]),
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
