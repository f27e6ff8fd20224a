"""Release register: every cell released in rule-based mode, with its region and true size.

Read and written inside the release's ``BEGIN IMMEDIATE`` transaction, so two jobs finishing
together are checked against each other. Rows are parsed once and cached per dataset, then
topped up with the rows added since (the table is append-only). The person counts are true
counts: this table never leaves the server. Regions are opaque canonical text here; the
differencing guard (``sandbox.disclosure``) gives them meaning through ``parse``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReleaseRegister(Generic[T]):
    def __init__(self, parse: Callable[[str, int, str], T]) -> None:
        """``parse(region_text, persons, data_version)`` builds one cached entry."""
        self._parse = parse
        self._cells: dict[str, list[T]] = {}
        self._last_id: dict[str, int] = {}
        self._lock = threading.Lock()

    def cells(self, conn: sqlite3.Connection, dataset: str) -> list[T]:
        """Every cell released from ``dataset`` so far (call inside the write transaction)."""
        with self._lock:
            rows = conn.execute(
                "SELECT id, region, persons, data_version FROM releases"
                " WHERE dataset = ? AND id > ? ORDER BY id",
                (dataset, self._last_id.get(dataset, 0)),
            ).fetchall()
            cached = self._cells.setdefault(dataset, [])
            for row_id, region, persons, version in rows:
                cached.append(self._parse(region, int(persons), version))
                self._last_id[dataset] = int(row_id)
            return list(cached)

    def record(
        self,
        conn: sqlite3.Connection,
        *,
        dataset: str,
        population: str,
        project: str,
        job_id: str,
        data_version: str,
        cells: Iterable[tuple[str, int]],
    ) -> None:
        """Add released cells (region text, persons); a region seen in this version is kept once."""
        conn.executemany(
            "INSERT OR IGNORE INTO releases"
            " (dataset, population, project, job_id, data_version, region, persons)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (dataset, population, project, job_id, data_version, region, persons)
                for region, persons in cells
            ],
        )
