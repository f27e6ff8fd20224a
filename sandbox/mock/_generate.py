"""Mock rows: synthetic rows built from a dataset's public description, never from its data.

The only inputs are what ``describe`` already shows a researcher: column names, engine types,
roles, declared values, bins and bounds (a :class:`~sandbox._model.DatasetInfo`), plus ``n``, a
seed and optionally a job. Nothing here opens a data file or uses a fact measured from one
(row counts, distinct persons, registration-time measure ranges): the values are drawn from the
policy's declared domains, or from synthetic stand-ins where the policy declares none, and from
the literals a researcher typed into the job's filters.

What a column gets:

* identifiers: synthetic ids (``id_0000001``-style strings, large offset integers or random
  UUIDs, by engine type). The person key repeats only when ``rows_per_person`` > 1 is given;
  by default (unknown) every row is a different person.
* dimensions: declared values, uniformly; binned numbers: a bin uniformly, then a value inside
  it; undeclared strings: synthetic labels ``<column>_01`` … ``<column>_10``; undeclared
  integers: codes 1-10; undeclared floats: uniform on [0, 100); dates and timestamps: uniform
  over 2016-01-01 … 2025-12-31; booleans: both values.
* measures: within the declared bounds (uniform, or log-normal for wide non-negative bounds
  such as incomes); [0, 1000] when the policy declares none. Integer types stay integers.
* hidden columns: omitted.

With a job, its filters are satisfied: every row (``matching=1.0``, the default) or a share of
the rows, the rest each violating one filter chosen in turn (so every filter's complement is
populated, which the server's preview of query-set restrictions needs). A filter literal that
lies outside the declared domain (``district = 'Riverside'`` on a column whose values are not
declared) is used itself: it is the researcher's own value, not data. Filters that no value can
satisfy at once raise :class:`~sandbox._errors.InvalidJobSpec`.

Deterministic: the same description, ``n``, seed, job and ``matching`` give the same table.
Each column draws from its own stream (seed, column name), so a filter on one column leaves
the other columns' values unchanged. Pure and in-process: the server calls :func:`mock_rows`
for the MockRows RPC and can call it to preview a job's suppression pattern.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import itertools
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sandbox._errors import InvalidArgument, InvalidJobSpec
from sandbox._model import (
    ColumnInfo,
    ColumnRole,
    DatasetInfo,
    Filter,
    FilterOp,
    JobSpec,
    Scalar,
)

MAX_MOCK_ROWS = 100_000
"""Default cap on ``n`` (the server's ``max_mock_rows`` setting)."""
MAX_FILTERS = 64
SYNTHETIC_LEVELS = 10
"""Synthetic labels (or integer codes) of a dimension that declares no values."""
DATE_RANGE = (dt.date(2016, 1, 1), dt.date(2025, 12, 31))
"""Fixed (so mocks do not change with the calendar) range of undeclared dates."""
DEFAULT_MEASURE_BOUNDS = (0.0, 1000.0)
DEFAULT_FLOAT_DIMENSION = (0.0, 100.0)
ID_OFFSET = 1_000_000_000
"""Integer ids start here when the type holds it: obviously synthetic, unlike 1, 2, 3, …"""
EXACT = 2**53
"""Integers (and decimals in units of their scale, timestamps in microseconds) are drawn
within ±2**53, where a float holds every integer exactly."""

_NOT_IN = "not in"
_Array = npt.NDArray[Any]


@dataclass(frozen=True)
class MockRequest:
    """A request for mock rows (what the MockRows RPC carries)."""

    dataset: str
    n: int = 100
    seed: int | None = None
    """None: the server picks one (and reports it)."""
    job: JobSpec | None = None
    matching: float = 1.0


# ---- column kinds -------------------------------------------------------------------------
_INT_TYPES: dict[str, tuple[int, int, Any]] = {
    "TINYINT": (-(2**7), 2**7 - 1, pa.int8()),
    "SMALLINT": (-(2**15), 2**15 - 1, pa.int16()),
    "INTEGER": (-(2**31), 2**31 - 1, pa.int32()),
    "BIGINT": (-(2**63), 2**63 - 1, pa.int64()),
    "HUGEINT": (-(2**63), 2**63 - 1, pa.int64()),
    "UTINYINT": (0, 2**8 - 1, pa.uint8()),
    "USMALLINT": (0, 2**16 - 1, pa.uint16()),
    "UINTEGER": (0, 2**32 - 1, pa.uint32()),
    "UBIGINT": (0, 2**63 - 1, pa.uint64()),
    "UHUGEINT": (0, 2**63 - 1, pa.uint64()),
}
_INT_ALIASES = {"INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT", "INT2": "SMALLINT"}
_INT_ALIASES |= {"INT1": "TINYINT", "LONG": "BIGINT", "SHORT": "SMALLINT"}
_FLOAT_TYPES = {"DOUBLE": pa.float64(), "FLOAT8": pa.float64(), "FLOAT": pa.float32()}
_FLOAT_TYPES |= {"REAL": pa.float32(), "FLOAT4": pa.float32()}
_STRING_TYPES = {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR"}
_EPOCH = dt.date(1970, 1, 1)
_US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class _Kind:
    """How a column's values are represented while sampling.

    ``space`` is ``discrete`` (integers; also dates as day numbers, timestamps as microseconds
    and decimals in units of their scale), ``continuous`` (floats) or ``finite`` (strings and
    booleans, drawn from a candidate list).
    """

    name: str
    """int | float | decimal | date | timestamp | bool | string | uuid"""
    arrow: Any
    lo: float = -math.inf
    hi: float = math.inf
    scale: int = 0
    """Decimal digits after the point (decimals only)."""

    @property
    def space(self) -> str:
        if self.name in ("int", "decimal", "date", "timestamp"):
            return "discrete"
        if self.name == "float":
            return "continuous"
        return "finite"


def _kind(col: ColumnInfo) -> _Kind:
    raw = col.type.strip().upper()
    base = raw.split("(")[0].strip()
    base = _INT_ALIASES.get(base, base)
    if base in _INT_TYPES:
        lo, hi, arrow = _INT_TYPES[base]
        return _Kind("int", arrow, max(lo, -EXACT), min(hi, EXACT))
    if base in _FLOAT_TYPES:
        return _Kind("float", _FLOAT_TYPES[base])
    if base in ("DECIMAL", "NUMERIC"):
        digits = [int(d) for d in re.findall(r"\d+", raw)]
        precision = min(digits[0], 38) if digits else 18
        scale = digits[1] if len(digits) > 1 else (0 if digits else 3)
        top = min(10 ** min(precision, 18) - 1, EXACT)
        return _Kind("decimal", pa.decimal128(precision, scale), -top, top, scale)
    if base == "BOOLEAN" or base == "BOOL":
        return _Kind("bool", pa.bool_())
    if base == "DATE":
        return _Kind("date", pa.date32(), 1 - _EPOCH.toordinal(), 2_932_896)
    if base.startswith("TIMESTAMP") or base == "DATETIME":
        tz = "UTC" if ("TIME ZONE" in raw or base == "TIMESTAMPTZ") else None
        return _Kind("timestamp", pa.timestamp("us", tz=tz), -EXACT, EXACT)
    if base == "UUID":
        return _Kind("uuid", pa.string())
    if base in _STRING_TYPES or raw.startswith("VARCHAR"):
        return _Kind("string", pa.string())
    # Unknown or unrecorded type: go by what the policy declares.
    if col.values:
        first = col.values[0]
        if isinstance(first, bool):
            return _Kind("bool", pa.bool_())
        if isinstance(first, int):
            return _Kind("int", pa.int64(), -EXACT, EXACT)
        if isinstance(first, float):
            return _Kind("float", pa.float64())
        return _Kind("string", pa.string())
    if col.bins or col.bounds is not None or col.role == ColumnRole.MEASURE:
        return _Kind("float", pa.float64())
    return _Kind("string", pa.string())


# ---- conditions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cond:
    """One filter on one column, with its values in the column's sampling space."""

    op: str
    values: tuple[Any, ...]


class _Unsatisfiable(Exception):
    """No value of the column satisfies the conditions (internal; becomes InvalidJobSpec)."""


def _to_space(col: ColumnInfo, kind: _Kind, value: Scalar) -> Any:
    """A filter literal in the column's sampling space (type-checked like the planner)."""
    name = col.name
    if kind.name in ("int", "float", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidJobSpec(f"filter on column '{name}' needs a number value")
        if kind.name == "decimal":
            return float(decimal.Decimal(str(value)).scaleb(kind.scale))
        return value
    if kind.name in ("date", "timestamp"):
        if not isinstance(value, str):
            raise InvalidJobSpec(f"filter on column '{name}' needs an ISO date")
        try:
            if kind.name == "date":
                return dt.date.fromisoformat(value).toordinal() - _EPOCH.toordinal()
            stamp = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidJobSpec(f"filter on column '{name}' needs an ISO date") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if kind.name == "bool":
        if not isinstance(value, bool):
            raise InvalidJobSpec(f"filter on column '{name}' needs a boolean value")
        return value
    if not isinstance(value, str):
        raise InvalidJobSpec(f"filter on column '{name}' needs a string value")
    return value


def _conditions(col: ColumnInfo, kind: _Kind, f: Filter) -> _Cond:
    n = len(f.values)
    if f.op == FilterOp.IN:
        if n == 0:
            raise InvalidJobSpec(f"filter on column '{col.name}' needs at least one value")
    elif f.op == FilterOp.BETWEEN:
        if n != 2:
            raise InvalidJobSpec(f"filter on column '{col.name}' needs exactly two values")
    elif n != 1:
        raise InvalidJobSpec(f"filter on column '{col.name}' needs exactly one value")
    if kind.name == "bool" and f.op not in (FilterOp.EQ, FilterOp.NE, FilterOp.IN):
        raise InvalidJobSpec(f"filter on column '{col.name}' cannot order booleans")
    return _Cond(str(f.op), tuple(_to_space(col, kind, v) for v in f.values))


def _negations(cond: _Cond) -> list[list[_Cond]]:
    """Alternatives (each a conjunction) that together make up the complement of ``cond``."""
    flip = {"=": "!=", "!=": "=", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
    if cond.op in flip:
        return [[_Cond(flip[cond.op], cond.values)]]
    if cond.op == str(FilterOp.IN):
        return [[_Cond(_NOT_IN, cond.values)]]
    if cond.op == _NOT_IN:
        return [[_Cond(str(FilterOp.IN), cond.values)]]
    low, high = cond.values
    return [[_Cond("<", (low,))], [_Cond(">", (high,))]]


def _holds(value: Any, cond: _Cond) -> bool:
    """Python-level test of one value (finite candidates and checks)."""
    op, vs = cond.op, cond.values
    try:
        if op == "=":
            return bool(value == vs[0])
        if op == "!=":
            return bool(value != vs[0])
        if op == "<":
            return bool(value < vs[0])
        if op == "<=":
            return bool(value <= vs[0])
        if op == ">":
            return bool(value > vs[0])
        if op == ">=":
            return bool(value >= vs[0])
        if op == str(FilterOp.IN):
            return value in vs
        if op == _NOT_IN:
            return value not in vs
        return bool(vs[0] <= value <= vs[1])
    except TypeError:
        return False


# ---- numeric sampling ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Region:
    """Where a numeric value may lie: an interval, minus points, or within a set of points."""

    lo: float = -math.inf
    lo_open: bool = False
    hi: float = math.inf
    hi_open: bool = False
    points: frozenset[float] | None = None
    excluded: frozenset[float] = frozenset()

    @classmethod
    def of(cls, conds: Sequence[_Cond]) -> _Region:
        lo, lo_open, hi, hi_open = -math.inf, False, math.inf, False
        points: set[float] | None = None
        excluded: set[float] = set()
        for c in conds:
            vs = [float(v) for v in c.values]
            lows: list[tuple[float, bool]] = []
            highs: list[tuple[float, bool]] = []
            if c.op in ("=", str(FilterOp.IN)):
                points = set(vs) if points is None else points & set(vs)
            elif c.op in ("!=", _NOT_IN):
                excluded.update(vs)
            elif c.op in ("<", "<="):
                highs.append((vs[0], c.op == "<"))
            elif c.op in (">", ">="):
                lows.append((vs[0], c.op == ">"))
            else:
                lows.append((vs[0], False))
                highs.append((vs[1], False))
            for v, strict in lows:
                if v > lo or (v == lo and strict):
                    lo, lo_open = v, strict
            for v, strict in highs:
                if v < hi or (v == hi and strict):
                    hi, hi_open = v, strict
        frozen = None if points is None else frozenset(points)
        return cls(lo, lo_open, hi, hi_open, frozen, frozenset(excluded))

    def contains(self, v: float) -> bool:
        return bool(self.mask(np.array([v], dtype=np.float64))[0])

    def mask(self, values: _Array) -> _Array:
        x = values.astype(np.float64)
        ok = (x > self.lo) if self.lo_open else (x >= self.lo)
        ok &= (x < self.hi) if self.hi_open else (x <= self.hi)
        if self.points is not None:
            ok &= np.isin(x, np.array(sorted(self.points), dtype=np.float64))
        if self.excluded:
            ok &= ~np.isin(x, np.array(sorted(self.excluded), dtype=np.float64))
        return np.asarray(ok)


@dataclass(frozen=True)
class _Segment:
    """Integers ``lo..hi``, or floats in ``[lo, hi]`` (``[lo, hi)`` when ``hi_open``)."""

    lo: float
    hi: float
    hi_open: bool = False


def _nonempty(
    seg: _Segment, discrete: bool, excluded: frozenset[float], single: bool = False
) -> bool:
    """Whether the segment holds a value (an integer, or a float32 number when ``single``,
    else a float64 one) that is not excluded."""
    if discrete:
        if seg.hi < seg.lo:
            return False
        inside = sum(1 for e in excluded if seg.lo <= e <= seg.hi and e.is_integer())
        return seg.hi - seg.lo + 1 > inside
    # Of the first len(excluded) + 1 representable numbers from ``lo`` up, one is not
    # excluded unless the segment ends first (e.g. [a, b] of two adjacent floats, both
    # excluded: ``!=`` both ends).
    width = np.float32 if single else np.float64
    v = width(seg.lo)
    for _ in range(len(excluded) + 1):
        x = float(v)
        if x > seg.hi or (seg.hi_open and x == seg.hi):
            return False
        if x not in excluded:
            return True
        v = np.nextafter(v, width(np.inf))
    return True


def _intersect(seg: _Segment, region: _Region, discrete: bool) -> _Segment:
    """``seg`` ∩ the region's interval (points and exclusions are handled by the caller)."""
    if discrete:
        lo, hi = seg.lo, seg.hi
        if not math.isinf(region.lo):
            lo = max(lo, math.floor(region.lo) + 1 if region.lo_open else math.ceil(region.lo))
        if not math.isinf(region.hi):
            hi = min(hi, math.ceil(region.hi) - 1 if region.hi_open else math.floor(region.hi))
        return _Segment(lo, hi)
    lo = float(np.nextafter(region.lo, math.inf)) if region.lo_open else region.lo
    lo = max(seg.lo, lo)
    if region.hi < seg.hi:
        return _Segment(lo, region.hi, region.hi_open)
    if seg.hi < region.hi:
        return _Segment(lo, seg.hi, seg.hi_open)
    return _Segment(lo, seg.hi, seg.hi_open or region.hi_open)


def _single(seg: _Segment) -> _Segment:
    """A float segment narrowed to float32 numbers, closed at both ends (may become empty)."""
    lo32 = np.float32(seg.lo)
    if float(lo32) < seg.lo:
        lo32 = np.nextafter(lo32, np.float32(np.inf))
    hi32 = np.float32(seg.hi)
    if float(hi32) > seg.hi or (seg.hi_open and float(hi32) == seg.hi):
        hi32 = np.nextafter(hi32, np.float32(-np.inf))
    return _Segment(float(lo32), float(hi32))


def _finite_interval(region: _Region, kind: _Kind) -> _Segment:
    """The region's interval made finite (for literals outside the column's own domain)."""
    lo, hi = region.lo, region.hi
    if math.isinf(lo) and math.isinf(hi):
        lo, hi = 0.0, 10.0
    elif math.isinf(lo):
        lo = hi - max(10.0, abs(hi))
    elif math.isinf(hi):
        hi = lo + max(10.0, abs(lo))
    return _Segment(max(lo, kind.lo), min(hi, kind.hi))


def _natural(col: ColumnInfo, kind: _Kind) -> tuple[list[_Segment], bool]:
    """The column's own domain as segments (each row draws one uniformly), and whether its
    one segment is a measure with a skewed distribution."""
    discrete = kind.space == "discrete"
    if kind.name in ("date", "timestamp"):
        lo_d, hi_d = (d.toordinal() - _EPOCH.toordinal() for d in DATE_RANGE)
        if kind.name == "date":
            return [_Segment(lo_d, hi_d)], False
        return [_Segment(lo_d * _US_PER_DAY, (hi_d + 1) * _US_PER_DAY - 1)], False
    unit = 10**kind.scale if kind.name == "decimal" else 1
    edges: list[tuple[float, float, bool]]
    skewed = False
    if col.role == ColumnRole.DIMENSION and len(col.bins) >= 2:
        edges = [(lo, hi, True) for lo, hi in itertools.pairwise(col.bins)]
    elif col.role == ColumnRole.MEASURE:
        lo, hi = col.bounds if col.bounds is not None else DEFAULT_MEASURE_BOUNDS
        edges = [(lo, hi, False)]
        skewed = lo >= 0 and hi > 100 * max(lo, 1.0)
    elif kind.name == "int":
        edges = [(1, SYNTHETIC_LEVELS, False)]
    else:
        edges = [(*DEFAULT_FLOAT_DIMENSION, True)]
    segments = []
    for lo, hi, hi_open in edges:
        lo, hi = lo * unit, hi * unit
        if discrete:
            top = math.ceil(hi) - 1 if hi_open else math.floor(hi)
            seg = _Segment(max(math.ceil(lo), kind.lo), min(top, kind.hi))
        else:
            seg = _Segment(lo, hi, hi_open)
        if _nonempty(seg, discrete, frozenset()):
            segments.append(seg)
    return segments, skewed


def _uniform(rng: np.random.Generator, k: int, segs: list[_Segment], discrete: bool) -> _Array:
    pick = rng.integers(0, len(segs), size=k)
    if discrete:
        lo_i = np.array([int(s.lo) for s in segs], dtype=np.int64)[pick]
        hi_i = np.array([int(s.hi) for s in segs], dtype=np.int64)[pick]
        return rng.integers(lo_i, hi_i, endpoint=True, dtype=np.int64)
    los = np.array([s.lo for s in segs], dtype=np.float64)[pick]
    his = np.array([s.hi for s in segs], dtype=np.float64)[pick]
    values = np.minimum(los + rng.random(k) * (his - los), his)
    open_top = np.array([s.hi_open and s.hi > s.lo for s in segs], dtype=bool)[pick]
    return np.where(open_top & (values >= his), np.nextafter(his, -np.inf), values)


def _avoid(
    rng: np.random.Generator,
    values: _Array,
    segs: list[_Segment],
    region: _Region,
    discrete: bool,
    single: bool,
) -> _Array:
    """Move values that hit an excluded point (``!=``, ``NOT IN``) to allowed ones."""
    if not region.excluded or len(values) == 0:
        return values
    excluded = np.array(sorted(region.excluded), dtype=np.float64)
    hit = np.isin(values.astype(np.float64), excluded)
    if not hit.any():
        return values
    if discrete:
        spare: list[int] = []
        for seg in segs:
            v = int(seg.lo)
            while v <= seg.hi and len(spare) <= len(excluded):
                if float(v) not in region.excluded:
                    spare.append(v)
                v += 1
        values[hit] = rng.choice(np.array(spare, dtype=np.int64), size=int(hit.sum()))
        return values
    for e in region.excluded:
        at = values == e  # also -0.0 for an excluded 0.0, as in SQL
        if at.any():
            values[at] = _next_allowed(e, region, single)
    return values


def _next_allowed(e: float, region: _Region, single: bool) -> float:
    """The allowed number (float32 when ``single``) nearest above, else below, an excluded one.

    The walk passes at most ``len(region.excluded)`` excluded numbers each way, so it finds
    one whenever the region's interval around ``e`` holds an allowed number (which
    ``_nonempty`` has checked for the segment ``e`` was drawn from).
    """
    width = np.float32 if single else np.float64
    for direction in (np.inf, -np.inf):
        v = width(e)
        for _ in range(len(region.excluded) + 1):
            v = np.nextafter(v, width(direction))
            if region.contains(float(v)):
                return float(v)
    raise _Unsatisfiable


def _numbers(
    rng: np.random.Generator, k: int, col: ColumnInfo, kind: _Kind, conds: Sequence[_Cond]
) -> _Array:
    discrete = kind.space == "discrete"
    single = kind.arrow == pa.float32()
    region = _Region.of(conds)

    def representable(v: float) -> bool:
        if discrete:
            return v.is_integer() and kind.lo <= v <= kind.hi
        return not single or float(np.float32(v)) == v

    declared = [v for v in _declared(col, kind) if representable(v)]
    if declared:
        allowed = [v for v in declared if region.contains(v)]
        if allowed:
            return _choose(rng, k, allowed, discrete)
    segs, skewed = ([], False) if declared else _natural(col, kind)
    if region.points is not None:
        points = sorted(p for p in region.points if region.contains(p) and representable(p))
        if not points:
            raise _Unsatisfiable
        preferred = [p for p in points if any(s.lo <= p <= s.hi for s in segs)]
        return _choose(rng, k, preferred or points, discrete)
    subs = [_intersect(s, region, discrete) for s in segs]
    if not subs or not any(_nonempty(s, discrete, region.excluded) for s in subs):
        subs = [_intersect(_finite_interval(region, kind), region, discrete)]
        skewed = False
    if single:
        subs = [_single(s) for s in subs]
    subs = [s for s in subs if _nonempty(s, discrete, region.excluded, single)]
    if not subs:
        raise _Unsatisfiable
    if skewed:
        values = _skewed(rng, k, segs[0], discrete)
        if single:
            values = values.astype(np.float32).astype(np.float64)
        outside = ~region.mask(values)
        values[outside] = _uniform(rng, int(outside.sum()), subs, discrete)
    else:
        values = _uniform(rng, k, subs, discrete)
    if single:
        # Round to float32 here, not only in the Arrow cast: the exclusions must be checked
        # on the stored values (a draw just beside an excluded number, or a tiny negative one
        # becoming -0.0 == 0.0, would otherwise round onto it). The segments are closed at
        # float32 numbers, so rounding stays inside them.
        values = values.astype(np.float32).astype(np.float64)
    return _avoid(rng, values, subs, region, discrete, single)


def _skewed(rng: np.random.Generator, k: int, seg: _Segment, discrete: bool) -> _Array:
    """Log-normal with its median at 5% of the range, clipped to the bounds (e.g. incomes)."""
    median = seg.lo + 0.05 * (seg.hi - seg.lo)
    values = np.clip(rng.lognormal(math.log(max(median, 1.0)), 1.0, size=k), seg.lo, seg.hi)
    if discrete:
        return np.clip(np.rint(values), seg.lo, seg.hi).astype(np.int64)
    return values


def _choose(rng: np.random.Generator, k: int, allowed: Sequence[float], discrete: bool) -> _Array:
    dtype = np.int64 if discrete else np.float64
    pool = np.array([int(v) if discrete else v for v in allowed], dtype=dtype)
    return pool[rng.integers(0, len(pool), size=k)]


def _declared(col: ColumnInfo, kind: _Kind) -> list[float]:
    """A dimension's declared numeric values, in the column's sampling space."""
    if col.role != ColumnRole.DIMENSION:
        return []
    out: list[float] = []
    for v in col.values:
        if kind.name in ("date", "timestamp"):
            text = v.isoformat() if isinstance(v, dt.date) else v
            if not isinstance(text, str):
                continue
            try:
                x = float(_to_space(col, kind, text))
            except InvalidJobSpec:
                continue
        elif isinstance(v, bool) or not isinstance(v, int | float):
            continue
        elif kind.name == "decimal":
            x = float(decimal.Decimal(str(v)).scaleb(kind.scale))
        else:
            x = float(v)
        if x not in out:
            out.append(x)
    return out


# ---- strings and booleans -----------------------------------------------------------------
def _labels(col: ColumnInfo, kind: _Kind) -> list[str]:
    if kind.name == "uuid":
        return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"mock:{col.name}:{i}")) for i in range(10)]
    return [f"{col.name}_{i:02d}" for i in range(1, SYNTHETIC_LEVELS + 1)]


def _finite(
    rng: np.random.Generator, k: int, col: ColumnInfo, kind: _Kind, conds: Sequence[_Cond]
) -> list[Any]:
    base: list[Any]
    if kind.name == "bool":
        base = [v for v in col.values if isinstance(v, bool)] or [False, True]
    else:
        declared = [str(v) for v in col.values] if col.role == ColumnRole.DIMENSION else []
        base = list(dict.fromkeys(declared)) or _labels(col, kind)

    def fits(v: Any) -> bool:
        return all(_holds(v, c) for c in conds)

    allowed = [v for v in base if fits(v)]
    if not allowed and kind.name != "bool":
        # The researcher's own literals and strings just beside them, then synthetic labels.
        extra: list[Any] = [""]
        for c in conds:
            for v in c.values:
                extra += _beside(v)
        candidates = list(dict.fromkeys([*extra, *_labels(col, kind)]))
        allowed = [v for v in candidates if fits(v)]
    if not allowed:
        raise _Unsatisfiable
    return [allowed[i] for i in rng.integers(0, len(allowed), size=k)]


def _beside(v: str) -> list[str]:
    """``v`` and strings sorting just after and just before it (in code point order)."""
    out = [v, v + " ", v + "_x", v + "~"]
    if v:
        head, last = v[:-1], v[-1]
        out.append(head)
        if ord(last) > 0x20:
            out.append(head + chr(ord(last) - 1) + "~")
    return out


# ---- identifiers --------------------------------------------------------------------------
def _ids(
    rng: np.random.Generator, n: int, col: ColumnInfo, kind: _Kind, persons: int | None
) -> Any:
    """Synthetic ids: unique per row, or ``persons`` distinct ones spread over the rows."""
    m = n if persons is None else max(1, min(n, persons))
    numbers = rng.permutation(m).astype(np.int64)
    if persons is not None:
        numbers = numbers[rng.integers(0, m, size=n)]
    if kind.name in ("int", "decimal"):
        unit = 10**kind.scale if kind.name == "decimal" else 1
        lo, hi = math.ceil(kind.lo / unit), math.floor(kind.hi / unit)
        offset = next((o for o in (ID_OFFSET, max(lo, 1), lo) if o + m - 1 <= hi), None)
        if offset is None:
            raise InvalidArgument(
                f"identifier column '{col.name}' cannot hold {m} distinct mock ids"
            )
        return _arrow((numbers + offset) * unit, kind)
    if kind.name in ("date", "timestamp"):
        first = DATE_RANGE[0].toordinal() - _EPOCH.toordinal()
        return _arrow(numbers + (first if kind.name == "date" else first * _US_PER_DAY), kind)
    if kind.name == "float":
        return _arrow((numbers + ID_OFFSET).astype(np.float64), kind)
    if kind.name == "bool":
        raise InvalidArgument(f"identifier column '{col.name}' has a type mock ids cannot take")
    if kind.name == "uuid":
        keys = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(m)]
        return pa.array([keys[i] for i in numbers], type=pa.string())
    width = max(7, len(str(m)))
    return pa.array([f"id_{i + 1:0{width}d}" for i in numbers], type=pa.string())


# ---- arrow --------------------------------------------------------------------------------
def _arrow(values: Any, kind: _Kind) -> Any:
    if kind.name == "decimal":
        return pa.array(
            [decimal.Decimal(int(v)).scaleb(-kind.scale) for v in values], type=kind.arrow
        )
    if kind.name == "date":
        return pa.array(np.asarray(values, dtype=np.int32), type=pa.int32()).cast(pa.date32())
    if kind.name in ("int", "timestamp"):
        return pa.array(np.asarray(values, dtype=np.int64), type=pa.int64()).cast(kind.arrow)
    if kind.name == "float":
        floats = pa.array(np.asarray(values, dtype=np.float64), type=pa.float64())
        return floats.cast(kind.arrow, safe=False)
    return pa.array(list(values), type=kind.arrow)


def _column(
    rng: np.random.Generator, k: int, col: ColumnInfo, kind: _Kind, conds: Sequence[_Cond]
) -> Any:
    """``k`` values of a dimension or measure satisfying ``conds`` (else ``_Unsatisfiable``)."""
    if kind.space == "finite":
        return pa.array(_finite(rng, k, col, kind, conds), type=kind.arrow)
    return _arrow(_numbers(rng, k, col, kind, conds), kind)


def _stream(seed: int, column: str, part: int) -> np.random.Generator:
    """The random stream of one column (and part: 0 query set, i > 0 the i-th violation)."""
    tag = int.from_bytes(hashlib.sha256(column.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, tag, part])


# ---- the table ----------------------------------------------------------------------------
def mock_rows(
    info: DatasetInfo,
    n: int,
    *,
    seed: int,
    job: JobSpec | None = None,
    matching: float = 1.0,
    rows_per_person: float | None = None,
    limit: int = MAX_MOCK_ROWS,
) -> pa.Table:
    """``n`` synthetic rows, one column per visible column of ``info`` (see the module doc).

    Args:
        info: the dataset's public description (what ``describe`` returns).
        n: number of rows, ``0 <= n <= limit``.
        seed: ``0 <= seed < 2**63``; the same arguments give the same table.
        job: if given, rows satisfy its filters (its dataset must be ``info.id`` or empty).
        matching: share of the rows (0-1) that satisfy every filter of ``job``. Each other row
            breaks one filter, taken in turn, and is otherwise unconstrained. A filter that no
            value breaks (a tautology) leaves its rows in the query set.
        rows_per_person: mean rows per person key, when known to be more than one;
            ``None`` (unknown): every row is a different person.
        limit: the cap on ``n`` (the server passes its ``max_mock_rows``).

    Raises:
        InvalidArgument: ``n``, ``seed``, ``matching`` or ``rows_per_person`` out of range.
        InvalidJobSpec: the job names another dataset or an unknown, hidden or identifier
            column, a filter value has the wrong type, or a column's filters exclude each other.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidArgument("the number of mock rows must be a non-negative integer")
    if n > limit:
        raise InvalidArgument(f"at most {limit} mock rows may be asked for at once")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidArgument("the mock seed must be an integer in [0, 2**63)")
    if not 0.0 <= matching <= 1.0:  # also refuses NaN
        raise InvalidArgument("matching must be a share between 0 and 1")
    if rows_per_person is not None and not 1.0 <= rows_per_person <= 1e9:
        raise InvalidArgument("rows_per_person must be at least 1")
    columns = [c for c in info.columns if c.role != ColumnRole.HIDDEN]
    by_name = {c.name: c for c in columns}
    kinds = {c.name: _kind(c) for c in columns}
    filters = _check_job(job, info, by_name)
    conds: dict[str, list[_Cond]] = {}
    for f in filters:
        conds.setdefault(f.column, []).append(_conditions(by_name[f.column], kinds[f.column], f))
    # Fail on contradictory filters even when no row is asked to satisfy them.
    for name, own in conds.items():
        _satisfying(seed, by_name[name], kinds[name], 0, own)

    breaks = _breaks(n - round(n * matching), filters, by_name, kinds) if filters else []
    k = n - sum(rows for _, _, rows in breaks)
    persons = None
    if rows_per_person is not None and rows_per_person > 1.0:
        persons = max(1, round(n / rows_per_person))
    arrays: list[Any] = []
    for col in columns:
        kind = kinds[col.name]
        if col.role == ColumnRole.IDENTIFIER:
            own_persons = persons if col.name == info.person_key else None
            arrays.append(_ids(_stream(seed, col.name, 0), n, col, kind, own_persons))
            continue
        parts = [_satisfying(seed, col, kind, k, conds.get(col.name, []))]
        for part, (column, alternative, rows) in enumerate(breaks, start=1):
            own = alternative if column == col.name else []
            parts.append(_column(_stream(seed, col.name, part), rows, col, kind, own))
        arrays.append(pa.concat_arrays(parts))
    table = pa.Table.from_arrays(arrays, names=[c.name for c in columns])
    if breaks:
        table = table.take(pa.array(_stream(seed, "\x00row order", 0).permutation(n)))
    return table.replace_schema_metadata({b"sandbox.mock": b"synthetic"})


def _satisfying(seed: int, col: ColumnInfo, kind: _Kind, k: int, conds: list[_Cond]) -> Any:
    try:
        return _column(_stream(seed, col.name, 0), k, col, kind, conds)
    except _Unsatisfiable:
        raise InvalidJobSpec(
            f"the filters on column '{col.name}' exclude each other (or every value of its "
            "type): no row can satisfy them"
        ) from None


def _breaks(
    count: int,
    filters: Sequence[Filter],
    by_name: dict[str, ColumnInfo],
    kinds: dict[str, _Kind],
) -> list[tuple[str, list[_Cond], int]]:
    """How ``count`` rows outside the query set break the filters: (column, conditions, rows).

    Rows are shared out in turn over every way of breaking a filter (``BETWEEN`` has two:
    below and above); a filter that no value can break is skipped.
    """
    ways: list[tuple[str, list[_Cond]]] = []
    for f in filters:
        col, kind = by_name[f.column], kinds[f.column]
        for alternative in _negations(_conditions(col, kind, f)):
            try:
                _column(np.random.default_rng(0), 1, col, kind, alternative)
            except _Unsatisfiable:
                continue
            ways.append((f.column, alternative))
    if not ways or count <= 0:
        return []
    share, extra = divmod(count, len(ways))
    out = []
    for i, (column, alternative) in enumerate(ways):
        rows = share + (1 if i < extra else 0)
        if rows:
            out.append((column, alternative, rows))
    return out


def _check_job(
    job: JobSpec | None, info: DatasetInfo, by_name: dict[str, ColumnInfo]
) -> tuple[Filter, ...]:
    if job is None:
        return ()
    if job.dataset and job.dataset != info.id:
        raise InvalidJobSpec("the job is for another dataset than the one mocked")
    if len(job.filters) > MAX_FILTERS:
        raise InvalidJobSpec(f"a job for mock rows has at most {MAX_FILTERS} filters")
    used = [*job.group_by, *(f.column for f in job.filters)]
    used += [a.column for a in job.aggregates if a.column]
    for name in used:
        if name not in by_name:
            raise InvalidJobSpec(f"column '{name}' is not in the dataset")
    for f in job.filters:
        if by_name[f.column].role == ColumnRole.IDENTIFIER:
            raise InvalidJobSpec(f"column '{f.column}' is an identifier and cannot be filtered")
    return job.filters


__all__ = ["MAX_MOCK_ROWS", "MockRequest", "mock_rows"]
