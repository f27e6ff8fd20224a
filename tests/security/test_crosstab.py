"""Crosstabs with margins: no suppressed cell can be solved for from what is released.

On the PUMS sample (k = 10, no rounding) a two-way table of education by sex with all margins
has small cells. The attacker knows every released value exactly, that margins are sums and
that counts are never negative, and solves a linear programme for each suppressed cell's
smallest and largest possible value. With primary suppression only, subtraction recovers cells
exactly; as released, every suppressed cell keeps a range of possible values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from sandbox import TOTAL, CellStatus, InvalidJobSpec, PolicyDenied, Query
from sandbox._model import Key
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import pums_frame

K = 10
Grid = dict[tuple[Key, Key], float | None]


def _world(world_factory: Callable[..., World], **replace: str) -> World:
    policy = pums_policy("pums", "pums.csv").replace(
        "aggregates: [sum, mean]", "aggregates: [sum, mean, variance, stddev]"
    )
    for old, new in replace.items():
        policy = policy.replace(old, new)
    world = world_factory({"pums": policy}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"})
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    return world


def _truth() -> dict[tuple[Key, Key], int]:
    table = pd.crosstab(pums_frame().educ, pums_frame().sex, margins=True)
    out: dict[tuple[Key, Key], int] = {}
    for e, s in itertools.product(table.index, table.columns):
        out[(TOTAL if e == "All" else int(e), TOTAL if s == "All" else int(s))] = int(
            table.loc[e, s]
        )
    return out


def _ranges(released: Grid) -> dict[tuple[Key, Key], tuple[float, float]]:
    """The attacker: min and max of every hidden cell given the released ones and the sums."""
    hidden = [k for k, v in released.items() if v is None]
    index = {k: i for i, k in enumerate(hidden)}
    rows = sorted({k[0] for k in released if k[0] is not TOTAL}, key=str)
    cols = sorted({k[1] for k in released if k[1] is not TOTAL}, key=str)
    a_eq, b_eq = [], []
    lines = [[(r, c) for c in cols] + [(r, TOTAL)] for r in [*rows, TOTAL]]
    lines += [[(r, c) for r in rows] + [(TOTAL, c)] for c in [*cols, TOTAL]]
    for line in lines:  # the interior cells of a line minus its margin sum to zero
        coeffs = np.zeros(len(hidden))
        const = 0.0
        for j, key in enumerate(line):
            sign = -1.0 if j == len(line) - 1 else 1.0
            value = released[key]
            if value is None:
                coeffs[index[key]] += sign
            else:
                const -= sign * value
        if coeffs.any():
            a_eq.append(coeffs)
            b_eq.append(const)
        else:
            assert abs(const) < 1e-9  # the released values themselves add up
    out = {}
    for key, i in index.items():
        c = np.zeros(len(hidden))
        c[i] = 1.0
        lo = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        hi = linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        assert lo.status == 0
        out[key] = (lo.fun, np.inf if hi.status == 3 else -hi.fun)
    return out


def test_primary_suppression_alone_lets_the_attacker_solve_cells() -> None:
    truth = _truth()
    primary: Grid = {k: (None if v < K else float(v)) for k, v in truth.items()}
    ranges = _ranges(primary)
    exact = [k for k, (lo, hi) in ranges.items() if hi - lo < 1e-6]
    assert exact, "the fixture must make subtraction work without secondary suppression"
    for key in exact:
        assert ranges[key][0] == pytest.approx(truth[key])


def test_a_crosstab_keeps_every_suppressed_cell_unsolvable(
    world_factory: Callable[..., World],
) -> None:
    world = _world(world_factory)
    query = Query("pums").crosstab("educ", "sex")
    result = world.client("ana").run(query, project="census-study", purpose="research")
    truth = _truth()
    released: Grid = {}
    rules = {}
    for row in result.table.rows:
        (cell,) = row.cells
        key = (row.keys[0], row.keys[1])
        released[key] = cell.value
        rules[key] = cell.rule
        if cell.status != CellStatus.SUPPRESSED:
            assert cell.value == truth.get(key, 0)  # released cells are the true counts
    # The complete grid: every education level x {0, 1, TOTAL}, every margin present.
    assert set(released) == set(truth)
    assert released[(TOTAL, TOTAL)] == 1000
    primary = {k for k, r in rules.items() if r == "disclosure.min_persons"}
    secondary = {k for k, r in rules.items() if r == "disclosure.secondary"}
    assert primary == {k for k, v in truth.items() if v < K}
    assert secondary, "this table needs complementary suppression"
    for key, (lo, hi) in _ranges(released).items():
        assert hi - lo >= 1 - 1e-6, f"cell {key} is pinned down by the released values"
    frame = result.to_dataframe()
    assert "All" in set(frame["sex"]) and "All" in set(frame["educ"])


def test_sql_cube_is_the_same_crosstab(world_factory: Callable[..., World]) -> None:
    world = _world(world_factory)
    ana = world.client("ana")
    built = ana.run(
        Query("pums").crosstab("educ", "sex"), project="census-study", purpose="research"
    )
    sql = ana.sql(
        "SELECT educ, sex, COUNT(*) AS count FROM pums GROUP BY CUBE (educ, sex)",
        project="census-study",
        purpose="research",
    )
    assert sql.table == built.table


def test_variance_and_stddev_match_pandas_on_released_cells(
    world_factory: Callable[..., World],
) -> None:
    world = _world(world_factory)
    query = Query("pums").group_by("married").count().variance("income").stddev("income")
    result = world.client("ana").run(query, project="census-study", purpose="research")
    truth = pums_frame().groupby("married").income
    var, std = truth.var(ddof=1), truth.std(ddof=1)
    for row in result.table.rows:
        _, v, s = row.cells
        assert v.status == CellStatus.RELEASED
        assert v.value == pytest.approx(var[row.keys[0]], rel=1e-9)
        assert s.value == pytest.approx(std[row.keys[0]], rel=1e-9)


def test_small_cells_have_no_variance(world_factory: Callable[..., World]) -> None:
    world = _world(world_factory)
    query = Query("pums").group_by("educ").variance("income")
    result = world.client("ana").run(query, project="census-study", purpose="research")
    sizes = pums_frame().groupby("educ").size()
    for row in result.table.rows:
        if sizes.get(row.keys[0], 0) < K:
            assert row.cells[0].value is None and row.cells[0].rule == "disclosure.min_persons"


def test_dp_mode_refuses_margins_and_spread(world_factory: Callable[..., World]) -> None:
    noise = "rounding_base: 1, noise: {mechanism: discrete_laplace, epsilon_per_job: 1}}"
    world = _world(world_factory, **{"rounding_base: 1}": noise})
    ana = world.client("ana")
    with pytest.raises(PolicyDenied) as err:
        ana.run(
            Query("pums").crosstab("sex", "married"), project="census-study", purpose="research"
        )
    assert err.value.rule_ids == ("dp.margins",)
    with pytest.raises(PolicyDenied) as err:
        ana.run(Query("pums").variance("income"), project="census-study", purpose="research")
    assert err.value.rule_ids == ("dp.aggregate",)


def test_margins_need_one_row_per_person(world_factory: Callable[..., World]) -> None:
    world = world_factory(
        {"dup": pums_policy("dup", "dup.csv")}, {"dup.csv": PUMS_DIR / "PUMS_dup.csv"}
    )
    world.register("dup")
    world.project("census-study", (("dup", "research"),))
    with pytest.raises(InvalidJobSpec, match="one row per person"):
        world.client("ana").run(
            Query("dup").crosstab("sex", "married"), project="census-study", purpose="research"
        )
