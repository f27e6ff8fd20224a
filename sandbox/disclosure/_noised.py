"""Differential privacy mode: noise every released number, emit only public group keys.

A job's ε (and δ) is split equally over its measurements: one noisy count of persons per cell
(shared by count, count of persons and the denominators of means) and one noisy sum per measure
column. Each person has exactly one row, so the cells partition the persons and each
measurement is charged once for the whole table (parallel composition). Everything after the
noise — means, thresholds on noisy counts, rounding, intervals — is post-processing.

Group keys come only from the policy's public key sets (declared values or bins), so no key that
exists only in the private data is ever emitted, and an empty cell is noised like any other.
Unlike rule-based mode, nothing here depends on an exact count: no refusal, no suppression.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

from sandbox._errors import PolicyDenied
from sandbox._model import AggFunc, Cell, CellStatus, JobSpec, Key, ResultRow, ResultTable, Scalar
from sandbox.disclosure._dp import NoiseSpec, add_noise, calibrate, half_width
from sandbox.disclosure._rules import RULE_MIN_PERSONS
from sandbox.disclosure._threshold import RULE_MAX_GROUPS, round_to_base
from sandbox.engine import KeySpace, RawCell, RawTable
from sandbox.policy import Policy

RULE_NOISE = "disclosure.dp"
RULE_ONE_ROW = "dp.one_row_per_person"
RULE_PUBLIC_KEYS = "dp.public_keys"
RULE_BOUNDS = "dp.bounds"
RULE_AGGREGATE = "dp.aggregate"
RULE_MARGINS = "dp.margins"


@dataclass(frozen=True)
class NoiseTerms:
    mechanism: str
    epsilon: Fraction
    delta: Fraction
    confidence: float
    min_persons: int
    rounding_base: int
    max_groups: int
    sensitivities: dict[str, int]
    """Per measure column summed: the largest absolute value a person can add."""


def noise_terms(spec: JobSpec, policy: Policy, persons_unique: bool) -> NoiseTerms:
    """The DP terms of a job, or a refusal if DP cannot protect this job shape."""
    noise = policy.disclosure.noise
    if not persons_unique:
        raise PolicyDenied(
            "differential privacy here needs one row per person; this dataset has several",
            rule_ids=(RULE_ONE_ROW,),
        )
    unsupported = sorted(
        {
            str(a.function)
            for a in spec.aggregates
            if a.function in (AggFunc.VARIANCE, AggFunc.STDDEV)
        }
    )
    if unsupported:
        raise PolicyDenied(
            f"under differential privacy, {', '.join(unsupported)} is not offered yet; ask for "
            f"counts, sums or means",
            rule_ids=(RULE_AGGREGATE,),
        )
    if spec.margins:
        raise PolicyDenied(
            "under differential privacy, margins are not offered yet: each margin would need a "
            "share of the budget; ask for the cells and add them up",
            rule_ids=(RULE_MARGINS,),
        )
    undeclared = [
        c
        for c in spec.group_by
        if (col := policy.column(c)) is None or not (col.bins or col.values)
    ]
    if undeclared:
        raise PolicyDenied(
            f"under differential privacy, group-by columns need a public key set (values or "
            f"bins) in the policy; {', '.join(undeclared)} has none",
            rule_ids=(RULE_PUBLIC_KEYS,),
        )
    sensitivities: dict[str, int] = {}
    for agg in spec.aggregates:
        if agg.function in (AggFunc.SUM, AggFunc.MEAN):
            col = policy.column(agg.column)
            if col is None or col.bounds is None:
                raise PolicyDenied(
                    f"measure {agg.column} has no bounds, so its sum cannot be noised",
                    rule_ids=(RULE_BOUNDS,),
                )
            sensitivities[agg.column] = max(1, math.ceil(max(abs(b) for b in col.bounds)))
    return NoiseTerms(
        mechanism=str(noise.mechanism),
        epsilon=noise.epsilon_per_job,
        delta=noise.delta_per_job,
        confidence=noise.confidence,
        min_persons=policy.disclosure.min_persons_per_cell,
        rounding_base=policy.disclosure.rounding_base,
        max_groups=policy.limits.max_groups,
        sensitivities=sensitivities,
    )


def protect_noised(
    raw: RawTable, spec: JobSpec, key_spaces: tuple[KeySpace, ...], terms: NoiseTerms
) -> ResultTable:
    keys: list[tuple[Scalar | None, ...]] = list(
        itertools.product(*(ks.labels or () for ks in key_spaces))
    )
    if len(keys) > terms.max_groups:
        raise PolicyDenied(
            f"the result would have more than {terms.max_groups} groups",
            rule_ids=(RULE_MAX_GROUPS,),
        )
    parts = 1 + len(terms.sensitivities)
    epsilon, delta = terms.epsilon / parts, terms.delta / parts
    by_key: dict[tuple[Key, ...], RawCell] = {c.keys: c for c in raw.cells}
    present = [by_key.get(k) for k in keys]  # a key only in the data is never looked at

    count_spec = calibrate(terms.mechanism, epsilon, delta, 1)
    counts = add_noise(count_spec, [c.persons if c else 0 for c in present])
    sums: dict[str, tuple[NoiseSpec, list[int]]] = {}
    for column, sensitivity in terms.sensitivities.items():
        j = next(i for i, a in enumerate(spec.aggregates) if a.column == column)
        true = [int(c.values[j] or 0) if c else 0 for c in present]
        sum_spec = calibrate(terms.mechanism, epsilon, delta, sensitivity)
        sums[column] = (sum_spec, add_noise(sum_spec, true))

    rows: list[ResultRow] = []
    count_ci = half_width(count_spec, terms.confidence)
    for i, key in enumerate(keys):
        cells: list[Cell] = []
        noisy_count = counts[i]
        for agg in spec.aggregates:
            if noisy_count < terms.min_persons:
                cells.append(Cell(None, CellStatus.SUPPRESSED, RULE_MIN_PERSONS))
            elif agg.function in (AggFunc.COUNT, AggFunc.COUNT_DISTINCT):
                cells.append(_noised(noisy_count, count_ci, terms.rounding_base))
            else:
                sum_spec, noisy_sums = sums[agg.column]
                sum_ci = half_width(sum_spec, terms.confidence)
                if agg.function == AggFunc.SUM:
                    cells.append(_noised(noisy_sums[i], sum_ci, terms.rounding_base))
                else:
                    cells.append(_mean(noisy_sums[i], sum_ci, noisy_count, count_ci))
        rows.append(ResultRow(keys=key, cells=tuple(cells)))
    return ResultTable(
        key_columns=spec.group_by,
        value_columns=tuple(a.name for a in spec.aggregates),
        rows=tuple(rows),
        settings={
            "min_persons_per_cell": terms.min_persons,
            "rounding_base": terms.rounding_base,
        },
        privacy={
            "mechanism": terms.mechanism,
            "epsilon": str(terms.epsilon),
            "delta": str(terms.delta),
            "confidence": str(terms.confidence),
        },
    )


def _noised(value: int, ci: int, base: int) -> Cell:
    released = round_to_base(float(value), base) if base > 1 else float(value)
    return Cell(released, CellStatus.NOISED, RULE_NOISE, ci + (base / 2 if base > 1 else 0.0))


def _mean(noisy_sum: int, sum_ci: int, noisy_count: int, count_ci: int) -> Cell:
    """Noisy sum / noisy count; the interval spans every ratio the two intervals allow."""
    mean = noisy_sum / noisy_count
    low_count = noisy_count - count_ci
    if low_count <= 0:
        return Cell(mean, CellStatus.NOISED, RULE_NOISE, None)  # no finite interval
    ends = [
        (noisy_sum + s) / (noisy_count + c)
        for s in (-sum_ci, sum_ci)
        for c in (-count_ci, count_ci)
    ]
    return Cell(mean, CellStatus.NOISED, RULE_NOISE, max(abs(e - mean) for e in ends))
