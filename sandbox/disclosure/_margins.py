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
    """Suppress complementary rows so that no suppressed row can be recovered by subtraction."""
    keys = [row.keys for row in table.rows]
    primary = [
        row.keys for row in table.rows if any(c.status == CellStatus.SUPPRESSED for c in row.cells)
    ]
    if not primary:
        return table
    values = {_module_key(k): float(persons.get(k, 0)) for k in keys}
    extra = _secondary.complementary_suppression(
        values,
        [_module_key(k) for k in primary],
        lower_bound=0.0,
        protection=float(min_persons),
    )
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
