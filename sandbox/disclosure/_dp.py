"""Differential-privacy noise on integers: calibration, sampling and confidence intervals.

Noise comes only from OpenDP's exact discrete samplers (``make_laplace`` / ``make_gaussian`` on
an integer vector domain), which draw from OpenDP's cryptographically secure RNG and sample the
exact distributions below, with ``scale`` converted exactly from the float to a rational
(``integerize_scale(scale, 0)`` in ``measurements/noise/nature/integer``):

* discrete Laplace, ``P(k) = tanh(1/(2s)) * exp(-|k|/s)``
  (``sample_discrete_laplace`` in ``traits/samplers/cks20``);
* discrete Gaussian, ``P(k) = exp(-k^2/(2s^2)) / sum_j exp(-j^2/(2s^2))``
  (``sample_discrete_gaussian`` in the same file).

Privacy parameters are exact rationals. Every calibrated scale is checked against the
measurement's own privacy map, so the guarantee is OpenDP's, not a formula of ours.
Error messages never contain the values being noised.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import opendp.prelude as dp
from opendp.mod import Measurement

dp.enable_features("contrib")

DISCRETE_LAPLACE = "discrete_laplace"
DISCRETE_GAUSSIAN = "discrete_gaussian"
MECHANISMS = (DISCRETE_LAPLACE, DISCRETE_GAUSSIAN)

_ATOM = "i64"
_MAX_ABS_VALUE = 2**62
"""Largest magnitude accepted by :func:`add_noise`; OpenDP saturates at the i64 bounds."""
_MAX_SCALE = 2.0**50
"""Noise beyond 2^62 (the saturation margin) is then less likely than exp(-4096)."""
_MAX_NUDGES = 64
_MAX_BRACKET_STEPS = 200
_REL_TOL = 1e-9
"""Relative width at which the Gaussian scale search stops (the result always passes)."""
_DIRECT_SUM_MAX_SCALE = 1e3
"""Up to this Gaussian scale the tail is summed term by term; above it, Euler-Maclaurin
(relative error about 1e-12 there, falling as scale^-4)."""


@dataclass(frozen=True)
class NoiseSpec:
    """A calibrated noise distribution and the privacy it buys.

    The guarantee holds for a released vector whose L1 (Laplace) or L2 (Gaussian) sensitivity
    is at most ``sensitivity``; for a single integer both equal the largest change one person
    can make. ``delta`` is 0 for the Laplace mechanism (pure DP). Build it with
    :func:`calibrate`; ``scale`` is the exact float handed to OpenDP.
    """

    mechanism: str
    epsilon: Fraction
    delta: Fraction
    sensitivity: int
    scale: float

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"unknown mechanism {self.mechanism!r}; expected one of {MECHANISMS}")
        if not (math.isfinite(self.scale) and 0.0 < self.scale <= _MAX_SCALE):
            raise ValueError(f"scale must be in (0, {_MAX_SCALE:g}]")


def calibrate(mechanism: str, epsilon: Fraction, delta: Fraction, sensitivity: int) -> NoiseSpec:
    """Return a spec with the smallest scale giving (epsilon, delta)-DP at this sensitivity.

    Raises:
        TypeError: epsilon or delta is not an exact rational, or sensitivity not an int.
        ValueError: unknown mechanism, epsilon <= 0, delta outside [0, 1), sensitivity < 1,
            delta = 0 with the Gaussian mechanism, or a scale too large to be useful.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; expected one of {MECHANISMS}")
    eps = _exact("epsilon", epsilon)
    dlt = _exact("delta", delta)
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int):
        raise TypeError("sensitivity must be an int")
    if eps <= 0:
        raise ValueError("epsilon must be positive")
    if not 0 <= dlt < 1:
        raise ValueError("delta must be in [0, 1)")
    if sensitivity < 1:
        raise ValueError("sensitivity must be at least 1")
    if mechanism == DISCRETE_GAUSSIAN and dlt == 0:
        raise ValueError("the Gaussian mechanism needs delta > 0; use discrete_laplace for pure DP")
    return _calibrate(mechanism, eps, dlt, sensitivity)


def privacy_loss(spec: NoiseSpec) -> tuple[Fraction, Fraction]:
    """Return (epsilon, delta) spent by one release under ``spec``, from OpenDP's privacy map."""
    if spec.mechanism == DISCRETE_LAPLACE:
        return _laplace_loss(spec.scale, spec.sensitivity), Fraction(0)
    delta = _float_at_most(spec.delta)
    return _gaussian_loss(spec.scale, spec.sensitivity, delta), Fraction(delta)


def add_noise(spec: NoiseSpec, values: Sequence[int]) -> list[int]:
    """Return ``values`` each plus independent noise from ``spec``, in one OpenDP call.

    Raises:
        TypeError: a value is not an int.
        ValueError: a value's magnitude exceeds 2^62.
    """
    exact: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError("values must be ints")
        if abs(v) > _MAX_ABS_VALUE:
            raise ValueError("a value is too large to be noised (magnitude above 2^62)")
        exact.append(int(v))
    if not exact:
        return []
    noisy = _measurement(spec.mechanism, spec.scale)(exact)
    return [int(x) for x in noisy]


def half_width(spec: NoiseSpec, confidence: float = 0.95) -> int:
    """Return the smallest integer t with P(|noise| > t) <= 1 - confidence.

    Computed from the exact pmf OpenDP samples: a closed form for the discrete Laplace, a
    summed tail for the discrete Gaussian (Euler-Maclaurin above scale 1e3).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    return _half_width(spec.mechanism, spec.scale, confidence)


def split_epsilon(total: Fraction, parts: int) -> Fraction:
    """Split ``total`` exactly into ``parts`` equal shares (e.g. 2 for a noisy sum / count)."""
    eps = _exact("total", total)
    if eps <= 0:
        raise ValueError("total must be positive")
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError("parts must be a positive int")
    return eps / parts


# --- measurements -------------------------------------------------------------------------


def _build(mechanism: str, scale: float) -> Measurement:
    domain = dp.vector_domain(dp.atom_domain(T=_ATOM))
    if mechanism == DISCRETE_LAPLACE:
        return dp.m.make_laplace(domain, dp.l1_distance(T=_ATOM), scale=scale)
    return dp.m.make_gaussian(domain, dp.l2_distance(T=_ATOM), scale=scale)


_measurement = functools.lru_cache(maxsize=256)(_build)


def _map(measurement: Measurement, d_in: int) -> object:
    return measurement.map(d_in)  # type: ignore[no-untyped-call]


def _laplace_loss(scale: float, sensitivity: int) -> Fraction:
    """Epsilon from the Laplace measurement's map: d_in / scale, rounded up to a float."""
    eps = _map(_build(DISCRETE_LAPLACE, scale), sensitivity)
    if not isinstance(eps, float):  # pragma: no cover
        raise RuntimeError("unexpected output from OpenDP's privacy map")
    return Fraction(eps)


def _gaussian_loss(scale: float, sensitivity: int, delta: float) -> Fraction:
    """Epsilon at ``delta`` from the Gaussian measurement's zCDP map, converted to approx-DP."""
    approx = dp.c.make_zCDP_to_approxDP(_build(DISCRETE_GAUSSIAN, scale))
    out = _map(dp.c.make_fix_delta(approx, delta), sensitivity)
    match out:
        case (float(eps), float(delta_out)) if delta_out <= delta:
            return Fraction(eps)
    raise RuntimeError("unexpected output from OpenDP's privacy map")  # pragma: no cover


# --- calibration --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _calibrate(mechanism: str, epsilon: Fraction, delta: Fraction, sensitivity: int) -> NoiseSpec:
    if mechanism == DISCRETE_LAPLACE:
        scale = _laplace_scale(epsilon, sensitivity)
        delta = Fraction(0)
    else:
        scale = _gaussian_scale(epsilon, delta, sensitivity)
    if scale > _MAX_SCALE:
        raise ValueError(
            "epsilon is too small for this sensitivity: the noise scale would exceed 2^50"
        )
    return NoiseSpec(mechanism, epsilon, delta, sensitivity, scale)


def _laplace_scale(epsilon: Fraction, sensitivity: int) -> float:
    """Smallest float scale >= sensitivity/epsilon whose OpenDP map gives at most epsilon."""
    target = Fraction(sensitivity) / epsilon
    scale = float(target)
    if Fraction(scale) < target:
        scale = math.nextafter(scale, math.inf)
    for _ in range(_MAX_NUDGES):
        if scale > _MAX_SCALE or _laplace_loss(scale, sensitivity) <= epsilon:
            return scale
        scale = math.nextafter(scale, math.inf)
    raise RuntimeError("could not calibrate the Laplace scale")  # pragma: no cover


def _gaussian_scale(epsilon: Fraction, delta: Fraction, sensitivity: int) -> float:
    """Bisect for the smallest scale whose (zCDP -> approx-DP at delta) map gives epsilon."""
    delta_f = _float_at_most(delta)
    if delta_f <= 0.0:
        raise ValueError("delta is too small to represent")

    def ok(scale: float) -> bool:
        return _gaussian_loss(scale, sensitivity, delta_f) <= epsilon

    # Classic bound as a starting guess, then bracket [lo, hi] with ok(hi) and not ok(lo).
    hi = sensitivity * math.sqrt(2.0 * math.log(1.25 / delta_f)) / float(epsilon)
    for _ in range(_MAX_BRACKET_STEPS):
        if ok(hi):
            break
        if hi > _MAX_SCALE:
            return hi
        hi *= 2.0
    else:  # pragma: no cover
        raise RuntimeError("could not bracket the Gaussian scale")
    lo = hi / 2.0
    for _ in range(_MAX_BRACKET_STEPS):
        if not ok(lo):
            break
        hi, lo = lo, lo / 2.0
    else:  # pragma: no cover
        raise RuntimeError("could not bracket the Gaussian scale")
    while hi - lo > hi * _REL_TOL:
        mid = (lo + hi) / 2.0
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _exact(name: str, value: Fraction) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Fraction | int):
        raise TypeError(f"{name} must be a fractions.Fraction (exact), not {type(value).__name__}")
    return Fraction(value)


def _float_at_most(x: Fraction) -> float:
    """The largest float not above ``x`` (a smaller delta only weakens the claimed bound)."""
    f = float(x)
    if Fraction(f) > x:
        f = math.nextafter(f, -math.inf)
    return f


# --- confidence intervals ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _half_width(mechanism: str, scale: float, confidence: float) -> int:
    alpha = 1.0 - confidence
    if mechanism == DISCRETE_LAPLACE:
        return _laplace_half_width(scale, alpha)
    if scale <= _DIRECT_SUM_MAX_SCALE:
        tails = _gaussian_tails_direct(scale)
        return int(np.argmax(tails <= alpha))
    return _smallest_t(lambda t: _gaussian_tail_asymptotic(scale, t), alpha, math.ceil(40 * scale))


def _laplace_tail(scale: float, t: int) -> float:
    """P(|X| > t) = 2 q^(t+1) / (1 + q), q = exp(-1/scale), for t >= 0."""
    return math.exp(math.log(2.0) - (t + 1) / scale - math.log1p(math.exp(-1.0 / scale)))


def _laplace_half_width(scale: float, alpha: float) -> int:
    # Solve 2 q^(t+1) / (1+q) <= alpha for the smallest integer t >= 0, then fix float slop.
    bound = scale * (math.log(2.0) - math.log1p(math.exp(-1.0 / scale)) - math.log(alpha))
    t = max(0, math.ceil(bound) - 1)
    while t > 0 and _laplace_tail(scale, t - 1) <= alpha:
        t -= 1
    while _laplace_tail(scale, t) > alpha:
        t += 1
    return t


def _gaussian_tails_direct(scale: float) -> npt.NDArray[np.float64]:
    """Array whose entry t is P(|X| > t), by summing exp(-k^2/(2 s^2)) from the far tail in."""
    last = math.ceil(38.6 * scale) + 1  # exp(-38.6^2/2) underflows to 0
    k = np.arange(1, last + 1, dtype=np.float64)
    weights = np.exp(-(k * k) / (2.0 * scale * scale))
    upper = np.append(np.cumsum(weights[::-1])[::-1], 0.0)  # upper[t] = sum_{k > t} w_k
    return np.asarray(2.0 * upper / (1.0 + 2.0 * upper[0]), dtype=np.float64)


def _gaussian_tail_asymptotic(scale: float, t: int) -> float:
    """P(|X| > t) by Euler-Maclaurin; relative error O(scale^-4), for large scales only."""
    a = t + 1
    f_a = math.exp(-(a * a) / (2.0 * scale * scale))
    upper = (
        scale * math.sqrt(math.pi / 2.0) * math.erfc(a / (scale * math.sqrt(2.0)))
        + f_a / 2.0
        + a * f_a / (12.0 * scale * scale)
    )
    # Poisson summation: the normaliser is sqrt(2 pi) s up to a factor 1 + O(exp(-2 pi^2 s^2)).
    return 2.0 * upper / (math.sqrt(2.0 * math.pi) * scale)


def _smallest_t(tail: Callable[[int], float], alpha: float, hi: int) -> int:
    """Smallest t in [0, hi] with tail(t) <= alpha, for a non-increasing tail."""
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if tail(mid) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return lo
