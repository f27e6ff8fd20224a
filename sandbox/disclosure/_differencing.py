"""Differencing guard (rule-based mode): released cells must not differ by fewer than k persons.

Every released cell covers a *region* of the dataset: the job's canonical filters intersected
with the cell's group keys, one constraint per column. Two cells whose regions are nested
(``A ⊆ B``) let anyone subtract them: ``B - A`` is a cell of its own, holding exactly
``persons(B) - persons(A)`` persons. So a new cell is *offending* when, against any earlier
release of the same dataset and data version, that difference isolates between 1 and k-1
persons. The same region released again after a data refresh is compared too: a change of
fewer than k persons isolates the people who came or went.

Regions that merely overlap are not compared: with conjunctive filters only, the part they
share is not released, so no subtraction isolates it. Pure: the register itself is stored by
``sandbox.state.ReleaseRegister``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sandbox._model import (
    TOTAL,
    Cell,
    CellStatus,
    Filter,
    FilterOp,
    JobSpec,
    Key,
    ResultTable,
    Scalar,
)
from sandbox.disclosure._margins import suppress_complements
from sandbox.engine import bin_labels
from sandbox.policy import Policy

RULE_DIFFERENCING = "disclosure.differencing"


@dataclass(frozen=True)
class ValueSet:
    """The column holds one of these values."""

    values: frozenset[Scalar]


@dataclass(frozen=True)
class Range:
    """The column lies in a range (None = unbounded) and is none of ``excluded``."""

    lo: Scalar | None = None
    lo_inclusive: bool = True
    hi: Scalar | None = None
    hi_inclusive: bool = True
    excluded: frozenset[Scalar] = frozenset()

    def holds(self, v: Scalar) -> bool:
        if v in self.excluded:
            return False
        if self.lo is not None and (v < self.lo or (v == self.lo and not self.lo_inclusive)):  # type: ignore[operator]
            return False
        return not (
            self.hi is not None and (v > self.hi or (v == self.hi and not self.hi_inclusive))  # type: ignore[operator]
        )


@dataclass(frozen=True)
class Missing:
    """The group of rows whose key is null (or outside every bin)."""


Constraint = ValueSet | Range | Missing
Region = Mapping[str, Constraint]


@dataclass(frozen=True)
class ReleasedCell:
    """One cell of the release register (server-side only: holds a true person count)."""

    region: Region
    persons: int
    data_version: str


def differencing_guard(
    table: ResultTable,
    persons: Mapping[tuple[Key, ...], int],
    spec: JobSpec,
    policy: Policy,
    prior: Iterable[ReleasedCell],
    *,
    data_version: str,
) -> tuple[ResultTable, list[tuple[str, int]]]:
    """Suppress the rows that would difference against earlier releases.

    Args:
        table: The protected table about to be released.
        persons: True distinct persons per group key (absent keys hold none).
        spec: The canonical job spec the table answers.
        policy: The dataset's policy (threshold, bins).
        prior: The register's cells for this dataset.
        data_version: Identity of the data the table was computed from.

    Returns:
        The table with offending rows suppressed (rule ``disclosure.differencing``), and the
        register entries (region text, persons) of the rows it releases.
    """
    regions = job_regions(spec, policy, [row.keys for row in table.rows])
    released = [
        i
        for i, row in enumerate(table.rows)
        if any(c.status != CellStatus.SUPPRESSED for c in row.cells)
    ]
    new = [(regions[i], persons.get(table.rows[i].keys, 0)) for i in released]
    bad = offending(
        new,
        prior,
        data_version=data_version,
        min_persons=policy.disclosure.min_persons_per_cell,
    )
    if bad:
        hidden = {released[j] for j in bad}
        blank = Cell(None, CellStatus.SUPPRESSED, RULE_DIFFERENCING)
        rows = tuple(
            dataclasses.replace(row, cells=tuple(blank for _ in row.cells)) if i in hidden else row
            for i, row in enumerate(table.rows)
        )
        table = dataclasses.replace(table, rows=rows)
        if spec.margins:  # a newly suppressed cell must not be recoverable from its margins
            table = suppress_complements(table, persons, policy.disclosure.min_persons_per_cell)
    entries = [
        (region_json(regions[i]), persons.get(row.keys, 0))
        for i, row in enumerate(table.rows)
        if any(c.status != CellStatus.SUPPRESSED for c in row.cells)
    ]
    return table, entries


def job_regions(
    spec: JobSpec, policy: Policy, keys: Sequence[tuple[Key, ...]]
) -> list[dict[str, Constraint]]:
    """The region of each result row: canonical filters intersected with the row's keys.

    A margin key (``TOTAL``) adds nothing: the row covers every value of that column.
    """
    base = _filter_region(spec.filters)
    regions = []
    for row_keys in keys:
        region = dict(base)
        for column, key in zip(spec.group_by, row_keys, strict=True):
            if key is not TOTAL:
                region[column] = _key_constraint(policy, column, key, region.get(column))
        regions.append(region)
    return regions


def offending(
    new: Sequence[tuple[Region, int]],
    prior: Iterable[ReleasedCell],
    *,
    data_version: str,
    min_persons: int,
) -> set[int]:
    """Indexes of new cells whose difference with an earlier released cell isolates persons.

    Only nested (or, across data versions, equal) regions are compared. Nested regions share
    their columns one way or the other and overlap on each shared column, so the register is
    indexed by column set and each column's numeric hull: a new cell is compared only with
    the earlier cells it could be nested with (a necessary condition; ``contains`` decides).
    """
    index = prior if isinstance(prior, ReleasedCells) else ReleasedCells(prior)
    bad: set[int] = set()
    for i, (region, persons) in enumerate(new):
        for old in index.candidates(region):
            if old.data_version == data_version:
                if not (contains(old.region, region) or contains(region, old.region)):
                    continue
                if equal(old.region, region):
                    continue  # the same cell again: nothing new
            elif not equal(old.region, region):
                continue  # nested regions across versions cannot be subtracted exactly
            diff = abs(old.persons - persons)
            if 0 < diff < min_persons:
                bad.add(i)
                break
    return bad


class ReleasedCells:
    """Released cells grouped by column set, with each column's numeric hull as arrays.

    Grows as cells are added (``sandbox.state.ReleaseRegister`` keeps one per dataset and
    tops it up): a group's arrays are rebuilt only when it has grown since they were made.
    """

    def __init__(self, cells: Iterable[ReleasedCell] = ()) -> None:
        self._groups: dict[frozenset[str], _Group] = {}
        for cell in cells:
            self.add(cell)

    def add(self, cell: ReleasedCell) -> None:
        group = self._groups.setdefault(frozenset(cell.region), _Group())
        group.members.append(cell)
        group.hulls = None

    def add_row(self, region: str, persons: int, data_version: str) -> None:
        """Add a register row as stored (region text, true persons, data version)."""
        self.add(released_cell(region, persons, data_version))

    def __len__(self) -> int:
        return sum(len(g.members) for g in self._groups.values())

    def __iter__(self) -> Iterator[ReleasedCell]:
        for group in self._groups.values():
            yield from group.members

    def candidates(self, region: Region) -> Iterator[ReleasedCell]:
        columns = frozenset(region)
        for group_columns, group in self._groups.items():
            if not (group_columns <= columns or columns <= group_columns):
                continue  # neither can contain the other: a column would be unconstrained
            members, hulls = group.members, group.arrays(group_columns)
            keep = np.ones(len(members), dtype=bool)
            for column in group_columns & columns:
                lo, hi = _hull(region[column])
                if math.isnan(lo):
                    continue  # not numeric: no pruning on this column
                old_lo, old_hi = hulls[column]
                keep &= np.isnan(old_lo) | ((old_lo <= hi) & (old_hi >= lo))
            for j in np.flatnonzero(keep):
                yield members[j]


@dataclass
class _Group:
    members: list[ReleasedCell] = dataclasses.field(default_factory=list)
    hulls: dict[str, tuple[Any, Any]] | None = None
    """Per column, the members' hull bounds as two arrays (None: to be rebuilt)."""

    def arrays(self, columns: frozenset[str]) -> dict[str, tuple[Any, Any]]:
        if self.hulls is None:
            self.hulls = {c: _hull_arrays([m.region[c] for m in self.members]) for c in columns}
        return self.hulls


def _hull(c: Constraint) -> tuple[float, float]:
    """The closed interval holding every value ``c`` admits, when its values are numbers; NaN
    otherwise (text compares by its own order; an empty set or range), which prunes nothing."""
    nan = (math.nan, math.nan)
    if isinstance(c, ValueSet):
        if not c.values or not all(_is_number(v) for v in c.values):
            return nan
        values = [float(v) for v in c.values]
        return min(values), max(values)
    if isinstance(c, Range):
        if not all(b is None or _is_number(b) for b in (c.lo, c.hi)):
            return nan
        lo = -math.inf if c.lo is None else float(c.lo)
        hi = math.inf if c.hi is None else float(c.hi)
        # An empty range (lo above hi, or one open point) lies "within" anything by the
        # bounds test of ``_range_within`` while overlapping nothing: never prune on it.
        empty = lo > hi or (lo == hi and not (c.lo_inclusive and c.hi_inclusive))
        return nan if empty else (lo, hi)
    return nan  # Missing: only another Missing is nested with it


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))


def _hull_arrays(constraints: list[Constraint]) -> tuple[Any, Any]:
    hulls = np.array([_hull(c) for c in constraints], dtype=float).reshape(-1, 2)
    return hulls[:, 0], hulls[:, 1]


def contains(outer: Region, inner: Region) -> bool:
    """Whether every row of ``inner`` lies in ``outer`` (conservative: False when unsure)."""
    for column, constraint in outer.items():
        held = inner.get(column)
        if held is None or not _within(held, constraint):
            return False
    return True


def equal(a: Region, b: Region) -> bool:
    return contains(a, b) and contains(b, a)


def region_json(region: Region) -> str:
    """Canonical text of a region (the register's storage and de-duplication key)."""
    return json.dumps(
        {c: _constraint_json(region[c]) for c in sorted(region)},
        sort_keys=True,
        separators=(",", ":"),
    )


def region_from_json(text: str) -> dict[str, Constraint]:
    return {c: _constraint_from_json(v) for c, v in json.loads(text).items()}


def released_cell(region: str, persons: int, data_version: str) -> ReleasedCell:
    """A register row (as stored by ``sandbox.state.ReleaseRegister``) as a released cell."""
    return ReleasedCell(region_from_json(region), persons, data_version)


# ---- building regions -------------------------------------------------------------------


def _filter_region(filters: Iterable[Filter]) -> dict[str, Constraint]:
    """Canonical filters (one value set, or one range plus ``!=`` exclusions, per column)."""
    region: dict[str, Constraint] = {}
    for f in filters:
        current = region.get(f.column)
        rng = current if isinstance(current, Range) else Range()
        if f.op in (FilterOp.EQ, FilterOp.IN):
            region[f.column] = ValueSet(frozenset(f.values))
            continue
        if f.op == FilterOp.NE:
            rng = Range(
                rng.lo, rng.lo_inclusive, rng.hi, rng.hi_inclusive, rng.excluded | {f.values[0]}
            )
        elif f.op == FilterOp.BETWEEN:
            rng = Range(f.values[0], True, f.values[1], True, rng.excluded)
        elif f.op in (FilterOp.GE, FilterOp.GT):
            rng = Range(f.values[0], f.op == FilterOp.GE, rng.hi, rng.hi_inclusive, rng.excluded)
        else:  # LE, LT
            rng = Range(rng.lo, rng.lo_inclusive, f.values[0], f.op == FilterOp.LE, rng.excluded)
        region[f.column] = rng
    return region


def _key_constraint(
    policy: Policy, column: str, key: Scalar | None, current: Constraint | None
) -> Constraint:
    if key is None:
        return Missing()
    col = policy.column(column)
    if col is not None and col.bins:
        labels = bin_labels(col.bins)
        if key in labels:
            i = labels.index(str(key))
            lo, hi = col.bins[i], col.bins[i + 1]
            if isinstance(current, ValueSet):
                return ValueSet(frozenset(v for v in current.values if lo <= v < hi))  # type: ignore[operator]
            if isinstance(current, Range):
                return _intersect(current, Range(lo, True, hi, False))
            return Range(lo, True, hi, False)
    return ValueSet(frozenset({key}))


def _intersect(a: Range, b: Range) -> Range:
    lo, lo_inc = a.lo, a.lo_inclusive
    if b.lo is not None and (lo is None or b.lo > lo or (b.lo == lo and not b.lo_inclusive)):  # type: ignore[operator]
        lo, lo_inc = b.lo, b.lo_inclusive
    hi, hi_inc = a.hi, a.hi_inclusive
    if b.hi is not None and (hi is None or b.hi < hi or (b.hi == hi and not b.hi_inclusive)):  # type: ignore[operator]
        hi, hi_inc = b.hi, b.hi_inclusive
    return Range(lo, lo_inc, hi, hi_inc, a.excluded | b.excluded)


# ---- containment of one column's constraints ----------------------------------------------


def _within(inner: Constraint, outer: Constraint) -> bool:
    try:
        if isinstance(outer, Missing) or isinstance(inner, Missing):
            return isinstance(outer, Missing) and isinstance(inner, Missing)
        if isinstance(inner, ValueSet):
            if isinstance(outer, ValueSet):
                return inner.values <= outer.values
            return all(outer.holds(v) for v in inner.values)
        if isinstance(outer, ValueSet):
            return False  # a range inside a value set: not decided (conservative)
        return _range_within(inner, outer)
    except TypeError:  # values of different types: not comparable
        return False


def _range_within(a: Range, b: Range) -> bool:
    if b.lo is not None:
        if a.lo is None or a.lo < b.lo:  # type: ignore[operator]
            return False
        if a.lo == b.lo and a.lo_inclusive and not b.lo_inclusive:
            return False
    if b.hi is not None:
        if a.hi is None or a.hi > b.hi:  # type: ignore[operator]
            return False
        if a.hi == b.hi and a.hi_inclusive and not b.hi_inclusive:
            return False
    # Every value ``b`` excludes that ``a``'s range could hold must be excluded by ``a`` too.
    return all(e in a.excluded or not _bounds_hold(a, e) for e in b.excluded)


def _bounds_hold(r: Range, v: Scalar) -> bool:
    return Range(r.lo, r.lo_inclusive, r.hi, r.hi_inclusive).holds(v)


# ---- storage form ---------------------------------------------------------------------------


def _sorted(values: Iterable[Scalar]) -> list[Scalar]:
    return sorted(values, key=lambda v: (type(v).__name__, v))


def _constraint_json(c: Constraint) -> dict[str, Any]:
    if isinstance(c, ValueSet):
        return {"in": _sorted(c.values)}
    if isinstance(c, Missing):
        return {"missing": True}
    return {
        "lo": c.lo,
        "lo_inclusive": c.lo_inclusive,
        "hi": c.hi,
        "hi_inclusive": c.hi_inclusive,
        "excluded": _sorted(c.excluded),
    }


def _constraint_from_json(d: dict[str, Any]) -> Constraint:
    if "in" in d:
        return ValueSet(frozenset(d["in"]))
    if d.get("missing"):
        return Missing()
    return Range(d["lo"], d["lo_inclusive"], d["hi"], d["hi_inclusive"], frozenset(d["excluded"]))
