"""DP noise: calibration against OpenDP's own privacy maps, real samples against the exact pmf."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import opendp.prelude as dp
import pytest

from sandbox.disclosure import _dp
from sandbox.disclosure._dp import (
    DISCRETE_GAUSSIAN,
    DISCRETE_LAPLACE,
    NoiseSpec,
    add_noise,
    calibrate,
    half_width,
    privacy_loss,
    split_epsilon,
)

dp.enable_features("contrib")

N = 20_000
P_MIN = 1e-6
"""Fixed significance level of the goodness-of-fit test: a true null fails about once in a
million runs, while noise at half the claimed scale still gives p far below it."""
Z_975 = 1.959963984540054
"""Standard normal 97.5% quantile."""

LAPLACE = (DISCRETE_LAPLACE, Fraction(1, 2), Fraction(0), 1)  # scale 2
GAUSSIAN = (DISCRETE_GAUSSIAN, Fraction(1), Fraction(1, 10**6), 1)  # scale ~4.53

CASES = [
    (DISCRETE_LAPLACE, Fraction(1, 10), Fraction(0), 1),
    (DISCRETE_LAPLACE, Fraction(1, 3), Fraction(0), 1),
    (DISCRETE_LAPLACE, Fraction(1, 2), Fraction(0), 3),
    (DISCRETE_LAPLACE, Fraction(2), Fraction(1, 10**5), 100),
    (DISCRETE_GAUSSIAN, Fraction(1), Fraction(1, 10**6), 1),
    (DISCRETE_GAUSSIAN, Fraction(1, 2), Fraction(1, 10**9), 7),
    (DISCRETE_GAUSSIAN, Fraction(3), Fraction(1, 10**5), 2),
]


# --- independent references -------------------------------------------------------------------


def _delta_float(delta: Fraction) -> float:
    f = float(delta)
    return math.nextafter(f, 0.0) if Fraction(f) > delta else f


def opendp_epsilon(mechanism: str, scale: float, sensitivity: int, delta: Fraction) -> Fraction:
    """Epsilon straight from a freshly built OpenDP measurement (no code from the module)."""
    space = dp.vector_domain(dp.atom_domain(T="i64"))
    if mechanism == DISCRETE_LAPLACE:
        m = dp.m.make_laplace(space, dp.l1_distance(T="i64"), scale=scale)
        return Fraction(m.map(sensitivity))  # type: ignore[no-untyped-call]
    m = dp.m.make_gaussian(space, dp.l2_distance(T="i64"), scale=scale)
    fixed = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(m), _delta_float(delta))
    eps, delta_out = fixed.map(sensitivity)  # type: ignore[no-untyped-call]
    assert Fraction(delta_out) <= delta
    return Fraction(eps)


def exact_pmf(spec: NoiseSpec, ks: np.ndarray) -> np.ndarray:
    """The pmf OpenDP documents for its discrete samplers, normalised over a wide support."""
    support = np.arange(-math.ceil(60 * spec.scale) - 50, math.ceil(60 * spec.scale) + 51)

    def weight(k: np.ndarray) -> np.ndarray:
        x = k.astype(np.float64)
        if spec.mechanism == DISCRETE_LAPLACE:
            return np.asarray(np.exp(-np.abs(x) / spec.scale), dtype=np.float64)
        return np.asarray(np.exp(-(x**2) / (2 * spec.scale**2)), dtype=np.float64)

    return np.asarray(weight(ks) / weight(support).sum(), dtype=np.float64)


def exact_tail(spec: NoiseSpec, t: int) -> float:
    """P(|X| > t) by brute-force summation of the reference pmf."""
    far = math.ceil(60 * spec.scale) + 50
    ks = np.arange(t + 1, far + 1)
    return float(2 * exact_pmf(spec, ks).sum())


def chi2_sf(x: float, df: int) -> float:
    """Upper tail of the chi-square distribution, Q(df/2, x/2), computed by hand (no scipy).

    Regularised incomplete gamma: power series below a + 1, Lentz continued fraction above.
    """
    a, y = df / 2, x / 2
    if y <= 0:
        return 1.0
    log_front = -y + a * math.log(y) - math.lgamma(a)
    if y < a + 1:
        term = total = 1 / a
        n = a
        while abs(term) > abs(total) * 1e-15:
            n += 1
            term *= y / n
            total += term
        return 1 - math.exp(log_front) * total
    tiny = 1e-300
    b = y + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(log_front) * h


def chi_square_p(samples: np.ndarray, spec: NoiseSpec) -> float:
    """Chi-square goodness of fit of integer samples against the exact pmf of ``spec``.

    Bins are the integers in (-K, K) plus the two tails, K the largest cut-off whose tail
    still expects at least 5 samples.
    """
    k = 0
    while N * exact_tail(spec, k) / 2 >= 5:
        k += 1
    inner = np.arange(-k + 1, k)
    probs = exact_pmf(spec, inner)
    tail = (1 - probs.sum()) / 2
    expected = np.concatenate([[tail], probs, [tail]])
    expected = N * expected / expected.sum()
    observed = np.concatenate(
        [
            [np.sum(samples <= -k)],
            [np.sum(samples == i) for i in inner],
            [np.sum(samples >= k)],
        ]
    )
    assert observed.sum() == N
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return chi2_sf(statistic, len(observed) - 1)


def draw(spec: NoiseSpec) -> np.ndarray:
    """N noise draws, released around distinct true values to check alignment too."""
    values = list(range(-N // 2, N - N // 2))
    noisy = add_noise(spec, values)
    assert len(noisy) == N
    return np.array(noisy, dtype=np.int64) - np.array(values, dtype=np.int64)


@pytest.fixture(scope="module", params=[LAPLACE, GAUSSIAN], ids=["laplace", "gaussian"])
def spec_and_samples(request: pytest.FixtureRequest) -> tuple[NoiseSpec, np.ndarray]:
    spec = calibrate(*request.param)
    return spec, draw(spec)


# --- calibration ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_calibrate_meets_epsilon_per_opendp_and_is_tight(
    case: tuple[str, Fraction, Fraction, int],
) -> None:
    mechanism, eps, delta, sens = case
    spec = calibrate(mechanism, eps, delta, sens)
    assert spec.mechanism == mechanism
    assert spec.epsilon == eps
    assert spec.sensitivity == sens
    assert spec.delta == (Fraction(0) if mechanism == DISCRETE_LAPLACE else delta)
    assert opendp_epsilon(mechanism, spec.scale, sens, delta) <= eps
    assert privacy_loss(spec)[0] <= eps
    assert privacy_loss(spec)[1] <= spec.delta
    # Halving the scale breaks the guarantee, and so does any visibly smaller scale.
    assert opendp_epsilon(mechanism, spec.scale / 2, sens, delta) > eps
    assert opendp_epsilon(mechanism, spec.scale * (1 - 1e-8), sens, delta) > eps


def test_laplace_scale_is_sensitivity_over_epsilon_nudged_up() -> None:
    exact = calibrate(DISCRETE_LAPLACE, Fraction(1, 2), Fraction(0), 3)
    assert exact.scale == 6.0
    # 1/10 is not a float: OpenDP's map at scale 10.0 rounds up above 1/10, so nudge up.
    nudged = calibrate(DISCRETE_LAPLACE, Fraction(1, 10), Fraction(0), 1)
    assert Fraction(opendp_epsilon(DISCRETE_LAPLACE, 10.0, 1, Fraction(0))) > Fraction(1, 10)
    assert 10.0 < nudged.scale < 10.0 * (1 + 1e-12)


def test_calibrate_is_cached() -> None:
    assert calibrate(*GAUSSIAN) is calibrate(*GAUSSIAN)


# --- sampling ---------------------------------------------------------------------------------


def test_noise_follows_claimed_distribution(
    spec_and_samples: tuple[NoiseSpec, np.ndarray],
) -> None:
    spec, samples = spec_and_samples
    assert chi_square_p(samples, spec) > P_MIN


def test_goodness_of_fit_rejects_halved_scale(
    spec_and_samples: tuple[NoiseSpec, np.ndarray],
) -> None:
    spec, _ = spec_and_samples
    halved = dataclasses.replace(spec, scale=spec.scale / 2)
    assert chi_square_p(draw(halved), spec) < P_MIN


def test_noise_is_independent_across_values(
    spec_and_samples: tuple[NoiseSpec, np.ndarray],
) -> None:
    _, samples = spec_and_samples
    lag1 = np.corrcoef(samples[:-1], samples[1:])[0, 1]
    assert abs(lag1) < 5 / math.sqrt(N)


def test_outputs_are_python_ints() -> None:
    for args in (LAPLACE, GAUSSIAN):
        spec = calibrate(*args)
        out = add_noise(spec, [0, 5, -7, 2**62])
        assert all(type(x) is int for x in out)
        assert type(half_width(spec)) is int
    assert add_noise(calibrate(*LAPLACE), []) == []


# --- confidence intervals ---------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_half_width_is_exact_and_tight(
    spec_and_samples: tuple[NoiseSpec, np.ndarray], confidence: float
) -> None:
    spec, samples = spec_and_samples
    alpha = 1 - confidence
    t = half_width(spec, confidence)
    assert t >= 1
    # Exact, against a brute-force sum of the reference pmf.
    assert exact_tail(spec, t) <= alpha < exact_tail(spec, t - 1)
    # Empirical, on real OpenDP samples, with 5-sigma slack.
    slack = 5 * math.sqrt(alpha * (1 - alpha) / N)
    above_t = float(np.mean(np.abs(samples) > t))
    above_t_minus_1 = float(np.mean(np.abs(samples) > t - 1))
    assert above_t <= alpha + slack
    assert above_t_minus_1 > alpha - slack
    assert abs(above_t - exact_tail(spec, t)) <= slack


def test_half_width_tiny_scale_is_zero() -> None:
    spec = calibrate(DISCRETE_LAPLACE, Fraction(100), Fraction(0), 1)
    assert half_width(spec) == 0


@pytest.mark.parametrize("scale", [1e6, 1e9])
def test_half_width_large_scales_match_continuous_quantiles(scale: float) -> None:
    lap = NoiseSpec(DISCRETE_LAPLACE, Fraction(1), Fraction(0), 1, scale)
    assert abs(half_width(lap, 0.95) - scale * math.log(20)) <= 2
    gauss = NoiseSpec(DISCRETE_GAUSSIAN, Fraction(1), Fraction(1, 10**6), 1, scale)
    assert abs(half_width(gauss, 0.95) - scale * Z_975) <= 2


@pytest.mark.parametrize("scale", [200.0, 1000.0])
def test_gaussian_tail_asymptotic_matches_direct_sum(scale: float) -> None:
    direct = _dp._gaussian_tails_direct(scale)
    for t in [0, int(scale), int(2 * scale), int(4 * scale)]:
        asym = _dp._gaussian_tail_asymptotic(scale, t)
        assert abs(asym - direct[t]) <= 1e-9 * direct[t]
    for alpha in [0.5, 0.05, 0.001]:
        by_sum = int(np.argmax(direct <= alpha))
        by_em = _dp._smallest_t(lambda t: _dp._gaussian_tail_asymptotic(scale, t), alpha, 50_000)
        assert by_sum == by_em


# --- means ------------------------------------------------------------------------------------


def test_split_epsilon_is_exact() -> None:
    assert split_epsilon(Fraction(1), 2) == Fraction(1, 2)
    parts = [split_epsilon(Fraction(1, 3), 7)] * 7
    assert sum(parts) == Fraction(1, 3)
    with pytest.raises(ValueError):
        split_epsilon(Fraction(1), 0)
    with pytest.raises(ValueError):
        split_epsilon(Fraction(0), 2)


# --- input validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "eps", "delta", "sens"),
    [
        (DISCRETE_LAPLACE, Fraction(0), Fraction(0), 1),
        (DISCRETE_LAPLACE, Fraction(-1, 2), Fraction(0), 1),
        (DISCRETE_GAUSSIAN, Fraction(0), Fraction(1, 10**6), 1),
        (DISCRETE_LAPLACE, Fraction(1), Fraction(-1, 10**6), 1),
        (DISCRETE_GAUSSIAN, Fraction(1), Fraction(1), 1),
        (DISCRETE_GAUSSIAN, Fraction(1), Fraction(3, 2), 1),
        (DISCRETE_LAPLACE, Fraction(1), Fraction(0), 0),
        (DISCRETE_GAUSSIAN, Fraction(1), Fraction(1, 10**6), -3),
        ("laplace", Fraction(1), Fraction(0), 1),
        ("", Fraction(1), Fraction(0), 1),
        (DISCRETE_GAUSSIAN, Fraction(1), Fraction(0), 1),
    ],
)
def test_calibrate_rejects_bad_parameters(
    mechanism: str, eps: Fraction, delta: Fraction, sens: int
) -> None:
    with pytest.raises(ValueError):
        calibrate(mechanism, eps, delta, sens)


def test_calibrate_rejects_inexact_types() -> None:
    with pytest.raises(TypeError):
        calibrate(DISCRETE_LAPLACE, 0.5, Fraction(0), 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        calibrate(DISCRETE_GAUSSIAN, Fraction(1), 1e-6, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        calibrate(DISCRETE_LAPLACE, Fraction(1), Fraction(0), True)


def test_add_noise_rejects_bad_values_without_echoing_them() -> None:
    spec = calibrate(*LAPLACE)
    with pytest.raises(TypeError):
        add_noise(spec, [1, 2.5])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        add_noise(spec, [True])
    secret = 2**62 + 123_457
    with pytest.raises(ValueError) as info:
        add_noise(spec, [secret])
    assert str(secret) not in str(info.value)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_half_width_rejects_bad_confidence(confidence: float) -> None:
    with pytest.raises(ValueError):
        half_width(calibrate(*LAPLACE), confidence)


def test_noise_spec_rejects_unknown_mechanism_and_bad_scale() -> None:
    with pytest.raises(ValueError):
        NoiseSpec("gaussian", Fraction(1), Fraction(0), 1, 1.0)
    with pytest.raises(ValueError):
        NoiseSpec(DISCRETE_LAPLACE, Fraction(1), Fraction(0), 1, 0.0)
    with pytest.raises(ValueError):
        NoiseSpec(DISCRETE_LAPLACE, Fraction(1), Fraction(0), 1, math.inf)
