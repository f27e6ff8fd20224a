"""A columnar engine for the in-memory copies of small registered files: NumPy over the rows.

A small job's query costs DuckDB ~1 ms of fixed overhead (and several GIL hand-offs) however few
rows it reads. For the plans it can answer exactly as DuckDB would, this module answers from
NumPy arrays of the copy's columns instead, in ~0.1 ms: one row per person, filters on integer,
floating, text or boolean columns, group-by keys (raw, or binned numbers), counts, and sums,
means and largest contributions of integer measures. Any other plan, and any column outside
that (dates, decimals, NaNs, huge integers), goes to DuckDB.

This module reads rows. What leaves it is ``Engine``'s result rows (keys, persons, values,
contribution columns) for ``Engine`` to turn into a ``RawTable``, which has NOT yet passed
disclosure control.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sandbox._model import AggFunc, FilterOp

INTEGER = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
)
FLOATING = frozenset({"DOUBLE"})  # not FLOAT: DuckDB may compare it at single precision
TEXT = frozenset({"VARCHAR"})
BOOLEAN = frozenset({"BOOLEAN"})
COLUMN_TYPES = INTEGER | FLOATING | TEXT | BOOLEAN
"""Engine column types this module can read; any other type sends the plan to DuckDB."""

MAX_ROWS = 122_880
"""Files of at most this many rows (one DuckDB row group, which it scans on one thread anyway)."""

_EXACT = 1 << 53
"""Integers up to this size compare, and sum, exactly as floats."""

Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ColumnFilter:
    column: str
    op: FilterOp
    values: tuple[Any, ...]
    """As bound to the DuckDB plan's parameters."""


@dataclass(frozen=True)
class ColumnKey:
    column: str
    edges: tuple[float, ...] = ()
    """Bin edges: the key is the index of the bin holding the value (null outside them)."""


@dataclass(frozen=True)
class ColumnMeasure:
    column: str
    bounds: tuple[int, int] | None
    """Clamped to these, as the DuckDB plan clamps it (None: no clamp)."""
    absolute: bool = False
    """Contributions only: their absolute values."""
    floating: bool = False
    """Its sums are floats (clamped to bounds given as floats, as the SQL's type then is)."""


@dataclass(frozen=True)
class ColumnValue:
    function: AggFunc
    """COUNT, COUNT_DISTINCT (one row per person: the same), SUM or MEAN."""
    measure: ColumnMeasure | None = None


@dataclass(frozen=True)
class ColumnarPlan:
    """A plan's query, for the columnar engine: the result has the same rows as its SQL."""

    filters: tuple[ColumnFilter, ...]
    keys: tuple[ColumnKey, ...]
    values: tuple[ColumnValue, ...]
    contributions: tuple[ColumnMeasure, ...] = ()
    """Per measure, its cell's sum and largest (absolute) value."""


@dataclass(frozen=True)
class _Column:
    values: npt.NDArray[Any]
    """Integers as int64, floats as float64, booleans as bool, text as codes into ``labels``."""
    valid: Mask | None
    """Rows whose value is not null (None: all)."""
    codes: Ints | None
    """Group-by codes: the index in ``labels`` of a row's value, ``len(labels) - 1`` for null
    (None: not a raw key, as floats)."""
    labels: tuple[Any, ...]
    """Distinct values in ascending order, then None."""
    kind: str
    """"int", "float", "text" or "bool"."""
    peak: int = 0
    """Integers: the largest absolute value."""


class Columns:
    """NumPy arrays of one in-memory copy, each column prepared on its first use."""

    def __init__(self, arrays: Mapping[str, Any], types: Mapping[str, str]) -> None:
        self._arrays = dict(arrays)
        self._types = {name: t.upper() for name, t in types.items()}
        self.rows = len(next(iter(self._arrays.values()))) if self._arrays else 0
        self._columns: dict[str, _Column | None] = {}
        self._lock = threading.Lock()

    def column(self, name: str) -> _Column | None:
        """The column prepared, or None when this module cannot read it."""
        with self._lock:
            if name in self._columns:
                return self._columns[name]
        column = _prepare(self._arrays[name], self._types[name])
        with self._lock:
            return self._columns.setdefault(name, column)


def _prepare(array: npt.NDArray[Any], sql_type: str) -> _Column | None:
    if sql_type not in COLUMN_TYPES:
        return None
    valid: Mask | None = None
    if isinstance(array, np.ma.MaskedArray):
        valid = ~np.ma.getmaskarray(array)
        array = array.filled(array.dtype.type(0) if sql_type not in TEXT else "")
        if valid.all():
            valid = None
    if sql_type in FLOATING:
        floats = array.astype(np.float64)
        if np.isnan(floats).any():
            return None  # DuckDB orders NaN above every number; NumPy compares it as false
        return _Column(floats, valid, None, (), "float")
    if sql_type in TEXT:
        distinct, codes = np.unique(array, return_inverse=True)
        labels = tuple(str(v) for v in distinct)
        return _with_nulls(codes.astype(np.int64), valid, labels, "text")
    if sql_type in BOOLEAN:
        flags = array.astype(np.bool_)
        distinct, codes = np.unique(flags, return_inverse=True)
        return _with_nulls(flags, valid, tuple(bool(v) for v in distinct), "bool", codes=codes)
    ints = array.astype(np.int64)
    peak = int(np.abs(ints).max()) if len(ints) else 0
    if peak >= _EXACT:
        return None
    distinct, codes = np.unique(ints, return_inverse=True)
    return _with_nulls(ints, valid, tuple(int(v) for v in distinct), "int", codes=codes, peak=peak)


def _with_nulls(
    values: npt.NDArray[Any],
    valid: Mask | None,
    labels: tuple[Any, ...],
    kind: str,
    *,
    codes: npt.NDArray[Any] | None = None,
    peak: int = 0,
) -> _Column:
    """The column with null rows coded ``len(labels)``, the code of the trailing None label."""
    codes = (values if codes is None else codes).astype(np.int64)
    if valid is not None:
        codes = np.where(valid, codes, len(labels))
        # A label only null rows had (their fill value) must not be found by a filter.
        present = np.unique(codes[valid])
        kept = [labels[i] for i in present]
        remap = np.full(len(labels) + 1, len(kept), dtype=np.int64)
        remap[present] = np.arange(len(kept))
        codes, labels = remap[codes], tuple(kept)
        if kind == "text":
            values = codes
    return _Column(values, valid, codes, (*labels, None), kind, peak)


def run(plan: ColumnarPlan, columns: Columns) -> list[tuple[Any, ...]] | None:
    """The rows of the plan's SQL (grouped rows in ascending key order), or None when this
    module cannot answer it exactly (then DuckDB does)."""
    selected = np.ones(columns.rows, dtype=np.bool_)
    for f in plan.filters:
        column = columns.column(f.column)
        if column is None:
            return None
        selected &= _matches(column, f.op, f.values)
    groups = _groups(plan.keys, columns, selected)
    if groups is None:
        return None
    keys, index = groups
    n = len(keys)
    persons = np.bincount(index, minlength=n)
    outputs: list[list[Any]] = []
    for value in plan.values:
        if value.measure is None:
            outputs.append([int(p) for p in persons])
            continue
        sums = _sums(value.measure, columns, selected, index, n)
        if sums is None:
            return None
        total, count = sums
        if value.function == AggFunc.SUM:
            outputs.append(total)
        else:
            outputs.append(
                [None if t is None else t / c for t, c in zip(total, count, strict=True)]
            )
    for measure in plan.contributions:
        sums = _sums(measure, columns, selected, index, n)
        largest = _largest(measure, columns, selected, index, n)
        if sums is None or largest is None:
            return None
        outputs += [sums[0], largest]
    return [(*keys[g], int(persons[g]), *(out[g] for out in outputs)) for g in range(n)]


def _matches(column: _Column, op: FilterOp, values: tuple[Any, ...]) -> Mask:
    x = column.values
    if column.kind == "text":
        return _text_matches(column, op, values)
    if op == FilterOp.IN:
        hit = np.isin(x, np.asarray(values))
    elif op == FilterOp.BETWEEN:
        hit = (x >= values[0]) & (x <= values[1])
    else:
        hit = _COMPARE[op](x, values[0])
    return hit if column.valid is None else hit & column.valid


def _text_matches(column: _Column, op: FilterOp, values: tuple[Any, ...]) -> Mask:
    """Text compared as codes: the labels are sorted as DuckDB orders text (by code point)."""
    labels = column.labels[:-1]
    x = column.values
    nulls = len(labels)

    def code(v: str) -> int:
        i = bisect.bisect_left(labels, v)
        return i if i < len(labels) and labels[i] == v else -1

    if op == FilterOp.EQ:
        return np.asarray(x == code(values[0]))
    if op == FilterOp.NE:
        return np.asarray((x != code(values[0])) & (x != nulls))
    if op == FilterOp.IN:
        return np.isin(x, [code(v) for v in values])
    low = {FilterOp.GT: bisect.bisect_right, FilterOp.GE: bisect.bisect_left}
    high = {FilterOp.LT: bisect.bisect_left, FilterOp.LE: bisect.bisect_right}
    if op in low:
        return np.asarray((x >= low[op](labels, values[0])) & (x != nulls))
    if op in high:
        return np.asarray(x < high[op](labels, values[0]))
    return np.asarray(  # BETWEEN
        (x >= bisect.bisect_left(labels, values[0])) & (x < bisect.bisect_right(labels, values[1]))
    )


_COMPARE = {
    FilterOp.EQ: np.equal,
    FilterOp.NE: np.not_equal,
    FilterOp.LT: np.less,
    FilterOp.LE: np.less_equal,
    FilterOp.GT: np.greater,
    FilterOp.GE: np.greater_equal,
}


def _groups(
    keys: tuple[ColumnKey, ...], columns: Columns, selected: Mask
) -> tuple[list[tuple[Any, ...]], Ints] | None:
    """The present groups' keys, and each selected row's group index."""
    group = np.zeros(columns.rows, dtype=np.int64)
    spaces: list[tuple[Any, ...]] = []
    size = 1
    for key in keys:
        column = columns.column(key.column)
        if column is None:
            return None
        if key.edges:
            if column.kind not in ("int", "float"):
                return None
            edges = np.asarray(key.edges, dtype=np.float64)
            bins = len(edges) - 1
            inside = (column.values >= edges[0]) & (column.values < edges[-1])
            if column.valid is not None:
                inside &= column.valid
            codes = np.where(inside, np.searchsorted(edges, column.values, side="right") - 1, bins)
            labels: tuple[Any, ...] = (*range(bins), None)
        elif column.codes is not None:
            codes, labels = column.codes, column.labels
        else:
            return None
        size *= len(labels)
        if size >= 1 << 62:
            return None
        group = group * len(labels) + codes
        spaces.append(labels)
    chosen = group[selected]
    if size <= max(1 << 16, 4 * len(chosen)):
        counts = np.bincount(chosen, minlength=size)
        present = np.flatnonzero(counts) if keys else np.zeros(1, dtype=np.int64)
        lookup = np.zeros(size, dtype=np.int64)
        lookup[present] = np.arange(len(present))
        index = lookup[chosen]
    else:
        present, index = np.unique(chosen, return_inverse=True)
    decoded: list[tuple[Any, ...]] = []
    for g in present.tolist():
        parts: list[Any] = []
        for labels in reversed(spaces):
            g, code = divmod(g, len(labels))
            parts.append(labels[code])
        decoded.append(tuple(reversed(parts)))
    return decoded, index.astype(np.int64)


def _measure(
    measure: ColumnMeasure, columns: Columns, selected: Mask, rows: int
) -> tuple[Ints, Mask] | None:
    """The selected rows' clamped values, and which of them are not null."""
    column = columns.column(measure.column)
    if column is None or column.kind != "int":
        return None
    peak = max([column.peak, *(abs(b) for b in measure.bounds or ())])
    if peak * max(rows, 1) >= _EXACT:
        return None  # a float sum could round; DuckDB's is exact
    x = column.values[selected]
    if measure.bounds is not None:
        x = np.clip(x, *measure.bounds)
    if measure.absolute:
        x = np.abs(x)
    valid = np.ones(len(x), dtype=np.bool_) if column.valid is None else column.valid[selected]
    return x, valid


def _sums(
    measure: ColumnMeasure, columns: Columns, selected: Mask, index: Ints, n: int
) -> tuple[list[int | float | None], list[int]] | None:
    """Per group: the sum of the measure's values (None when all are null), and their count."""
    taken = _measure(measure, columns, selected, len(index))
    if taken is None:
        return None
    x, valid = taken
    counts = np.bincount(index[valid], minlength=n)
    totals = np.bincount(index[valid], weights=x[valid], minlength=n)  # exact: under 2**53
    kind = float if measure.floating else int
    return (
        [kind(t) if c else None for t, c in zip(totals.tolist(), counts.tolist(), strict=True)],
        counts.tolist(),
    )


def _largest(
    measure: ColumnMeasure, columns: Columns, selected: Mask, index: Ints, n: int
) -> list[int | float | None] | None:
    taken = _measure(measure, columns, selected, len(index))
    if taken is None:
        return None
    x, valid = taken
    lowest = np.iinfo(np.int64).min
    top = np.full(n, lowest, dtype=np.int64)
    np.maximum.at(top, index[valid], x[valid])
    kind = float if measure.floating else int
    return [None if t == lowest else kind(t) for t in top.tolist()]
