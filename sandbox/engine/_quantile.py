"""Quantiles without rows: per cell, how many persons fall in each interval of a public grid.

A measure's grid depends on its policy bounds and engine type only, never on data: 100 equal
intervals between the bounds, or for an integer measure intervals of an odd whole width (so
every interval's midpoint is a half-integer, which no value of the column can equal). The
engine returns one histogram per cell (``histogram`` of the interval index of the clamped
value); disclosure control then picks an interval and releases its midpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sandbox._errors import PolicyDenied
from sandbox._model import INTEGER_TYPES, QUANTILES, JobSpec
from sandbox.policy import Policy

RULE_QUANTILE_BOUNDS = "quantile.bounds"
RULE_QUANTILE_ONE_ROW = "quantile.one_row_per_person"
GRID_STEPS = 100
"""Intervals of a grid between a measure's bounds (about that many for integer measures)."""


@dataclass(frozen=True)
class QuantileGrid:
    """Equal intervals ``[lo + i*step, lo + (i+1)*step)``, ``i < intervals``; the last one
    also holds its upper end (values are clamped to the measure's bounds first)."""

    lo: float
    step: float
    intervals: int

    def midpoint(self, i: int) -> float:
        """The released value for interval ``i``: a grid point, never a data value."""
        return self.lo + self.step * (i + 0.5)

    def edges(self) -> tuple[float, ...]:
        return tuple(self.lo + self.step * i for i in range(self.intervals + 1))


def quantile_grid(bounds: tuple[float, float], sql_type: str) -> QuantileGrid:
    """The public grid of a measure with these bounds and this engine type."""
    lo, hi = bounds
    if sql_type.upper().startswith(INTEGER_TYPES):
        start = math.floor(lo)
        step = max(1, math.ceil((hi - start) / GRID_STEPS))
        step += 1 - step % 2  # odd: midpoints are half-integers
        return QuantileGrid(float(start), float(step), math.floor((hi - start) / step) + 1)
    return QuantileGrid(float(lo), (hi - lo) / GRID_STEPS, GRID_STEPS)


def quantile_grids(
    spec: JobSpec, policy: Policy, column_types: dict[str, str], persons_unique: bool
) -> tuple[QuantileGrid | None, ...]:
    """Per aggregate, the grid of a median or quantile (None for other functions).

    Raises:
        PolicyDenied: a quantile on a dataset with several rows per person, or on a measure
            without bounds.
    """
    if not any(a.function in QUANTILES for a in spec.aggregates):
        return ()
    if not persons_unique:
        raise PolicyDenied(
            "medians and quantiles need a dataset with one row per person: over rows, one "
            "person with many rows could move them; ask for sums or means instead",
            rule_ids=(RULE_QUANTILE_ONE_ROW,),
        )
    grids: list[QuantileGrid | None] = []
    for agg in spec.aggregates:
        if agg.function not in QUANTILES:
            grids.append(None)
            continue
        col = policy.column(agg.column)
        if col is None or col.bounds is None:
            raise PolicyDenied(
                f"measure {agg.column} has no bounds, so it has no grid for a {agg.function}",
                rule_ids=(RULE_QUANTILE_BOUNDS,),
            )
        grids.append(quantile_grid(col.bounds, column_types[agg.column]))
    return tuple(grids)


def histogram_sql(value: str, grid: QuantileGrid, params: list[object]) -> str:
    """SQL for the map (interval index → rows) of ``value``, a clamped measure expression.

    ``value``'s own parameters must already be in ``params``; the grid's are appended.
    Missing values are not counted (DuckDB's ``histogram`` skips nulls).
    """
    params += [grid.lo, grid.step, grid.intervals - 1]
    index = f"least(greatest(CAST(floor(({value} - ?) / ?) AS BIGINT), 0), ?)"
    return f"histogram({index})"


def histogram_counts(value: object, grid: QuantileGrid) -> tuple[int, ...]:
    """Per-interval counts from an engine ``histogram`` map (None: no values)."""
    counts = [0] * grid.intervals
    if isinstance(value, dict):
        for index, n in value.items():
            counts[int(index)] += int(n)
    return tuple(counts)
