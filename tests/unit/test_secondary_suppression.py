"""Secondary suppression, attacked: solve for every suppressed cell from what is released.

The attackers here share no code with the module. They rebuild the margin equations from the
keys, then bound each primary cell by linear programming (scipy's HiGHS) and, for tiny tables,
by enumerating every integer table consistent with the release. The rule-aware attacker also
reads why each cell was suppressed: a primary cell ("disclosure.min_persons") holds 0..k-1
persons (1..k-1 when zeros are released), a complementary one ("disclosure.secondary") >= k.
"""

from __future__ import annotations

import itertools
import math
import pickle
import random
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from sandbox.disclosure._secondary import TOTAL, UnprotectableError, complementary_suppression

Key = tuple[object, ...]
Table = dict[Key, float]


# --- tables and attackers (independent of the module) ------------------------------------------


def crosstab(
    interior: Sequence[object] | np.ndarray,
    margins: Sequence[bool] | None = None,
    labels: Sequence[Sequence[object]] | None = None,
) -> Table:
    """A complete table: the interior cells plus every margin asked for, summed by numpy."""
    cells = np.asarray(interior, dtype=np.float64)
    margins = [True] * cells.ndim if margins is None else list(margins)
    labels = [list(range(n)) for n in cells.shape] if labels is None else labels
    levels = [[*lab, *([TOTAL] if m else [])] for lab, m in zip(labels, margins, strict=True)]
    table: Table = {}
    for key in itertools.product(*levels):
        where = tuple(
            slice(None) if c is TOTAL else list(lab).index(c)
            for c, lab in zip(key, labels, strict=True)
        )
        table[key] = float(np.sum(cells[where]))
    return table


def equations(values: Mapping[Key, float]) -> list[list[tuple[Key, float]]]:
    """Every margin equation as terms summing to zero: margin minus its cells."""
    ndim = len(next(iter(values)))
    categories = [{k[d] for k in values if k[d] is not TOTAL} for d in range(ndim)]
    out = []
    for key in values:
        for d, c in enumerate(key):
            if c is TOTAL:
                parts = [((*key[:d], x, *key[d + 1 :]), -1.0) for x in categories[d]]
                out.append([(key, 1.0), *parts])
    return out


def linear_system(
    values: Mapping[Key, float], hidden: Sequence[Key]
) -> tuple[np.ndarray, np.ndarray]:
    """A x = b over the hidden cells, with released cells moved to the right-hand side."""
    column = {k: i for i, k in enumerate(hidden)}
    rows, rhs = [], []
    for terms in equations(values):
        row, b = np.zeros(len(hidden)), 0.0
        for key, coef in terms:
            if key in column:
                row[column[key]] += coef
            else:
                b -= coef * values[key]
        if row.any():
            rows.append(row)
            rhs.append(b)
    return np.array(rows, dtype=float).reshape(len(rows), len(hidden)), np.array(rhs)


Bounds = tuple[float | None, float | None]


def attack(
    values: Mapping[Key, float],
    hidden: Collection[Key],
    targets: Iterable[Key],
    lower_bound: float | None,
    bounds: Mapping[Key, Bounds] | None = None,
) -> dict[Key, tuple[float, float]]:
    """The interval each target can take given every released cell, by linear programming.

    The lower bound holds for interior cells; margins get whatever their cells imply. `bounds`
    adds what the attacker knows of some hidden cells (from the rule that suppressed them).
    """
    order = sorted(hidden, key=repr)
    a, b = linear_system(values, order)
    eq = {"A_eq": a, "b_eq": b} if len(b) else {}
    box = [cell_bounds(k, lower_bound, bounds) for k in order]
    out = {}
    for target in targets:
        c = np.zeros(len(order))
        c[order.index(target)] = 1.0
        ends = []
        for sign in (1.0, -1.0):
            res = linprog(sign * c, bounds=box, method="highs", **eq)
            assert res.status in (0, 3), res.message  # the true table is always feasible
            ends.append(sign * res.fun if res.status == 0 else -sign * math.inf)
        out[target] = (ends[0], ends[1])
    return out


def cell_bounds(
    key: Key, lower_bound: float | None, bounds: Mapping[Key, Bounds] | None
) -> tuple[float | None, float | None]:
    """The box the attacker puts a hidden cell in: the lower bound and the cell's own rule."""
    low = None if TOTAL in key else lower_bound
    high = None
    if bounds and key in bounds:
        known_low, known_high = bounds[key]
        if known_low is not None:
            low = known_low if low is None else max(low, known_low)
        high = known_high
    return low, high


def rule_bounds(
    primary: Collection[Key],
    added: Collection[Key],
    known: Mapping[Key, Bounds] | None,
    complement_lower: float | None,
) -> dict[Key, Bounds]:
    """What the published rules say: primary cells lie in `known`, complements >= a bound."""
    out: dict[Key, Bounds] = {k: v for k, v in (known or {}).items() if k in primary}
    if complement_lower is not None:
        out.update({k: (complement_lower, None) for k in added})
    return out


def integer_values(
    values: Mapping[Key, float],
    hidden: Collection[Key],
    target: Key,
    box: int,
    lower: int = 0,
    bounds: Mapping[Key, Bounds] | None = None,
) -> set[int]:
    """Every value of target over integer tables consistent with the release, cells in a box.

    Depth-first search over the hidden cells; an equation with one unknown left fixes it.
    Every hidden cell, margins too, is searched in [lower, lower + box] and `bounds`.
    """
    order = sorted(hidden, key=repr)
    a, b = linear_system(values, order)
    rows = [(np.flatnonzero(row), row, rhs) for row, rhs in zip(a, b, strict=True)]
    limits = []
    for key in order:
        low, high = (bounds or {}).get(key, (None, None))
        limits.append(
            (
                lower if low is None else max(lower, math.ceil(low)),
                lower + box if high is None else min(lower + box, math.floor(high)),
            )
        )
    found: set[int] = set()

    def search(x: dict[int, int]) -> None:
        changed = True
        while changed:
            changed = False
            for terms, row, rhs in rows:
                unknown = [int(i) for i in terms if i not in x]
                rest = rhs - sum(row[i] * x[i] for i in terms if i in x)
                if not unknown and rest != 0:
                    return
                if len(unknown) == 1:
                    value = rest / row[unknown[0]]
                    low, high = limits[unknown[0]]
                    if value != round(value) or not low <= value <= high:
                        return
                    x[unknown[0]] = round(value)
                    changed = True
        if len(x) == len(order):
            found.add(x[order.index(target)])
            return
        free = next(i for i in range(len(order)) if i not in x)
        low, high = limits[free]
        for value in range(low, high + 1):
            search({**x, free: value})

    search({})
    return found


def required_width(
    values: Mapping[Key, float],
    cell: Key,
    protection: float,
    lower_bound: float | None,
    known: Mapping[Key, Bounds] | None,
) -> float:
    """min(protection, width of the cell's known interval clipped to what the lower bound says)."""
    low, high = (known or {}).get(cell, (None, None))
    floor = -math.inf if low is None else low
    if lower_bound is not None:
        summed = sum(
            all(c is TOTAL or c == k for c, k in zip(cell, key, strict=True))
            for key in values
            if TOTAL not in key
        )
        floor = max(floor, summed * lower_bound)
    return min(protection, max((math.inf if high is None else high) - floor, 0.0))


def assert_protected(
    values: Mapping[Key, float],
    primary: Collection[Key],
    added: Collection[Key],
    protection: float,
    lower_bound: float | None = 0.0,
    known: Mapping[Key, Bounds] | None = None,
    complement_lower: float | None = None,
) -> None:
    """The rule-aware attacker leaves every primary cell the width the module promises."""
    assert set(added) <= set(values)
    assert not set(added) & set(primary)
    if complement_lower is not None:
        assert all(values[k] >= complement_lower for k in added)  # the rule says the truth
    hidden = set(primary) | set(added)
    # No margin equation may hold exactly one hidden cell: it would be solved by subtraction.
    if protection > 0:
        for terms in equations(values):
            assert sum(k in hidden for k, _ in terms) != 1 or all(
                required_width(values, k, protection, lower_bound, known) == 0
                for k, _ in terms
                if k in primary
            ), terms
    bounds = rule_bounds(primary, added, known, complement_lower)
    scale = 1.0 + sum(abs(v) for v in values.values())
    for cell, (lo, hi) in attack(values, hidden, primary, lower_bound, bounds).items():
        assert lo <= values[cell] + 1e-7 * scale and values[cell] <= hi + 1e-7 * scale
        need = required_width(values, cell, protection, lower_bound, known)
        assert hi - lo >= need - 1e-7 * scale, (cell, lo, hi, need)


# --- the attack is real ------------------------------------------------------------------------

GRID = [[1, 7, 9], [8, 6, 5], [12, 4, 10]]


def test_attack_recovers_primary_cells_when_margins_are_released() -> None:
    table = crosstab(GRID)
    primary = {(0, 0), (1, TOTAL)}
    for cell, (lo, hi) in attack(table, primary, primary, 0.0).items():
        assert lo == pytest.approx(table[cell]) and hi == pytest.approx(table[cell])
    assert integer_values(table, primary, (0, 0), box=int(table[TOTAL, TOTAL])) == {1}


def test_attack_recovers_a_cell_of_a_one_dimensional_table() -> None:
    table = crosstab([2, 9, 7])
    assert attack(table, {(0,)}, [(0,)], 0.0) == {(0,): (pytest.approx(2), pytest.approx(2))}
    assert integer_values(table, {(0,)}, (0,), box=18) == {2}


def test_lower_bound_alone_can_pin_a_cell() -> None:
    # Suppressing a second cell is not enough when that cell sits at the lower bound: p + q = 3
    # with q >= 0 leaves p in [0, 3], narrower than 5.
    table = crosstab([3, 0, 4])
    (lo, hi) = attack(table, {(0,), (1,)}, [(0,)], 0.0)[(0,)]
    assert (lo, hi) == (pytest.approx(0), pytest.approx(3))


# --- protection on the shapes from the issue ---------------------------------------------------


def test_one_dimensional_table_with_total() -> None:
    table = crosstab([2, 9, 7, 30])
    added = complementary_suppression(table, {(0,)}, protection=5)
    assert added == {(2,)}  # the smallest cell that gives room both ways
    assert_protected(table, {(0,)}, added, 5)
    assert max(integer_values(table, {(0,), (2,)}, (0,), box=9)) >= 5


def test_single_cell_in_a_crosstab_gets_the_cheapest_rectangle() -> None:
    table = crosstab([[1, 40, 6, 50], [30, 60, 70, 80], [5, 90, 7, 99]])
    added = complementary_suppression(table, {(0, 0)}, protection=3)
    assert added == {(0, 2), (2, 0), (2, 2)}
    assert_protected(table, {(0, 0)}, added, 3)


def test_integer_attacker_agrees_on_a_tiny_crosstab() -> None:
    table = crosstab([[1, 4], [3, 5]])
    added = complementary_suppression(table, {(0, 0)}, protection=3)
    assert_protected(table, {(0, 0)}, added, 3)
    found = integer_values(table, {(0, 0)} | added, (0, 0), box=int(table[TOTAL, TOTAL]))
    assert max(found) - min(found) >= 3


def test_several_primary_cells_in_one_row_and_column() -> None:
    table = crosstab(
        [[1, 2, 3, 20, 25], [2, 30, 28, 26, 24], [40, 22, 21, 33, 35], [3, 9, 8, 7, 6]]
    )
    primary = {(0, 0), (0, 1), (0, 2), (1, 0), (3, 0)}
    added = complementary_suppression(table, primary, protection=4)
    assert_protected(table, primary, added, 4)
    assert not any(TOTAL in k for k in added)


def test_two_primary_cells_that_protect_each_other_need_nothing() -> None:
    table = crosstab([[5, 6, 30], [7, 8, 30]])
    primary = {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert complementary_suppression(table, primary, protection=5) == frozenset()
    assert_protected(table, primary, (), 5)


def test_primary_row_margin_and_grand_total() -> None:
    table = crosstab([[1, 2, 0], [10, 20, 30], [15, 5, 25], [9, 8, 7]])
    for primary in ({(0, TOTAL)}, {(TOTAL, TOTAL)}, {(0, TOTAL), (0, 1)}, {(TOTAL, 2)}):
        added = complementary_suppression(table, primary, protection=5)
        assert_protected(table, primary, added, 5)


def test_primary_zero_cells() -> None:
    table = crosstab([[0, 3, 12, 15], [0, 14, 0, 16], [11, 13, 17, 19]])
    primary = {(0, 0), (1, 0), (1, 2)}
    added = complementary_suppression(table, primary, protection=5)
    assert_protected(table, primary, added, 5)


def test_zero_cell_whose_row_is_all_zero_uses_row_margins_not_the_grand_total() -> None:
    # Every partner in p's row is at the lower bound, so p can only rise together with its
    # row total; a rectangle through the margins column does it without the grand total.
    table = crosstab([[0, 0, 0], [9, 30, 40], [8, 50, 60]])
    added = complementary_suppression(table, {(0, 0)}, protection=5)
    assert_protected(table, {(0, 0)}, added, 5)
    assert (0, TOTAL) in added
    assert (TOTAL, TOTAL) not in added


def test_complements_at_the_lower_bound_force_the_total() -> None:
    table = crosstab([1, 0, 0])
    added = complementary_suppression(table, {(0,)}, protection=3)
    assert added == {(TOTAL,)}
    assert_protected(table, {(0,)}, added, 3)
    assert max(integer_values(table, {(0,), (TOTAL,)}, (0,), box=10)) == 10


def test_single_category_means_the_margin_equals_the_cell() -> None:
    table = crosstab([[4], [9]], margins=[False, True])
    added = complementary_suppression(table, {(0, 0)}, protection=3)
    assert added == {(0, TOTAL)}
    assert_protected(table, {(0, 0)}, added, 3)


def test_magnitudes_without_a_lower_bound() -> None:
    table = crosstab([[-5.5, 12.25, 3.0], [7.0, -40.0, 2.5], [100.0, -0.5, 8.75]])
    primary = {(0, 0), (2, 1)}
    added = complementary_suppression(table, primary, lower_bound=None, protection=1000.0)
    assert_protected(table, primary, added, 1000.0, lower_bound=None)
    assert not any(TOTAL in k for k in added)
    for lo, hi in attack(table, primary | added, primary, None).values():
        assert (lo, hi) == (-math.inf, math.inf)


def test_magnitudes_with_a_negative_lower_bound() -> None:
    table = crosstab([[-3.0, 4.0, 10.0], [-1.0, 6.0, 2.0], [5.0, -2.0, 20.0]])
    added = complementary_suppression(table, {(0, 0)}, lower_bound=-3.0, protection=4.0)
    assert_protected(table, {(0, 0)}, added, 4.0, lower_bound=-3.0)


def test_three_dimensional_table() -> None:
    rng = np.random.default_rng(7)
    table = crosstab(rng.integers(0, 12, size=(3, 4, 2)))
    primary = {(0, 0, 0), (1, TOTAL, 1), (2, 3, TOTAL), (TOTAL, 1, 0)}
    added = complementary_suppression(table, primary, protection=4)
    assert_protected(table, primary, added, 4)


def test_partial_margins_and_labels() -> None:
    labels = [["north", "south", "east"], [2020, 2021, 2022, 2023]]
    table = crosstab([[3, 8, 9, 1], [6, 2, 7, 9], [5, 5, 5, 5]], [False, True], labels)
    primary = {("north", 2023), ("south", 2021)}
    added = complementary_suppression(table, primary, protection=4)
    assert_protected(table, primary, added, 4)
    assert {k[0] for k in added} <= {"north", "south"}  # rows are independent tables


def test_large_table_is_protected() -> None:
    rng = np.random.default_rng(3)
    cells = rng.integers(0, 40, size=(30, 30))
    table = crosstab(cells)
    primary = {(int(i), int(j)) for i, j in np.argwhere(cells < 4)}
    primary |= {(5, TOTAL), (TOTAL, 7)}
    added = complementary_suppression(table, primary, protection=5)
    assert_protected(table, primary, added, 5)
    assert len(added) < len(table) // 4


# --- the attacker reads the rules --------------------------------------------------------------


def small_cells(values: Mapping[Key, float], k: int, zeros_released: bool) -> set[Key]:
    """The cells a threshold of k persons suppresses (zeros stay released when they may be)."""
    return {key for key, v in values.items() if v < k and (v > 0 or not zeros_released)}


def threshold_knowledge(primary: Iterable[Key], k: int, zeros_released: bool) -> dict[Key, Bounds]:
    """What "fewer than k persons" says of each primary cell."""
    return {key: (1.0 if zeros_released else 0.0, k - 1.0) for key in primary}


def test_rule_aware_attacker_pins_a_zero_that_the_old_guarantee_left_open() -> None:
    k, table, primary = 3, crosstab([0, 3, 9, 14]), {(0,)}
    known = threshold_knowledge(primary, k, zeros_released=False)
    old = complementary_suppression(table, primary, protection=k)
    assert old == {(1,)}
    assert_protected(table, primary, old, k)  # the old guarantee holds: (0,) lies in [0, 3] ...
    hidden = primary | old
    rules = rule_bounds(primary, old, known, k)
    # ... but (0,) + (1,) = 3 with (1,) >= 3 leaves only 0.
    assert attack(table, hidden, primary, 0.0, rules)[(0,)] == (0, pytest.approx(0))
    assert integer_values(table, hidden, (0,), box=14, bounds=rules) == {0}
    with pytest.raises(AssertionError):
        assert_protected(table, primary, old, k, known=known, complement_lower=k)

    added = complementary_suppression(table, primary, protection=k, known=known, complement_lower=k)
    assert added == {(2,)}
    assert_protected(table, primary, added, k, known=known, complement_lower=k)
    rules = rule_bounds(primary, added, known, k)
    assert integer_values(table, primary | added, (0,), box=14, bounds=rules) == {0, 1, 2}


@pytest.mark.parametrize("complement_lower", [None, 3.0])
def test_primary_at_k_minus_one_with_only_upward_room(complement_lower: float | None) -> None:
    # The cheapest rectangle leaves (0, 0) in [2, 8]: it cannot go down, since (1, 1) is 0, and
    # "fewer than 3" cuts off everything above.
    k, table, primary = 3, crosstab([[2, 6, 9], [7, 0, 8], [10, 11, 12]]), {(0, 0)}
    known = threshold_knowledge(primary, k, zeros_released=False)
    old = complementary_suppression(table, primary, protection=k)
    assert old == {(0, 1), (1, 0), (1, 1)}
    assert attack(table, primary | old, primary, 0.0)[(0, 0)] == (2, 8)
    assert attack(table, primary | old, primary, 0.0, known)[(0, 0)] == (2, 2)

    added = complementary_suppression(
        table, primary, protection=k, known=known, complement_lower=complement_lower
    )
    assert_protected(table, primary, added, k, known=known, complement_lower=complement_lower)
    rules = rule_bounds(primary, added, known, complement_lower)
    assert attack(table, primary | added, primary, 0.0, rules)[(0, 0)] == (0, 2)
    found = integer_values(
        table, primary | added, (0, 0), box=int(table[TOTAL, TOTAL]), bounds=rules
    )
    assert found == {0, 1, 2}


def test_two_primary_cells_pinned_by_the_old_pattern() -> None:
    k, table = 3, crosstab([[2, 6, 9], [7, 0, 8], [10, 11, 12]])
    primary = {(0, 0), (1, 1)}
    known = threshold_knowledge(primary, k, zeros_released=False)
    old = complementary_suppression(table, primary, protection=k)
    rules = rule_bounds(primary, old, known, k)
    assert attack(table, primary | old, primary, 0.0, rules) == {(0, 0): (2, 2), (1, 1): (0, 0)}
    added = complementary_suppression(table, primary, protection=k, known=known, complement_lower=k)
    assert_protected(table, primary, added, k, known=known, complement_lower=k)


@pytest.mark.parametrize(
    ("cells", "complement", "interval"),
    [
        ([0, 3, 4, 30], (3,), (0, 2)),  # 3 and 4 leave 0 and [0, 1]: only the total will do
        ([0, 3, 5, 30], (2,), (0, 2)),  # 2k - 1 is the least that lets 0 rise to k - 1
        ([2, 3, 20, 30], (1,), (0, 2)),  # k - 1 need not rise, and falls as 3 rises: k will do
        ([1, 3, 20, 30], (2,), (0, 2)),  # 3 would leave [0, 1]
    ],
)
def test_complementary_cells_near_k(cells: list[int], complement: Key, interval: Bounds) -> None:
    k, table, primary = 3, crosstab(cells), {(0,)}
    known = threshold_knowledge(primary, k, zeros_released=False)
    added = complementary_suppression(table, primary, protection=k, known=known, complement_lower=k)
    assert added == {complement}
    assert_protected(table, primary, added, k, known=known, complement_lower=k)
    rules = rule_bounds(primary, added, known, k)
    assert attack(table, primary | added, primary, 0.0, rules)[(0,)] == interval


def test_old_pattern_leaves_less_than_the_known_interval() -> None:
    # (0,) + (1,) = 4 with (1,) >= 3: not pinned, but 2 is ruled out.
    k, table, primary = 3, crosstab([1, 3, 20, 30]), {(0,)}
    old = complementary_suppression(table, primary, protection=k)
    assert old == {(1,)}
    known = threshold_knowledge(primary, k, zeros_released=False)
    rules = rule_bounds(primary, old, known, k)
    assert attack(table, primary | old, primary, 0.0, rules)[(0,)] == (0, 1)


def test_released_zeros_are_never_complements() -> None:
    k, table = 3, crosstab([[6, 7, 0], [0, 4, 4], [0, 2, 8]])
    primary = small_cells(table, k, zeros_released=True)
    assert primary == {(2, 1)}
    old = complementary_suppression(table, primary, protection=k)
    assert (0, 2) in old  # a zero: labelled "secondary", it would claim >= 3 persons
    known = threshold_knowledge(primary, k, zeros_released=True)
    added = complementary_suppression(table, primary, protection=k, known=known, complement_lower=k)
    assert added == {(1, 1), (1, 2), (2, 2)}
    assert_protected(table, primary, added, k, known=known, complement_lower=k)


@pytest.mark.parametrize(
    ("cells", "protection", "interval"),
    [
        # Every primary cell, row totals too, can take any value in [1, 4].
        ([[3, 0, 0], [9, 8, 7], [6, 5, 12], [0, 2, 0]], 5, (1, 4)),
        # Row 0 sums two cells of at least 1, so its total lies in [2, 4]; 2 wide is enough.
        ([[1, 3, 0], [9, 8, 7], [6, 5, 12], [2, 0, 0]], 2, (2, 4)),
    ],
)
def test_primary_margins_with_known_intervals(
    cells: list[list[int]], protection: int, interval: tuple[int, int]
) -> None:
    k, table = 5, crosstab(cells)
    primary = small_cells(table, k, zeros_released=True)
    assert {(0, TOTAL), (3, TOTAL)} <= primary
    known = threshold_knowledge(primary, k, zeros_released=True)
    added = complementary_suppression(
        table, primary, protection=protection, known=known, complement_lower=k
    )
    assert_protected(table, primary, added, protection, known=known, complement_lower=k)
    rules = rule_bounds(primary, added, known, k)
    assert attack(table, primary | added, [(0, TOTAL)], 0.0, rules)[(0, TOTAL)] == interval


def test_a_known_interval_of_one_value_needs_nothing() -> None:
    table = crosstab([2, 9, 7, 30])
    assert complementary_suppression(table, {(0,)}, protection=5, known={(0,): (2, 2)}) == set()


def test_a_known_interval_narrower_than_protection_is_all_that_is_asked() -> None:
    table = crosstab([2, 9, 7, 30])
    added = complementary_suppression(table, {(0,)}, protection=50, known={(0,): (0, 4)})
    assert added == {(2,)}  # p in [0, 4] needs only room 2 down and 2 up
    assert_protected(table, {(0,)}, added, 50, known={(0,): (0, 4)})


@pytest.mark.parametrize(
    ("cells", "k", "zeros_released"),
    [
        # Two cells of at least 1 under a row total of at most 2: both are 1.
        ([[1, 1, 0], [9, 8, 7], [6, 5, 12]], 3, True),
        # Two cells of at most 1 under a row total of at least 2 (it is not primary): both are 1.
        ([[1, 1], [7, 8]], 2, False),
    ],
)
def test_a_table_the_rules_give_away_cannot_be_released(
    cells: list[list[int]], k: int, zeros_released: bool
) -> None:
    table = crosstab(cells)
    primary = small_cells(table, k, zeros_released)
    known = threshold_knowledge(primary, k, zeros_released)
    with pytest.raises(UnprotectableError, match="no suppression pattern"):
        complementary_suppression(table, primary, protection=k, known=known, complement_lower=k)
    # Even with every cell that may be a complement suppressed, (0, 0) is pinned.
    every = {c for c, v in table.items() if v >= k} - primary
    rules = rule_bounds(primary, every, known, k)
    assert attack(table, primary | every, [(0, 0)], 0.0, rules) == {(0, 0): (1, 1)}


@pytest.mark.parametrize(
    "cells", [[[0, 0, 0], [5, 0, 0]], [[[0, 0, 1], [0, 0, 0]], [[2, 0, 0], [0, 0, 0]]]]
)
def test_a_table_that_is_all_primary_is_proved_by_moving_cells_out_of_the_way(
    cells: list[object],
) -> None:
    # The grand total is below k, so every cell is primary and each must be able to reach
    # k - 1, which needs the other cells to make way under the grand total's known maximum.
    k, table = 10, crosstab(cells)
    primary = small_cells(table, k, zeros_released=False)
    assert primary == set(table)
    known = threshold_knowledge(primary, k, zeros_released=False)
    assert complementary_suppression(table, primary, protection=k, known=known) == set()
    rules = rule_bounds(primary, (), known, None)
    assert set(attack(table, primary, primary, 0.0, rules).values()) == {(0, 9)}


@pytest.mark.parametrize(
    ("cells", "primary", "k", "protection", "complement_lower"),
    [
        (
            [[0, 0], [1, 6], [0, 0]],
            {(1, TOTAL), (2, 0), (2, TOTAL), (TOTAL, 1), (TOTAL, TOTAL)},
            8,
            6,
            None,
        ),
        (
            [[0, 4, 0], [0, 1, 5], [0, 0, 13]],
            {(0, 0), (0, 1), (0, 2), (0, TOTAL), (1, 0), (1, 1), (2, 0), (2, 1), (TOTAL, 0)},
            5,
            3,
            5.0,
        ),
    ],
)
def test_every_cell_that_may_be_a_complement_when_no_cheaper_pattern_is_proved(
    cells: list[list[int]],
    primary: set[Key],
    k: int,
    protection: int,
    complement_lower: float | None,
) -> None:
    table = crosstab(cells)
    known = threshold_knowledge(primary, k, zeros_released=False)
    added = complementary_suppression(
        table, primary, protection=protection, known=known, complement_lower=complement_lower
    )
    eligible = {c for c, v in table.items() if complement_lower is None or v >= complement_lower}
    assert added == eligible - primary
    assert_protected(table, primary, added, protection, 0.0, known, complement_lower)


def test_without_rule_knowledge_the_result_is_unchanged() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        cells = rng.integers(0, 12, size=(4, 5))
        table = crosstab(cells)
        primary = small_cells(table, 4, zeros_released=False)
        expected = complementary_suppression(table, primary, protection=4)
        unbounded = dict.fromkeys(primary, (None, None))
        for known in (None, {}, unbounded):
            assert (
                complementary_suppression(
                    table, primary, protection=4, known=known, complement_lower=None
                )
                == expected
            )


def test_known_intervals_for_magnitudes() -> None:
    table = crosstab([[-5.5, 12.25, 3.0], [7.0, -40.0, 2.5], [100.0, -0.5, 8.75]])
    primary = {(0, 0), (2, 1)}
    known = {(0, 0): (-10.0, 10.0), (2, 1): (-0.5, None)}
    added = complementary_suppression(table, primary, lower_bound=None, protection=30, known=known)
    assert_protected(table, primary, added, 30, lower_bound=None, known=known)
    rules = rule_bounds(primary, added, known, None)
    bounds = attack(table, primary | added, primary, None, rules)
    assert bounds[(0, 0)] == (pytest.approx(-10), pytest.approx(10))
    assert bounds[(2, 1)][0] == pytest.approx(-0.5) and bounds[(2, 1)][1] >= 29.5


@pytest.mark.parametrize(("k", "zeros_released"), [(4, False), (4, True), (10, False)])
def test_large_table_is_protected_against_the_rule_aware_attacker(
    k: int, zeros_released: bool
) -> None:
    rng = np.random.default_rng(3)
    table = crosstab(rng.integers(0, 40, size=(30, 30)))
    primary = small_cells(table, k, zeros_released)
    known = threshold_knowledge(primary, k, zeros_released)
    primary |= {(5, TOTAL), (TOTAL, 7)}  # suppressed by another rule, known only to be >= 0
    added = complementary_suppression(table, primary, protection=k, known=known, complement_lower=k)
    assert_protected(table, primary, added, k, known=known, complement_lower=k)
    assert len(added) < len(table) // 10


def test_same_rule_knowledge_in_any_order_gives_the_same_cells() -> None:
    k, table = 4, crosstab([[1, 7, 9, 2], [8, 6, 5, 3], [12, 4, 10, 2], [3, 3, 3, 3]])
    primary = sorted(small_cells(table, k, zeros_released=False), key=repr)
    known = threshold_knowledge(primary, k, zeros_released=False)
    expected = complementary_suppression(
        table, primary, protection=k, known=known, complement_lower=k
    )
    assert expected
    shuffler = random.Random(2)
    for _ in range(10):
        items, bounds = list(table.items()), list(known.items())
        shuffler.shuffle(items)
        shuffler.shuffle(primary)
        shuffler.shuffle(bounds)
        again = complementary_suppression(
            dict(items), primary, protection=k, known=dict(bounds), complement_lower=k
        )
        assert again == expected


@pytest.mark.parametrize(
    ("known", "complement_lower", "message"),
    [
        ({(1,): (0.0, 2.0)}, None, "not a primary cell"),
        ({(7,): (0.0, 2.0)}, None, "not in the table"),
        ({(0,): (2.0, 3.0)}, None, "not within its known interval"),
        ({(0,): (0.0, 0.5)}, None, "not within its known interval"),
        ({(0,): (1.0, 0.0)}, None, "not within its known interval"),
        ({(0,): (0.0, math.inf)}, None, "finite ends"),
        ({(0,): (math.nan, None)}, None, "finite ends"),
        ({}, math.inf, "complement_lower"),
    ],
)
def test_rejects_bad_rule_knowledge(
    known: dict[Key, Bounds], complement_lower: float | None, message: str
) -> None:
    table = crosstab([1, 9, 7])
    with pytest.raises(ValueError, match=message):
        complementary_suppression(
            table, {(0,)}, protection=3, known=known, complement_lower=complement_lower
        )
    with pytest.raises(ValueError, match="not in the"):
        complementary_suppression({}, (), protection=3, known={(0,): (0.0, 1.0)})


# --- nothing to do, determinism, bad input ------------------------------------------------------


def test_nothing_suppressed_adds_nothing() -> None:
    table = crosstab(GRID)
    assert complementary_suppression(table, (), protection=5) == frozenset()
    assert complementary_suppression(table, {(0, 0)}, protection=0) == frozenset()
    assert complementary_suppression({}, (), protection=5) == frozenset()


def test_table_without_margins_needs_no_complements() -> None:
    table = crosstab(GRID, margins=[False, False])
    assert complementary_suppression(table, {(0, 0), (2, 1)}, protection=5) == frozenset()


def test_same_input_in_any_order_gives_the_same_cells() -> None:
    table = crosstab([[1, 7, 9, 2], [8, 6, 5, 3], [12, 4, 10, 2], [3, 3, 3, 3]])
    primary = [(0, 0), (3, 1), (1, TOTAL)]
    expected = complementary_suppression(table, primary, protection=4)
    shuffler = random.Random(1)
    for _ in range(10):
        items = list(table.items())
        shuffler.shuffle(items)
        shuffler.shuffle(primary)
        assert complementary_suppression(dict(items), primary, protection=4) == expected


def test_total_sentinel() -> None:
    assert repr(TOTAL) == "TOTAL"
    assert pickle.loads(pickle.dumps(TOTAL)) is TOTAL
    assert TOTAL != "TOTAL"


@pytest.mark.parametrize(
    ("values", "primary", "protection", "message"),
    [
        ({(0,): 1.0, (1,): 2.0, (TOTAL,): 4.0}, [(0,)], 3.0, "does not add up"),
        ({(0, 0): 1.0, (0, 1): 2.0, (1, 0): 3.0}, [(0, 0)], 3.0, "every combination"),
        ({(0,): 1.0, (TOTAL,): 1.0}, [(5,)], 3.0, "not in the table"),
        ({(0,): -1.0, (TOTAL,): -1.0}, [(0,)], 3.0, "below lower_bound"),
        ({(0,): 1.0, (0, 1): 1.0}, [(0,)], 3.0, "same number"),
        ({(0,): math.nan, (TOTAL,): 1.0}, [(0,)], 3.0, "finite"),
        ({(0,): 1.0, (TOTAL,): 1.0}, [(0,)], -1.0, "protection"),
        ({(0,): 1.0, (TOTAL,): 1.0}, [(0,)], math.inf, "protection"),
    ],
)
def test_rejects_bad_input(
    values: Table, primary: list[Key], protection: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        complementary_suppression(values, primary, protection=protection)


# --- random tables, attacked -------------------------------------------------------------------


@st.composite
def tables(draw: st.DrawFn, low: int = 0, high: int = 20) -> tuple[Table, set[Key]]:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    margins = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    size = math.prod(shape)
    cells = draw(st.lists(st.integers(low, high), min_size=size, max_size=size))
    table = crosstab(np.reshape(cells, shape), margins)
    primary = draw(st.sets(st.sampled_from(sorted(table, key=repr)), max_size=6))
    return table, primary


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.integers(1, 12))
def test_random_count_tables_resist_the_attack(
    case: tuple[Table, set[Key]], protection: int
) -> None:
    table, primary = case
    added = complementary_suppression(table, primary, protection=protection)
    assert_protected(table, primary, added, protection)
    items = sorted(table.items(), key=repr, reverse=True)
    again = complementary_suppression(dict(items), sorted(primary, key=repr), protection=protection)
    assert again == added


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(low=-50, high=50), st.integers(1, 100))
def test_random_magnitude_tables_without_lower_bound(
    case: tuple[Table, set[Key]], protection: int
) -> None:
    table, primary = case
    added = complementary_suppression(table, primary, lower_bound=None, protection=protection)
    assert_protected(table, primary, added, protection, lower_bound=None)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=2, max_size=3),
    st.lists(st.integers(0, 6), min_size=2, max_size=3),
    st.integers(1, 5),
    st.data(),
)
def test_random_tiny_tables_resist_integer_enumeration(
    row0: list[int], row1: list[int], protection: int, data: st.DataObject
) -> None:
    width = min(len(row0), len(row1))
    table = crosstab([row0[:width], row1[:width]])
    target = data.draw(st.sampled_from(sorted(table, key=repr)))
    added = complementary_suppression(table, {target}, protection=protection)
    # Walking the target by `protection` moves no cell by more, so this box holds the witnesses.
    box = int(table[TOTAL, TOTAL]) + protection
    found = integer_values(table, {target} | added, target, box=box)
    assert int(table[target]) in found
    assert max(found) - min(found) >= protection


@st.composite
def thresholded(draw: st.DrawFn) -> tuple[Table, set[Key], int, bool]:
    """A count table, k, and primary cells all below k (all of them, or some)."""
    k = draw(st.integers(3, 10))
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    margins = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    size = math.prod(shape)
    cells = draw(
        st.lists(st.one_of(st.just(0), st.integers(0, 3 * k)), min_size=size, max_size=size)
    )
    table = crosstab(np.reshape(cells, shape), margins)
    zeros_released = draw(st.booleans())
    small = sorted(small_cells(table, k, zeros_released), key=repr)
    if draw(st.booleans()):
        primary = set(small)
    else:
        primary = draw(st.sets(st.sampled_from(small), max_size=6)) if small else set()
    return table, primary, k, zeros_released


def assert_unprotectable(
    values: Table,
    primary: set[Key],
    protection: float,
    known: Mapping[Key, Bounds],
    complement_lower: float | None,
) -> None:
    """Even with every possible complement suppressed, some primary cell is too narrow."""
    every = {c for c, v in values.items() if complement_lower is None or v >= complement_lower}
    every -= primary
    rules = rule_bounds(primary, every, known, complement_lower)
    narrow = [
        cell
        for cell, (lo, hi) in attack(values, primary | every, primary, 0.0, rules).items()
        if hi - lo < required_width(values, cell, protection, 0.0, known) - 1e-7
    ]
    assert narrow


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(thresholded(), st.integers(1, 12), st.sampled_from(["both", "known", "complement"]))
def test_random_count_tables_resist_the_rule_aware_attack(
    case: tuple[Table, set[Key], int, bool], protection: int, rules: str
) -> None:
    table, primary, k, zeros_released = case
    known = threshold_knowledge(primary, k, zeros_released) if rules != "complement" else {}
    complement_lower = float(k) if rules != "known" else None
    try:
        added = complementary_suppression(
            table, primary, protection=protection, known=known, complement_lower=complement_lower
        )
    except UnprotectableError:
        assert_unprotectable(table, primary, protection, known, complement_lower)
        return
    assert_protected(table, primary, added, protection, 0.0, known, complement_lower)
    items = sorted(table.items(), key=repr, reverse=True)
    again = complementary_suppression(
        dict(items),
        sorted(primary, key=repr),
        protection=protection,
        known=dict(reversed(known.items())),
        complement_lower=complement_lower,
    )
    assert again == added


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 8), min_size=2, max_size=3),
    st.lists(st.integers(0, 8), min_size=2, max_size=3),
    st.integers(3, 4),
    st.integers(1, 4),
    st.booleans(),
    st.data(),
)
def test_random_tiny_tables_resist_rule_aware_integer_enumeration(
    row0: list[int],
    row1: list[int],
    k: int,
    protection: int,
    zeros_released: bool,
    data: st.DataObject,
) -> None:
    width = min(len(row0), len(row1))
    table = crosstab([row0[:width], row1[:width]])
    small = sorted(small_cells(table, k, zeros_released), key=repr)
    if not small:
        return
    target = data.draw(st.sampled_from(small))
    primary = {target} | data.draw(st.sets(st.sampled_from(small), max_size=2))
    known = threshold_knowledge(primary, k, zeros_released)
    try:
        added = complementary_suppression(
            table, primary, protection=protection, known=known, complement_lower=k
        )
    except UnprotectableError:
        assert_unprotectable(table, primary, protection, known, k)
        return
    # A witness moves p by at most k - 1 and no cell by more, so this box holds the witnesses.
    box = int(table[TOTAL, TOTAL]) + k
    rules = rule_bounds(primary, added, known, k)
    found = integer_values(table, primary | added, target, box=box, bounds=rules)
    assert int(table[target]) in found
    need = required_width(table, target, protection, 0.0, known)
    assert max(found) - min(found) >= need
    if need >= 1:
        assert len(found) >= 2
