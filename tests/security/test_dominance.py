"""Step 3 of disclosure control: the (n, k) rule and the p% rule on sums and means.

A cell whose total is mostly one person's (or two persons') contribution tells those in the
know that person's value: the second-largest contributor subtracts their own value from the
released total and learns the largest to within what everyone else adds. These tests plant such
a person on a real server on loopback — in synthetic data and in the PUMS census sample — and
show that without the rules the planted value is recoverable to within p%, and that with them the
cell is suppressed, the rule is named, and cells without a dominant contributor are released.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

from sandbox import CellStatus, Query, Result
from tests.conftest import PUMS_DIR, World
from tests.security._support import add_project, audit_entries, csv_world

K = 10
NK = (2, Fraction(85, 100))
P = Fraction(10, 100)
BOTH = "dominance: {n: 2, k: 0.85}, p_percent: 0.10"
DOMINANCE = "disclosure.dominance"
P_PERCENT = "disclosure.p_percent"
PLANTED = 987_654  # income of the planted person: dwarfs the rest of their group


def policy(
    name: str, rules: str, *, lo: int = 0, hi: int = 10_000_000, group: str = "region"
) -> str:
    """A policy for ``<name>.csv`` (person key ``pid``), with ``rules`` added to disclosure."""
    extra = f", {rules}" if rules else ""
    return (
        f"dataset: {name}\nversion: 1\ntitle: {name}\nsteward: test-office\n"
        f"source: {name}.csv\nperson_key: pid\npopulation: {name}-persons\n"
        "columns:\n  pid: {role: identifier}\n"
        f"  {group}: {{role: dimension}}\n"
        f"  income: {{role: measure, bounds: [{lo}, {hi}], aggregates: [sum, mean]}}\n"
        "  hours: {role: measure, bounds: [0, 80], aggregates: [sum, mean]}\n"
        f"purposes:\n  research: {{columns: [{group}, income, hours]}}\n"
        f"disclosure: {{min_persons_per_cell: {K}, rounding_base: 1{extra}}}\n"
    )


def fails_reference(contributions: list[float], nk: bool = True, p: bool = True) -> bool:
    """The rules, written out independently of the server: absolute per-person totals."""
    values = sorted((Fraction(abs(v)) for v in contributions), reverse=True) + [Fraction(0)] * 2
    total = sum(values, Fraction(0))
    x1, x2 = values[0], values[1]
    n, k = NK
    return (nk and sum(values[:n], Fraction(0)) > k * total) or (p and total - x1 - x2 < P * x1)


def run(world: World, query: Query) -> Result:
    return world.client("ana").run(query, project="p", purpose="research", timeout=60)


def cells_by_key(result: Result) -> dict[object, dict[str, tuple[object, CellStatus, str]]]:
    columns = result.table.value_columns
    return {
        row.keys[0]: {
            col: (cell.value, cell.status, cell.rule)
            for col, cell in zip(columns, row.cells, strict=True)
        }
        for row in result.table.rows
    }


# ---- synthetic data: one row per person ------------------------------------------------------
def people() -> pd.DataFrame:
    """Regions A, B, C with 20 persons each on modest incomes; person 1 in A earns PLANTED."""
    rows = []
    for pid in range(1, 61):
        region = "ABC"[(pid - 1) // 20]
        income = 2_000 + (pid * 379) % 1_500
        rows.append((pid, region, PLANTED if pid == 1 else income, 20 + pid % 25))
    return pd.DataFrame(rows, columns=["pid", "region", "income", "hours"])


def world_of(
    world_factory: Callable[..., World], tmp_path: Path, frame: pd.DataFrame, rules: str, **kw: int
) -> World:
    world = csv_world(world_factory, tmp_path, {"people": (frame, policy("people", rules, **kw))})
    add_project(world, "p", (("people", "research"),))
    return world


QUERY = Query("people").group_by("region").count().sum("income").mean("income").sum("hours")


def test_without_the_rules_the_dominant_value_is_recoverable(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame = people()
    result = run(world_of(world_factory, tmp_path, frame, ""), QUERY)
    cells = cells_by_key(result)
    released, status, _ = cells["A"]["sum_income"]
    assert status == CellStatus.RELEASED and isinstance(released, float)
    group = frame[frame["region"] == "A"].sort_values("income", ascending=False)
    x1, x2 = float(group["income"].iloc[0]), float(group["income"].iloc[1])
    assert x1 == PLANTED
    # The second-largest contributor knows their own income: subtracting it from the released
    # total estimates the planted income to within p% (here: within 5%).
    estimate = released - x2
    assert abs(estimate - x1) < float(P) * x1
    assert abs(estimate - x1) < 0.05 * x1
    # And the two largest hold more than 85% of the total: both rules would fail this cell.
    assert fails_reference(group["income"].tolist(), p=False)
    assert fails_reference(group["income"].tolist(), nk=False)


@pytest.mark.parametrize(
    ("rules", "rule"),
    [
        (BOTH, DOMINANCE),
        ("dominance: {n: 2, k: 0.85}", DOMINANCE),
        ("dominance: {n: 1, k: 0.5}", DOMINANCE),
        ("p_percent: 0.10", P_PERCENT),
    ],
    ids=["both", "nk", "n1", "p"],
)
def test_a_dominant_contributor_suppresses_the_cell_and_names_the_rule(
    world_factory: Callable[..., World], tmp_path: Path, rules: str, rule: str
) -> None:
    frame = people()
    result = run(world_of(world_factory, tmp_path, frame, rules), QUERY)
    cells = cells_by_key(result)
    # The dominated measure's sum and mean go, with the rule named and no value.
    for column in ("sum_income", "mean_income"):
        assert cells["A"][column] == (None, CellStatus.SUPPRESSED, rule)
    # The count and the other measure of the row are released: they say nothing about income.
    truth = frame.groupby("region").agg(n=("pid", "size"), hours=("hours", "sum"))
    assert cells["A"]["count"] == (truth.loc["A", "n"], CellStatus.RELEASED, "")
    assert cells["A"]["sum_hours"] == (truth.loc["A", "hours"], CellStatus.RELEASED, "")
    # Groups without a dominant contributor are released as they are.
    sums = frame.groupby("region")["income"].sum()
    for region in ("B", "C"):
        assert not fails_reference(frame.loc[frame["region"] == region, "income"].tolist())
        assert cells[region]["sum_income"] == (sums[region], CellStatus.RELEASED, "")
        assert cells[region]["mean_income"][1] == CellStatus.RELEASED
    report = result.report.set_index(["region", "column"])
    assert report.loc[("A", "sum_income"), "rule"] == rule
    assert result.suppressed == 2
    # The table says which rules applied, with their parameters; nothing else of the data.
    settings = result.table.settings
    if "dominance" in rules:
        n = 1 if "n: 1" in rules else 2
        assert (settings["dominance_n"], settings["dominance_k_percent"]) == (
            n,
            int(50 + 35 * (n - 1)),
        )
    if "p_percent" in rules:
        assert settings["p_percent"] == 10
    assert str(PLANTED) not in json.dumps(result.table.to_json())


def test_cells_without_a_dominant_contributor_are_released(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame = people()
    frame.loc[frame["pid"] == 1, "income"] = 2_500  # no one dominates any more
    world = world_of(world_factory, tmp_path, frame, BOTH)
    result = run(world, QUERY)
    assert result.suppressed == 0
    sums = frame.groupby("region")["income"].sum()
    means = frame.groupby("region")["income"].mean()
    for region, cells in cells_by_key(result).items():
        assert cells["sum_income"] == (sums[region], CellStatus.RELEASED, "")
        assert cells["mean_income"][0] == pytest.approx(means[region])
    # A single cell over everyone is released too.
    total = run(world, Query("people").sum("income"))
    (row,) = total.table.rows
    assert (row.cells[0].value, row.cells[0].status) == (sums.sum(), CellStatus.RELEASED)


def test_a_small_cell_keeps_its_min_persons_rule(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame = people()
    frame = frame[(frame["region"] != "A") | (frame["pid"] <= 5)]  # A: 5 persons, one dominant
    result = run(world_of(world_factory, tmp_path, frame, BOTH), QUERY)
    cells = cells_by_key(result)
    assert {c[2] for c in cells["A"].values()} == {"disclosure.min_persons"}


# ---- synthetic data: several rows per person, signed values -----------------------------------
def payments() -> pd.DataFrame:
    """Each person has several payment rows. In A, person 1 receives PLANTED in 30 rows that are
    each unremarkable; in B, person 21 books a large loss (negative) in many rows."""
    rows = []
    for pid in range(1, 61):
        region = "ABC"[(pid - 1) // 20]
        for r in range(1 + pid % 3):
            rows.append((pid, region, 800 + (pid * 131 + r * 17) % 900, 8))
    planted = [(1, "A", PLANTED / 30, 8)] * 30
    loss = [(21, "B", -40_000.0, 8)] * 25 + [(21, "B", 10_000.0, 8)] * 5
    frame = pd.DataFrame(rows + planted + loss, columns=["pid", "region", "income", "hours"])
    return frame.sample(frac=1, random_state=3).reset_index(drop=True)


def test_contributions_are_summed_per_person_and_taken_absolute(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame = payments()
    # Row by row nothing stands out (the largest rows are the planted person's 1/30 parts) …
    for region in ("A", "B"):
        rows = frame.loc[frame["region"] == region, "income"].tolist()
        assert not fails_reference(rows)
    # … but per person, in absolute value, one person dominates A and one dominates B.
    per_person = frame.groupby(["region", "pid"])["income"].sum()
    assert fails_reference(per_person["A"].tolist())
    assert fails_reference(per_person["B"].tolist())
    assert not fails_reference(per_person["C"].tolist())
    assert per_person["B"].sum() < 0  # the loss makes the signed total negative

    world = world_of(world_factory, tmp_path, frame, BOTH, lo=-1_000_000)
    result = run(world, QUERY)
    cells = cells_by_key(result)
    for region in ("A", "B"):
        assert cells[region]["sum_income"] == (None, CellStatus.SUPPRESSED, DOMINANCE)
        assert cells[region]["mean_income"] == (None, CellStatus.SUPPRESSED, DOMINANCE)
        assert cells[region]["count"][1] == CellStatus.RELEASED  # rows, not affected
    assert cells["C"]["sum_income"] == (per_person["C"].sum(), CellStatus.RELEASED, "")
    assert cells["C"]["mean_income"][0] == pytest.approx(
        frame.loc[frame["region"] == "C", "income"].mean()
    )

    # With a filter (the query set is counted in distinct persons alongside): the same.
    filtered = Query("people").where("region", "in", ["A", "C"]).group_by("region")
    result = run(world, filtered.count().count_persons().sum("income"))
    cells = cells_by_key(result)
    assert set(cells) == {"A", "C"}
    assert cells["A"]["sum_income"] == (None, CellStatus.SUPPRESSED, DOMINANCE)
    assert cells["A"]["count_distinct"] == (20, CellStatus.RELEASED, "")
    assert cells["C"]["sum_income"] == (per_person["C"].sum(), CellStatus.RELEASED, "")


# ---- the PUMS census sample ---------------------------------------------------------------------
def pums_with_planted() -> tuple[pd.DataFrame, int, int]:
    """PUMS.csv with a person key, and one person of a small education group made very rich.

    Returns the frame, the planted person's ``pid`` and their ``educ`` group.
    """
    frame = pd.read_csv(PUMS_DIR / "PUMS.csv")
    frame.insert(0, "pid", range(1, len(frame) + 1))
    sizes = frame.groupby("educ").size()
    educ = int(sizes[sizes >= 2 * K].index[0])  # the first group well above the threshold
    group = frame[frame["educ"] == educ]
    pid = int(group.sort_values("income").iloc[0]["pid"])
    frame.loc[frame["pid"] == pid, "income"] = 25 * group["income"].sum()
    return frame, pid, educ


def pums_world(world_factory: Callable[..., World], tmp_path: Path, rules: str) -> World:
    frame, _, _ = pums_with_planted()
    text = policy("census", rules, hi=100_000_000, group="educ").replace(
        "  hours: {role: measure, bounds: [0, 80], aggregates: [sum, mean]}\n", ""
    )
    text = text.replace("[educ, income, hours]", "[educ, income]")
    world = csv_world(world_factory, tmp_path, {"census": (frame, text)})
    add_project(world, "p", (("census", "research"),))
    return world


PUMS_QUERY = Query("census").group_by("educ").count().sum("income").mean("income")


def test_pums_planted_contributor_is_recoverable_without_the_rules(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame, pid, educ = pums_with_planted()
    cells = cells_by_key(run(pums_world(world_factory, tmp_path, ""), PUMS_QUERY))
    released, status, _ = cells[educ]["sum_income"]
    assert status == CellStatus.RELEASED and isinstance(released, float)
    group = frame[frame["educ"] == educ].sort_values("income", ascending=False)
    x1 = float(group["income"].iloc[0])
    assert int(group["pid"].iloc[0]) == pid
    x2 = float(group["income"].iloc[1])
    assert abs((released - x2) - x1) < float(P) * x1  # the runner-up learns x1 within p%


def test_pums_planted_contributor_is_suppressed_and_the_rest_follow_the_rules(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame, _, educ = pums_with_planted()
    world = pums_world(world_factory, tmp_path, BOTH)
    result = run(world, PUMS_QUERY)
    cells = cells_by_key(result)
    assert cells[educ]["sum_income"] == (None, CellStatus.SUPPRESSED, DOMINANCE)
    assert cells[educ]["mean_income"] == (None, CellStatus.SUPPRESSED, DOMINANCE)
    assert cells[educ]["count"][1] == CellStatus.RELEASED
    # Every other group: released exactly when the reference rules pass (real data can have
    # naturally dominated groups; they must be suppressed too), small groups by min persons.
    released = 0
    for key, group in frame.groupby("educ"):
        got = cells[key]["sum_income"]
        if len(group) < K:
            assert got[1:] == (CellStatus.SUPPRESSED, "disclosure.min_persons")
        elif fails_reference(group["income"].tolist()):
            expected = (
                DOMINANCE if fails_reference(group["income"].tolist(), p=False) else P_PERCENT
            )
            assert got == (None, CellStatus.SUPPRESSED, expected)
        else:
            assert got == (group["income"].sum(), CellStatus.RELEASED, "")
            assert cells[key]["mean_income"][0] == pytest.approx(group["income"].mean())
            released += 1
    assert released >= 8  # most of the real groups are released
    # The planted value appears in no released cell and in no audit entry.
    texts = [json.dumps(result.table.to_json()), json.dumps(audit_entries(world))]
    planted = str(int(frame["income"].max()))
    assert all(planted not in text for text in texts)
