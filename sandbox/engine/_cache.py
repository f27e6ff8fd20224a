"""In-memory copies of small registered files, so small jobs skip parsing Parquet or CSV.

A copy is made only of the registered version of a file: the file's fingerprint must equal the
registered one before and after the copy is read, else nothing is cached and the job reads the
file itself (and the pipeline's unchanged-file check then refuses to release it). A copy is keyed
by path and registered version, so a re-registered file never meets a stale copy. Copies in use
are never dropped; the least recently used idle copies make room for a new one.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from sandbox.engine._columnar import MAX_ROWS, Columns
from sandbox.engine._plan import Source, quote_ident


@dataclass
class _Copy:
    table: str
    rows: int
    users: int = 0
    columns: Columns | None = None
    """Its columns as NumPy arrays, made on first use (files of at most ``MAX_ROWS`` rows)."""


class SourceCache:
    """Copies of registered files of at most ``max_rows`` rows in all (0: none).

    ``fingerprint(path)`` gives a file's current version, as ``Source.version`` records it.
    """

    def __init__(
        self, db: duckdb.DuckDBPyConnection, max_rows: int, fingerprint: Callable[[str], str]
    ) -> None:
        self._db = db
        self._fingerprint = fingerprint
        self._max_rows = max_rows
        self._copies: OrderedDict[tuple[str, str], _Copy] = OrderedDict()
        self._lock = threading.Lock()
        self._loading = threading.Lock()

    def acquire(self, source: Source) -> str | None:
        """The quoted table holding ``source``'s registered version, or None to read the file.

        Pair every table returned with a :meth:`release`.
        """
        if source.rows > self._max_rows or not source.version or not source.cacheable:
            return None
        key = (source.path, source.version)
        if (table := self._take(key)) is not None:
            return table
        with self._loading:  # one load at a time; others wait, then find it loaded
            if (table := self._take(key)) is not None:
                return table
            if not self._make_room(source.rows):
                return None
            return self._load(key, source)

    def release(self, table: str) -> None:
        with self._lock:
            for copy in self._copies.values():
                if copy.table == table:
                    copy.users -= 1
                    return

    def columns(self, table: str) -> Columns | None:
        """The columns of a copy in use (from :meth:`acquire`), or None if it is too large."""
        with self._lock:
            copy = next(c for c in self._copies.values() if c.table == table)
            if copy.columns is not None or copy.rows > MAX_ROWS:
                return copy.columns
        cursor = self._db.cursor()
        try:
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - server-made name
            types = {str(d[0]): str(d[1]) for d in cursor.description or ()}
            columns = Columns(cursor.fetchnumpy(), types)
        finally:
            cursor.close()
        with self._lock:
            if copy.columns is None:
                copy.columns = columns
            return copy.columns

    def _take(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            copy = self._copies.get(key)
            if copy is None:
                return None
            copy.users += 1
            self._copies.move_to_end(key)
            return copy.table

    def _make_room(self, rows: int) -> bool:
        """Drop idle copies, least recently used first, until ``rows`` more fit."""
        while True:
            with self._lock:
                held = sum(c.rows for c in self._copies.values())
                if held + rows <= self._max_rows:
                    return True
                idle = next((k for k, c in self._copies.items() if c.users == 0), None)
                if idle is None:
                    return False
                copy = self._copies.pop(idle)
            self._db.cursor().execute(f"DROP TABLE IF EXISTS {copy.table}")

    def _load(self, key: tuple[str, str], source: Source) -> str | None:
        name = "source_" + hashlib.sha256("\0".join(key).encode()).hexdigest()[:24]
        table = quote_ident(name)
        cursor = self._db.cursor()
        try:
            if self._fingerprint(source.path) != source.version:
                return None
            cursor.execute(
                f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {source.reader}",  # noqa: S608 - server-made name
                [source.path],
            )
            if self._fingerprint(source.path) != source.version:  # changed while being copied
                cursor.execute(f"DROP TABLE {table}")
                return None
        except duckdb.Error:
            return None  # the job reads the file itself and reports any error from there
        finally:
            cursor.close()
        with self._lock:
            self._copies[key] = _Copy(table, source.rows, users=1)
        return table
