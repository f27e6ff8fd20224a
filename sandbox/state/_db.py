"""SQLite state store: WAL, one connection per thread, ``BEGIN IMMEDIATE`` for writers.

Writers take the store's write lock one transaction at a time (``write``), or hand their
transaction's body to ``write_together``, which runs the bodies that are waiting meanwhile in
one transaction (group commit): each body in its own savepoint, so a body that fails leaves
the others' writes, and every caller returns only once the shared COMMIT is done.

A server's store copies its write-ahead log into the database from a background thread
(``checkpoint_every_s``) instead of in the commit that fills it: that copy ends in an fsync,
which took ~5 ms here and, inside a commit, would hold the write lock for every process.

Principals, projects and datasets are read on every request but change rarely: ``remembered``
keeps what was read until any process changes one of them. Temporary triggers on each
connection note such a change; the transaction that made it then bumps a counter in the
store's lock file (mapped into every process's memory) before releasing the write lock.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("sandbox.state")

_GROUP_MAX = 32
"""At most this many bodies share one transaction."""
_MAX_WAL_PAGES = 16_384
"""A background-checkpointed log this long (64 MB of 4 KB pages) is checkpointed once under
the write lock, so that the next writer starts it again from the beginning."""

_CONFIG_TABLES = ("principals", "projects", "datasets")
"""Tables whose rows ``remembered`` values are read from."""
_REMEMBER_S = 2.0
"""A remembered value is read again after this long even if no change was noted (a change
made by a connection other than this module's would otherwise go unseen)."""
_REMEMBER_MAX = 4096
_GENERATION = struct.Struct("<Q")

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
    # 5: cancellation asked of a job running in another server process; researchers' public
    # keys (sealed results) and the certificate subjects mapped to principals (mutual TLS).
    """
    ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE principals ADD COLUMN public_key TEXT;
    ALTER TABLE principals ADD COLUMN public_key_fingerprint TEXT;
    ALTER TABLE principals ADD COLUMN cert_subject TEXT;
    CREATE UNIQUE INDEX principals_by_cert_subject ON principals (cert_subject);
    """,
    # human review: jobs held for approval, and each reviewer's decision
    """
    CREATE TABLE review_holds (
        job_id TEXT PRIMARY KEY,
        required INTEGER NOT NULL,
        why TEXT NOT NULL,
        held_at TEXT NOT NULL,
        stage TEXT NOT NULL DEFAULT 'run'
    );
    CREATE TABLE review_decisions (
        job_id TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        approve INTEGER NOT NULL,
        reason TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        PRIMARY KEY (job_id, reviewer)
    );
    """,
    # project revocation, and researchers' requests for exceptions to policy refusals
    """
    ALTER TABLE projects ADD COLUMN revoked_at TEXT;
    ALTER TABLE projects ADD COLUMN revoked_by TEXT;
    CREATE TABLE exception_requests (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL UNIQUE,
        principal TEXT NOT NULL,
        project TEXT NOT NULL,
        dataset TEXT NOT NULL,
        purpose TEXT NOT NULL,
        spec_digest TEXT NOT NULL,
        rule_ids TEXT NOT NULL,
        justification TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('PENDING', 'GRANTED', 'REJECTED', 'USED')),
        requested_at TEXT NOT NULL,
        decided_by TEXT NOT NULL DEFAULT '',
        decision_reason TEXT NOT NULL DEFAULT '',
        decided_at TEXT,
        used_by_job TEXT NOT NULL DEFAULT '',
        used_at TEXT
    );
    CREATE INDEX exceptions_by_use ON exception_requests (principal, project, spec_digest, state);
    """,
    # audit proofs and checkpoints: the hash of every perfect subtree above the leaves, keyed
    # (level << 40) | index; signed tree heads; and the log's id (the checkpoints' origin)
    """
    CREATE TABLE audit_nodes (
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        id INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        checkpoint TEXT NOT NULL
    );
    CREATE INDEX audit_checkpoints_by_size ON audit_checkpoints (size, id);
    CREATE TABLE audit_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO audit_meta (key, value) VALUES ('log_id', lower(hex(randomblob(16))));
    """,
    # the audit log index of each released job's release entry (its receipt)
    """
    ALTER TABLE jobs ADD COLUMN release_seq INTEGER;
    """,
)


@dataclass
class _Body:
    """One caller's transaction body, waiting for a group commit."""

    run: Callable[[sqlite3.Connection], Any]
    on_rollback: Callable[[], None] | None
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    """Set (with ``done``) to make the waiting caller lead the next group."""
    result: Any = None
    error: BaseException | None = None


class Database:
    """The state store. Thread-safe: each thread gets its own connection."""

    def __init__(
        self,
        path: Path,
        *,
        checkpoint_every_s: float | None = None,
        max_wal_pages: int = _MAX_WAL_PAGES,
    ) -> None:
        """``checkpoint_every_s``: checkpoint the log from a background thread this often
        (commits then never do); ``None``: SQLite's default, in the commit that fills it."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Writers queue on a lock rather than in SQLite's busy handler, whose sleep-and-retry
        # backoff (up to 100 ms per try) would dominate tail latency: a thread lock within
        # this process, and an advisory lock on a file beside the store across processes
        # (server processes sharing the store, CLI commands). The kernel wakes a waiter as
        # soon as the lock is free.
        self._write_lock = threading.Lock()
        self._lock_file = os.open(
            path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
        )
        weakref.finalize(self, os.close, self._lock_file)
        if os.fstat(self._lock_file).st_size < _GENERATION.size:
            os.ftruncate(self._lock_file, _GENERATION.size)  # zeros: a new counter
        self._generation = mmap.mmap(self._lock_file, _GENERATION.size)
        self._remembered: dict[Hashable, tuple[int, float, Any]] = {}
        self._migrated = False
        self._waiting: list[_Body] = []
        self._leading = False
        self.commits = 0
        """Write transactions this object has committed (each under the write lock)."""
        self._group_lock = threading.Lock()
        self._checkpoints_in_commits = checkpoint_every_s is None
        self._closing = threading.Event()
        self._migrate()
        self._migrated = True
        self._watch_config(self.conn)
        self._checkpointing: threading.Thread | None = None
        if checkpoint_every_s is not None:
            self._checkpointing = threading.Thread(
                target=self._checkpoint_wal,
                args=(checkpoint_every_s, max_wal_pages),
                name="sandbox-wal-checkpoint",
                daemon=True,
            )
            self._checkpointing.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        if not self._checkpoints_in_commits:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        if self._migrated:
            self._watch_config(conn)
        return conn

    def _watch_config(self, conn: sqlite3.Connection) -> None:
        """Make ``conn`` note, in this thread, every write to a principal, project or dataset."""

        def changed() -> None:
            self._local.config_changed = True

        conn.create_function("sandbox_config_changed", 0, changed)
        for table in _CONFIG_TABLES:
            for event in ("INSERT", "UPDATE", "DELETE"):
                conn.execute(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS {table}_{event.lower()}_noted "
                    f"AFTER {event} ON main.{table} BEGIN SELECT sandbox_config_changed(); END"
                )

    def config_generation(self) -> int:
        """A count that grows whenever any process changes a principal, project or dataset."""
        generation: int = _GENERATION.unpack_from(self._generation)[0]
        return generation

    def remembered(self, key: Hashable, load: Callable[[], T]) -> T:
        """``load()``, or what it returned for ``key`` before if no principal, project or
        dataset has changed since (nor ``_REMEMBER_S`` passed). For reads of those tables
        that return immutable values; errors are not kept. Inside a write transaction, which
        may have changed them, it always loads.
        """
        if getattr(self._local, "writing", False):
            return load()
        generation, now = self.config_generation(), time.monotonic()
        kept = self._remembered.get(key)
        if kept is not None and kept[0] == generation and now - kept[1] < _REMEMBER_S:
            value: T = kept[2]
            return value
        value = load()
        if len(self._remembered) >= _REMEMBER_MAX:
            self._remembered.clear()
        self._remembered[key] = (generation, now, value)
        return value

    def _checkpoint_wal(self, every_s: float, max_pages: int) -> None:
        """Copy committed log pages into the database while writers go on appending.

        A log that keeps growing because writers never pause (it restarts only when a
        checkpoint has caught up with every writer) is checkpointed under the write lock.
        """
        conn = self._connect()
        try:
            while not self._closing.wait(every_s):
                try:
                    _, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if pages >= max_pages:
                        with self._exclusive():
                            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next round tries again
                    log.warning("write-ahead log checkpoint failed: %s", exc)
        finally:
            conn.close()

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
        self._refuse_nesting()
        with self._exclusive():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self.commits += 1

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the store's write lock: this process's thread lock, then the file lock."""
        with self._write_lock:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._local.writing = True
            self._local.config_changed = False
            try:
                yield
            finally:
                self._local.writing = False
                if self._local.config_changed:  # committed or not: a new count is harmless
                    count = self.config_generation() + 1
                    _GENERATION.pack_into(self._generation, 0, count)
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _refuse_nesting(self) -> None:
        """A write inside a write would wait for itself forever: refuse it at once."""
        if getattr(self._local, "writing", False):
            raise RuntimeError("a write transaction is already open in this thread")

    def write_together(
        self,
        body: Callable[[sqlite3.Connection], T],
        on_rollback: Callable[[], None] | None = None,
    ) -> T:
        """Run ``body`` in a write transaction, possibly shared with other threads' bodies.

        Like ``with write() as conn: return body(conn)``: atomic, and returned (or raised)
        only once committed (or rolled back). Bodies that arrive while a transaction is
        running wait and then run together in the next one, one savepoint each, in arrival
        order; each sees the writes of those before it. A body runs on whichever waiting
        thread leads the group: it must use only the connection it is given and must not
        start another transaction. ``on_rollback`` is called if the body's writes are rolled
        back after it returned (the shared COMMIT failed), for in-memory state that followed
        them.
        """
        self._refuse_nesting()
        mine = _Body(body, on_rollback)
        with self._group_lock:
            self._waiting.append(mine)
            lead = not self._leading
            self._leading = True
        if not lead:
            mine.done.wait()
            lead = mine.lead
        if lead:
            self._lead_groups()
        if mine.error is not None:
            raise mine.error
        result: T = mine.result
        return result

    def _lead_groups(self) -> None:
        """Run one group of waiting bodies (the leader's first), then hand the lead on."""
        group: list[_Body] = []
        try:
            conn = self.conn
            with self._exclusive():
                self._run_group(conn, group)
        except BaseException as exc:  # nothing of the group was committed
            if not group:  # failed before any body ran: fail the leader's own
                with self._group_lock:
                    group.append(self._waiting.pop(0))
            for body in group:
                if body.error is None:
                    body.error, body.result = exc, None
                    if body.on_rollback is not None:
                        with suppress(Exception):
                            body.on_rollback()
        with self._group_lock:
            following = self._waiting[0] if self._waiting else None
            if following is None:
                self._leading = False
        for body in group:
            body.done.set()
        if following is not None:
            following.lead = True
            following.done.set()

    def _run_group(self, conn: sqlite3.Connection, group: list[_Body]) -> None:
        """One transaction over the bodies waiting now (added to ``group`` as they run)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            while len(group) < _GROUP_MAX:
                with self._group_lock:
                    take = self._waiting[: _GROUP_MAX - len(group)]
                    del self._waiting[: len(take)]
                if not take:
                    break
                group.extend(take)  # before any runs: each caller is told what happened
                if len(group) == 1:  # alone so far: no savepoint, a failure ends the group
                    try:
                        take[0].result = take[0].run(conn)
                    except BaseException as exc:
                        take[0].error = exc
                        conn.execute("ROLLBACK")
                        return
                    continue
                for body in take:
                    conn.execute("SAVEPOINT body")
                    try:
                        body.result = body.run(conn)
                    except BaseException as exc:
                        body.error = exc
                        conn.execute("ROLLBACK TO body")
                    conn.execute("RELEASE body")
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        with self.write() as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for i, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(i)}")

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end) and stop
        checkpointing in the background."""
        self._closing.set()
        if self._checkpointing is not None:
            self._checkpointing.join()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
