"""The tamper-evident audit log: canonical JSON entries as leaves of an RFC 6962 tree.

Entries are appended inside the caller's write transaction, so a state change and the entry
that records it commit together (or not at all). Entries hold what was asked and decided,
never data values.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from sandbox._model import AuditRecord, VerifyReport
from sandbox.audit._canonical import canonical_json
from sandbox.audit._merkle import Frontier, leaf_hash
from sandbox.state._db import Database


def _load_frontier(conn: sqlite3.Connection) -> Frontier:
    row = conn.execute("SELECT size, frontier FROM audit_frontier WHERE id = 1").fetchone()
    if row is None:
        return Frontier()
    return Frontier(row[0], tuple(bytes.fromhex(h) for h in json.loads(row[1])))


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    def append(self, conn: sqlite3.Connection, event: str, **fields: Any) -> int:
        """Append one entry within the open write transaction ``conn``; returns its seq."""
        frontier = _load_frontier(conn)
        seq = frontier.size
        entry = {"seq": seq, "time": _now(), "event": event, **fields}
        data = canonical_json(entry)
        leaf = leaf_hash(data)
        frontier = frontier.append(leaf)
        conn.execute(
            "INSERT INTO audit (seq, entry, leaf_hash, root) VALUES (?, ?, ?, ?)",
            (seq, data.decode(), leaf.hex(), frontier.root().hex()),
        )
        conn.execute(
            "INSERT INTO audit_frontier (id, size, frontier) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET size = excluded.size, frontier = excluded.frontier",
            (frontier.size, json.dumps([h.hex() for h in frontier.hashes])),
        )
        return seq

    def entries(self, after_seq: int = -1, limit: int = 1000) -> list[AuditRecord]:
        rows = self._db.conn.execute(
            "SELECT seq, entry, leaf_hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [AuditRecord(seq, json.loads(entry), leaf) for seq, entry, leaf in rows]

    def _scan(self) -> Iterator[tuple[int, str, str, str]]:
        cursor = self._db.conn.execute("SELECT seq, entry, leaf_hash, root FROM audit ORDER BY seq")
        while batch := cursor.fetchmany(10_000):
            yield from batch

    def verify(self) -> VerifyReport:
        """Recompute every leaf hash and every tree head from the stored entries."""
        recorded = _load_frontier(self._db.conn)
        frontier = Frontier()
        for seq, entry_text, stored_leaf, stored_root in self._scan():
            if seq >= recorded.size:
                return _bad(frontier, seq, "entry beyond the recorded log size (inserted)")
            if seq != frontier.size:
                return _bad(frontier, frontier.size, "entry missing (sequence gap)")
            try:
                entry = json.loads(entry_text)
                data = canonical_json(entry)
            except (ValueError, TypeError):
                return _bad(frontier, seq, "entry is not valid canonical JSON")
            if data.decode() != entry_text or entry.get("seq") != seq:
                return _bad(frontier, seq, "entry text altered (not canonical or wrong seq)")
            leaf = leaf_hash(data)
            if leaf.hex() != stored_leaf:
                return _bad(frontier, seq, "entry altered: leaf hash does not match")
            frontier = frontier.append(leaf)
            if frontier.root().hex() != stored_root:
                return _bad(frontier, seq, "tree head does not match recomputed root")
        if recorded.size != frontier.size:
            return _bad(frontier, frontier.size, "log truncated: fewer entries than recorded")
        if recorded.hashes != frontier.hashes:
            return _bad(frontier, frontier.size - 1, "recorded tree state does not match entries")
        return VerifyReport(ok=True, size=frontier.size, root=frontier.root().hex())


def _bad(frontier: Frontier, seq: int, problem: str) -> VerifyReport:
    return VerifyReport(
        ok=False, size=frontier.size, root=frontier.root().hex(), first_bad_seq=seq, problem=problem
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
