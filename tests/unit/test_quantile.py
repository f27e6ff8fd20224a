"""Quantile grids, interval selection, OpenDP-equal scores, model, wire and SQL of quantiles."""

from __future__ import annotations

import itertools
from fractions import Fraction

import opendp.prelude as dp
import pytest

from sandbox import InvalidJobSpec, Query
from sandbox._model import AggFunc, Aggregate, CellStatus, JobSpec, quantile_problem
from sandbox._wire import spec_from_pb, spec_to_pb
from sandbox.client._sql import sql_to_query
from sandbox.disclosure._quantile import (
    _selector,
    noisy_min_index,
    quantile_interval,
    quantile_scores,
    rule_quantile,
    score_sensitivity,
)
from sandbox.engine import QuantileGrid, quantile_grid
from sandbox.state._jobs import spec_from_json, spec_to_json

dp.enable_features("contrib")


# ---- grids ------------------------------------------------------------------------------


def test_a_float_measure_gets_100_equal_intervals() -> None:
    grid = quantile_grid((0.0, 500000.0), "DOUBLE")
    assert grid == QuantileGrid(0.0, 5000.0, 100)
    assert grid.midpoint(0) == 2500.0 and grid.midpoint(99) == 497500.0
    assert grid.edges()[-1] == 500000.0


@pytest.mark.parametrize(
    ("bounds", "step", "intervals"),
    [((0, 40), 1, 41), ((0, 500000), 5001, 100), ((-10, 10), 1, 21), ((18, 120), 3, 35)],
)
def test_an_integer_measure_gets_odd_whole_widths(
    bounds: tuple[float, float], step: int, intervals: int
) -> None:
    grid = quantile_grid(bounds, "BIGINT")
    assert (grid.step, grid.intervals) == (step, intervals)
    assert grid.edges()[-1] > bounds[1]  # the upper bound lies inside the last interval
    assert all(grid.midpoint(i) % 1 == 0.5 for i in range(grid.intervals))


# ---- rule-based selection ---------------------------------------------------------------


def test_the_interval_is_the_first_reaching_q_of_the_persons() -> None:
    counts = [3, 0, 4, 2, 1]  # n = 10
    assert quantile_interval(counts, Fraction(1, 2)) == 2  # 3 < 5 <= 7
    assert quantile_interval(counts, Fraction(3, 10)) == 0  # exactly 3 reaches 0.3 * 10
    assert quantile_interval(counts, Fraction(7, 10)) == 2
    assert quantile_interval(counts, Fraction(71, 100)) == 3
    assert quantile_interval(counts, Fraction(99, 100)) == 4
    assert quantile_interval([0, 0, 0], Fraction(1, 2)) is None


def test_released_only_with_k_persons_on_each_side() -> None:
    grid = QuantileGrid(0.0, 10.0, 5)
    half = Fraction(1, 2)
    cell = rule_quantile([5, 1, 3, 1, 5], grid, half, 5)
    assert (cell.value, cell.status, cell.rule) == (25.0, CellStatus.RELEASED, "")
    for counts in ([4, 0, 3, 1, 5], [5, 1, 3, 0, 4], [0, 0, 9, 0, 0]):
        cell = rule_quantile(counts, grid, half, 5)
        assert (cell.value, cell.status, cell.rule) == (
            None,
            CellStatus.SUPPRESSED,
            "disclosure.quantile",
        )
    assert rule_quantile(None, grid, half, 1).status == CellStatus.SUPPRESSED
    assert rule_quantile([0] * 5, grid, half, 1).status == CellStatus.SUPPRESSED


# ---- DP scores are OpenDP's ------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "alpha", "factor"),
    [(Fraction(1, 2), 0.5, 1), (Fraction(9, 10), 0.9, 1000), (Fraction(1, 4), 0.25, 1)],
)
def test_scores_equal_opendps_on_the_midpoints(q: Fraction, alpha: float, factor: int) -> None:
    """Each value moved to its interval's midpoint; OpenDP scores the midpoints the same.

    OpenDP keeps an exact level (1/2, 1/4) or rounds it to ten-thousandths (0.9 → 9000/10000),
    which scales every score and the sensitivity by the same factor.
    """
    grid = QuantileGrid(0.0, 10.0, 6)
    counts = [4, 0, 7, 1, 3, 5]
    data = list(itertools.chain.from_iterable([grid.midpoint(i)] * c for i, c in enumerate(counts)))
    candidates = [grid.midpoint(i) for i in range(grid.intervals)]
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    scorer = dp.t.make_quantile_score_candidates(domain, dp.symmetric_distance(), candidates, alpha)
    assert [s * factor for s in quantile_scores(counts, q)] == scorer(data)
    assert score_sensitivity(q) * factor == scorer.map(1)


def test_the_selection_spends_at_most_its_epsilon_and_finds_a_clear_minimum() -> None:
    for sensitivity, epsilon in [(1, Fraction(1, 2)), (9, Fraction(1, 10)), (3, Fraction(2))]:
        assert Fraction(_selector(sensitivity, epsilon).map(sensitivity)) <= epsilon
    scores = [1000, 800, 0, 900, 1200]
    picks = [noisy_min_index(scores, 1, Fraction(1)) for _ in range(50)]
    assert picks == [2] * 50  # a gap of 800 at scale 2: any other pick is below 1e-150


# ---- model, state and wire -------------------------------------------------------------


def test_names_levels_and_problems() -> None:
    assert Aggregate(AggFunc.MEDIAN, "income").name == "median_income"
    assert Aggregate(AggFunc.MEDIAN, "income").level == Fraction(1, 2)
    names = {
        Fraction(9, 10): "quantile_0_9_income",
        Fraction(1, 4): "quantile_0_25_income",
        Fraction(1, 3): "quantile_1_3_income",
    }
    for q, name in names.items():
        assert Aggregate(AggFunc.QUANTILE, "income", q=q).name == name
    assert Aggregate(AggFunc.SUM, "income").level is None
    assert quantile_problem(Aggregate(AggFunc.QUANTILE, "income", q=Fraction(1, 2))) == ""
    bad = [
        Aggregate(AggFunc.QUANTILE, "income"),
        Aggregate(AggFunc.QUANTILE, "income", q=Fraction(1)),
        Aggregate(AggFunc.QUANTILE, "income", q=Fraction(0)),
        Aggregate(AggFunc.QUANTILE, "income", q=Fraction(1, 10001)),
        Aggregate(AggFunc.MEDIAN, "income", q=Fraction(1, 2)),
    ]
    assert all(quantile_problem(a) for a in bad)


def _spec() -> JobSpec:
    return (
        Query("pums")
        .group_by("sex")
        .median("income")
        .quantile("income", "9/10")
        .quantile("income", 0.25, alias="p25")
        .count()
        .to_spec(project="p", purpose="research")
    )


def test_the_level_survives_the_wire_and_the_state_store() -> None:
    spec = _spec()
    assert spec_from_pb(spec_to_pb(spec)) == spec
    assert spec_from_json(spec_to_json(spec)) == spec
    assert [a.get("q") for a in spec.canonical()["aggregates"]] == [None, "9/10", "1/4", None]
    other = Query("pums").group_by("sex").quantile("income", 0.8).count()
    assert spec.digest() != other.to_spec(project="p", purpose="research").digest()


@pytest.mark.parametrize("text", ["abc", "1/0", "-1/2", "0.5/0.5", "1e-3", "9" * 40])
def test_a_malformed_level_on_the_wire_is_refused_without_echoing_it(text: str) -> None:
    pb = spec_to_pb(_spec())
    pb.aggregates[1].q = text
    with pytest.raises(InvalidJobSpec) as err:
        spec_from_pb(pb)
    assert text not in err.value.message


# ---- client ----------------------------------------------------------------------------


def test_the_builder_takes_levels_exactly() -> None:
    aggs = (
        Query("r").quantile("x", 0.1).quantile("x", "1/3", "a").quantile("x", Fraction(1, 8), "b")
    )
    assert [a.q for a in aggs.aggregates] == [Fraction(1, 10), Fraction(1, 3), Fraction(1, 8)]
    for q in (0, 1, 1.5, -0.1, float("nan"), "abc", True, None, "1/100000"):
        with pytest.raises(InvalidJobSpec):
            Query("r").quantile("x", q)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sql", "function", "q"),
    [
        ("SELECT MEDIAN(income) FROM r", AggFunc.MEDIAN, None),
        ("SELECT QUANTILE_CONT(income, 0.9) FROM r", AggFunc.QUANTILE, Fraction(9, 10)),
        ("SELECT QUANTILE_DISC(income, .25) FROM r", AggFunc.QUANTILE, Fraction(1, 4)),
        ("SELECT QUANTILE(income, 0.5) FROM r", AggFunc.QUANTILE, Fraction(1, 2)),
        (
            "SELECT PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY income) FROM r",
            AggFunc.QUANTILE,
            Fraction(3, 4),
        ),
        (
            "SELECT PERCENTILE_DISC(0.1) WITHIN GROUP (ORDER BY income) FROM r",
            AggFunc.QUANTILE,
            Fraction(1, 10),
        ),
    ],
)
def test_sql_quantiles(sql: str, function: AggFunc, q: Fraction | None) -> None:
    (agg,) = sql_to_query(sql).aggregates
    assert (agg.function, agg.column, agg.q) == (function, "income", q)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT QUANTILE_CONT(income, 1.5) FROM r", "strictly between 0 and 1"),
        ("SELECT QUANTILE_CONT(income, '0.5') FROM r", "numeric literal"),
        ("SELECT QUANTILE_CONT(income, 0.000001) FROM r", "denominator"),
        ("SELECT QUANTILE_CONT(income) FROM r", "a bare column and a level"),
        ("SELECT QUANTILE_CONT(income + 1, 0.5) FROM r", "a bare column and a level"),
        ("SELECT MEDIAN(income * 2) FROM r", "use a bare column"),
        ("SELECT MEDIAN(DISTINCT income) FROM r", "DISTINCT inside MEDIAN"),
        (
            "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY income DESC) FROM r",
            "DESC) is not supported",
        ),
        (
            "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY income, age) FROM r",
            "exactly one column",
        ),
        ("SELECT SUM(income) WITHIN GROUP (ORDER BY income) FROM r", "WITHIN GROUP"),
    ],
)
def test_sql_quantiles_refused(sql: str, message: str) -> None:
    with pytest.raises(InvalidJobSpec) as err:
        sql_to_query(sql)
    assert message in err.value.message
    assert "0.5" not in err.value.message and "1.5" not in err.value.message
