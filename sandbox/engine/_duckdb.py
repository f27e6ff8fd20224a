"""DuckDB engine: runs a plan over a registered Parquet/CSV file (or, for small files, hands
it to the columnar engine over their in-memory copies).

This module, ``_cache`` (in-memory copies) and ``_columnar`` are the only code that reads rows.
What leaves here is a ``RawTable`` of per-cell aggregates that has NOT yet passed disclosure
control: it must only ever be handed to ``sandbox.disclosure``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from sandbox._errors import JobCancelled, JobFailed
from sandbox._model import TOTAL, Key
from sandbox.engine import _columnar as columnar
from sandbox.engine._cache import SourceCache
from sandbox.engine._columnar import ColumnarPlan
from sandbox.engine._plan import KeySpace, Plan, RecordKeySlot, SourceSlot, quote_ident
from sandbox.engine._quantile import QuantileGrid, histogram_counts
from sandbox.state import DatasetRecord


@dataclass(frozen=True)
class Contributions:
    """How one measure's sum in a cell splits over persons (each person's rows summed first,
    clamped like the released sum, then taken in absolute value)."""

    total: float | int
    """Sum over the cell's persons of their absolute contributions."""
    top: tuple[float | int, ...]
    """The largest absolute contributions, descending (at most ``Plan.contribution_top``)."""


@dataclass(frozen=True)
class RawCell:
    keys: tuple[Key, ...]
    persons: int
    values: tuple[float | int | None, ...]
    contributions: tuple[Contributions | None, ...] = ()
    """Per aggregate, for sums and means when the policy has dominance rules (else empty)."""
    cell_key: int | None = None
    """Cell-key mode: the sum of the cell's persons' record keys modulo 2**RECORD_KEY_BITS."""
    rows: int | None = None
    """DP contribution bounding: the cell's rows, at most R per person (None: not bounded)."""
    histograms: tuple[tuple[int, ...] | None, ...] = ()
    """Per aggregate, for a median or quantile: persons per grid interval (its value is None);
    empty when the job has none."""


@dataclass(frozen=True)
class RawTable:
    cells: tuple[RawCell, ...]
    query_set_persons: int | None
    """Distinct persons matching the filters (None when the job has no filters)."""
    contribution_top: int = 0
    """How many of the largest contributions each cell's ``contributions`` report (0: none)."""
    quantile_grids: tuple[QuantileGrid | None, ...] = ()
    """Per aggregate, the grid its histograms count over (see ``RawCell.histograms``)."""


@dataclass(frozen=True)
class SourceFacts:
    column_types: dict[str, str]
    row_count: int
    persons: int
    file_digest: str
    ranges: dict[str, tuple[float, float]]
    fingerprint: str
    """``file_fingerprint`` of the file as read (unchanged from start to end of inspection)."""

    def record(
        self, dataset: str, source: Path | str, file_format: str, policy_version: str
    ) -> DatasetRecord:
        """The catalogue record of the file these facts describe, registered as ``dataset``."""
        return DatasetRecord(
            id=dataset,
            source=str(source),
            file_format=file_format,
            file_digest=self.file_digest,
            row_count=self.row_count,
            persons=self.persons,
            persons_unique=self.persons == self.row_count,
            column_types=self.column_types,
            policy_version=policy_version,
            measure_ranges=self.ranges,
            file_fingerprint=self.fingerprint,
        )


def file_fingerprint(path: Path | str) -> str:
    """Identity of a file's current version: device, inode, size and modification time.

    Any replacement (new inode) or rewrite in place (size or mtime) changes it; "" if missing.
    """
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class Engine:
    def __init__(self, threads: int = 2, memory_limit: str = "", cache_rows: int = 0) -> None:
        """``cache_rows``: rows of small registered files kept in memory, in all (0: none).

        Spilling is disabled: a job that does not fit in memory fails (the engine cannot seal
        its spill files), so no intermediate data ever reaches disk.
        """
        config: dict[str, str | bool | int | float | list[str]] = {
            "threads": threads,
            "temp_directory": "",  # no spill files (DuckDB's default is ./.tmp)
        }
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._db = duckdb.connect(":memory:", config=config)
        self._cache = SourceCache(self._db, cache_rows, file_fingerprint)
        self._running: dict[str, duckdb.DuckDBPyConnection] = {}
        self._thread = threading.local()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def run(
        self, job_id: str, plan: Plan, record_key_pads: tuple[bytes, bytes] | None = None
    ) -> RawTable:
        """Run a plan; ``record_key_pads`` (outer, inner) fill its ``RecordKeySlot``s."""
        params = _fill_slots(plan.params, record_key_pads, job_id)
        cached = self._cache.acquire(plan.source) if plan.source else None
        try:
            rows = None
            if cached is not None and plan.columnar is not None:
                rows = self._columnar(job_id, plan.columnar, cached)
            if rows is None:
                rows = self._execute(job_id, *_bind_source(plan, params, cached))
        finally:
            if cached is not None:
                self._cache.release(cached)
        return self._raw_table(plan, rows)

    def _columnar(
        self, job_id: str, plan: ColumnarPlan, table: str
    ) -> list[tuple[Any, ...]] | None:
        """The plan's rows from the columnar engine, or None when DuckDB must answer it."""
        columns = self._cache.columns(table)
        if columns is None:
            return None
        with self._lock:
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                raise JobCancelled("job was cancelled", job_id=job_id)
        return columnar.run(plan, columns)

    def _execute(self, job_id: str, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        # One connection per worker thread, kept: opening one costs more than a small query.
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._thread, "cursor", None)
        if cursor is None:
            cursor = self._thread.cursor = self._db.cursor()
        with self._lock:
            if job_id in self._cancelled:
                raise JobCancelled("job was cancelled", job_id=job_id)
            self._running[job_id] = cursor
        try:
            return cursor.execute(sql, params).fetchall()
        except duckdb.InterruptException:
            raise JobCancelled("job was cancelled", job_id=job_id) from None
        except duckdb.Error as exc:
            # Engine messages can quote data values: never pass them on.
            raise JobFailed(f"engine error ({type(exc).__name__})", job_id=job_id) from None
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                self._cancelled.discard(job_id)

    def _raw_table(self, plan: Plan, rows: list[tuple[Any, ...]]) -> RawTable:
        n_keys = len(plan.key_spaces)
        n_vals = len(plan.value_names)
        total: int | None = None
        cells: list[RawCell] = []
        for row in rows:
            keys: tuple[Key, ...] = tuple(
                _bin_label(space, k) if space.binned else k
                for space, k in zip(plan.key_spaces, row[:n_keys], strict=True)
            )
            if plan.margins:
                keys = _margin_keys(keys, int(row[-1]))
                if plan.has_filters and all(k is TOTAL for k in keys):
                    total = int(row[n_keys])  # the grand total holds the whole query set
            elif plan.with_total and row[-1] != 0:
                total = int(row[n_keys])
                continue
            values = row[n_keys + 1 : n_keys + 1 + n_vals]
            grids = plan.quantile_grids
            cells.append(
                RawCell(
                    keys=keys,
                    persons=int(row[n_keys]),
                    values=tuple(
                        None if grids and grids[j] else _number(v) for j, v in enumerate(values)
                    ),
                    contributions=_contributions(plan, row[n_keys + 1 + n_vals :]),
                    cell_key=_cell_key(plan, row),
                    rows=int(row[-1]) if plan.bounded_rows else None,
                    histograms=tuple(
                        None if g is None else histogram_counts(v, g)
                        for g, v in zip(grids, values, strict=True)
                    )
                    if grids
                    else (),
                )
            )
        if plan.has_filters and total is None:
            # One row per person: the cells partition the query set (an empty one, with
            # margins: no grand-total row).
            total = 0 if plan.margins else sum(c.persons for c in cells)
        return RawTable(tuple(cells), total, plan.contribution_top, plan.quantile_grids)

    def progress(self, job_id: str) -> float:
        with self._lock:
            cursor = self._running.get(job_id)
        if cursor is None:
            return 0.0
        try:
            pct = float(cursor.query_progress())
        except duckdb.Error:
            return 0.0
        return max(0.0, min(1.0, pct / 100.0))

    def interrupt(self, job_id: str) -> None:
        # Under the lock: a worker's connection runs its next job once this one is unlisted.
        with self._lock:
            self._cancelled.add(job_id)
            cursor = self._running.get(job_id)
            if cursor is not None:
                cursor.interrupt()

    def interrupt_all(self) -> None:
        with self._lock:
            self._cancelled.update(self._running)
            for cursor in self._running.values():
                cursor.interrupt()

    def inspect_source(
        self, path: Path, file_format: str, person_key: str, measures: tuple[str, ...] = ()
    ) -> SourceFacts:
        """Schema, row count, distinct persons, measure ranges and digest of a source file."""
        reader = "read_parquet(?)" if file_format == "parquet" else "read_csv(?, header = true)"
        before = file_fingerprint(path)
        cursor = self._db.cursor()
        try:
            described = cursor.execute(f"DESCRIBE SELECT * FROM {reader}", [str(path)]).fetchall()  # noqa: S608
            types = {str(r[0]): str(r[1]) for r in described}
            if person_key not in types:
                raise JobFailed(f"person key column '{person_key}' is not in the source file")
            pk = quote_ident(person_key)
            present = [m for m in measures if m in types]
            extremes = "".join(f", min({quote_ident(m)}), max({quote_ident(m)})" for m in present)
            row = cursor.execute(
                f"SELECT count(*), count(DISTINCT {pk}){extremes} FROM {reader}",  # noqa: S608
                [str(path)],
            ).fetchone()
        except duckdb.Error as exc:
            raise JobFailed(f"cannot read source file ({type(exc).__name__})") from None
        finally:
            cursor.close()
        assert row is not None
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        if not before or file_fingerprint(path) != before:
            raise JobFailed("the source file changed while it was being read: try again")
        ranges = {
            m: (float(row[2 + 2 * i]), float(row[3 + 2 * i]))
            for i, m in enumerate(present)
            if row[2 + 2 * i] is not None
        }
        return SourceFacts(types, int(row[0]), int(row[1]), digest.hexdigest(), ranges, before)


def _bind_source(plan: Plan, params: list[object], table: str | None) -> tuple[str, list[object]]:
    """The plan's SQL and parameters reading the source file, or its in-memory copy ``table``."""
    if table is None:
        path = plan.source.path if plan.source else ""
        return plan.sql, [path if p is SourceSlot.FILE else p for p in params]
    assert plan.source is not None
    return (
        plan.sql.replace(plan.source.reader, table),
        [p for p in params if p is not SourceSlot.FILE],
    )


def _fill_slots(
    params: tuple[object, ...], pads: tuple[bytes, bytes] | None, job_id: str
) -> list[object]:
    """The plan's parameters with the record-key pads in place of their slots."""
    if not any(isinstance(p, RecordKeySlot) for p in params):
        return list(params)
    if pads is None:
        raise JobFailed("cell-key mode needs the server's record-key secret", job_id=job_id)
    outer, inner = pads
    return [
        outer if p is RecordKeySlot.OUTER else inner if p is RecordKeySlot.INNER else p
        for p in params
    ]


def _cell_key(plan: Plan, row: tuple[object, ...]) -> int | None:
    """The cell key column: last, or just before a trailing GROUPING id."""
    if not plan.cell_keys:
        return None
    value = row[-2 if plan.with_total or plan.margins else -1]
    return None if value is None else int(str(value))


def _contributions(plan: Plan, stats: tuple[object, ...]) -> tuple[Contributions | None, ...]:
    """Per aggregate, the contributions of its measure from the (total, top list) columns."""
    if not plan.contribution_measures:
        return ()
    measures: list[Contributions] = []
    for i in range(len(plan.contribution_measures)):
        total, top = stats[2 * i], stats[2 * i + 1]
        # A cell whose values are all missing has no contributions (NULL total and list).
        measures.append(
            Contributions(
                total=_number(total) or 0,
                top=tuple(sorted((_number(v) or 0 for v in _items(top)), reverse=True)),
            )
        )
    return tuple(measures[i] if i >= 0 else None for i in plan.contribution_of)


def _items(v: object) -> list[object]:
    """The values of a top-n list column, or of a plain maximum (one value)."""
    if isinstance(v, list | tuple):
        return list(v)
    return [] if v is None else [v]


def _number(v: object) -> float | int | None:
    if v is None:
        return None
    if isinstance(v, int):
        return v
    return float(str(v)) if not isinstance(v, float) else v


def _margin_keys(keys: tuple[Key, ...], grouping: int) -> tuple[Key, ...]:
    """Keys of a CUBE row: bit ``n-1-i`` of its GROUPING id marks key ``i`` as a margin."""
    n = len(keys)
    return tuple(TOTAL if grouping >> (n - 1 - i) & 1 else k for i, k in enumerate(keys))


def _bin_label(space: KeySpace, index: object) -> Key:
    """The label of a bin index from a binned key (null stays null: outside every bin)."""
    if index is None or space.labels is None:
        return None
    return space.labels[int(index)]  # type: ignore[call-overload]
