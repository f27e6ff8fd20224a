"""Differential privacy mode: noise every released number; public or DP-selected group keys.

A job's ε (and δ) is split equally over its measurements: one noisy count of persons per cell
(shared by count, count of persons and the denominators of means), one noisy sum per measure
column, and one exponential-mechanism selection per median or quantile (``_quantile``). Each
person has exactly one row, so the cells partition the persons and each measurement is charged
once for the whole table (parallel composition). Everything after the
noise — means, thresholds on noisy counts, rounding, intervals — is post-processing.

With several rows per person the engine bounds each person to L cells and R rows per cell
(``sandbox.engine._bounding``); the sensitivities (L1 change one person makes to the vector of
cells) become L for persons, L·R for rows and L·R·max|bound| for sums, and when R > 1 a count of
rows is a measurement of its own (counts and the denominators of means).

Group keys come from the policy's public key sets (declared values or bins), so no key that
exists only in the private data is emitted, and an empty cell is noised like any other; or, if
the policy allows it, by DP partition selection (``_partition``), which releases a key from the
data only when its noisy count of persons clears a threshold paid for with part of δ.
Unlike rule-based mode, nothing here depends on an exact count: no refusal, no suppression.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

from sandbox._errors import PolicyDenied
from sandbox._model import AggFunc, Cell, CellStatus, JobSpec, Key, ResultRow, ResultTable
from sandbox.disclosure._dp import NoiseSpec, add_noise, calibrate, half_width
from sandbox.disclosure._partition import candidates, select, selection_threshold
from sandbox.disclosure._quantile import noised_quantiles, quantile_parts
from sandbox.disclosure._rules import RULE_MIN_PERSONS
from sandbox.disclosure._threshold import RULE_MAX_GROUPS, round_to_base
from sandbox.engine import KeySpace, RawCell, RawTable
from sandbox.policy import Mechanism, Policy

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
    """Per measure column summed: the largest absolute value a person can add (L1, all cells)."""
    persons_sensitivity: int = 1
    """How much one person changes the counts of persons, summed over cells (L)."""
    rows_sensitivity: int = 0
    """Contribution bounding with R > 1: the row counts' sensitivity (L * R), measured apart
    from the persons; 0 when a count of rows is the count of persons."""
    bounds: tuple[int, int] | None = None
    """``(L, R)`` when contribution bounding applies (several rows per person)."""
    partition_delta: Fraction = Fraction(0)
    """The share of ``delta`` paid for partition selection (0: keys are public)."""


def noise_terms(spec: JobSpec, policy: Policy, persons_unique: bool) -> NoiseTerms:
    """The DP terms of a job, or a refusal if DP cannot protect this job shape."""
    noise = policy.disclosure.noise
    bounds = None if persons_unique else noise.contribution_bounds
    if not persons_unique:
        check_bounded_job(spec, bounds)
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
    if undeclared and not noise.partition_selection:
        raise PolicyDenied(
            f"under differential privacy, group-by columns need a public key set (values or "
            f"bins) in the policy; {', '.join(undeclared)} has none",
            rule_ids=(RULE_PUBLIC_KEYS,),
        )
    groups, rows_cap = bounds or (1, 1)
    sensitivities: dict[str, int] = {}
    for agg in spec.aggregates:
        if agg.function in (AggFunc.SUM, AggFunc.MEAN):
            col = policy.column(agg.column)
            if col is None or col.bounds is None:
                raise PolicyDenied(
                    f"measure {agg.column} has no bounds, so its sum cannot be noised",
                    rule_ids=(RULE_BOUNDS,),
                )
            largest = max(1, math.ceil(max(abs(b) for b in col.bounds)))
            sensitivities[agg.column] = groups * rows_cap * largest
    counted = any(a.function in (AggFunc.COUNT, AggFunc.MEAN) for a in spec.aggregates)
    partition_delta, delta = partition_share(noise.mechanism, noise.delta_per_job, undeclared)
    return NoiseTerms(
        mechanism=str(noise.mechanism),
        epsilon=noise.epsilon_per_job,
        delta=delta,
        confidence=noise.confidence,
        min_persons=policy.disclosure.min_persons_per_cell,
        rounding_base=policy.disclosure.rounding_base,
        max_groups=policy.limits.max_groups,
        sensitivities=sensitivities,
        persons_sensitivity=groups,
        rows_sensitivity=groups * rows_cap if counted and rows_cap > 1 else 0,
        bounds=bounds,
        partition_delta=partition_delta,
    )


def check_bounded_job(spec: JobSpec, bounds: tuple[int, int] | None) -> None:
    """Refuse a DP job on a dataset with several rows per person unless it can be bounded."""
    if bounds is None:
        raise PolicyDenied(
            "differential privacy here needs one row per person; this dataset has several and "
            "its policy declares no contribution bounds (max_groups_per_person, "
            "max_rows_per_person)",
            rule_ids=(RULE_ONE_ROW,),
        )
    offered = (AggFunc.COUNT, AggFunc.COUNT_DISTINCT, AggFunc.SUM, AggFunc.MEAN)
    unsupported = sorted({str(a.function) for a in spec.aggregates if a.function not in offered})
    if unsupported:
        raise PolicyDenied(
            f"under differential privacy with several rows per person, "
            f"{', '.join(unsupported)} is not offered yet; ask for counts, sums or means",
            rule_ids=(RULE_AGGREGATE,),
        )


def partition_share(
    mechanism: Mechanism, delta: Fraction, undeclared: list[str]
) -> tuple[Fraction, Fraction]:
    """``(delta for partition selection, delta the job spends)``.

    Partition selection (some group-by column without a public key set) takes all of the
    Laplace mechanism's delta, or half of the Gaussian's (the rest is split over its noisy
    measurements). A Laplace job with public keys only spends no delta.
    """
    if mechanism == Mechanism.DISCRETE_LAPLACE:
        return (delta, delta) if undeclared else (Fraction(0), Fraction(0))
    return (delta / 2 if undeclared else Fraction(0)), delta


def protect_noised(
    raw: RawTable, spec: JobSpec, key_spaces: tuple[KeySpace, ...], terms: NoiseTerms
) -> ResultTable:
    parts = 1 + len(terms.sensitivities) + quantile_parts(spec) + int(terms.rows_sensitivity > 0)
    epsilon, delta = terms.epsilon / parts, (terms.delta - terms.partition_delta) / parts
    count_spec = calibrate(terms.mechanism, epsilon, delta, terms.persons_sensitivity)
    threshold = 0
    present: list[RawCell | None]
    if terms.partition_delta:  # keys from the data, kept if their noisy count clears tau
        threshold = selection_threshold(
            count_spec, terms.persons_sensitivity, terms.epsilon, terms.partition_delta
        )
        kept, counts = select(candidates(raw.cells, key_spaces), count_spec, threshold)
        present = list(kept)
        keys: list[tuple[Key, ...]] = [c.keys for c in kept]
        if len(keys) > terms.max_groups:  # decided on noisy counts: post-processing
            raise PolicyDenied(
                f"the result would have more than {terms.max_groups} groups",
                rule_ids=(RULE_MAX_GROUPS,),
            )
    else:
        keys = list(itertools.product(*(ks.labels or () for ks in key_spaces)))
        if len(keys) > terms.max_groups:
            raise PolicyDenied(
                f"the result would have more than {terms.max_groups} groups",
                rule_ids=(RULE_MAX_GROUPS,),
            )
        by_key: dict[tuple[Key, ...], RawCell] = {c.keys: c for c in raw.cells}
        present = [by_key.get(k) for k in keys]  # a key only in the data is never looked at
        counts = add_noise(count_spec, [c.persons if c else 0 for c in present])
    row_counts = counts
    row_spec = count_spec
    if terms.rows_sensitivity:  # rows and persons differ: a measurement of its own
        row_spec = calibrate(terms.mechanism, epsilon, delta, terms.rows_sensitivity)
        row_counts = add_noise(row_spec, [_rows(c) for c in present])
    sums: dict[str, tuple[NoiseSpec, list[int]]] = {}
    for column, sensitivity in terms.sensitivities.items():
        j = next(i for i, a in enumerate(spec.aggregates) if a.column == column)
        true = [int(c.values[j] or 0) if c else 0 for c in present]
        sum_spec = calibrate(terms.mechanism, epsilon, delta, sensitivity)
        sums[column] = (sum_spec, add_noise(sum_spec, true))

    quantiles = noised_quantiles(present, spec, raw.quantile_grids, epsilon)
    rows: list[ResultRow] = []
    count_ci = half_width(count_spec, terms.confidence)
    row_ci = half_width(row_spec, terms.confidence)
    for i, key in enumerate(keys):
        cells: list[Cell] = []
        noisy_count = counts[i]
        for agg in spec.aggregates:
            if noisy_count < terms.min_persons:
                cells.append(Cell(None, CellStatus.SUPPRESSED, RULE_MIN_PERSONS))
            elif agg.function == AggFunc.COUNT:
                cells.append(_noised(row_counts[i], row_ci, terms.rounding_base))
            elif agg.function == AggFunc.COUNT_DISTINCT:
                cells.append(_noised(noisy_count, count_ci, terms.rounding_base))
            elif agg in quantiles:  # a grid point from the exponential mechanism
                cells.append(quantiles[agg][i])
            else:
                sum_spec, noisy_sums = sums[agg.column]
                sum_ci = half_width(sum_spec, terms.confidence)
                if agg.function == AggFunc.SUM:
                    cells.append(_noised(noisy_sums[i], sum_ci, terms.rounding_base))
                else:
                    cells.append(_mean(noisy_sums[i], sum_ci, row_counts[i], row_ci))
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
            **_privacy_extras(terms, threshold),
        },
    )


def _rows(cell: RawCell | None) -> int:
    """A cell's bounded count of rows (its persons when the engine did not bound it)."""
    if cell is None:
        return 0
    return cell.persons if cell.rows is None else cell.rows


def _privacy_extras(terms: NoiseTerms, threshold: int) -> dict[str, str]:
    """The contribution bounds and partition selection of a job, when they apply."""
    out: dict[str, str] = {}
    if terms.bounds is not None:
        out["max_groups_per_person"] = str(terms.bounds[0])
        out["max_rows_per_person"] = str(terms.bounds[1])
        out["sensitivity_persons"] = str(terms.persons_sensitivity)
        if terms.rows_sensitivity:
            out["sensitivity_rows"] = str(terms.rows_sensitivity)
        for column, sensitivity in terms.sensitivities.items():
            out[f"sensitivity_sum.{column}"] = str(sensitivity)
    if terms.partition_delta:
        out["partition_selection"] = "true"
        out["partition_threshold"] = str(threshold)
        out["partition_delta"] = str(terms.partition_delta)
    return out


def _noised(value: int, ci: int, base: int) -> Cell:
    released = round_to_base(float(value), base) if base > 1 else float(value)
    return Cell(released, CellStatus.NOISED, RULE_NOISE, ci + (base / 2 if base > 1 else 0.0))


def _mean(noisy_sum: int, sum_ci: int, noisy_count: int, count_ci: int) -> Cell:
    """Noisy sum / noisy count; the interval spans every ratio the two intervals allow."""
    if noisy_count <= 0:  # a noisy count of rows can be, with many persons: no ratio
        return Cell(None, CellStatus.SUPPRESSED, RULE_MIN_PERSONS)
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
