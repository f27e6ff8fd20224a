"""SQLite state store: WAL, one connection per thread, ``BEGIN IMMEDIATE`` for writers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE principals (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE datasets (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        file_format TEXT NOT NULL,
        file_digest TEXT NOT NULL,
        row_count INTEGER NOT NULL,
        persons INTEGER NOT NULL,
        persons_unique INTEGER NOT NULL,
        column_types TEXT NOT NULL,
        measure_ranges TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        registered_by TEXT NOT NULL
    );
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        members TEXT NOT NULL,
        grants TEXT NOT NULL,
        expires TEXT NOT NULL,
        quota TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        project TEXT NOT NULL,
        dataset TEXT NOT NULL,
        spec TEXT NOT NULL,
        spec_digest TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        rule_ids TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        rows_scanned INTEGER NOT NULL DEFAULT 0,
        policy_version TEXT NOT NULL DEFAULT '',
        data_read INTEGER NOT NULL DEFAULT 0,
        result BLOB,
        result_digest TEXT NOT NULL DEFAULT '',
        UNIQUE (principal, request_id)
    );
    CREATE INDEX jobs_by_principal ON jobs (principal, created_at);
    CREATE INDEX jobs_by_state ON jobs (state);
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        project TEXT NOT NULL,
        job_id TEXT NOT NULL UNIQUE,
        day TEXT NOT NULL,
        jobs INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released'))
    );
    CREATE INDEX ledger_by_project ON ledger (project, state, day);
    CREATE TABLE usage (
        project TEXT NOT NULL,
        day TEXT NOT NULL,
        jobs INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        PRIMARY KEY (project, day)
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        entry TEXT NOT NULL,
        leaf_hash TEXT NOT NULL,
        root TEXT NOT NULL
    );
    CREATE TABLE audit_frontier (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        size INTEGER NOT NULL,
        frontier TEXT NOT NULL
    );
    """,
    # 2: the registered file's identity, checked before and after every read.
    """
    ALTER TABLE datasets ADD COLUMN file_fingerprint TEXT NOT NULL DEFAULT '';
    """,
    # 3: privacy budget (exact fractions as text) and the privacy terms of each released result.
    """
    CREATE TABLE privacy_ledger (
        id INTEGER PRIMARY KEY,
        population TEXT NOT NULL,
        project TEXT NOT NULL,
        job_id TEXT NOT NULL UNIQUE,
        day TEXT NOT NULL,
        epsilon TEXT NOT NULL,
        delta TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released'))
    );
    CREATE INDEX privacy_by_population ON privacy_ledger (population, state, day);
    CREATE TABLE privacy_usage (
        population TEXT NOT NULL,
        project TEXT NOT NULL,
        day TEXT NOT NULL,
        epsilon TEXT NOT NULL,
        delta TEXT NOT NULL,
        PRIMARY KEY (population, project, day)
    );
    ALTER TABLE jobs ADD COLUMN data_version TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_by_query ON jobs (spec_digest, state);
    """,
    # 4: the release register of the differencing guard (true person counts: server-side only).
    """
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY,
        dataset TEXT NOT NULL,
        population TEXT NOT NULL,
        project TEXT NOT NULL,
        job_id TEXT NOT NULL,
        data_version TEXT NOT NULL,
        region TEXT NOT NULL,
        persons INTEGER NOT NULL,
        UNIQUE (dataset, data_version, region)
    );
    CREATE INDEX releases_by_dataset ON releases (dataset, id);
    """,
)


class Database:
    """The state store. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Writers in this process queue on a lock rather than in SQLite's busy handler, whose
        # sleep-and-retry backoff (up to 100 ms per try) would dominate tail latency.
        self._write_lock = threading.Lock()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction, serialised against every other writer."""
        conn = self.conn
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.write() as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for i, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(i)}")

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
