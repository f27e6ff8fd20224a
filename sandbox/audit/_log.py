"""The tamper-evident audit log: canonical JSON entries as leaves of an RFC 6962 tree.

Entries are appended inside the caller's write transaction, so a state change and the entry
that records it commit together (or not at all). Entries hold what was asked and decided,
never data values.

Besides each entry (with its leaf hash and the tree head after it) the log stores the hash
of every perfect subtree above the leaves (``audit_nodes``, written as the compact range
merges on append), so inclusion and consistency proofs take O(log n) lookups; and signed
checkpoints (``audit_checkpoints``). The log is append-only: nothing here edits or deletes
an entry or a checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sandbox._errors import AuditTampered, NotFound
from sandbox._model import AuditRecord, VerifyReport
from sandbox.audit._canonical import canonical_text
from sandbox.audit._checkpoint import (
    SIGNING_KEY_FILE,
    Checkpoint,
    Receipt,
    SigningKey,
    iso,
    now_utc,
    sign_checkpoint,
)
from sandbox.audit._merkle import (
    LEVEL_SHIFT,
    CompactRange,
    Frontier,
    fold,
    leaf_hash,
    perfect_cover,
)
from sandbox.audit._proofs import Range, consistency_ranges, inclusion_ranges
from sandbox.state._db import Database

_sha256 = hashlib.sha256
_FRONTIER = "SELECT size, frontier FROM audit_frontier WHERE id = 1"
_SAVE_FRONTIER = (
    "INSERT INTO audit_frontier (id, size, frontier) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET size = excluded.size, frontier = excluded.frontier"
)
_INSERT_ENTRY = "INSERT INTO audit (seq, entry, leaf_hash, root) VALUES (?, ?, ?, ?)"
_INSERT_NODE = "INSERT OR REPLACE INTO audit_nodes (id, hash) VALUES (?, ?)"
_RESERVED = frozenset({"seq", "time", "event"})


def _parse_frontier(row: tuple[int, str] | None) -> CompactRange:
    if row is None:
        return CompactRange()
    return CompactRange(row[0], [bytes.fromhex(h) for h in json.loads(row[1])])


def _load_frontier(conn: sqlite3.Connection) -> Frontier:
    rng = _parse_frontier(conn.execute(_FRONTIER).fetchone())
    return Frontier(rng.size, tuple(rng.hashes))


_second: tuple[int, str] = (-1, "")


def _now_text() -> str:
    """Now, as ``datetime.now(UTC).isoformat(timespec="microseconds")`` writes it (faster)."""
    global _second
    micros = time.time_ns() // 1000
    sec, frac = divmod(micros, 1_000_000)
    known = _second
    if known[0] != sec:
        known = (sec, dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _second = known
    return f"{known[1]}.{frac:06d}+00:00"


class AuditLog:
    """The log in one state store.

    ``signing_key_file`` is the checkpoint signing key (default ``audit_signing.key`` beside
    the store, created 0600 on first use); ``clock`` gives entry and checkpoint times (UTC).
    """

    def __init__(
        self,
        db: Database,
        *,
        signing_key_file: Path | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self.signing_key_file = signing_key_file or db.path.parent / SIGNING_KEY_FILE
        self._clock = clock
        self._lock = threading.Lock()
        # The compact range after the last append by this object (with the hex of its hashes),
        # keyed by the exact row it wrote: reused only while the stored row is still that one
        # (no other writer, no rollback), so appends skip parsing the frontier.
        self._cached: tuple[int, str, CompactRange, list[str]] | None = None
        self._signer: SigningKey | None = None
        self._origin = ""

    # ---- append -------------------------------------------------------------------------
    def append(self, conn: sqlite3.Connection, event: str, **fields: Any) -> int:
        """Append one entry within the open write transaction ``conn``; returns its seq."""
        return self._append(conn, event, fields)[0]

    def append_with_receipt(self, conn: sqlite3.Connection, event: str, **fields: Any) -> Receipt:
        """Append one entry like ``append`` and sign a checkpoint of the log it ends; returns
        the entry's receipt. The proof comes from the frontier in hand (no lookups): the last
        leaf's path is the frontier before it, right to left (RFC 6962 §2.1.1)."""
        seq, leaf, root, path = self._append(conn, event, fields)
        checkpoint = self._store_checkpoint(conn, seq + 1, root)
        return Receipt(seq, leaf.hex(), checkpoint, path)

    def _append(
        self, conn: sqlite3.Connection, event: str, fields: dict[str, Any]
    ) -> tuple[int, bytes, bytes, tuple[str, ...]]:
        """Seq, leaf hash and new root of the appended entry, and its inclusion path (hex)."""
        clash = _RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"audit entry fields {sorted(clash)} are set by the log")
        with self._lock:
            row = conn.execute(_FRONTIER).fetchone()
            cached, self._cached = self._cached, None
            if cached is not None and row is not None and cached[:2] == tuple(row):
                rng, hexes = cached[2], cached[3]
            else:
                rng = _parse_frontier(row)
                hexes = [h.hex() for h in rng.hashes]
            path = tuple(reversed(hexes))
            seq = rng.size
            when = _now_text() if self._clock is None else iso(self._clock())
            text = canonical_text({"seq": seq, "time": when, "event": event, **fields})
            leaf = _sha256(b"\x00" + text.encode()).digest()
            nodes = rng.push(leaf)
            root = rng.root()
            conn.execute(_INSERT_ENTRY, (seq, text, leaf.hex(), root.hex()))
            for node in nodes:
                conn.execute(_INSERT_NODE, node)
            # Only the last subtree root is new: the merged ones were the tail of the list.
            del hexes[len(rng.hashes) - 1 :]
            hexes.append(rng.hashes[-1].hex())
            frontier = '["' + '","'.join(hexes) + '"]'
            conn.execute(_SAVE_FRONTIER, (rng.size, frontier))
            self._cached = (rng.size, frontier, rng, hexes)
            return seq, leaf, root, path

    # ---- reading ------------------------------------------------------------------------
    def _conn(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        return conn if conn is not None else self._db.conn

    def close_thread(self) -> None:
        """Close the calling thread's state store connection (threads that end)."""
        self._db.close()

    def size(self, conn: sqlite3.Connection | None = None) -> int:
        row = self._conn(conn).execute("SELECT size FROM audit_frontier WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def head(self, conn: sqlite3.Connection | None = None) -> tuple[int, bytes]:
        """The recorded size and Merkle root of the whole log."""
        rng = _parse_frontier(self._conn(conn).execute(_FRONTIER).fetchone())
        return rng.size, rng.root()

    def origin(self, conn: sqlite3.Connection | None = None) -> str:
        if self._origin:  # the log id is written once, when the log is created
            return self._origin
        row = (
            self._conn(conn).execute("SELECT value FROM audit_meta WHERE key = 'log_id'").fetchone()
        )
        if row is None:
            return "sandbox-audit/unknown"
        self._origin = f"sandbox-audit/{row[0]}"
        return self._origin

    def entries(self, after_seq: int = -1, limit: int = 1000) -> list[AuditRecord]:
        rows = self._db.conn.execute(
            "SELECT seq, entry, leaf_hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [AuditRecord(seq, json.loads(entry), leaf) for seq, entry, leaf in rows]

    def scan(
        self, upto: int | None = None, conn: sqlite3.Connection | None = None
    ) -> Iterator[tuple[int, str, str]]:
        """``(seq, canonical entry text, leaf hash hex)`` in seq order, below ``upto``."""
        limit = (1 << 62) if upto is None else upto
        cursor = self._conn(conn).execute(
            "SELECT seq, entry, leaf_hash FROM audit WHERE seq < ? ORDER BY seq", (limit,)
        )
        while batch := cursor.fetchmany(10_000):
            yield from batch

    def entry(self, seq: int, conn: sqlite3.Connection | None = None) -> AuditRecord:
        row = (
            self._conn(conn)
            .execute("SELECT entry, leaf_hash FROM audit WHERE seq = ?", (seq,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"the audit log has no entry {seq}")
        return AuditRecord(seq, json.loads(row[0]), row[1])

    # ---- proofs -------------------------------------------------------------------------
    def _nodes(
        self, conn: sqlite3.Connection | None, keys: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """Hashes of perfect subtrees by ``(level, index)``: leaves from the entries, the rest
        from the node table (rebuilt from the leaves once, if a log predates it)."""
        wanted = set(keys)
        c = self._conn(conn)
        found = self._lookup(c, wanted)
        if len(found) < len(wanted):
            if conn is not None:
                self._rebuild_nodes(conn)
            else:
                with self._db.write() as w:
                    self._rebuild_nodes(w)
            found = self._lookup(c, wanted)
            if len(found) < len(wanted):
                missing = sorted(wanted - found.keys())[0]
                raise AuditTampered(
                    f"audit log subtree {missing} (level, index) is missing: entries deleted?"
                )
        return found

    @staticmethod
    def _lookup(
        conn: sqlite3.Connection, wanted: set[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        leaves = [i for level, i in wanted if level == 0]
        inner = {(level << LEVEL_SHIFT) | i: (level, i) for level, i in wanted if level > 0}
        found: dict[tuple[int, int], bytes] = {}
        if leaves:
            marks = ",".join("?" * len(leaves))
            for seq, hex_hash in conn.execute(
                f"SELECT seq, leaf_hash FROM audit WHERE seq IN ({marks})",  # noqa: S608
                leaves,
            ):
                found[(0, seq)] = bytes.fromhex(hex_hash)
        if inner:
            marks = ",".join("?" * len(inner))
            for key, value in conn.execute(
                f"SELECT id, hash FROM audit_nodes WHERE id IN ({marks})",  # noqa: S608
                list(inner),
            ):
                found[inner[key]] = bytes(value)
        return found

    def _rebuild_nodes(self, conn: sqlite3.Connection) -> None:
        """Recompute every stored subtree hash from the leaf hashes (logs from before the
        node table, or a damaged table)."""
        rng = CompactRange()
        batch: list[tuple[int, bytes]] = []
        for (hex_hash,) in conn.execute("SELECT leaf_hash FROM audit ORDER BY seq"):
            batch.extend(rng.push(bytes.fromhex(hex_hash)))
            if len(batch) >= 10_000:
                conn.executemany(_INSERT_NODE, batch)
                batch.clear()
        conn.executemany(_INSERT_NODE, batch)

    def _range_hashes(self, conn: sqlite3.Connection | None, ranges: list[Range]) -> list[bytes]:
        covers = [perfect_cover(a, b) for a, b in ranges]
        nodes = self._nodes(conn, (key for cover in covers for key in cover))
        return [fold([nodes[key] for key in cover]) for cover in covers]

    def _check_size(self, size: int, conn: sqlite3.Connection | None) -> None:
        current = self.size(conn)
        if not 0 <= size <= current:
            raise NotFound(f"the audit log has {current} entries, not {size}")

    def root_at(self, size: int, conn: sqlite3.Connection | None = None) -> bytes:
        """MTH of the first ``size`` entries."""
        self._check_size(size, conn)
        return self._range_hashes(conn, [(0, size)])[0] if size else fold([])

    def leaf(self, seq: int, conn: sqlite3.Connection | None = None) -> bytes:
        """The leaf hash of entry ``seq``."""
        if not 0 <= seq < self.size(conn):
            raise NotFound(f"the audit log has no entry {seq}")
        return self._nodes(conn, [(0, seq)])[(0, seq)]

    def inclusion_proof(
        self, seq: int, size: int | None = None, conn: sqlite3.Connection | None = None
    ) -> list[bytes]:
        """PATH(seq, D[size]) (RFC 6962 §2.1.1); ``size`` defaults to the whole log."""
        size = self.size(conn) if size is None else size
        self._check_size(size, conn)
        if not 0 <= seq < size:
            raise NotFound(f"entry {seq} is not in the first {size} entries of the log")
        return self._range_hashes(conn, inclusion_ranges(seq, size))

    def consistency_proof(
        self, first: int, second: int | None = None, conn: sqlite3.Connection | None = None
    ) -> list[bytes]:
        """PROOF(first, D[second]) (RFC 6962 §2.1.2); ``second`` defaults to the whole log."""
        second = self.size(conn) if second is None else second
        self._check_size(second, conn)
        if not 0 <= first <= second:
            raise NotFound(f"no consistency proof from size {first} to size {second}")
        return self._range_hashes(conn, consistency_ranges(first, second))

    # ---- checkpoints and receipts -------------------------------------------------------
    def signing_key(self) -> SigningKey:
        if self._signer is None:
            self._signer = SigningKey.load_or_create(self.signing_key_file)
        return self._signer

    def public_key_pem(self) -> str:
        return self.signing_key().public_pem()

    def checkpoint(self, conn: sqlite3.Connection | None = None) -> Checkpoint:
        """A signed checkpoint of the whole log: the latest stored one if it already covers
        every entry (and is by this key), else a new one, stored. ``conn``: an open write
        transaction to sign in (else one is opened)."""
        if conn is None:
            with self._db.write() as w:
                return self._checkpoint(w)
        return self._checkpoint(conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> Checkpoint:
        size, root = self.head(conn)
        latest = self.latest_checkpoint(conn)
        if (
            latest is not None
            and latest.size == size
            and latest.key_id == self.signing_key().key_id
        ):
            return latest
        return self._store_checkpoint(conn, size, root)

    def _store_checkpoint(self, conn: sqlite3.Connection, size: int, root: bytes) -> Checkpoint:
        """Sign the head ``(size, root)`` now and store the checkpoint (within ``conn``)."""
        when = iso(self._clock() if self._clock is not None else now_utc())
        cp = sign_checkpoint(self.signing_key(), self.origin(conn), size, root, when)
        conn.execute(
            "INSERT INTO audit_checkpoints (size, checkpoint) VALUES (?, ?)", (size, cp.to_json())
        )
        return cp

    def latest_checkpoint(self, conn: sqlite3.Connection | None = None) -> Checkpoint | None:
        row = (
            self._conn(conn)
            .execute("SELECT checkpoint FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1")
            .fetchone()
        )
        return Checkpoint.from_json(row[0]) if row else None

    def checkpoints(self, conn: sqlite3.Connection | None = None) -> list[Checkpoint]:
        """Every stored checkpoint, by size then signing order."""
        rows = self._conn(conn).execute(
            "SELECT checkpoint FROM audit_checkpoints ORDER BY size, id"
        )
        return [Checkpoint.from_json(text) for (text,) in rows]

    def covering_checkpoint(
        self, seq: int, conn: sqlite3.Connection | None = None
    ) -> Checkpoint | None:
        """The first stored checkpoint whose tree holds entry ``seq``."""
        row = (
            self._conn(conn)
            .execute(
                "SELECT checkpoint FROM audit_checkpoints WHERE size > ? ORDER BY size, id LIMIT 1",
                (seq,),
            )
            .fetchone()
        )
        return Checkpoint.from_json(row[0]) if row else None

    def receipt(self, seq: int, conn: sqlite3.Connection | None = None) -> Receipt:
        """Entry ``seq``'s receipt: its leaf hash, the first checkpoint covering it (or a fresh
        one, signed now) and its inclusion proof in that checkpoint's tree.

        ``conn``: pass the open write transaction when called inside one (the entry may be
        uncommitted yet); without it, never call this inside ``db.write()``.
        """
        if not 0 <= seq < self.size(conn):
            raise NotFound(f"the audit log has no entry {seq}")
        cp = self.covering_checkpoint(seq, conn) or self.checkpoint(conn)
        proof = self.inclusion_proof(seq, cp.size, conn)
        return Receipt(seq, self.leaf(seq, conn).hex(), cp, tuple(p.hex() for p in proof))

    # ---- verification -------------------------------------------------------------------
    def _scan_all(self) -> Iterator[tuple[int, str, str, str]]:
        cursor = self._db.conn.execute("SELECT seq, entry, leaf_hash, root FROM audit ORDER BY seq")
        while batch := cursor.fetchmany(10_000):
            yield from batch

    def verify(self) -> VerifyReport:
        """Recompute every leaf hash and every tree head from the stored entries, and check
        every stored checkpoint: its signature, and its root against the recomputed one."""
        recorded = _load_frontier(self._db.conn)
        checkpoints: dict[int, list[Checkpoint]] = {}
        for cp in self.checkpoints():
            checkpoints.setdefault(cp.size, []).append(cp)
        verified = 0
        frontier = Frontier()
        for seq, entry_text, stored_leaf, stored_root in self._scan_all():
            if seq >= recorded.size:
                return _bad(frontier, seq, "entry beyond the recorded log size (inserted)")
            if seq != frontier.size:
                return _bad(frontier, frontier.size, "entry missing (sequence gap)")
            try:
                entry = json.loads(entry_text)
                data = canonical_text(entry)
            except (ValueError, TypeError):
                return _bad(frontier, seq, "entry is not valid canonical JSON")
            if data != entry_text or entry.get("seq") != seq:
                return _bad(frontier, seq, "entry text altered (not canonical or wrong seq)")
            leaf = leaf_hash(data.encode())
            if leaf.hex() != stored_leaf:
                return _bad(frontier, seq, "entry altered: leaf hash does not match")
            frontier = frontier.append(leaf)
            root = frontier.root().hex()
            if root != stored_root:
                return _bad(frontier, seq, "tree head does not match recomputed root")
            for cp in checkpoints.get(frontier.size, ()):
                if cp.root != root:
                    return _bad(
                        frontier,
                        verified,
                        f"tree head at size {cp.size} differs from the signed checkpoint: an "
                        f"entry in [{verified}, {cp.size}) was altered, or the log forked",
                    )
            if frontier.size in checkpoints:
                verified = frontier.size
        if recorded.size != frontier.size:
            return _bad(frontier, frontier.size, "log truncated: fewer entries than recorded")
        if recorded.hashes != frontier.hashes:
            return _bad(frontier, frontier.size - 1, "recorded tree state does not match entries")
        for size, cps in sorted(checkpoints.items()):
            if size > frontier.size:
                return _bad(
                    frontier, frontier.size, f"log truncated: a checkpoint covers {size} entries"
                )
            for cp in cps:
                if size == 0 and cp.root != fold([]).hex():
                    return _bad(frontier, 0, "the checkpoint of the empty log has a wrong root")
                problem = cp.problem()
                if problem:
                    return _bad(frontier, min(size, frontier.size), problem)
        return VerifyReport(ok=True, size=frontier.size, root=frontier.root().hex())


def _bad(frontier: Frontier, seq: int, problem: str) -> VerifyReport:
    return VerifyReport(
        ok=False, size=frontier.size, root=frontier.root().hex(), first_bad_seq=seq, problem=problem
    )
