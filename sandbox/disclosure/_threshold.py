"""First layer of disclosure control: query-set size, cell thresholds, dominance, rounding.

Thresholds count distinct persons (the dataset's person key), never rows. Cells below the
threshold are kept in the table and marked suppressed; they are never silently dropped.

Dominance (the (n, k) rule and the p% rule, see ``_dominance``) is checked per measure: when a
measure's contributions in a cell fail a rule, every sum and mean of that measure in the row is
suppressed with the rule's id (they share the contributions, and a mean times a released count
gives the sum back). The row's counts and its other measures' cells are released as usual: they
tell nothing about how the failing measure splits over persons. A cell already suppressed for
too few persons keeps that rule.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

from sandbox._errors import DisclosureControl, PolicyDenied
from sandbox._model import (
    AggFunc,
    Cell,
    CellStatus,
    JobSpec,
    Key,
    ResultRow,
    ResultTable,
)
from sandbox.disclosure._dominance import (
    RULE_DOMINANCE,
    RULE_P_PERCENT,
    NeedsExactContributions,
    failed_rule,
    needed_top,
    screen_passes,
)
from sandbox.disclosure._margins import grid_keys, key_order, suppress_complements
from sandbox.disclosure._quantile import rule_quantile
from sandbox.disclosure._rules import RULE_MIN_PERSONS
from sandbox.engine import Contributions, KeySpace, RawCell, RawTable
from sandbox.policy import DominanceRule

RULE_QUERY_SET = "disclosure.query_set"
RULE_ROUNDING = "disclosure.rounding"
RULE_MAX_GROUPS = "limits.max_groups"
RULE_ZEROS = "disclosure.zeros_not_disclosive"


@dataclass(frozen=True)
class Settings:
    min_persons: int
    rounding_base: int
    max_groups: int
    zeros_disclosive: bool = True
    dominance: DominanceRule | None = None
    """The (n, k) rule on sums and means (None: off)."""
    p_percent: Fraction | None = None
    """The p% rule on sums and means (None: off)."""


def check_query_set(raw: RawTable, total_persons: int, min_persons: int) -> None:
    """Refuse a filter whose matching set or complement holds fewer than k persons.

    The refusal is identical whether the set holds 0 or k-1 persons, so it cannot tell
    whether a singled-out person exists.
    """
    if raw.query_set_persons is None:
        return
    matched = raw.query_set_persons
    if matched < min_persons or total_persons - matched < min_persons:
        raise DisclosureControl(
            f"the filters select too few persons, or leave too few outside them "
            f"(each side must hold at least {min_persons} persons)",
            rule_ids=(RULE_QUERY_SET,),
        )


def round_to_base(value: float, base: int) -> float:
    return float(base * int(value / base + (0.5 if value >= 0 else -0.5)))


def protect(
    raw: RawTable, spec: JobSpec, key_spaces: tuple[KeySpace, ...], settings: Settings
) -> ResultTable:
    """Apply thresholds and rounding; every public key combination appears as a row."""
    cells: dict[tuple[Key, ...], RawCell] = {c.keys: c for c in raw.cells}
    keys: list[tuple[Key, ...]]
    if spec.margins and key_spaces:
        keys = grid_keys([ks.labels for ks in key_spaces], cells)
    elif key_spaces and all(ks.labels is not None for ks in key_spaces):
        declared = list(itertools.product(*(ks.labels or () for ks in key_spaces)))
        extra = sorted((k for k in cells if k not in set(declared)), key=_sort_key)
        keys = declared + extra
    else:
        keys = sorted(cells, key=_sort_key)
    if not key_spaces:
        keys = [()]
    if len(keys) > settings.max_groups:
        raise PolicyDenied(
            f"the result would have more than {settings.max_groups} groups",
            rule_ids=(RULE_MAX_GROUPS,),
        )
    rows: list[ResultRow] = []
    empty = RawCell((), 0, tuple(None for _ in spec.aggregates))
    # Contributions reported for fewer contributors than the rules need cannot be checked,
    # except that the largest alone clears most cells (a screen, see ``screen_passes``).
    needed = needed_top(settings.dominance, settings.p_percent)
    checkable = raw.contribution_top >= needed
    screened = 0 < raw.contribution_top < needed
    for key in keys:
        cell = cells.get(key, empty)
        out: list[Cell] = []
        for j, (agg, value) in enumerate(zip(spec.aggregates, cell.values, strict=True)):
            released = _release(agg.function, value, cell.persons, settings)
            if agg.level is not None and released.status != CellStatus.SUPPRESSED and cell.persons:
                # A median or quantile: a grid point, or suppressed.
                hist = cell.histograms[j] if j < len(cell.histograms) else None
                grid = raw.quantile_grids[j] if j < len(raw.quantile_grids) else None
                released = rule_quantile(hist, grid, agg.level, settings.min_persons)
            if agg.function in _MAGNITUDE and released.status != CellStatus.SUPPRESSED:
                contributions = cell.contributions[j] if j < len(cell.contributions) else None
                given = contributions if checkable or screened else None
                rule = _dominance(cell.persons, given, settings, screened)
                if rule:
                    released = Cell(None, CellStatus.SUPPRESSED, rule)
            out.append(released)
        rows.append(ResultRow(keys=key, cells=tuple(out)))
    table = ResultTable(
        key_columns=spec.group_by,
        value_columns=tuple(a.name for a in spec.aggregates),
        rows=tuple(rows),
        settings={
            "min_persons_per_cell": settings.min_persons,
            "rounding_base": settings.rounding_base,
            "zeros_disclosive": int(settings.zeros_disclosive),
            **_rule_settings(settings),
        },
    )
    if spec.margins and key_spaces:
        persons = {k: c.persons for k, c in cells.items()}
        table = suppress_complements(table, persons, settings.min_persons)
    return table


_MAGNITUDE = (AggFunc.SUM, AggFunc.MEAN)


def _dominance(
    persons: int, contributions: Contributions | None, s: Settings, screened: bool = False
) -> str:
    """The dominance rule a magnitude cell fails, or "" (also when no rule is on).

    Raises:
        NeedsExactContributions: ``screened`` contributions (the largest only) do not clear it.
    """
    if (s.dominance is None and s.p_percent is None) or persons == 0:
        return ""  # no rule, or a structural zero: no one contributes
    if contributions is None:  # not computed for these rules: fail closed
        return RULE_DOMINANCE if s.dominance is not None else RULE_P_PERCENT
    if screened:
        largest = contributions.top[0] if contributions.top else 0
        if screen_passes(largest, contributions.total, s.dominance, s.p_percent):
            return ""
        raise NeedsExactContributions
    return failed_rule(contributions.top, contributions.total, s.dominance, s.p_percent)


def _rule_settings(s: Settings) -> dict[str, int]:
    """The dominance parameters, as whole numbers (k and p in percent), for the table header."""
    out: dict[str, int] = {}
    if s.dominance is not None:
        out["dominance_n"] = s.dominance.n
        out["dominance_k_percent"] = _percent(s.dominance.k)
    if s.p_percent is not None:
        out["p_percent"] = _percent(s.p_percent)
    return out


def _percent(share: Fraction) -> int:
    """A share in whole percent, rounded up (policies only hold whole percentages)."""
    return -(-share.numerator * 100 // share.denominator)


def _release(func: AggFunc, value: float | int | None, persons: int, s: Settings) -> Cell:
    if persons == 0 and not s.zeros_disclosive:
        # A structural zero: counts are 0, a sum over no one is 0, a mean has no value.
        zero = None if func in (AggFunc.MEAN, AggFunc.MEDIAN, AggFunc.QUANTILE) else 0.0
        return Cell(zero, CellStatus.RELEASED, RULE_ZEROS)
    if persons < s.min_persons:
        return Cell(None, CellStatus.SUPPRESSED, RULE_MIN_PERSONS)
    if value is None:
        return Cell(None, CellStatus.RELEASED)
    if func in (AggFunc.COUNT, AggFunc.COUNT_DISTINCT, AggFunc.SUM) and s.rounding_base > 1:
        return Cell(round_to_base(float(value), s.rounding_base), CellStatus.ROUNDED, RULE_ROUNDING)
    return Cell(float(value), CellStatus.RELEASED)


def _sort_key(key: tuple[Key, ...]) -> tuple[tuple[int, float, str], ...]:
    return tuple(key_order(k) for k in key)
