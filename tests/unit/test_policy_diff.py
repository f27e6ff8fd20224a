"""``diff_policies``: what changed between two versions of a policy, section by section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sandbox.policy import Policy, load_policy
from sandbox.policy._diff import PolicyDiff, diff_policies

REPO = Path(__file__).resolve().parents[2]

BASE = """\
dataset: residents
version: 1
title: Residents
description: People.
steward: office
source: residents.parquet
person_key: person_id
population: harbor
columns:
  person_id: {role: identifier}
  district: {role: dimension, values: [North, South]}
  age: {role: dimension, bins: [0, 18, 65, 120]}
  sector: {role: dimension, operators: ['=', in]}
  income: {role: measure, bounds: [0, 500000], aggregates: [sum, mean]}
  secret: {role: hidden}
purposes:
  research: {description: Research., columns: [district, age, income]}
  planning: {columns: [district]}
disclosure:
  min_persons_per_cell: 5
  rounding_base: 1
  dominance: {n: 2, k: 0.85}
  p_percent: 0.1
limits: {max_groups: 1000, max_filters: 16, max_group_by: 4}
deny:
  - {id: no-income-for-planning, purposes: [planning], columns: [income], reason: Not needed.}
"""

DP = """\
dataset: visits
version: 1
title: Visits
steward: office
source: visits.parquet
person_key: pid
population: harbor
columns:
  pid: {role: identifier}
  dept: {role: dimension, values: [a, b]}
  cost: {role: measure, bounds: [0, 100], aggregates: [sum]}
purposes:
  research: {columns: [dept, cost]}
disclosure:
  min_persons_per_cell: 10
  noise: {mechanism: discrete_laplace, epsilon_per_job: 0.5, max_groups_per_person: 2}
  budget: {epsilon_per_project: 5, window_days: 365}
"""

CELL_KEY = """\
dataset: visits
version: 1
title: Visits
steward: office
source: visits.parquet
person_key: pid
population: harbor
columns:
  pid: {role: identifier}
  dept: {role: dimension, values: [a, b]}
purposes:
  research: {columns: [dept]}
disclosure:
  min_persons_per_cell: 10
  noise: {mechanism: cell_key, ptable: {max_perturbation: 2, variance: 1}}
"""


def load(tmp_path: Path, text: str, name: str) -> Policy:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_policy(path, match_file_name=False)


def diff(tmp_path: Path, old: str, new: str) -> PolicyDiff:
    return diff_policies(load(tmp_path, old, "old.yaml"), load(tmp_path, new, "new.yaml"))


def changes(tmp_path: Path, old: str, new: str) -> list[str]:
    return [c.text for c in diff(tmp_path, old, new).changes]


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def bumped(text: str) -> str:
    return edit(text, "version: 1\n", "version: 2\n")


# -- nothing, or only text --------------------------------------------------------------------


def test_identical_policies_have_no_changes(tmp_path: Path) -> None:
    d = diff(tmp_path, BASE, BASE)
    assert not d.changed
    assert d.changes == ()
    assert not d.text_only
    assert d.warnings == ()


def test_comments_layout_and_key_order_are_no_change(tmp_path: Path) -> None:
    reordered = "# a comment\n" + edit(
        BASE,
        "  planning: {columns: [district]}\n",
        "  planning:\n    columns:\n      - district   # only this\n",
    ).replace("title: Residents\n", "").replace("version: 1\n", "version: 1\ntitle: Residents\n")
    d = diff(tmp_path, BASE, reordered)
    assert not d.changed
    assert d.text_only  # the bytes differ, the meaning does not


def test_reordered_columns_and_purposes_are_no_change(tmp_path: Path) -> None:
    new = edit(BASE, "[district, age, income]", "[income, district, age]")
    new = edit(
        new,
        "  district: {role: dimension, values: [North, South]}\n"
        "  age: {role: dimension, bins: [0, 18, 65, 120]}\n",
        "  age: {role: dimension, bins: [0, 18, 65, 120]}\n"
        "  district: {role: dimension, values: [North, South]}\n",
    )
    assert changes(tmp_path, BASE, new) == []


# -- the header -----------------------------------------------------------------------------------


def test_version_and_header(tmp_path: Path) -> None:
    new = bumped(BASE)
    new = edit(new, "title: Residents", "title: Resident registry")
    new = edit(new, "steward: office", "steward: civil-affairs")
    new = edit(new, "source: residents.parquet", "source: residents_2026.parquet")
    new = edit(new, "population: harbor", "population: harbor-city")
    new = edit(new, "description: People.", "description: Everyone.")
    assert changes(tmp_path, BASE, new) == [
        "version 1 → 2",
        "title changed from 'Residents' to 'Resident registry'",
        "steward changed from 'office' to 'civil-affairs'",
        "source file changed from 'residents.parquet' to 'residents_2026.parquet'",
        "population (privacy budgets are kept per population) changed from 'harbor' to "
        "'harbor-city'",
        "description changed",
    ]


def test_a_change_without_a_version_bump_is_warned_about(tmp_path: Path) -> None:
    new = edit(BASE, "min_persons_per_cell: 5", "min_persons_per_cell: 10")
    d = diff(tmp_path, BASE, new)
    assert d.changed
    assert len(d.warnings) == 1
    assert "version did not go up" in d.warnings[0]
    assert diff(tmp_path, BASE, bumped(new)).warnings == ()


# -- columns --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  age: {role: dimension, bins: [0, 18, 65, 120]}",
            "  age: {role: dimension, bins: [0, 18, 35, 65, 120]}",
            ["column 'age' bins changed from [0, 18, 65, 120] to [0, 18, 35, 65, 120]"],
        ),
        (
            "  age: {role: dimension, bins: [0, 18, 65, 120]}",
            "  age: {role: dimension}",
            ["column 'age' no longer grouped into bins (were [0, 18, 65, 120])"],
        ),
        (
            "  district: {role: dimension, values: [North, South]}",
            "  district: {role: dimension, values: [North, South, East]}",
            ["column 'district' may now take value 'East'"],
        ),
        (
            "  district: {role: dimension, values: [North, South]}",
            "  district: {role: dimension, values: [North]}",
            ["column 'district' may no longer take value 'South'"],
        ),
        (
            "  income: {role: measure, bounds: [0, 500000], aggregates: [sum, mean]}",
            "  income: {role: measure, bounds: [0, 1000000], aggregates: [sum, mean]}",
            ["column 'income' bounds changed from [0, 500000] to [0, 1000000]"],
        ),
        (
            "  income: {role: measure, bounds: [0, 500000], aggregates: [sum, mean]}",
            "  income: {role: measure, bounds: [0, 500000], aggregates: [sum, median]}",
            [
                "column 'income' may now be aggregated with median",
                "column 'income' may no longer be aggregated with mean",
            ],
        ),
        (
            "  sector: {role: dimension, operators: ['=', in]}",
            "  sector: {role: dimension, operators: ['=', '!=']}",
            [
                "column 'sector' may now be filtered with operator '!='",
                "column 'sector' may no longer be filtered with operator 'in'",
            ],
        ),
        (
            "  sector: {role: dimension, operators: ['=', in]}",
            "  sector: {role: hidden}",
            ["column 'sector' role changed from dimension to hidden"],
        ),
        (
            "  secret: {role: hidden}",
            "  secret: {role: hidden, description: Do not use.}",
            ["column 'secret' description changed"],
        ),
        (
            "  secret: {role: hidden}\n",
            "  secret: {role: hidden}\n  sex: {role: dimension, values: [F, M]}\n",
            ["column 'sex' added (dimension; values ['F', 'M'])"],
        ),
        (
            "  secret: {role: hidden}\n",
            "",
            ["column 'secret' removed (was a hidden column)"],
        ),
    ],
)
def test_columns(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    assert changes(tmp_path, BASE, edit(BASE, old, new)) == expected


# -- purposes -------------------------------------------------------------------------------------


def test_purposes(tmp_path: Path) -> None:
    new = edit(BASE, "planning: {columns: [district]}", "planning: {columns: [district, age]}")
    assert changes(tmp_path, BASE, new) == ["purpose 'planning' may now use column 'age'"]
    new = edit(BASE, "[district, age, income]", "[district, age]")
    assert changes(tmp_path, BASE, new) == ["purpose 'research' may no longer use column 'income'"]
    new = edit(BASE, "research: {description: Research.,", "research: {description: Science.,")
    assert changes(tmp_path, BASE, new) == ["purpose 'research' description changed"]
    new = edit(
        BASE,
        "  planning: {columns: [district]}\n",
        "  planning: {columns: [district]}\n  statistics: {columns: [age, district]}\n",
    )
    assert changes(tmp_path, BASE, new) == ["purpose 'statistics' added (columns: age, district)"]
    new = edit(BASE, "  research: {description: Research., columns: [district, age, income]}\n", "")
    assert changes(tmp_path, BASE, new) == ["purpose 'research' removed"]


# -- disclosure -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "min_persons_per_cell: 5",
            "min_persons_per_cell: 10",
            ["k (minimum persons per cell) raised from 5 to 10"],
        ),
        (
            "min_persons_per_cell: 5",
            "min_persons_per_cell: 3",
            ["k (minimum persons per cell) lowered from 5 to 3"],
        ),
        ("rounding_base: 1", "rounding_base: 5", ["rounding base raised from 1 to 5"]),
        (
            "  rounding_base: 1\n",
            "  rounding_base: 1\n  zeros_disclosive: false\n",
            ["empty cells are now released as 0 (zeros not disclosive)"],
        ),
        (
            "dominance: {n: 2, k: 0.85}",
            "dominance: {n: 3, k: 0.8}",
            [
                "dominance rule n (largest contributors taken together) raised from 2 to 3",
                "dominance rule k (share they may hold) lowered from 85% to 80%",
            ],
        ),
        (
            "  dominance: {n: 2, k: 0.85}\n",
            "",
            ["dominance rule turned off (was n=2, k=85%)"],
        ),
        ("p_percent: 0.1", "p_percent: 0.15", ["p% rule: p raised from 10% to 15%"]),
        ("  p_percent: 0.1\n", "", ["p% rule turned off (was p = 10%)"]),
        (
            "  p_percent: 0.1\n",
            "  p_percent: 0.1\n  noise: {mechanism: discrete_laplace, epsilon_per_job: 0.25}\n",
            ["noise turned on: discrete_laplace, epsilon per job 0.25"],
        ),
    ],
)
def test_disclosure(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    assert changes(tmp_path, BASE, edit(BASE, old, new)) == expected


def test_dominance_turned_on(tmp_path: Path) -> None:
    old = edit(BASE, "  dominance: {n: 2, k: 0.85}\n", "")
    assert changes(tmp_path, old, BASE) == [
        "dominance rule turned on: the 2 largest may hold at most 85% of a sum"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "epsilon_per_job: 0.5",
            "epsilon_per_job: 0.1",
            ["epsilon per job lowered from 0.5 to 0.1"],
        ),
        (
            "mechanism: discrete_laplace, epsilon_per_job: 0.5,",
            "mechanism: discrete_gaussian, epsilon_per_job: 0.5, delta_per_job: 0.000001,",
            [
                "noise mechanism changed from discrete_laplace to discrete_gaussian",
                "delta per job raised from 0 to 0.000001",
            ],
        ),
        (
            "max_groups_per_person: 2}",
            "max_groups_per_person: 4, max_rows_per_person: 10}",
            [
                "contribution bound L (max groups per person) raised from 2 to 4",
                "contribution bound R (max rows per person in a cell) set to 10 (was none)",
            ],
        ),
        (
            "epsilon_per_job: 0.5, max_groups_per_person: 2}",
            "epsilon_per_job: 0.5, max_groups_per_person: 2, delta_per_job: 0.000000001,"
            " partition_selection: true}",
            [
                "delta per job raised from 0 to 0.000000001",
                "partition selection turned on (group keys may come from the data)",
            ],
        ),
        (
            "budget: {epsilon_per_project: 5, window_days: 365}",
            "budget: {epsilon_per_project: 10, epsilon_per_population: 20, window_days: 0}",
            [
                "epsilon budget per project raised from 5 to 10",
                "epsilon budget per population set to 20 (was none)",
                "budget window changed from 365 days to ever (no window)",
            ],
        ),
        (
            "  noise: {mechanism: discrete_laplace, epsilon_per_job: 0.5,"
            " max_groups_per_person: 2}\n",
            "",
            ["noise turned off (was discrete_laplace, epsilon per job 0.5, L 2)"],
        ),
    ],
)
def test_noise_and_budget(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    assert changes(tmp_path, DP, edit(DP, old, new)) == expected


def test_cell_key_ptable(tmp_path: Path) -> None:
    new = edit(
        CELL_KEY,
        "ptable: {max_perturbation: 2, variance: 1}",
        "ptable: {max_perturbation: 3, variance: 2, block_small: true}",
    )
    assert changes(tmp_path, CELL_KEY, new) == [
        "cell-key p-table changed from D=2, V=1 to D=3, V=2, blocking 1 to k-1"
    ]


# -- limits and deny rules ------------------------------------------------------------------------


def test_limits(tmp_path: Path) -> None:
    new = edit(
        BASE,
        "limits: {max_groups: 1000, max_filters: 16, max_group_by: 4}",
        "limits: {max_groups: 500, max_filters: 20, max_group_by: 4}",
    )
    assert changes(tmp_path, BASE, new) == [
        "max groups lowered from 1000 to 500",
        "max filters raised from 16 to 20",
    ]


def test_deny_rules(tmp_path: Path) -> None:
    rule = (
        "  - {id: no-income-for-planning, purposes: [planning], columns: [income],"
        " reason: Not needed.}\n"
    )
    removed = edit(BASE, rule, "  - {id: no-median, aggregates: [median]}\n")
    assert changes(tmp_path, BASE, removed) == [
        "deny rule 'no-median' added: aggregates median",
        "deny rule 'no-income-for-planning' removed (was: purposes planning; columns income)",
    ]
    changed = edit(
        BASE,
        rule,
        "  - {id: no-income-for-planning, purposes: [planning, research], columns: [income]}\n",
    )
    assert changes(tmp_path, BASE, changed) == [
        "deny rule 'no-income-for-planning' purposes changed from [planning] to "
        "[planning, research]",
        "deny rule 'no-income-for-planning' reason changed",
    ]


# -- review routing and fields the diff does not know by name -------------------------------------


def test_review_routing(tmp_path: Path) -> None:
    if "review" not in {f.name for f in dataclasses.fields(Policy)}:
        pytest.skip("this build has no review routing")
    reviewed = BASE + "review: {approvals: 1, purposes: [research]}\n"
    assert changes(tmp_path, BASE, reviewed) == ["review added: approvals 1; purposes research"]
    stricter = BASE + "review: {approvals: 2, purposes: [research, planning]}\n"
    assert changes(tmp_path, reviewed, stricter) == [
        "review approvals raised from 1 to 2",
        "review purposes: 'planning' added",
    ]
    assert changes(tmp_path, stricter, BASE) == [
        "review removed (was: approvals 2; purposes research, planning)"
    ]


def test_every_policy_field_is_compared(tmp_path: Path) -> None:
    """A field the diff does not name is still reported (generically), never silently equal."""
    base = load(tmp_path, BASE, "old.yaml")
    for field in dataclasses.fields(Policy):
        if field.name in ("digest", "path"):
            continue
        value = getattr(base, field.name)
        other: object
        if isinstance(value, str):
            other = value + "x"
        elif isinstance(value, int):
            other = value + 1
        elif isinstance(value, tuple):
            other = value[:-1]
        elif value is None:
            continue  # absent sections: covered by the section tests above
        else:
            first = dataclasses.fields(value)[0]
            inner = getattr(value, first.name)
            other = dataclasses.replace(value, **{first.name: inner + 1})
        changed = dataclasses.replace(base, **{field.name: other})
        assert diff_policies(base, changed).changed, field.name


def test_repository_policy_against_itself() -> None:
    policy = load_policy(REPO / "policies" / "residents.yaml")
    assert not diff_policies(policy, policy).changed
