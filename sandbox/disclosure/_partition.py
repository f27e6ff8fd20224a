"""DP partition selection: group keys taken from the data, released only above a threshold.

A key with no public key set in the policy is a candidate only if some person holds it. Each
candidate's count of persons gets the job's count noise ``Z`` (OpenDP's discrete Laplace or
Gaussian sampler, see ``_dp``), and the key is released only if ``count + Z >= tau``. Keys below
``tau`` are not emitted at all: there is no cell for them.

Choice of ``tau``. Let ``D' = D + p`` (one person added). A key held by no one in ``D`` and by
``p`` in ``D'`` has exactly one person in ``D'`` (persons are counted once per cell), and ``p``
holds at most ``L`` cells (``max_groups_per_person``, 1 with one row per person). Let ``E`` be
the event that none of these at most ``L`` new keys is released; ``P(not E) <= L * T(tau - 1)``
with ``T(t) = P(Z >= t)``. On ``E`` the output is the mechanism run on the shared keys only,
which is ``eps``-DP (``eps`` the job's whole epsilon, every measurement composed), so for any
set of outputs ``S``::

    P[M(D') in S] <= e^eps P[M(D) in S] + P(not E)
    P[M(D) in S]  <= e^eps P[M(D') in S] + e^eps P(not E)

(the second because ``E`` is independent of the shared keys' noise). Both are within
``delta_part`` once ``L * e^eps * T(tau - 1) <= delta_part``; ``tau`` is the smallest integer
that satisfies it. Upper bounds of ``T`` for the exact pmfs that OpenDP samples (scale ``s``,
the exact float handed to OpenDP):

* discrete Laplace, ``P(k) = (1 - q) / (1 + q) * q^|k|``, ``q = exp(-1/s)``: for ``t >= 1``,
  ``T(t) = sum_{k >= t} P(k) = q^t / (1 + q)`` (exact);
* discrete Gaussian, ``P(k) = exp(-k^2 / 2s^2) / N``: by Poisson summation
  ``N = s sqrt(2 pi) sum_j exp(-2 pi^2 s^2 j^2) >= s sqrt(2 pi)``; the sum of the decreasing
  ``exp(-k^2/2s^2)`` over ``k >= t`` is at most ``f(t) + integral_t^inf f``, and
  ``erfc(x) <= exp(-x^2) / (x sqrt(pi))``, so
  ``T(t) <= exp(-t^2 / 2s^2) * (1 + s^2 / t) / (s sqrt(2 pi))``.

The inequality is checked in 60-digit decimal arithmetic (``exp`` and ``ln`` there are
correctly rounded), with the bound padded by a relative 1e-40 to cover that rounding.
OpenDP 0.16's ``make_laplace_threshold`` / ``make_gaussian_threshold`` are not used: their
privacy maps leave out the mass at the threshold itself (opendp/opendp#2922), and their
``delta`` covers the counts alone, not the sums released with the selected keys.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

from sandbox._model import Key
from sandbox.disclosure._dp import DISCRETE_LAPLACE, NoiseSpec, add_noise
from sandbox.engine import KeySpace, RawCell

_PRECISION = 60
_PAD = Decimal(1) + Decimal(10) ** -40
_MAX_DOUBLINGS = 80


def selection_threshold(
    spec: NoiseSpec, groups_per_person: int, epsilon: Fraction, delta: Fraction
) -> int:
    """The smallest ``tau`` with ``L * e^epsilon * P(Z >= tau - 1) <= delta`` (see module doc).

    Args:
        spec: the noise of the counts of persons.
        groups_per_person: ``L``, the most cells one person adds to.
        epsilon: the job's whole epsilon (every measurement).
        delta: the share of delta paid for partition selection, in (0, 1).
    """
    if groups_per_person < 1:
        raise ValueError("groups_per_person must be at least 1")
    if not 0 < delta < 1 or epsilon <= 0:
        raise ValueError("partition selection needs epsilon > 0 and delta in (0, 1)")
    return _threshold(spec.mechanism, spec.scale, groups_per_person, epsilon, delta)


@functools.lru_cache(maxsize=256)
def _threshold(
    mechanism: str, scale: float, groups: int, epsilon: Fraction, delta: Fraction
) -> int:
    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        eps = Decimal(epsilon.numerator) / Decimal(epsilon.denominator)
        target = Decimal(delta.numerator) / Decimal(delta.denominator)
        factor = Decimal(groups) * eps.exp() * _PAD

        def ok(t: int) -> bool:
            return factor * _tail(mechanism, Decimal(scale), t) * _PAD <= target

        hi = 1
        for _ in range(_MAX_DOUBLINGS):
            if ok(hi):
                break
            hi *= 2
        else:  # pragma: no cover - a scale of at most 2^50 always gets there
            raise ValueError("no partition-selection threshold fits this delta")
        lo = hi // 2 if hi > 1 else 0  # not ok(lo) unless lo == 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        return hi + 1


def _tail(mechanism: str, s: Decimal, t: int) -> Decimal:
    """An upper bound of ``P(Z >= t)`` for ``t >= 1`` (exact for the Laplace)."""
    if mechanism == DISCRETE_LAPLACE:
        q = (-1 / s).exp()
        return (-t / s).exp() / (1 + q)
    two_pi = 2 * Decimal("3.14159265358979323846264338327950288419716939937510582097494")
    return (-Decimal(t * t) / (2 * s * s)).exp() * (1 + s * s / t) / (s * two_pi.sqrt())


def candidates(cells: Sequence[RawCell], key_spaces: Sequence[KeySpace]) -> list[RawCell]:
    """The data's cells whose keys lie in every declared key set (the rest are dropped).

    A declared column (values or bins) keeps only its public keys; an undeclared one takes
    whatever the data holds. The result is in a fixed order that does not depend on counts.
    """
    out = [
        c
        for c in cells
        if all(
            ks.labels is None or (k is not None and k in ks.labels)
            for ks, k in zip(key_spaces, c.keys, strict=True)
        )
    ]
    return sorted(out, key=lambda c: tuple(_order(k) for k in c.keys))


def select(
    cells: Sequence[RawCell], count_spec: NoiseSpec, threshold: int
) -> tuple[list[RawCell], list[int]]:
    """Noise every candidate's count of persons; keep the cells whose noisy count >= threshold.

    Returns the kept cells and their noisy counts (the released counts of persons).
    """
    noisy = add_noise(count_spec, [c.persons for c in cells])
    kept = [(c, n) for c, n in zip(cells, noisy, strict=True) if n >= threshold]
    return [c for c, _ in kept], [n for _, n in kept]


def _order(k: Key) -> tuple[int, float, str]:
    if k is None:
        return (2, 0.0, "")
    if isinstance(k, bool | int | float):
        return (0, float(k), "")
    return (1, 0.0, str(k))
