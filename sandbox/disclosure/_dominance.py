"""Dominance rules on magnitude cells (sums and means): the (n, k) rule and the p% rule.

A cell's contributions are per person: each person's rows are summed first (after clamping to the
policy bounds, like the released sum), then taken in absolute value, so that neither spreading a
value over several rows nor offsetting it with negative values hides a large contributor.

Comparisons are exact: every number becomes a fraction (a float is an exact binary fraction) and
``k`` and ``p`` are the policy's exact decimals. At the boundary a cell passes: the (n, k) rule
fails only above ``k``, the p% rule only below ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from fractions import Fraction

from sandbox.policy import DominanceRule

RULE_DOMINANCE = "disclosure.dominance"
RULE_P_PERCENT = "disclosure.p_percent"

Number = int | float | Fraction


def person_contributions(rows: Iterable[tuple[Hashable, Number | None]]) -> list[Fraction]:
    """Each person's absolute contribution: the sum of their rows' values, then ``abs``.

    Args:
        rows: ``(person, value)`` pairs; a missing value (None) adds nothing.

    Returns:
        One contribution per person that has a value, largest first.
    """
    totals: dict[Hashable, Fraction] = {}
    for person, value in rows:
        if value is not None:
            totals[person] = totals.get(person, Fraction(0)) + Fraction(value)
    return sorted((abs(t) for t in totals.values()), reverse=True)


def needed_top(dominance: DominanceRule | None, p_percent: Fraction | None) -> int:
    """How many of the largest contributions the rules look at (0: no rule is on)."""
    top = dominance.n if dominance is not None else 0
    return max(top, 2) if p_percent is not None else top


def nk_fails(top: Sequence[Number], total: Number, n: int, k: Fraction) -> bool:
    """The (n, k) rule: do the ``n`` largest contributions hold more than ``k`` of the total?

    Args:
        top: the largest absolute contributions, in any order (at least the ``n`` largest).
        total: the sum of all absolute contributions in the cell.
        n: how many of the largest are taken together.
        k: the share of the total they may hold.
    """
    largest = _largest(top, n)
    return sum(largest, Fraction(0)) > k * Fraction(total)


def p_percent_fails(top: Sequence[Number], total: Number, p: Fraction) -> bool:
    """The p% rule: could the second-largest contributor estimate the largest within ``p``?

    With ``x1 >= x2`` the two largest contributions, the second-largest knows the cell total and
    their own value, so knows ``x1`` up to the rest ``total - x1 - x2``; the cell fails if that
    rest is below ``p * x1``.
    """
    x1, x2 = (*_largest(top, 2), Fraction(0), Fraction(0))[:2]
    return Fraction(total) - x1 - x2 < p * x1


class NeedsExactContributions(Exception):
    """A cell's largest contribution alone cannot clear it: compute its largest ``n`` exactly."""


def screen_passes(
    largest: Number, total: Number, dominance: DominanceRule | None, p_percent: Fraction | None
) -> bool:
    """Whether a cell passes every rule on, knowing only its largest contribution ``x1``.

    The ``n`` largest hold at most ``n * x1``, so the (n, k) rule passes if that is at most
    ``k * total``; the rest beyond the two largest is at least ``total - 2 * x1``, so the p% rule
    passes if that is at least ``p * x1``. Otherwise the exact largest contributions decide.
    """
    if not (math.isfinite(largest) and math.isfinite(total)):
        return False
    x1, whole = abs(Fraction(largest)), Fraction(total)
    if dominance is not None and dominance.n * x1 > dominance.k * whole:
        return False
    return p_percent is None or whole - 2 * x1 >= p_percent * x1


def failed_rule(
    top: Sequence[Number],
    total: Number,
    dominance: DominanceRule | None,
    p_percent: Fraction | None,
) -> str:
    """The id of the first rule a cell's contributions fail, or "" if they pass every rule on.

    A contribution that is not a finite number cannot be checked, so the cell fails.
    """
    if not all(math.isfinite(v) for v in (*top, total)):
        return RULE_DOMINANCE if dominance is not None else RULE_P_PERCENT
    if dominance is not None and nk_fails(top, total, dominance.n, dominance.k):
        return RULE_DOMINANCE
    if p_percent is not None and p_percent_fails(top, total, p_percent):
        return RULE_P_PERCENT
    return ""


def _largest(values: Sequence[Number], n: int) -> list[Fraction]:
    return sorted((abs(Fraction(v)) for v in values), reverse=True)[:n]
