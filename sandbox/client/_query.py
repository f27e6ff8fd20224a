"""An immutable, fluent query builder that produces a :class:`~sandbox._model.JobSpec`.

Every method returns a new :class:`Query`; nothing is mutated. Validation happens as the
query is built, and errors are :class:`~sandbox._errors.InvalidJobSpec` whose messages name
columns and constructs only, never the values a caller passed.

Example::

    spec = (
        Query("residents")
        .where("age", ">=", 60)
        .group_by("district")
        .count()
        .mean("monthly_income")
        .to_spec(project="p-001", purpose="service-planning")
    )
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from sandbox._errors import InvalidJobSpec
from sandbox._model import (
    AggFunc,
    Aggregate,
    Filter,
    FilterOp,
    JobSpec,
    Scalar,
    quantile_problem,
)

__all__ = ["Query", "make_filter", "parse_op"]

_OPS: dict[str, FilterOp] = {
    "=": FilterOp.EQ,
    "==": FilterOp.EQ,
    "!=": FilterOp.NE,
    "<>": FilterOp.NE,
    "<": FilterOp.LT,
    "<=": FilterOp.LE,
    ">": FilterOp.GT,
    ">=": FilterOp.GE,
    "in": FilterOp.IN,
    "between": FilterOp.BETWEEN,
}

_ORDERING = frozenset({FilterOp.LT, FilterOp.LE, FilterOp.GT, FilterOp.GE})

_OP_HELP = "use one of =, ==, !=, <>, <, <=, >, >=, in, between"


def parse_op(op: str | FilterOp) -> FilterOp:
    """The :class:`FilterOp` for an operator spelling (case-insensitive)."""
    if isinstance(op, FilterOp):
        return op
    if isinstance(op, str):
        found = _OPS.get(op.strip().lower())
        if found is not None:
            return found
    # The operator is not echoed: with swapped arguments it could be a filter value.
    raise InvalidJobSpec(f"unsupported filter operator; {_OP_HELP}")


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidJobSpec(f"{what} must be a non-empty string")
    if name != name.strip():
        raise InvalidJobSpec(f"{what} must not have leading or trailing whitespace")
    return name


def _check_alias(alias: object) -> str:
    if not isinstance(alias, str):
        raise InvalidJobSpec("alias must be a string")
    if alias and alias != alias.strip():
        raise InvalidJobSpec("alias must not have leading or trailing whitespace")
    return alias


def _level(q: object) -> Fraction:
    """A quantile level as an exact fraction (the value is never echoed in errors)."""
    if isinstance(q, bool) or not isinstance(q, int | float | str | Fraction):
        raise InvalidJobSpec("the quantile level q must be a number, a string or a Fraction")
    if isinstance(q, float):
        if not math.isfinite(q):
            raise InvalidJobSpec("the quantile level q must be finite")
        return Fraction(repr(q))  # the decimal the caller wrote, not the binary float
    try:
        return Fraction(q.strip() if isinstance(q, str) else q)
    except (ValueError, ZeroDivisionError):
        raise InvalidJobSpec("the quantile level q must be an exact fraction, e.g. 9/10") from None


def _kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _scalar(value: object, column: str) -> Scalar:
    """Validate one filter value and normalise it to the exact builtin type."""
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJobSpec(f"filter on column {column!r}: numbers must be finite")
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise InvalidJobSpec(
        f"filter on column {column!r}: values must be int, float, str or bool, "
        f"not {type(value).__name__}"
    )


def _as_sequence(value: object) -> Sequence[object] | None:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        return value
    return None


def _greater(a: Scalar, b: Scalar) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a > b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a > b
    return False


def make_filter(column: str, op: str | FilterOp, value: Scalar | Sequence[Scalar]) -> Filter:
    """A validated :class:`Filter` (see :meth:`Query.where`)."""
    column = _check_name(column, "filter column")
    fop = parse_op(op)
    values: tuple[Scalar, ...]
    if fop is FilterOp.IN:
        seq = _as_sequence(value)
        if seq is None:
            raise InvalidJobSpec(
                f"filter on column {column!r}: IN takes a non-empty list or tuple of values"
            )
        values = tuple(_scalar(v, column) for v in seq)
        if not values:
            raise InvalidJobSpec(f"filter on column {column!r}: IN needs at least one value")
        kinds = {_kind(v) for v in values}
        if len(kinds) > 1:
            raise InvalidJobSpec(
                f"filter on column {column!r}: IN values must all be of one kind "
                f"(numbers, strings or booleans), got {' and '.join(sorted(kinds))}"
            )
    elif fop is FilterOp.BETWEEN:
        seq = _as_sequence(value)
        if seq is None:
            raise InvalidJobSpec(
                f"filter on column {column!r}: BETWEEN takes a (low, high) pair of values"
            )
        if len(seq) != 2:
            raise InvalidJobSpec(
                f"filter on column {column!r}: BETWEEN takes exactly 2 values, got {len(seq)}"
            )
        low, high = (_scalar(v, column) for v in seq)
        kinds = {_kind(low), _kind(high)}
        if "boolean" in kinds:
            raise InvalidJobSpec(
                f"filter on column {column!r}: BETWEEN bounds must be numbers or strings, "
                "not booleans"
            )
        if len(kinds) > 1:
            raise InvalidJobSpec(
                f"filter on column {column!r}: BETWEEN bounds must both be numbers "
                "or both be strings"
            )
        if _greater(low, high):
            raise InvalidJobSpec(
                f"filter on column {column!r}: BETWEEN lower bound is greater than upper bound"
            )
        values = (low, high)
    else:
        if _as_sequence(value) is not None:
            raise InvalidJobSpec(
                f"filter on column {column!r}: operator {fop.value} takes a single value "
                "(use IN for a list, BETWEEN for a range)"
            )
        scalar = _scalar(value, column)
        if fop in _ORDERING and isinstance(scalar, bool):
            raise InvalidJobSpec(
                f"filter on column {column!r}: operator {fop.value} needs a number or string, "
                "not a boolean"
            )
        values = (scalar,)
    return Filter(column=column, op=fop, values=values)


@dataclass(frozen=True)
class Query:
    """An aggregate query over one dataset; build it fluently, then call :meth:`to_spec`."""

    dataset: str
    filters: tuple[Filter, ...] = ()
    group_by_columns: tuple[str, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    with_margins: bool = False

    def __post_init__(self) -> None:
        _check_name(self.dataset, "dataset")
        if not isinstance(self.filters, tuple) or not all(
            isinstance(f, Filter) for f in self.filters
        ):
            raise InvalidJobSpec("filters must be a tuple of Filter")
        if not isinstance(self.group_by_columns, tuple):
            raise InvalidJobSpec("group_by_columns must be a tuple of column names")
        if not isinstance(self.aggregates, tuple) or not all(
            isinstance(a, Aggregate) for a in self.aggregates
        ):
            raise InvalidJobSpec("aggregates must be a tuple of Aggregate")
        seen: set[str] = set()
        for col in self.group_by_columns:
            _check_name(col, "group-by column")
            if col in seen:
                raise InvalidJobSpec(f"column {col!r} appears more than once in GROUP BY")
            seen.add(col)
        for agg in self.aggregates:
            name = agg.name
            if name in seen:
                raise InvalidJobSpec(
                    f"output column {name!r} is produced twice; give the aggregate an alias"
                )
            seen.add(name)

    def where(self, column: str, op: str | FilterOp, value: Scalar | Sequence[Scalar]) -> Query:
        """Add a filter (filters combine with AND).

        ``op`` is one of ``= == != <> < <= > >= in between`` (case-insensitive) or a
        :class:`FilterOp`. ``in`` takes a non-empty sequence, ``between`` a ``(low, high)``
        pair, every other operator a single int, float, str or bool.
        """
        return replace(self, filters=(*self.filters, make_filter(column, op, value)))

    def group_by(self, *columns: str) -> Query:
        """Add group-by columns (appended to any already given)."""
        cols = tuple(_check_name(c, "group-by column") for c in columns)
        return replace(self, group_by_columns=(*self.group_by_columns, *cols))

    def margins(self) -> Query:
        """Add margin rows: each group-by column also summed over (its key ``TOTAL``)."""
        return replace(self, with_margins=True)

    def crosstab(self, rows: str, columns: str) -> Query:
        """A two-way table with margins: ``group_by(rows, columns).margins().count()``.

        Cells that could be recovered from the margins are suppressed as well (secondary
        suppression); ``TOTAL`` marks the margin keys.
        """
        return self.group_by(rows, columns).margins().count()

    def histogram(self, column: str, alias: str = "") -> Query:
        """Counts per key of ``column``: its policy bins (or declared values)."""
        return self.group_by(column).count(alias)

    def _agg(self, function: AggFunc, column: str, alias: str) -> Query:
        agg = Aggregate(function=function, column=column, alias=_check_alias(alias))
        return replace(self, aggregates=(*self.aggregates, agg))

    def count(self, alias: str = "") -> Query:
        """Add ``COUNT(*)`` (number of rows)."""
        return self._agg(AggFunc.COUNT, "", alias)

    def count_persons(self, alias: str = "") -> Query:
        """Add the count of distinct persons (the dataset's person key)."""
        return self._agg(AggFunc.COUNT_DISTINCT, "", alias)

    def sum(self, column: str, alias: str = "") -> Query:
        """Add ``SUM(column)``."""
        return self._agg(AggFunc.SUM, _check_name(column, "SUM column"), alias)

    def mean(self, column: str, alias: str = "") -> Query:
        """Add ``AVG(column)``."""
        return self._agg(AggFunc.MEAN, _check_name(column, "MEAN column"), alias)

    def variance(self, column: str, alias: str = "") -> Query:
        """Add the sample variance of ``column`` (clamped to its declared bounds)."""
        return self._agg(AggFunc.VARIANCE, _check_name(column, "VARIANCE column"), alias)

    def stddev(self, column: str, alias: str = "") -> Query:
        """Add the sample standard deviation of ``column`` (clamped to its declared bounds)."""
        return self._agg(AggFunc.STDDEV, _check_name(column, "STDDEV column"), alias)

    def median(self, column: str, alias: str = "") -> Query:
        """Add the median of ``column``: the midpoint of the public grid interval holding it.

        Released only when at least k persons lie below that interval and k above it.
        """
        return self._agg(AggFunc.MEDIAN, _check_name(column, "MEDIAN column"), alias)

    def quantile(self, column: str, q: float | str | Fraction, alias: str = "") -> Query:
        """Add the ``q``-quantile of ``column`` (0 < q < 1), released like :meth:`median`.

        ``q`` is taken exactly: a float by its shortest decimal (0.9 is 9/10), a string such
        as ``"0.9"`` or ``"9/10"``, or a :class:`~fractions.Fraction`.
        """
        column = _check_name(column, "QUANTILE column")
        agg = Aggregate(AggFunc.QUANTILE, column, _check_alias(alias), _level(q))
        problem = quantile_problem(agg)
        if problem:
            raise InvalidJobSpec(problem)
        return replace(self, aggregates=(*self.aggregates, agg))

    def to_spec(self, *, project: str, purpose: str) -> JobSpec:
        """The :class:`JobSpec` for this query, submitted under ``project`` for ``purpose``."""
        if not isinstance(project, str) or not isinstance(purpose, str):
            raise InvalidJobSpec("project and purpose must be strings")
        if not self.aggregates:
            raise InvalidJobSpec(
                "a query needs at least one aggregate: count(), count_persons(), "
                "sum(column) or mean(column)"
            )
        return JobSpec(
            dataset=self.dataset,
            project=project,
            purpose=purpose,
            aggregates=self.aggregates,
            group_by=self.group_by_columns,
            filters=self.filters,
            margins=self.with_margins,
        )
