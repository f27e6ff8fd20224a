"""The partition-selection threshold against closed forms and OpenDP's own sampler."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from sandbox.disclosure._dp import calibrate
from sandbox.disclosure._partition import candidates, select, selection_threshold
from sandbox.engine import KeySpace, RawCell


@pytest.mark.parametrize("epsilon", [Fraction(1, 10), Fraction(1), Fraction(3)])
@pytest.mark.parametrize("delta", [Fraction(1, 10**6), Fraction(1, 10**12)])
@pytest.mark.parametrize("groups", [1, 4])
def test_laplace_threshold_is_the_smallest_meeting_the_closed_form(
    epsilon: Fraction, delta: Fraction, groups: int
) -> None:
    spec = calibrate("discrete_laplace", epsilon, Fraction(0), groups)
    tau = selection_threshold(spec, groups, epsilon, delta)
    q = math.exp(-1 / spec.scale)

    def released(t: int) -> float:  # P(1 + Z >= t) times the factor L e^eps
        return groups * math.exp(float(epsilon)) * q ** (t - 1) / (1 + q)

    assert released(tau) <= float(delta) < released(tau - 1)


def test_gaussian_threshold_bounds_the_exact_tail() -> None:
    spec = calibrate("discrete_gaussian", Fraction(1, 2), Fraction(1, 10**6), 2)
    tau = selection_threshold(spec, 2, Fraction(1), Fraction(1, 10**9))
    s = spec.scale
    k = np.arange(-int(60 * s), int(60 * s) + 1, dtype=np.float64)
    weights = np.exp(-(k * k) / (2 * s * s))
    tail = weights[k >= tau - 1].sum() / weights.sum()  # P(Z >= tau - 1)
    assert 2 * math.e * tail <= 1e-9
    assert 2 * math.e * weights[k >= tau - 30].sum() / weights.sum() > 1e-9  # not far too high


def test_released_share_of_single_person_keys_matches_the_exact_tail() -> None:
    # OpenDP 0.16's threshold maps leave out the mass at the threshold (opendp#2922); this
    # derivation must match what its sampler actually does: P(1 + Z >= tau) = q^(tau-1)/(1+q).
    spec = calibrate("discrete_laplace", Fraction(1, 2), Fraction(0), 1)  # scale 2
    tau = selection_threshold(spec, 1, Fraction(1, 2), Fraction(1, 20))
    n = 50_000
    cells = [RawCell(keys=(i,), persons=1, values=()) for i in range(n)]
    kept, counts = select(cells, spec, tau)
    q = math.exp(-1 / spec.scale)
    p = q ** (tau - 1) / (1 + q)
    assert p <= 1 / 20 / math.exp(0.5)
    assert abs(len(kept) / n - p) <= 6 * math.sqrt(p * (1 - p) / n)
    assert all(c >= tau for c in counts)


def test_candidates_keep_declared_keys_only_in_a_fixed_order() -> None:
    spaces = (KeySpace("clinic", None), KeySpace("sex", (0, 1)))
    cells = [
        RawCell(keys=("b", 1), persons=5, values=()),
        RawCell(keys=("a", 7), persons=9, values=()),  # 7 is not a declared key of sex
        RawCell(keys=("a", None), persons=9, values=()),
        RawCell(keys=(None, 0), persons=2, values=()),
        RawCell(keys=("a", 0), persons=1, values=()),
    ]
    assert [c.keys for c in candidates(cells, spaces)] == [("a", 0), ("b", 1), (None, 0)]
