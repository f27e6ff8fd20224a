"""Dominance rules: the pure (n, k) and p% rules, how ``protect`` applies them, and the engine's
per-person contributions on real files checked against a reference computed here."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox._model import AggFunc, Aggregate, CellStatus, Filter, FilterOp, JobSpec
from sandbox.disclosure import (
    RULE_DOMINANCE,
    RULE_MIN_PERSONS,
    RULE_P_PERCENT,
    NeedsExactContributions,
    Settings,
    failed_rule,
    nk_fails,
    p_percent_fails,
    person_contributions,
    protect,
    screen_passes,
)
from sandbox.engine import Contributions, Engine, KeySpace, RawCell, RawTable, plan
from sandbox.policy import (
    DisclosureSettings,
    DominanceRule,
    Mechanism,
    NoiseSettings,
    Policy,
    load_policy,
)
from sandbox.state import DatasetRecord

NK = DominanceRule(n=2, k=Fraction(85, 100))
P = Fraction(10, 100)


# ---- the (n, k) rule ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("top", "total", "n", "k", "fails"),
    [
        ([50, 30, 10, 10], 100, 2, Fraction(80, 100), False),  # 80 of 100: exactly k passes
        ([50, 30, 10, 10], 100, 2, Fraction(79, 100), True),  # 80 > 79
        ([51, 29, 10, 10], 100, 1, Fraction(1, 2), True),  # 51 > 50
        ([50, 30, 10, 10], 100, 1, Fraction(1, 2), False),  # 50 = 50
        ([10, 50, 30, 10], 100, 2, Fraction(80, 100), False),  # any order: the 2 largest
        ([85, 0], 100, 2, Fraction(85, 100), False),  # two persons, 85% between them
        ([86], 100, 2, Fraction(85, 100), True),  # fewer contributors than n
        ([0, 0, 0], 0, 2, Fraction(85, 100), False),  # nothing to dominate
        ([-60, 20, 20], 100, 1, Fraction(1, 2), True),  # contributions count in absolute value
    ],
)
def test_nk_rule_by_hand(top: list[int], total: int, n: int, k: Fraction, fails: bool) -> None:
    assert nk_fails(top, total, n, k) is fails


def test_nk_rule_is_exact_on_floats_and_decimals() -> None:
    # 0.85 of 20 is 17 exactly: 17.0 passes, the next double above 17 fails.
    assert not nk_fails([17.0, 0.0], 20.0, 2, Fraction(85, 100))
    assert nk_fails([math.nextafter(17.0, 18.0)], 20.0, 2, Fraction(85, 100))


# ---- the p% rule -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("top", "total", "p", "fails"),
    [
        ([50, 30], 100, Fraction(40, 100), False),  # rest 20 = 0.40 * 50: passes at the boundary
        ([50, 30], 100, Fraction(41, 100), True),  # rest 20 < 20.5
        ([30, 50], 100, Fraction(41, 100), True),  # any order
        ([1000, 10], 1100, Fraction(10, 100), True),  # rest 90 < 100
        ([100], 100, Fraction(1, 100), True),  # a lone contributor: the rest is 0
        ([0, 0], 0, Fraction(10, 100), False),  # nothing to estimate
        ([-1000, 5], 1100, Fraction(10, 100), True),  # absolute values: rest 95 < 100
        ([1000, 5], 1105, Fraction(10, 100), False),  # rest 100 = 0.10 * 1000
    ],
    ids=["boundary", "above", "order", "rest-below", "alone", "zeros", "negative", "boundary-2"],
)
def test_p_percent_rule_by_hand(top: list[int], total: int, p: Fraction, fails: bool) -> None:
    x1, x2 = sorted((abs(v) for v in top), reverse=True)[:2] + [0] * (2 - len(top))
    assert fails is (total - x1 - x2 < p * x1)  # the definition, spelled out
    assert p_percent_fails(top, total, p) is fails


def test_p_percent_bites_where_nk_does_not() -> None:
    # Largest 60, second 35, rest 5: the top two hold 95% (nk with k=0.95 passes at the
    # boundary) but the second-largest learns the largest to within 5/60 < 10%.
    top, total = [60, 35, 5], 100
    assert not nk_fails(top, total, 2, Fraction(95, 100))
    assert p_percent_fails(top, total, P)
    assert failed_rule(top, total, DominanceRule(2, Fraction(95, 100)), P) == RULE_P_PERCENT


def test_failed_rule_names_the_first_rule_that_fails() -> None:
    dominated = ([900, 50, 25, 25], 1000)
    assert failed_rule(*dominated, NK, P) == RULE_DOMINANCE
    assert failed_rule(*dominated, None, P) == RULE_P_PERCENT
    assert failed_rule(*dominated, None, None) == ""
    spread = ([10, 10, 10], 100)
    assert failed_rule(*spread, NK, P) == ""


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_contribution_that_is_not_finite_fails(bad: float) -> None:
    assert failed_rule([bad, 1.0], 10.0, NK, P) == RULE_DOMINANCE
    assert failed_rule([1.0], bad, None, P) == RULE_P_PERCENT


# ---- per-person contributions -----------------------------------------------------------------
def test_a_person_with_many_rows_is_one_contributor() -> None:
    # Person "a" has 20 rows of 10; ten others have one row of 10 each.
    rows = [("a", 10)] * 20 + [(f"p{i}", 10) for i in range(10)]
    contributions = person_contributions(rows)
    assert contributions == [200] + [10] * 10
    total = sum(contributions)
    assert total == 300
    # Per person the two largest hold 210/300 = 70% > 60%; row by row only 20/300 would show.
    assert nk_fails(contributions, total, 2, Fraction(60, 100))
    assert not nk_fails([v for _, v in rows], total, 2, Fraction(60, 100))


def test_negative_contributions_count_in_absolute_value() -> None:
    # A loss of 900 among small gains: the signed sum (-800) hides who moves the cell.
    rows = [("loss", -500), ("loss", -400), ("a", 50), ("b", 30), ("c", 20)]
    contributions = person_contributions(rows)
    assert contributions == [900, 50, 30, 20]
    assert failed_rule(contributions, sum(contributions), NK, P) == RULE_DOMINANCE


def test_rows_are_summed_before_the_absolute_value_and_missing_values_add_nothing() -> None:
    rows = [("a", 100), ("a", -100), ("b", 5), ("b", None), ("c", None)]
    assert person_contributions(rows) == [5, 0]


# ---- protect() ---------------------------------------------------------------------------------
SPEC = JobSpec(
    "d",
    "p",
    "research",
    (
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.SUM, "income"),
        Aggregate(AggFunc.MEAN, "income"),
        Aggregate(AggFunc.SUM, "visits"),
    ),
    ("region",),
)


KEYS = (KeySpace("region", None),)


def _cell(region: str, persons: int, income: Contributions, visits: Contributions) -> RawCell:
    income_sum = float(income.total)
    return RawCell(
        keys=(region,),
        persons=persons,
        values=(persons, income_sum, income_sum / persons, float(visits.total)),
        contributions=(None, income, income, visits),
    )


SPREAD = Contributions(total=1000, top=(60, 55))
DOMINATED = Contributions(total=1000, top=(900, 20))  # nk: 92% > 85%
NEAR = Contributions(total=1000, top=(600, 350))  # nk: 95%; p: rest 50 < 60
CLOSE = Contributions(total=1000, top=(500, 340))  # nk: 84% passes; p: rest 160 >= 50 passes


def _settings(**kw: object) -> Settings:
    base = Settings(min_persons=10, rounding_base=1, max_groups=100)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def _raw(*cells: RawCell, top: int = 2) -> RawTable:
    return RawTable(cells, None, contribution_top=top)


def test_protect_suppresses_a_dominated_measure_and_names_the_rule() -> None:
    raw = _raw(
        _cell("A", 20, DOMINATED, SPREAD),
        _cell("B", 20, SPREAD, SPREAD),
        _cell("C", 20, CLOSE, SPREAD),
    )
    table = protect(raw, SPEC, KEYS, _settings(dominance=NK, p_percent=P))
    rows = {r.keys[0]: r.cells for r in table.rows}
    count, income_sum, income_mean, visits = rows["A"]
    # Every magnitude cell of the dominated measure goes; the count and the other measure stay.
    assert (count.value, count.status) == (20.0, CellStatus.RELEASED)
    for cell in (income_sum, income_mean):
        assert (cell.value, cell.status, cell.rule) == (None, CellStatus.SUPPRESSED, RULE_DOMINANCE)
    assert (visits.value, visits.status) == (1000.0, CellStatus.RELEASED)
    for region in ("B", "C"):
        assert all(c.status == CellStatus.RELEASED and c.value is not None for c in rows[region])
    assert table.settings["dominance_n"] == 2
    assert table.settings["dominance_k_percent"] == 85
    assert table.settings["p_percent"] == 10


def test_protect_applies_each_rule_alone() -> None:
    raw = _raw(_cell("A", 20, DOMINATED, SPREAD), _cell("B", 20, NEAR, SPREAD))
    only_p = protect(raw, SPEC, KEYS, _settings(p_percent=P))
    rules = {r.keys[0]: r.cells[1].rule for r in only_p.rows}
    assert rules == {"A": RULE_P_PERCENT, "B": RULE_P_PERCENT}
    assert "dominance_n" not in only_p.settings
    only_nk = protect(raw, SPEC, KEYS, _settings(dominance=DominanceRule(2, Fraction(96, 100))))
    rules = {r.keys[0]: r.cells[1].rule for r in only_nk.rows}
    assert rules == {"A": "", "B": ""}  # 92% and 95% are under 96%
    assert all(c.status == CellStatus.RELEASED for r in only_nk.rows for c in r.cells)


def test_protect_without_rules_releases_dominated_cells() -> None:
    raw = _raw(_cell("A", 20, DOMINATED, SPREAD), top=0)
    table = protect(raw, SPEC, KEYS, _settings())
    assert all(c.status == CellStatus.RELEASED for c in table.rows[0].cells)
    assert "dominance_n" not in table.settings and "p_percent" not in table.settings


def test_a_small_cell_keeps_the_min_persons_rule() -> None:
    raw = _raw(_cell("A", 3, DOMINATED, SPREAD))
    table = protect(raw, SPEC, KEYS, _settings(dominance=NK, p_percent=P))
    assert [c.rule for c in table.rows[0].cells] == [RULE_MIN_PERSONS] * 4


def test_missing_contributions_fail_closed() -> None:
    # Rules on, but the engine reported no contributions: nothing is assumed.
    no_stats = RawCell(("A",), 20, (20, 1000.0, 50.0, 1000.0))
    for raw in (_raw(no_stats, top=0), _raw(no_stats, top=1)):
        table = protect(raw, SPEC, KEYS, _settings(dominance=NK))
        count, *magnitudes = table.rows[0].cells
        assert count.status == CellStatus.RELEASED
        assert all(
            c.status == CellStatus.SUPPRESSED and c.rule == RULE_DOMINANCE for c in magnitudes
        )
    table = protect(_raw(no_stats, top=0), SPEC, KEYS, _settings(p_percent=P))
    assert [c.rule for c in table.rows[0].cells[1:]] == [RULE_P_PERCENT] * 3


def test_structural_zeros_are_not_checked() -> None:
    raw = _raw()
    # No group: one empty row, released as structural zeros without a contribution to check.
    spec = dataclasses.replace(SPEC, group_by=())
    table = protect(raw, spec, (), _settings(dominance=NK, zeros_disclosive=False))
    assert all(c.status == CellStatus.RELEASED for c in table.rows[0].cells)


# ---- the engine: per-person contributions on real files ---------------------------------------
POLICY = """\
dataset: payments
version: 1
title: Payments
steward: test-office
source: payments.{fmt}
person_key: pid
population: payments-persons
columns:
  pid: {{role: identifier}}
  region: {{role: dimension}}
  age: {{role: dimension, bins: [0, 40, 120]}}
  amount: {{role: measure, bounds: [-1000, 1000], aggregates: [sum, mean]}}
  hours: {{role: measure, bounds: [0, 100], aggregates: [sum, mean]}}
purposes:
  research: {{columns: [region, age, amount, hours]}}
disclosure:
  min_persons_per_cell: 2
  dominance: {{n: 3, k: 0.85}}
  p_percent: 0.1
"""


def _frame(several_rows: bool) -> pd.DataFrame:
    """Three regions; amounts and hours beyond the bounds, negatives, missing values, repeated
    persons."""
    rows = []
    for pid in range(1, 31):
        region = "ABC"[pid % 3]
        age = 20 + pid
        reps = 1 + pid % 4 if several_rows else 1
        for r in range(reps):
            amount: float | None = (pid * 37 % 200 - 60) * (r + 1)
            if pid == 7:
                amount = 5000.0  # clamped to 1000 per row
            if pid == 11 and r == 0:
                amount = None
            hours = None if pid == 13 else 500.0 if pid == 8 else float((pid + r) % 9)
            rows.append((pid, region, age, amount, hours))
    return pd.DataFrame(rows, columns=["pid", "region", "age", "amount", "hours"])


def _world(tmp_path: Path, frame: pd.DataFrame, fmt: str) -> tuple[Engine, DatasetRecord, Policy]:
    data = tmp_path / f"payments.{fmt}"
    if fmt == "csv":
        frame.to_csv(data, index=False)
    else:
        frame.to_parquet(data, index=False)
    policy_path = tmp_path / "payments.yaml"
    policy_path.write_text(POLICY.format(fmt=fmt), encoding="utf-8")
    policy = load_policy(policy_path)
    engine = Engine(threads=1)
    facts = engine.inspect_source(data, fmt, "pid", ("amount", "hours"))
    record = facts.record("payments", data, fmt, policy.version_label)
    return engine, record, policy


def _reference(frame: pd.DataFrame, column: str, lo: float, hi: float) -> list[Fraction]:
    values = frame[column].clip(lo, hi)
    pairs = [
        (p, None if pd.isna(v) else float(v)) for p, v in zip(frame["pid"], values, strict=True)
    ]
    return person_contributions(pairs)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("several_rows", [False, True], ids=["one-row", "several-rows"])
@pytest.mark.parametrize("filtered", [False, True], ids=["all", "filtered"])
@pytest.mark.parametrize("screen", [False, True], ids=["exact", "screen"])
def test_engine_contributions_match_the_reference(
    tmp_path: Path, fmt: str, several_rows: bool, filtered: bool, screen: bool
) -> None:
    frame = _frame(several_rows)
    engine, record, policy = _world(tmp_path, frame, fmt)
    assert record.persons_unique is not several_rows
    filters = (Filter("age", FilterOp.GE, (30,)),) if filtered else ()
    spec = JobSpec(
        "payments",
        "p",
        "research",
        (
            Aggregate(AggFunc.COUNT),
            Aggregate(AggFunc.SUM, "amount"),
            Aggregate(AggFunc.COUNT_DISTINCT),
            Aggregate(AggFunc.MEAN, "hours"),
            Aggregate(AggFunc.MEAN, "amount"),
        ),
        ("region", "age"),
        filters,
    )
    with_rules = plan(spec, record, policy, screen=screen)
    top = 1 if screen else 3  # the screen reports the largest contribution only
    assert with_rules.contribution_top == top
    assert with_rules.contribution_measures == ("amount", "hours")
    assert with_rules.contribution_of == (-1, 0, -1, 1, 0)
    without = plan(spec, record, dataclasses.replace(policy, disclosure=_no_rules(policy)))
    assert without.contribution_top == 0
    raw = engine.run("with", with_rules)
    plain = engine.run("without", without)
    engine.close()
    assert raw.contribution_top == top
    # The released numbers do not depend on whether contributions are computed.
    assert raw.query_set_persons == plain.query_set_persons
    by_keys = {c.keys: c for c in plain.cells}
    assert set(by_keys) == {c.keys for c in raw.cells}
    subset = frame[frame["age"] >= 30] if filtered else frame
    if filtered:
        assert raw.query_set_persons == subset["pid"].nunique()
    for cell in raw.cells:
        other = by_keys[cell.keys]
        assert cell.persons == other.persons
        for a, b in zip(cell.values, other.values, strict=True):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-12)  # type: ignore[arg-type]
        region, band = cell.keys
        group = subset[
            (subset["region"] == region) & ((subset["age"] >= 40) == (band == "[40, 120)"))
        ]
        assert cell.persons == group["pid"].nunique()
        amount, hours = cell.contributions[1], cell.contributions[3]
        assert cell.contributions[0] is None and cell.contributions[2] is None
        assert cell.contributions[4] is amount
        for stats, column, (lo, hi) in (
            (amount, "amount", (-1000, 1000)),
            (hours, "hours", (0, 100)),
        ):
            assert stats is not None
            expected = _reference(group, column, lo, hi)
            assert Fraction(stats.total) == sum(expected, Fraction(0))
            assert [Fraction(v) for v in stats.top] == expected[:top]


def _no_rules(policy: Policy) -> DisclosureSettings:
    return dataclasses.replace(policy.disclosure, dominance=None, p_percent=None)


def test_no_contributions_in_dp_mode_or_without_magnitudes(tmp_path: Path) -> None:
    engine, record, policy = _world(tmp_path, _frame(False), "parquet")
    engine.close()
    counts = JobSpec("payments", "p", "research", (Aggregate(AggFunc.COUNT),), ("region",))
    assert plan(counts, record, policy).contribution_top == 0
    noised = dataclasses.replace(
        policy,
        disclosure=dataclasses.replace(
            policy.disclosure, noise=NoiseSettings(mechanism=Mechanism.DISCRETE_LAPLACE)
        ),
    )
    sums = dataclasses.replace(counts, aggregates=(Aggregate(AggFunc.SUM, "amount"),))
    assert plan(sums, record, noised).contribution_top == 0
    only_p = dataclasses.replace(
        policy, disclosure=dataclasses.replace(policy.disclosure, dominance=None)
    )
    assert plan(sums, record, only_p, screen=False).contribution_top == 2
    assert plan(sums, record, only_p).contribution_top == 1


def test_the_sql_holds_no_filter_value(tmp_path: Path) -> None:
    engine, record, policy = _world(tmp_path, _frame(True), "parquet")
    engine.close()
    spec = JobSpec(
        "payments",
        "p",
        "research",
        (Aggregate(AggFunc.SUM, "amount"),),
        ("region",),
        (Filter("region", FilterOp.EQ, ("zz_secret_region",)), Filter("age", FilterOp.GE, (31,))),
    )
    job = plan(spec, record, policy)
    assert "zz_secret_region" not in job.sql and "31" not in job.sql
    assert "zz_secret_region" in job.params and 31 in job.params


# ---- the screen: the largest contribution alone clears most cells -----------------------------
@pytest.mark.parametrize(
    ("contributions", "clears"),
    [(SPREAD, True), (DOMINATED, False), (NEAR, False), (CLOSE, False)],
    ids=["spread", "dominated", "near", "close"],
)
def test_a_screened_cell_is_released_or_sent_for_exact_contributions(
    contributions: Contributions, clears: bool
) -> None:
    screened = Contributions(contributions.total, contributions.top[:1])
    raw = _raw(_cell("A", 20, screened, SPREAD), top=1)
    settings = _settings(dominance=NK, p_percent=P)
    if clears:
        table = protect(raw, SPEC, KEYS, settings)
        assert all(c.status == CellStatus.RELEASED for c in table.rows[0].cells)
        exact = protect(_raw(_cell("A", 20, contributions, SPREAD)), SPEC, KEYS, settings)
        assert table == exact  # the screen decides as the exact rules do
    else:
        with pytest.raises(NeedsExactContributions):
            protect(raw, SPEC, KEYS, settings)


@given(
    values=st.lists(st.integers(0, 10**6), min_size=1, max_size=12),
    n=st.integers(1, 4),
    k=st.fractions(Fraction(1, 100), Fraction(99, 100)),
    p=st.one_of(st.none(), st.fractions(Fraction(1, 100), Fraction(1, 2))),
)
def test_the_screen_never_clears_a_cell_the_exact_rules_fail(
    values: list[int], n: int, k: Fraction, p: Fraction | None
) -> None:
    top = sorted(values, reverse=True)
    rule = DominanceRule(n=n, k=k)
    if screen_passes(top[0], sum(values), rule, p):
        assert failed_rule(top, sum(values), rule, p) == ""


def test_large_files_grouped_by_text_are_read_from_the_file(tmp_path: Path) -> None:
    """A copy serves small files and number groups; Parquet's dictionaries group big text."""
    engine, record, policy = _world(tmp_path, _frame(False), "parquet")
    engine.close()
    count = (Aggregate(AggFunc.COUNT),)
    by_text = JobSpec("payments", "p", "research", count, ("region",))
    by_bins = JobSpec("payments", "p", "research", count, ("age",))
    large = replace(record, row_count=100_001)
    for spec, rec, cacheable in [
        (by_text, record, True),
        (by_bins, record, True),
        (by_text, large, False),
        (by_bins, large, True),
    ]:
        source = plan(spec, rec, policy).source
        assert source is not None and source.cacheable is cacheable
