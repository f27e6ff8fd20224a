"""Crosstabs with margins: the complete grid of keys, and secondary suppression over it.

A margin row (some keys ``TOTAL``) sums the rows it covers, so a suppressed cell could be
recovered by subtracting the released cells of its line from the released margin. After primary
suppression (thresholds, zeros, dominance), ``suppress_complements`` suppresses whole rows more
(rule ``disclosure.secondary``) until no primary-suppressed row can be solved for from what is
released, the table's sums and non-negative counts (``sandbox.disclosure._secondary``).

The pattern is computed on person counts, which add up over cells when each person has one row
(margins need such a dataset); every aggregate of a row follows its row's status.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence

from sandbox._model import TOTAL, Cell, CellStatus, Key, ResultTable
from sandbox.disclosure import _secondary
from sandbox.disclosure._dominance import RULE_DOMINANCE, RULE_P_PERCENT
from sandbox.disclosure._quantile import RULE_QUANTILE
from sandbox.disclosure._rules import RULE_MIN_PERSONS

RULE_SECONDARY = "disclosure.secondary"


def grid_keys(
    labels: Sequence[Sequence[Key] | None], observed: Iterable[tuple[Key, ...]]
) -> list[tuple[Key, ...]]:
    """Every combination of each column's keys plus ``TOTAL``: a complete crosstab.

    A column's keys are its declared labels, else the values observed in the result (which
    a one-way margin row already reveals); combinations no one holds are empty cells.
    """
    seen: list[set[Key]] = [set() for _ in labels]
    for keys in observed:
        for i, k in enumerate(keys):
            if k is not TOTAL:
                seen[i].add(k)
    axes = []
    for i, declared in enumerate(labels):
        values = list(declared) if declared is not None else sorted(seen[i], key=key_order)
        values += sorted((v for v in seen[i] if v not in set(values)), key=key_order)
        axes.append([*values, TOTAL])
    return list(itertools.product(*axes))


def suppress_complements(
    table: ResultTable, persons: Mapping[tuple[Key, ...], int], min_persons: int
) -> ResultTable:
    """Suppress complementary rows so that no suppressed row can be recovered by subtraction.

    The attacker is assumed to read the published rules: a row suppressed for too few persons
    holds 1 to k-1 persons (0 to k-1 where empty cells are suppressed too), one suppressed for
    dominance at least k, and a complementary row at least k. Under that knowledge each
    suppressed row must keep a range of at least k/2 possible person counts (or its whole
    known range, if narrower). If no pattern can achieve it, every row is suppressed.
    """
    keys = [row.keys for row in table.rows]
    primary = {
        row.keys: _suppressing_rule(row.cells)
        for row in table.rows
        # A quantile suppressed for its neighbours hides no person count: nothing to protect.
        if any(c.status == CellStatus.SUPPRESSED and c.rule != RULE_QUANTILE for c in row.cells)
    }
    if not primary:
        return table
    zeros_suppressed = bool(table.settings.get("zeros_disclosive", 1))
    known: dict[tuple[object, ...], tuple[float | None, float | None]] = {}
    for key, rule in primary.items():
        if rule == RULE_MIN_PERSONS:
            known[_module_key(key)] = (0.0 if zeros_suppressed else 1.0, float(min_persons - 1))
        elif rule in (RULE_DOMINANCE, RULE_P_PERCENT):
            known[_module_key(key)] = (float(min_persons), None)
    values = {_module_key(k): float(persons.get(k, 0)) for k in keys}
    try:
        extra = _secondary.complementary_suppression(
            values,
            list(map(_module_key, primary)),
            lower_bound=0.0,
            protection=max(1.0, min_persons / 2),
            known=known,
            complement_lower=float(min_persons),
        )
    except _secondary.UnprotectableError:
        extra = frozenset(map(_module_key, keys)) - set(map(_module_key, primary))
    if not extra:
        return table
    blank = Cell(None, CellStatus.SUPPRESSED, RULE_SECONDARY)
    rows = tuple(
        dataclasses.replace(row, cells=tuple(blank for _ in row.cells))
        if _module_key(row.keys) in extra
        else row
        for row in table.rows
    )
    return dataclasses.replace(table, rows=rows)


def _suppressing_rule(cells: Iterable[Cell]) -> str:
    """The rule of a row's first suppressed cell (min persons wins: it says the most)."""
    rules = [c.rule for c in cells if c.status == CellStatus.SUPPRESSED]
    return RULE_MIN_PERSONS if RULE_MIN_PERSONS in rules else rules[0]


def _module_key(keys: tuple[Key, ...]) -> tuple[object, ...]:
    return tuple(_secondary.TOTAL if k is TOTAL else k for k in keys)


def key_order(k: Key) -> tuple[int, float, str]:
    """Sort order of keys: null first, then numbers, strings, and ``TOTAL`` last."""
    if k is None:
        return (0, 0.0, "")
    if k is TOTAL:
        return (3, 0.0, "")
    if isinstance(k, str):
        return (2, 0.0, k)
    return (1, float(k), "")
