"""Projects: members, (dataset, purpose) grants, expiry and quota limits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3

from sandbox._errors import AlreadyExists, InvalidArgument, NotFound
from sandbox._model import Project, QuotaLimits
from sandbox.state._db import Database

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class Projects:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, conn: sqlite3.Connection, project: Project, created_by: str) -> None:
        _check_quota(project.quota)
        if not _ID.match(project.id):
            raise InvalidArgument("project ids are 1-63 chars: lower-case letters, digits, '-'")
        for _, purpose in project.grants:
            if not _ID.match(purpose):
                raise InvalidArgument("purpose ids are lower-case letters, digits and '-'")
        try:
            conn.execute(
                "INSERT INTO projects (id, title, members, grants, expires, quota, created_by,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    project.id,
                    project.title,
                    json.dumps(sorted(set(project.members))),
                    json.dumps(sorted({(d, p) for d, p in project.grants})),
                    project.expires.isoformat(),
                    json.dumps(dataclasses.asdict(project.quota)),
                    created_by,
                    dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"project '{project.id}' already exists") from None

    def set_quota(self, conn: sqlite3.Connection, project_id: str, quota: QuotaLimits) -> None:
        _check_quota(quota)
        cur = conn.execute(
            "UPDATE projects SET quota = ? WHERE id = ?",
            (json.dumps(dataclasses.asdict(quota)), project_id),
        )
        if cur.rowcount != 1:
            raise NotFound(f"project '{project_id}' not found")

    def get(self, project_id: str, conn: sqlite3.Connection | None = None) -> Project | None:
        row = (
            (conn or self._db.conn)
            .execute(
                "SELECT id, title, members, grants, expires, quota FROM projects WHERE id = ?",
                (project_id,),
            )
            .fetchone()
        )
        return _project(row) if row else None

    def list(self) -> list[Project]:
        rows = self._db.conn.execute(
            "SELECT id, title, members, grants, expires, quota FROM projects ORDER BY id"
        ).fetchall()
        return [_project(r) for r in rows]


def _check_quota(quota: QuotaLimits) -> None:
    for name, value in dataclasses.asdict(quota).items():
        if value is not None and value < 0:
            raise InvalidArgument(f"quota limit '{name}' must not be negative (unset = unlimited)")


def _project(row: tuple[str, str, str, str, str, str]) -> Project:
    return Project(
        id=row[0],
        title=row[1],
        members=tuple(json.loads(row[2])),
        grants=tuple((d, p) for d, p in json.loads(row[3])),
        expires=dt.date.fromisoformat(row[4]),
        quota=QuotaLimits(**json.loads(row[5])),
    )
