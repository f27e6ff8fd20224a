"""Medians and quantiles: a point of a public grid, chosen from per-interval person counts.

The engine reports, per cell, how many persons have their (clamped) value in each interval of
the measure's public grid (``sandbox.engine.QuantileGrid``). What is released is always an
interval's midpoint, a number fixed by the policy, never a person's value.

Rule-based mode: the interval holding the q-quantile (the first whose cumulative count reaches
``q * n``, n the persons with a value) is released only if at least k persons lie strictly below
it and at least k strictly above it; otherwise the cell is suppressed (``disclosure.quantile``).
Rounding does not apply (the value is already a grid point) and neither do the dominance rules
(no sum: no one person's share to protect).

Differential privacy mode: the exponential mechanism over the grid, as OpenDP's
``make_private_quantile`` does it. Each person's value is first replaced by its interval's
midpoint (a row-by-row map: one person still changes one row). Over those points the candidates
are the midpoints, and each gets OpenDP's score (``make_quantile_score_candidates``):
``|(den - num) * #(x < c) - num * #(x > c)|`` for q = num/den, which one person added or
removed changes by at most ``max(num, den - num)`` (its L-infinity sensitivity). OpenDP's
``make_noisy_max`` then picks the smallest noisy score, its scale calibrated against the
measurement's own privacy map.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from fractions import Fraction

import opendp.prelude as dp
from opendp.mod import Measurement

from sandbox._model import QUANTILES, Aggregate, Cell, CellStatus, JobSpec
from sandbox.engine import QuantileGrid, RawCell

dp.enable_features("contrib")

RULE_QUANTILE = "disclosure.quantile"
RULE_NOISE = "disclosure.dp"
_MAX_NUDGES = 64


def quantile_interval(counts: Sequence[int], q: Fraction) -> int | None:
    """The interval holding the q-quantile: the first whose cumulative count is >= q * n.

    None when no one has a value (n = 0).
    """
    n = sum(counts)
    if n == 0:
        return None
    below = 0
    for i, c in enumerate(counts):
        below += c
        if below * q.denominator >= q.numerator * n:
            return i
    return len(counts) - 1  # not reached: the last cumulative count is n


def rule_quantile(
    counts: Sequence[int] | None, grid: QuantileGrid | None, q: Fraction, min_persons: int
) -> Cell:
    """A quantile cell in rule-based mode: the interval midpoint, or suppressed.

    Released only if at least ``min_persons`` persons lie strictly below the interval and as
    many strictly above it, so the value says no more than "k persons on either side".
    """
    i = quantile_interval(counts, q) if counts is not None and grid is not None else None
    if i is None or grid is None or counts is None:
        return Cell(None, CellStatus.SUPPRESSED, RULE_QUANTILE)
    below, above = sum(counts[:i]), sum(counts[i + 1 :])
    if below < min_persons or above < min_persons:
        return Cell(None, CellStatus.SUPPRESSED, RULE_QUANTILE)
    return Cell(grid.midpoint(i), CellStatus.RELEASED)


def quantile_scores(counts: Sequence[int], q: Fraction) -> list[int]:
    """OpenDP's quantile scores of the interval midpoints (lower is better).

    With every value moved to its interval's midpoint, the candidate of interval i has
    ``#(x < c) = counts[:i]`` and ``#(x > c) = counts[i+1:]``; its score is
    ``|(den - num) * #(x < c) - num * #(x > c)|`` (``score_candidates`` in OpenDP 0.16).
    """
    num, den = q.numerator, q.denominator
    n = sum(counts)
    scores: list[int] = []
    below = 0
    for c in counts:
        above = n - below - c
        scores.append(abs((den - num) * below - num * above))
        below += c
    return scores


def score_sensitivity(q: Fraction) -> int:
    """How much one person added or removed can change any score (OpenDP's stability map)."""
    return max(q.numerator, q.denominator - q.numerator)


def quantile_parts(spec: JobSpec) -> int:
    """Measurements the job's quantiles take from its ε in DP mode: one per quantile."""
    return sum(a.function in QUANTILES for a in spec.aggregates)


def noisy_min_index(scores: Sequence[int], sensitivity: int, epsilon: Fraction) -> int:
    """The index of the smallest score after OpenDP's noisy max (ε-DP at this sensitivity)."""
    return int(_selector(sensitivity, epsilon)([int(s) for s in scores]))


@functools.lru_cache(maxsize=64)
def _selector(sensitivity: int, epsilon: Fraction) -> Measurement:
    """``make_noisy_max`` (negated) whose privacy map gives at most ε at ``sensitivity``.

    The scores are not monotonic in the data (one person raises some and lowers others), so
    the map charges ``2 * sensitivity / scale``; the scale starts there and is nudged up until
    OpenDP's own map agrees exactly.
    """
    if epsilon <= 0 or sensitivity < 1:
        raise ValueError("epsilon and sensitivity must be positive")
    space = dp.vector_domain(dp.atom_domain(T="u64")), dp.linf_distance(T="u64")
    scale = float(2 * sensitivity / epsilon)
    for _ in range(_MAX_NUDGES):
        meas = dp.m.make_noisy_max(*space, dp.max_divergence(), scale=scale, negate=True)
        spent = meas.map(sensitivity)  # type: ignore[no-untyped-call]
        if Fraction(float(spent)) <= epsilon:
            return meas
        scale = math.nextafter(scale, math.inf)
    raise ValueError("could not calibrate the quantile selection to the budget")


def noised_quantiles(
    present: Sequence[RawCell | None],
    spec: JobSpec,
    grids: Sequence[QuantileGrid | None],
    epsilon: Fraction,
) -> dict[Aggregate, list[Cell]]:
    """Per quantile aggregate, the DP cell of every key (one selection of ε per cell).

    Cells partition the persons (one row per person), so each aggregate costs ε once for the
    whole table. A key absent from the data has all counts 0 and is selected like any other.
    """
    out: dict[Aggregate, list[Cell]] = {}
    for j, agg in enumerate(spec.aggregates):
        q = agg.level
        if q is None:
            continue
        grid = grids[j] if j < len(grids) else None
        if grid is None:
            raise ValueError("a quantile needs its grid from the engine")
        cells: list[Cell] = []
        for raw in present:
            hist = raw.histograms[j] if raw is not None and j < len(raw.histograms) else None
            counts = hist if hist is not None else (0,) * grid.intervals
            i = noisy_min_index(quantile_scores(counts, q), score_sensitivity(q), epsilon)
            cells.append(Cell(grid.midpoint(i), CellStatus.NOISED, RULE_NOISE, None))
        out[agg] = cells
    return out
