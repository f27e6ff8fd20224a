"""A server's state store copies its write-ahead log into the database file from a background
thread, never in a commit (whose fsync would hold the write lock for every process), and
keeps the log bounded even when writers never pause."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.state import Database

ROW = b"x" * 40_000  # a dozen 4 KB pages per row, with the table's own


def store(tmp_path: Path, **settings: Any) -> Database:
    db = Database(tmp_path / "state.sqlite3", **settings)
    with db.write() as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    return db


def rows_in_database_file(db: Database, tmp_path: Path) -> int:
    """Rows of ``t`` in the database file alone: what checkpoints copied out of the log."""
    copy = tmp_path / "copy.sqlite3"
    shutil.copy(db.path, copy)  # without the -wal file beside it
    conn = sqlite3.connect(copy)
    try:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0]) if tables[0] else 0
    finally:
        conn.close()
        copy.unlink()


def insert(db: Database, n: int) -> None:
    for _ in range(n):
        with db.write() as conn:
            conn.execute("INSERT INTO t (v) VALUES (?)", (ROW,))


def test_commits_leave_the_log_to_the_background_thread(tmp_path: Path) -> None:
    idle = store(tmp_path, checkpoint_every_s=3600.0)  # the thread will not run in this test
    try:
        insert(idle, 150)  # 1,500 pages: past SQLite's default checkpoint in the commit (1,000)
        assert rows_in_database_file(idle, tmp_path) == 0
    finally:
        idle.close()


def test_sqlite_default_checkpoints_in_the_commit_without_a_background_thread(
    tmp_path: Path,
) -> None:
    default = store(tmp_path)  # CLI commands: no thread, SQLite checkpoints as it fills
    try:
        insert(default, 150)
        assert rows_in_database_file(default, tmp_path) > 0
        assert not any(t.name == "sandbox-wal-checkpoint" for t in threading.enumerate())
    finally:
        default.close()


def test_the_background_thread_copies_committed_rows_into_the_database_file(
    tmp_path: Path,
) -> None:
    db = store(tmp_path, checkpoint_every_s=0.02)
    try:
        insert(db, 5)
        deadline = time.monotonic() + 10
        copied = 0
        while copied < 5:
            assert time.monotonic() < deadline, "the log was never checkpointed"
            time.sleep(0.02)
            with contextlib.suppress(sqlite3.DatabaseError):  # copied mid-checkpoint: torn
                copied = rows_in_database_file(db, tmp_path)
    finally:
        db.close()
    assert not any(t.name == "sandbox-wal-checkpoint" for t in threading.enumerate())


def test_the_log_stays_bounded_when_a_transaction_is_always_open(tmp_path: Path) -> None:
    """A log starts again from its beginning only when a writer finds every page of it
    copied: never, if every checkpoint runs while a transaction is open. Past its limit the
    thread checkpoints under the write lock, between transactions."""
    db = store(tmp_path, checkpoint_every_s=0.01, max_wal_pages=40)
    try:
        for _ in range(40):  # ~500 pages in all
            with db.write() as conn:
                conn.execute("INSERT INTO t (v) VALUES (?)", (ROW,))
                time.sleep(0.05)  # the checkpoints of this interval run while this is open
        frames = (Path(f"{db.path}-wal").stat().st_size - 32) // (4096 + 24)
    finally:
        db.close()
    # The file holds as many pages as the log ever did: those of creating the store, or the
    # limit plus the transaction the thread waited for; all ~500 if it never started again.
    assert frames < 100
