"""Projects: members, (dataset, purpose) grants with optional expiry, dates, quota, revocation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3
from typing import Any

from sandbox._errors import AlreadyExists, InvalidArgument, NotFound
from sandbox._model import Grant, Project, ProjectUpdate, QuotaLimits
from sandbox.state._db import Database

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_COLUMNS = "id, title, members, grants, expires, quota, revoked_at"
MAX_TITLE = 200


class Projects:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, conn: sqlite3.Connection, project: Project, created_by: str) -> None:
        _check(project)
        try:
            conn.execute(
                "INSERT INTO projects (id, title, members, grants, expires, quota, created_by,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    project.id,
                    project.title,
                    json.dumps(sorted(set(project.members))),
                    _grants_json(project),
                    project.expires.isoformat(),
                    json.dumps(dataclasses.asdict(project.quota)),
                    created_by,
                    _now(),
                ),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"project '{project.id}' already exists") from None

    def set_quota(self, conn: sqlite3.Connection, project_id: str, quota: QuotaLimits) -> None:
        _check_quota(quota)
        self._write(conn, dataclasses.replace(self._current(conn, project_id), quota=quota))

    def update(
        self, conn: sqlite3.Connection, project_id: str, update: ProjectUpdate
    ) -> tuple[Project, dict[str, Any]]:
        """Apply ``update`` within ``conn``'s transaction; the project after it, and what
        changed (field → {"from", "to"}; nothing for a field left as it was).

        Raises:
            NotFound: no such project.
            InvalidArgument: the project is revoked, or the change is invalid (a malformed name,
                a negative limit, a grant both added and removed or removed but not held).
        """
        before = self._current(conn, project_id)
        clash = {(g.dataset, g.purpose) for g in update.add_grants} & set(update.remove_grants)
        if clash:
            d, p = sorted(clash)[0]
            raise InvalidArgument(f"grant '{d}:{p}' is both added and removed")
        members = (set(before.members) | set(update.add_members)) - set(update.remove_members)
        grants = _grant_map(before)
        for d, p in update.remove_grants:
            if (d, p) not in grants:
                raise InvalidArgument(f"project '{project_id}' holds no grant '{d}:{p}'")
            del grants[(d, p)]
        for g in update.add_grants:
            grants[(g.dataset, g.purpose)] = g.expires
        after = dataclasses.replace(
            before,
            title=before.title if update.title is None else update.title,
            members=tuple(sorted(members)),
            grants=tuple(sorted(grants)),
            grant_expiry=tuple(sorted((d, p, e) for (d, p), e in grants.items() if e)),
            expires=update.expires or before.expires,
            quota=before.quota if update.quota is None else update.quota,
        )
        _check(after)
        self._write(conn, after)
        return after, _changes(before, after)

    def expire(
        self, conn: sqlite3.Connection, project_id: str, last_day: dt.date
    ) -> tuple[Project, dt.date]:
        """End the project on ``last_day`` (or keep an earlier end); the project after it and
        the last day it had before."""
        before = self._current(conn, project_id)
        after = dataclasses.replace(before, expires=min(before.expires, last_day))
        self._write(conn, after)
        return after, before.expires

    def revoke(
        self, conn: sqlite3.Connection, project_id: str, revoked_by: str
    ) -> tuple[Project, bool]:
        """Revoke the project (final: it refuses every new job from now on); the project and
        whether this call revoked it (False: it was revoked already)."""
        project = self.get(project_id, conn)
        if project is None:
            raise NotFound(f"project '{project_id}' not found")
        if project.revoked:
            return project, False
        conn.execute(
            "UPDATE projects SET revoked_at = ?, revoked_by = ? WHERE id = ?",
            (_now(), revoked_by, project_id),
        )
        return dataclasses.replace(project, revoked=True), True

    def get(self, project_id: str, conn: sqlite3.Connection | None = None) -> Project | None:
        """The project, read in ``conn``'s transaction if given."""

        def load(conn: sqlite3.Connection) -> Project | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM projects WHERE id = ?",  # noqa: S608 - fixed columns
                (project_id,),
            ).fetchone()
            return _project(row) if row else None

        if conn is not None:
            return load(conn)
        return self._db.remembered(("project", project_id), lambda: load(self._db.conn))

    def list(self) -> list[Project]:
        rows = self._db.conn.execute(
            f"SELECT {_COLUMNS} FROM projects ORDER BY id"  # noqa: S608 - fixed column list
        ).fetchall()
        return [_project(r) for r in rows]

    def _current(self, conn: sqlite3.Connection, project_id: str) -> Project:
        """The project as it stands, for a change; revoked projects take no change."""
        project = self.get(project_id, conn)
        if project is None:
            raise NotFound(f"project '{project_id}' not found")
        if project.revoked:
            raise InvalidArgument(f"project '{project_id}' was revoked: revocation is final")
        return project

    def _write(self, conn: sqlite3.Connection, project: Project) -> None:
        conn.execute(
            "UPDATE projects SET title = ?, members = ?, grants = ?, expires = ?, quota = ?"
            " WHERE id = ?",
            (
                project.title,
                json.dumps(sorted(set(project.members))),
                _grants_json(project),
                project.expires.isoformat(),
                json.dumps(dataclasses.asdict(project.quota)),
                project.id,
            ),
        )


def _check(project: Project) -> None:
    _check_quota(project.quota)
    if not _ID.match(project.id):
        raise InvalidArgument("project ids are 1-63 chars: lower-case letters, digits, '-'")
    if len(project.title) > MAX_TITLE:
        raise InvalidArgument(f"a project title is at most {MAX_TITLE} characters")
    for name in project.members:
        if not _MEMBER.match(name):
            raise InvalidArgument("member names are principal names (letters, digits, '._@-')")
    for dataset, purpose in project.grants:
        if not dataset:
            raise InvalidArgument("a grant names a dataset (DATASET:PURPOSE)")
        if not _ID.match(purpose):
            raise InvalidArgument("purpose ids are lower-case letters, digits and '-'")
    for dataset, purpose, _ in project.grant_expiry:
        if (dataset, purpose) not in project.grants:
            raise InvalidArgument(f"expiry given for '{dataset}:{purpose}', which is not granted")


def _check_quota(quota: QuotaLimits) -> None:
    for name, value in dataclasses.asdict(quota).items():
        if value is not None and value < 0:
            raise InvalidArgument(f"quota limit '{name}' must not be negative (unset = unlimited)")


def _grant_map(project: Project) -> dict[tuple[str, str], dt.date | None]:
    grants: dict[tuple[str, str], dt.date | None] = dict.fromkeys(project.grants)
    for d, p, last in project.grant_expiry:
        grants[(d, p)] = last
    return grants


def _grants_json(project: Project) -> str:
    """[[dataset, purpose], …], with the last day appended to a grant that has one."""
    out: list[list[str]] = []
    for (d, p), last in sorted(_grant_map(project).items()):
        out.append([d, p, last.isoformat()] if last else [d, p])
    return json.dumps(out)


def grants_of(project: Project) -> list[Grant]:
    """The project's grants with their own expiry, sorted."""
    return [Grant(d, p, last) for (d, p), last in sorted(_grant_map(project).items())]


def _changes(before: Project, after: Project) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def note(name: str, old: Any, new: Any) -> None:
        if old != new:
            out[name] = {"from": old, "to": new}

    note("title", before.title, after.title)
    note("members", sorted(before.members), sorted(after.members))
    note("grants", json.loads(_grants_json(before)), json.loads(_grants_json(after)))
    note("expires", before.expires.isoformat(), after.expires.isoformat())
    note("quota", dataclasses.asdict(before.quota), dataclasses.asdict(after.quota))
    return out


def _project(row: tuple[Any, ...]) -> Project:
    grants: list[tuple[str, str]] = []
    expiry: list[tuple[str, str, dt.date]] = []
    for item in json.loads(row[3]):
        grants.append((item[0], item[1]))
        if len(item) > 2:
            expiry.append((item[0], item[1], dt.date.fromisoformat(item[2])))
    return Project(
        id=row[0],
        title=row[1],
        members=tuple(json.loads(row[2])),
        grants=tuple(grants),
        expires=dt.date.fromisoformat(row[4]),
        quota=QuotaLimits(**json.loads(row[5])),
        grant_expiry=tuple(expiry),
        revoked=row[6] is not None,
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
