"""Release register: every cell released in rule-based mode, with its region and true size.

Rows are parsed once into a view per dataset (the guard's index), then topped up with the rows
added since (the table is append-only, and its row ids grow in commit order, since writers take
turns). Two ways to read it, one per register object:

- ``cells``, inside the release's ``BEGIN IMMEDIATE`` transaction: the view then also holds
  the rows of bodies sharing that transaction (``forget`` it if their COMMIT fails);
- ``committed`` before that transaction, then ``since`` inside it: the guard checks a release
  against the committed view outside the write lock, and inside it only against the rows
  recorded after those, so two jobs finishing together are still checked against each other.

The person counts are true counts: this table never leaves the server. Regions are opaque
canonical text here; the differencing guard (``sandbox.disclosure``) gives them meaning
through the view's ``add_row``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar


class RegisterView(Protocol):
    """What the register tops up: one per dataset, fed each stored row once."""

    def add_row(self, region: str, persons: int, data_version: str) -> None: ...


V = TypeVar("V", bound=RegisterView)


class ReleaseRegister(Generic[V]):
    def __init__(self, new_view: Callable[[], V]) -> None:
        """``new_view()`` makes the empty view of one dataset's cells (e.g. an index)."""
        self._new_view = new_view
        self._views: dict[str, V] = {}
        self._last_id: dict[str, int] = {}
        self._lock = threading.Lock()

    def cells(self, conn: sqlite3.Connection, dataset: str) -> V:
        """Every cell released from ``dataset`` so far, as this register's live view.

        Call inside the write transaction and use the view only there: the next call, in a
        later transaction, adds the rows committed since (by any process) to the same view.
        """
        with self._lock:
            return self._top_up(conn, dataset)

    @contextmanager
    def committed(self, conn: sqlite3.Connection, dataset: str) -> Iterator[tuple[V, int]]:
        """The view of the cells of ``dataset`` committed so far, and the id of its last row.

        Call outside any transaction, so that the view never holds rows a rollback takes
        back. Use the view only inside the ``with``, which holds the register's lock.
        """
        if conn.in_transaction:
            raise RuntimeError("read the committed release register outside a transaction")
        with self._lock:
            yield self._top_up(conn, dataset), self._last_id.get(dataset, 0)

    def since(
        self, conn: sqlite3.Connection, dataset: str, after: int
    ) -> list[tuple[str, int, str]]:
        """The cells of ``dataset`` recorded after row ``after`` (region, persons, data
        version); inside the write transaction, with those of bodies sharing it."""
        rows = conn.execute(
            "SELECT region, persons, data_version FROM releases"
            " WHERE dataset = ? AND id > ? ORDER BY id",
            (dataset, after),
        ).fetchall()
        return [(region, int(persons), version) for region, persons, version in rows]

    def _top_up(self, conn: sqlite3.Connection, dataset: str) -> V:
        rows = conn.execute(
            "SELECT id, region, persons, data_version FROM releases"
            " WHERE dataset = ? AND id > ? ORDER BY id",
            (dataset, self._last_id.get(dataset, 0)),
        ).fetchall()
        view = self._views.get(dataset)
        if view is None:
            view = self._views[dataset] = self._new_view()
        for row_id, region, persons, version in rows:
            view.add_row(region, int(persons), version)
            self._last_id[dataset] = int(row_id)
        return view

    def forget(self) -> None:
        """Drop every view (rebuilt from the store on next use): after a rollback of rows
        they may already hold."""
        with self._lock:
            self._views.clear()
            self._last_id.clear()

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
