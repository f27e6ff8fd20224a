"""Principals, projects and datasets remembered between requests (``Database.remembered``):
a change made through any store object, in any process, is seen by the next read; one made
behind the store's back (a raw SQLite connection) within ``_REMEMBER_S``."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest

from sandbox import Project, QuotaLimits, Role, Unauthenticated
from sandbox.state import Database, Principals, Projects
from sandbox.state._db import _REMEMBER_S


def _stores(tmp_path: Path) -> tuple[Database, Database]:
    """Two store objects on one file: as two server processes (or a server and the CLI) hold."""
    path = tmp_path / "state.sqlite3"
    return Database(path), Database(path)


def test_a_revocation_through_another_store_object_is_seen_by_the_next_read(
    tmp_path: Path,
) -> None:
    server, cli = _stores(tmp_path)
    with cli.write() as conn:
        token = Principals(cli).add(conn, "ana", Role.RESEARCHER)
    principals = Principals(server, allow_plaintext_tokens=True)
    for _ in range(3):  # read once, then remembered
        assert principals.authenticate(token).name == "ana"
    with cli.write() as conn:
        Principals(cli).revoke(conn, "ana")
    with pytest.raises(Unauthenticated):
        principals.authenticate(token)


def test_a_project_change_through_another_store_object_is_seen_by_the_next_read(
    tmp_path: Path,
) -> None:
    server, steward = _stores(tmp_path)
    project = Project(
        "p", "p", ("ana",), (("d", "research"),), dt.date(2030, 1, 1), QuotaLimits(jobs_total=5)
    )
    with steward.write() as conn:
        Projects(steward).create(conn, project, created_by="sam")
    remembered = Projects(server)
    assert remembered.get("p") == remembered.get("p") == project
    with steward.write() as conn:
        Projects(steward).revoke(conn, "p", revoked_by="sam")
    seen = remembered.get("p")
    assert seen is not None and seen.revoked


def test_a_write_that_touches_none_of_them_keeps_what_was_read(tmp_path: Path) -> None:
    server, other = _stores(tmp_path)
    before = server.config_generation()
    with other.write() as conn:
        conn.execute("INSERT INTO audit_meta (key, value) VALUES ('k', 'v')")
    assert server.config_generation() == before
    with other.write() as conn:
        Principals(other).add(conn, "ana", Role.RESEARCHER)
    assert server.config_generation() == before + 1


def test_a_change_behind_the_stores_back_is_seen_within_the_limit(tmp_path: Path) -> None:
    server, _ = _stores(tmp_path)
    with server.write() as conn:
        token = Principals(server).add(conn, "ana", Role.RESEARCHER)
    principals = Principals(server, allow_plaintext_tokens=True)
    assert principals.authenticate(token).name == "ana"
    raw = sqlite3.connect(server.path, isolation_level=None)  # no triggers, no counter
    try:
        raw.execute("UPDATE principals SET revoked_at = 'now' WHERE name = 'ana'")
    finally:
        raw.close()
    deadline = time.monotonic() + _REMEMBER_S + 1.0
    while True:
        try:
            principals.authenticate(token)
        except Unauthenticated:
            break
        assert time.monotonic() < deadline, "a change made outside the store was never seen"
        time.sleep(0.05)


def test_inside_a_write_transaction_reads_are_never_remembered(tmp_path: Path) -> None:
    server, _ = _stores(tmp_path)
    with server.write() as conn:
        token = Principals(server).add(conn, "ana", Role.RESEARCHER)
    principals = Principals(server, allow_plaintext_tokens=True)
    assert principals.authenticate(token).role == Role.RESEARCHER  # remembered now
    with server.write() as conn:
        conn.execute("UPDATE principals SET role = 'steward' WHERE name = 'ana'")
        # The transaction's own change, not yet committed (nor counted), is what it reads.
        assert principals.authenticate(token).role == Role.STEWARD
    assert principals.authenticate(token).role == Role.STEWARD
