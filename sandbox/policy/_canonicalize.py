"""Filter canonicalisation: each column's filters rewritten to one normal form, or refused.

Runs after the policy decision and before planning. Filter sets that select the same rows by
plain rewrites (reordered, duplicated or weakened filters, ``x > 5`` vs ``x >= 6`` on integers,
``between`` vs two bounds, ``in`` lists in any order) give the same spec and so the same
``digest()``, the query's identity for repeat detection and the differencing guard.

Normal form of one column's filters (all ANDed), output sorted by column, operator and values:

* a value set (from ``=``/``in``, or a range pinning one value) becomes ``= v`` or ``in`` with
  the distinct values sorted; ranges and ``!=`` on that column are folded into it;
* otherwise one range (``between lo hi`` when both ends are bounded and inclusive, else
  ``>=``/``>`` and/or ``<=``/``<``) plus one ``!=`` per excluded value inside it, sorted.

Integer and date ranges are made inclusive (``x > 5`` becomes ``x >= 6``); float and string
ranges keep open or closed ends. A column's public key set (``values``) and bin range
``[bins[0], bins[-1])`` are taken as the values it can hold: values outside them are dropped,
and filters keeping all of them (a tautology) or none (an empty set) are refused.

Refusals raise ``InvalidJobSpec`` with ``filter.*`` rule ids; messages name the column and the
problem, never a filter value. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sandbox._errors import InvalidJobSpec
from sandbox._model import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    ColumnRole,
    Filter,
    FilterOp,
    JobSpec,
    Scalar,
)
from sandbox.policy._model import ColumnPolicy, Policy

_RANGE_OPS = frozenset({FilterOp.LT, FilterOp.LE, FilterOp.GT, FilterOp.GE, FilterOp.BETWEEN})
_EQUALITY_OPS = frozenset({FilterOp.EQ, FilterOp.IN, FilterOp.NE})
_STRING_TYPES = ("VARCHAR", "TEXT", "STRING")


class _Ordered(Protocol):
    """A hashable, totally ordered value of one column's domain (int, float, str, bool, date)."""

    def __lt__(self, other: Any, /) -> bool: ...

    def __hash__(self) -> int: ...


class _Kind(enum.Enum):
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    DATE = "date"
    STR = "str"

    @property
    def discrete(self) -> bool:
        """Whether strict bounds have an inclusive equivalent (next integer, next day)."""
        return self in (_Kind.INT, _Kind.DATE)


class _Refused(Exception):
    def __init__(self, rule_id: str, message: str) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.message = message


def canonicalize(
    spec: JobSpec,
    policy: Policy,
    *,
    column_types: Mapping[str, str] | None = None,
) -> JobSpec:
    """Return ``spec`` with its filters in canonical form; everything else is unchanged.

    Args:
        spec: An authorised job spec.
        policy: The dataset's policy (key sets, bins and column roles).
        column_types: SQL types by column (the catalogue's ``column_types``). When a column's
            type is known it decides how values compare (only integer and date columns get
            inclusive bounds); otherwise the values' Python types decide (all ``int``: integer).

    Raises:
        InvalidJobSpec: A column's filters select nothing (``filter.empty``), restrict nothing
            the policy allows (``filter.tautology``), test equality on an identifier or measure
            (``filter.identifier_equality``, ``filter.measure_equality``), or have the wrong
            number (``filter.values``) or kind (``filter.type``, ``filter.date_format``,
            ``filter.not_a_number``) of values. Every refused column is reported.
    """
    if not spec.filters:
        return spec
    by_column: dict[str, list[Filter]] = {}
    for flt in spec.filters:
        by_column.setdefault(flt.column, []).append(flt)
    types = column_types or {}
    out: list[Filter] = []
    refusals: list[_Refused] = []
    for name in sorted(by_column):
        try:
            out += _Column(name, policy, types.get(name)).canonical(by_column[name])
        except _Refused as exc:
            refusals.append(exc)
    if refusals:
        raise InvalidJobSpec(
            "; ".join(r.message for r in refusals),
            rule_ids=tuple(dict.fromkeys(r.rule_id for r in refusals)),
        )
    out.sort(key=lambda f: (f.column, str(f.op), f.values))
    return dataclasses.replace(spec, filters=tuple(out))


@dataclass
class _Range:
    """An interval; ``None`` ends are unbounded."""

    lo: _Ordered | None = None
    lo_open: bool = False
    hi: _Ordered | None = None
    hi_open: bool = False

    def above(self, v: _Ordered, *, open: bool) -> None:
        """Intersect with ``x > v`` (open) or ``x >= v``."""
        if self.lo is None or self.lo < v or (v == self.lo and open):
            self.lo, self.lo_open = v, open

    def below(self, v: _Ordered, *, open: bool) -> None:
        """Intersect with ``x < v`` (open) or ``x <= v``."""
        if self.hi is None or v < self.hi or (v == self.hi and open):
            self.hi, self.hi_open = v, open

    def contains(self, v: _Ordered) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (self.hi < v or (self.hi_open and v == self.hi)))

    def empty(self) -> bool:
        if self.lo is None or self.hi is None:
            return False
        return self.hi < self.lo or (self.lo == self.hi and (self.lo_open or self.hi_open))

    def point(self) -> _Ordered | None:
        """The one value in the range, if it holds exactly one (closed ``lo == hi``)."""
        if self.lo is not None and self.lo == self.hi and not (self.lo_open or self.hi_open):
            return self.lo
        return None

    def covers(self, other: _Range) -> bool:
        """Whether every value of ``other`` lies in this range."""
        if self.lo is not None:
            if other.lo is None or other.lo < self.lo:
                return False
            if other.lo == self.lo and self.lo_open and not other.lo_open:
                return False
        if self.hi is not None:
            if other.hi is None or self.hi < other.hi:
                return False
            if other.hi == self.hi and self.hi_open and not other.hi_open:
                return False
        return True

    def meets(self, other: _Range) -> bool:
        """Whether the two ranges share a value."""
        both = dataclasses.replace(self)
        if other.lo is not None:
            both.above(other.lo, open=other.lo_open)
        if other.hi is not None:
            both.below(other.hi, open=other.hi_open)
        return not both.empty()


class _Column:
    """Canonicalisation of the filters on one column."""

    def __init__(self, name: str, policy: Policy, sql_type: str | None) -> None:
        self.name = name
        col = policy.column(name)
        # A hidden column is treated like an unknown one: its key set and bins are not public,
        # so they must not shape answers.
        self.col: ColumnPolicy | None = (
            None if col is None or col.role == ColumnRole.HIDDEN else col
        )
        self.sql_type = sql_type
        self.kind = _Kind.STR
        self.keys: frozenset[_Ordered] | None = None
        self.domain: _Range | None = None

    def refuse(self, rule_id: str, problem: str) -> _Refused:
        return _Refused(rule_id, f"filters on column '{self.name}' {problem}")

    def canonical(self, filters: Sequence[Filter]) -> list[Filter]:
        for flt in filters:
            self.check_arity(flt)
        role = self.col.role if self.col is not None else None
        if role in (ColumnRole.IDENTIFIER, ColumnRole.MEASURE) and any(
            f.op in _EQUALITY_OPS for f in filters
        ):
            raise self.equality_refusal()
        self.kind = self.resolve_kind(filters)
        self.keys = self.key_set()
        self.domain = self.bin_range()

        rng = _Range()
        members: set[_Ordered] | None = None
        excluded: set[_Ordered] = set()
        for flt in filters:
            op, vals = flt.op, [self.parse(v) for v in flt.values]
            if self.kind == _Kind.INT:
                op, vals = _on_integers(op, vals)
            if op in (FilterOp.EQ, FilterOp.IN):
                members = set(vals) if members is None else members & set(vals)
            elif op == FilterOp.NE:
                excluded.update(vals)
            elif op == FilterOp.BETWEEN:
                rng.above(vals[0], open=False)
                rng.below(vals[1], open=False)
            elif op in (FilterOp.GT, FilterOp.GE):
                rng.above(vals[0], open=op == FilterOp.GT)
            else:
                rng.below(vals[0], open=op == FilterOp.LT)
        self.close(rng)
        if members is None and self.kind == _Kind.BOOL:
            members = {False, True}
        if members is None:
            point = self.narrow(rng, excluded)
            if point is None:
                return self.range_filters(rng, excluded)
            members = {point}
        return self.set_filters({v for v in members if rng.contains(v) and v not in excluded})

    # -- checks ----------------------------------------------------------------------------

    def check_arity(self, flt: Filter) -> None:
        count = len(flt.values)
        if flt.op == FilterOp.BETWEEN:
            ok, need = count == 2, "exactly 2 values"
        elif flt.op == FilterOp.IN:
            ok, need = count >= 1, "at least 1 value"
        else:
            ok, need = count == 1, "exactly 1 value"
        if not ok:
            raise _Refused(
                "filter.values",
                f"filter on column '{self.name}' with operator '{flt.op}' needs {need}, "
                f"got {count}",
            )

    def equality_refusal(self) -> _Refused:
        if self.col is not None and self.col.role == ColumnRole.IDENTIFIER:
            return self.refuse(
                "filter.identifier_equality",
                "test equality on an identifier: =, !=, in and ranges holding one value are "
                "not allowed on identifiers",
            )
        return self.refuse(
            "filter.measure_equality",
            "test equality on a continuous measure: =, !=, in and ranges holding one value are "
            "not allowed on measures; use a range",
        )

    # -- value kinds -----------------------------------------------------------------------

    def resolve_kind(self, filters: Sequence[Filter]) -> _Kind:
        values = [v for f in filters for v in f.values]
        types = {type(v) for v in values}
        if not types <= {bool, int, float, str}:
            raise self.refuse("filter.type", "have values of an unsupported type")
        numeric = types <= {int, float}
        declared = _declared_kind(self.sql_type)
        if self.sql_type and declared is None:
            raise self.refuse("filter.type", "are on a column whose type cannot be filtered")
        if declared is not None:
            if declared in (_Kind.INT, _Kind.FLOAT) and numeric:
                finite = all(math.isfinite(v) for v in values if isinstance(v, float))
                return _Kind.INT if declared == _Kind.INT and finite else _Kind.FLOAT
            if declared == _Kind.BOOL and types == {bool}:
                return _Kind.BOOL
            if declared == _Kind.STR and types == {str}:
                return _Kind.STR
            if declared == _Kind.DATE and types == {str}:
                if all(_iso_date(v) is not None for v in values):
                    return _Kind.DATE
                raise self.refuse("filter.date_format", "need dates written as YYYY-MM-DD")
            raise self.type_mismatch()
        if types == {bool}:
            return _Kind.BOOL
        if types == {int}:
            return _Kind.FLOAT if self.fractional_policy() else _Kind.INT
        if numeric:
            return _Kind.FLOAT
        if types == {str}:
            canonical = [isinstance(v, str) and _canonical_date(v) is not None for v in values]
            if all(canonical):
                return _Kind.DATE
            # Lexical and date order disagree for other ISO forms (e.g. 20200105): refuse a range
            # that could be one or the other rather than reorder its bounds wrongly.
            if any(f.op in _RANGE_OPS for f in filters) and any(
                _iso_date(v) is not None for v in values
            ):
                raise self.refuse("filter.date_format", "need dates written as YYYY-MM-DD")
            return _Kind.STR
        raise self.type_mismatch()

    def type_mismatch(self) -> _Refused:
        return self.refuse("filter.type", "have values that do not match the column's type")

    def fractional_policy(self) -> bool:
        """Whether the policy shows the column holds fractions (so ``int`` values are floats)."""
        if self.col is None:
            return False
        edges: list[float] = [
            *self.col.bins,
            *(v for v in self.col.values if isinstance(v, float)),
        ]
        return any(not float(e).is_integer() for e in edges if math.isfinite(e))

    def parse(self, v: Scalar) -> _Ordered:
        if self.kind == _Kind.FLOAT:
            if isinstance(v, float) and math.isnan(v):
                raise self.refuse("filter.not_a_number", "have a value that is not a number")
            return _as_float(v)
        if self.kind == _Kind.DATE:
            date = _iso_date(v)
            assert date is not None  # checked by resolve_kind
            return date
        return v

    def emit(self, v: _Ordered) -> Scalar:
        if isinstance(v, dt.date):
            return v.isoformat()
        assert isinstance(v, bool | int | float | str)
        return v

    # -- what the policy says the column can hold ------------------------------------------

    def key_set(self) -> frozenset[_Ordered] | None:
        if self.col is None or not self.col.values:
            return None
        keys: set[_Ordered] = set()
        for v in self.col.values:
            key = _key(self.kind, v)
            if key is not None:
                keys.add(key)
        if not keys:
            raise self.refuse(
                "filter.type", "have values that do not match the type of its declared values"
            )
        return frozenset(keys)

    def bin_range(self) -> _Range | None:
        """``[bins[0], bins[-1])`` (integers in it, for an integer column), when declared."""
        if self.col is None or len(self.col.bins) < 2:
            return None
        lo, hi = self.col.bins[0], self.col.bins[-1]
        if self.kind == _Kind.FLOAT:
            return _Range(lo, False, hi, True)
        if self.kind == _Kind.INT:
            first, last = math.ceil(lo), math.ceil(hi) - 1
            return _Range(first, False, last, False) if first <= last else None
        return None

    def possible(self, v: _Ordered) -> bool:
        """Whether the policy allows the column to hold ``v``."""
        if self.keys is not None and v not in self.keys:
            return False
        return self.domain is None or self.domain.contains(v)

    # -- normal form -----------------------------------------------------------------------

    def close(self, rng: _Range) -> None:
        """Make strict bounds inclusive on a discrete column (``x > 5`` → ``x >= 6``)."""
        if not self.kind.discrete:
            return
        if rng.lo is not None and rng.lo_open:
            rng.lo, rng.lo_open = self.step(rng.lo, 1), False
        if rng.hi is not None and rng.hi_open:
            rng.hi, rng.hi_open = self.step(rng.hi, -1), False

    def step(self, v: _Ordered, by: int) -> _Ordered:
        if isinstance(v, dt.date):
            try:
                return v + dt.timedelta(days=by)
            except OverflowError:
                raise self.refuse("filter.empty", "select no rows") from None
        assert isinstance(v, int)
        return v + by

    def narrow(self, rng: _Range, excluded: set[_Ordered]) -> _Ordered | None:
        """Fold ``!=`` values into ``rng``: drop those it or the policy rules out, absorb those at
        its ends. Returns the single value when the range holds just one."""
        if rng.empty():
            raise self.empty_refusal()
        excluded &= {v for v in excluded if rng.contains(v) and self.possible(v)}
        while rng.lo is not None and rng.lo in excluded:
            excluded.discard(rng.lo)
            if self.kind.discrete:
                rng.lo = self.step(rng.lo, 1)
            else:
                rng.lo_open = True
        while rng.hi is not None and rng.hi in excluded:
            excluded.discard(rng.hi)
            if self.kind.discrete:
                rng.hi = self.step(rng.hi, -1)
            else:
                rng.hi_open = True
        if rng.empty():
            raise self.empty_refusal()
        return rng.point()

    def range_filters(self, rng: _Range, excluded: set[_Ordered]) -> list[Filter]:
        if self.keys is not None:
            kept = {k for k in self.keys if rng.contains(k) and k not in excluded}
            if not kept:
                raise self.empty_refusal()
            if kept == self.keys:
                raise self.tautology_refusal()
        if self.domain is not None:
            if not rng.meets(self.domain):
                raise self.empty_refusal()
            if rng.covers(self.domain) and not excluded:
                raise self.tautology_refusal()
        if rng.lo is None and rng.hi is None and not excluded:
            raise self.tautology_refusal()
        out: list[Filter] = []
        if rng.lo is not None and rng.hi is not None and not (rng.lo_open or rng.hi_open):
            out.append(self.filter(FilterOp.BETWEEN, rng.lo, rng.hi))
        else:
            if rng.lo is not None:
                out.append(self.filter(FilterOp.GT if rng.lo_open else FilterOp.GE, rng.lo))
            if rng.hi is not None:
                out.append(self.filter(FilterOp.LT if rng.hi_open else FilterOp.LE, rng.hi))
        out += [self.filter(FilterOp.NE, v) for v in sorted(excluded)]
        return out

    def set_filters(self, members: set[_Ordered]) -> list[Filter]:
        role = self.col.role if self.col is not None else None
        if role in (ColumnRole.IDENTIFIER, ColumnRole.MEASURE):
            raise self.equality_refusal()
        kept = sorted(v for v in members if self.possible(v))
        if not kept:
            raise self.empty_refusal()
        if self.keys is not None and len(kept) == len(self.keys):
            raise self.tautology_refusal()
        if self.kind == _Kind.BOOL and len(kept) == 2:
            raise self.tautology_refusal()
        if self.kind == _Kind.INT and self.domain is not None:
            assert isinstance(self.domain.lo, int) and isinstance(self.domain.hi, int)
            if len(kept) == self.domain.hi - self.domain.lo + 1:
                raise self.tautology_refusal()
        if len(kept) == 1:
            return [self.filter(FilterOp.EQ, kept[0])]
        return [self.filter(FilterOp.IN, *kept)]

    def filter(self, op: FilterOp, *values: _Ordered) -> Filter:
        return Filter(self.name, op, tuple(self.emit(v) for v in values))

    def empty_refusal(self) -> _Refused:
        return self.refuse(
            "filter.empty",
            "select no rows: the conditions contradict each other or exclude every value the "
            "policy declares for the column",
        )

    def tautology_refusal(self) -> _Refused:
        return self.refuse(
            "filter.tautology",
            "keep every value the column can hold (by its type or the policy's key set or "
            "bins), so they restrict nothing; remove them",
        )


def _declared_kind(sql_type: str | None) -> _Kind | None:
    if not sql_type:
        return None
    t = sql_type.strip().upper()
    if t.startswith(INTEGER_TYPES):
        return _Kind.INT
    if t.startswith(FLOAT_TYPES):
        return _Kind.FLOAT
    if t in ("BOOLEAN", "BOOL"):
        return _Kind.BOOL
    if t == "DATE":
        return _Kind.DATE
    if t.startswith(_STRING_TYPES):
        return _Kind.STR
    return None


def _iso_date(v: Scalar) -> dt.date | None:
    """The date an ISO string names (any form ``date.fromisoformat`` takes), else None."""
    if not isinstance(v, str):
        return None
    try:
        return dt.date.fromisoformat(v)
    except ValueError:
        return None


def _canonical_date(v: str) -> dt.date | None:
    """The date ``v`` names if written exactly as YYYY-MM-DD (where lexical is date order)."""
    date = _iso_date(v)
    return date if date is not None and date.isoformat() == v else None


def _on_integers(op: FilterOp, vals: list[_Ordered]) -> tuple[FilterOp, list[_Ordered]]:
    """A filter's finite numbers on an integer column, as the integers it lets through.

    A whole float is that integer; a fractional bound moves inward to the nearest integer and
    becomes inclusive (``x > 30.5`` is ``x >= 31``, ``x <= 30.5`` is ``x <= 30``); a fractional
    member or excluded value is dropped, as no integer equals it. So every spelling of one
    integer filter has one canonical form.
    """
    whole = [int(v) if isinstance(v, float) and v.is_integer() else v for v in vals]
    if op in (FilterOp.EQ, FilterOp.IN, FilterOp.NE):
        return op, [v for v in whole if not isinstance(v, float)]
    if op == FilterOp.BETWEEN:
        lo, hi = whole
        return op, [
            math.ceil(lo) if isinstance(lo, float) else lo,
            math.floor(hi) if isinstance(hi, float) else hi,
        ]
    (v,) = whole
    if not isinstance(v, float):
        return op, whole
    if op in (FilterOp.GT, FilterOp.GE):
        return FilterOp.GE, [math.ceil(v)]
    return FilterOp.LE, [math.floor(v)]


def _as_float(v: Scalar) -> _Ordered:
    """A number as a float when that is exact, so ``1`` and ``1.0`` are one value."""
    try:
        f = float(v)
    except OverflowError:
        return v
    return f if f == v else v


def _key(kind: _Kind, v: Scalar) -> _Ordered | None:
    """A declared key as a value of ``kind``, or None if the column could not hold it so."""
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if kind == _Kind.BOOL:
        return v if isinstance(v, bool) else None
    if kind == _Kind.STR:
        return v if isinstance(v, str) else None
    if kind == _Kind.DATE:
        return _iso_date(v)
    if not number or (isinstance(v, float) and math.isnan(v)):
        return None
    if kind == _Kind.FLOAT:
        return _as_float(v)
    if isinstance(v, float):
        return int(v) if v.is_integer() else None
    return v
