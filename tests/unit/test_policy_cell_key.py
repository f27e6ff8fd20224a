"""Policy validation of the cell-key method: every problem names file, line, key and a fix."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from sandbox._errors import PolicyInvalid
from sandbox.policy import Mechanism, PTableSpec, load_policy

# Line numbers are asserted against this text.
BASE = """\
dataset: people
version: 1
title: People
steward: test-office
source: people.csv
person_key: pid
population: people
columns:
  pid: {role: identifier}
  region: {role: dimension}
purposes:
  research: {columns: [region]}
disclosure:
  min_persons_per_cell: 10
  noise:
    mechanism: cell_key
    ptable:
PTABLE
"""
# 13 disclosure  14 min_persons_per_cell  15 noise  16 mechanism  17 ptable  18.. the p-table


def load(tmp_path: Path, ptable: str, base: str = BASE) -> list[str] | PTableSpec:
    """The problem lines of the policy with this p-table body, or its spec if it loads."""
    body = "\n".join("      " + line for line in ptable.strip("\n").splitlines())
    path = tmp_path / "people.yaml"
    path.write_text(base.replace("PTABLE", body), encoding="utf-8")
    try:
        policy = load_policy(path)
    except PolicyInvalid as exc:
        prefix = f"{path}:"
        lines = exc.message.splitlines()
        assert all(line.startswith(prefix) for line in lines)
        return [line.removeprefix(prefix) for line in lines]
    assert policy.disclosure.noise.mechanism == Mechanism.CELL_KEY
    assert policy.disclosure.noise.enabled is False  # not differential privacy
    assert policy.disclosure.noise.ptable is not None
    return policy.disclosure.noise.ptable


def test_a_built_table_loads(tmp_path: Path) -> None:
    spec = load(tmp_path, "max_perturbation: 3\nvariance: 2.5\nblock_small: true")
    assert spec == PTableSpec(3, Fraction(5, 2), block_small=True)


def test_a_listed_table_loads_with_exact_probabilities(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """
rows:
  - {count: 10, perturbations: [[0, 0.5], [1, 0.5]]}
default: [[-1, "1/3"], [0, "1/3"], [1, "1/3"]]
""",
    )
    assert spec == PTableSpec(
        rows=((10, ((0, Fraction(1, 2)), (1, Fraction(1, 2)))),),
        default=((-1, Fraction(1, 3)), (0, Fraction(1, 3)), (1, Fraction(1, 3))),
    )


@pytest.mark.parametrize(
    ("ptable", "expected"),
    [
        (
            "max_perturbation: 2\nvariance: 5",
            "19: disclosure.noise.ptable.variance: perturbations of at most 2 cannot have a "
            "variance above 4 (max_perturbation squared) — lower the variance, or raise "
            "max_perturbation to at least 3",
        ),
        (
            "max_perturbation: 2\nvariance: 0",
            "19: disclosure.noise.ptable.variance: must be above 0 — e.g. `variance: 1`",
        ),
        (
            "max_perturbation: 2",
            "17: disclosure.noise.ptable.variance: missing required key — add e.g. "
            "`variance: 1`: the variance of the change to a count",
        ),
        (
            "max_perturbation: 0\nvariance: 1",
            "18: disclosure.noise.ptable.max_perturbation: must be at least 1",
        ),
        (
            "max_perturbation: 2\nvariance: 1\ndefault: [[0, 1]]",
            "20: disclosure.noise.ptable.default: a p-table is either built (max_perturbation, "
            "variance) or listed (rows, default), not both — keep one of the two",
        ),
        (
            "rows: [{count: 10, perturbations: [[0, 1]]}]",
            "17: disclosure.noise.ptable.default: missing required key — add the row of every "
            "count not listed",
        ),
        (
            "default: [[-1, 0.25], [0, 0.5], [1, 0.2]]",
            "18: disclosure.noise.ptable.default: the probabilities sum to 19/20, not exactly 1 "
            '— make them add up to 1; write thirds and the like as fractions, e.g. "1/3"',
        ),
        (
            "default: [[-1, 0.5], [-1, 0.5]]",
            "18: disclosure.noise.ptable.default: perturbation -1 is listed twice — list each once",
        ),
        (
            "default: [[-12, 0.5], [12, 0.5]]",
            "18: disclosure.noise.ptable.default: count 10 could be released as -2, a negative "
            "count — add a row for that count",
        ),
        (
            "rows:\n  - {count: 10, perturbations: [[-11, 0.5], [11, 0.5]]}\ndefault: [[0, 1]]",
            "19: disclosure.noise.ptable.rows[0].perturbations: count 10 could be released as "
            "-1, a negative count — change that perturbation",
        ),
        (
            "rows:\n  - {count: 4, perturbations: [[0, 1]]}\ndefault: [[0, 1]]",
            "19: disclosure.noise.ptable.rows[0].count: cells under min_persons_per_cell (10) "
            "persons are suppressed before perturbation, so the row for count 4 is never used "
            "— remove it, or lower min_persons_per_cell",
        ),
        (
            "rows:\n  - {count: 12, perturbations: [[0, 1]]}\n"
            "  - {count: 12, perturbations: [[0, 1]]}\ndefault: [[0, 1]]",
            "20: disclosure.noise.ptable.rows[1].count: count 12 already has a row (rows[0]) — "
            "keep one row per count",
        ),
        (
            "block_small: true\ndefault: [[-1, 0.5], [1, 0.5]]",
            "19: disclosure.noise.ptable.default: count 10 could be released as 9, under "
            "min_persons_per_cell (10), but block_small is on — add a row for that count",
        ),
        (
            "default: [[0, 1.5]]",
            "18: disclosure.noise.ptable.default[0][1]:",
        ),
        (
            'default: [[0, "one"]]',
            "18: disclosure.noise.ptable.default[0][1]:",
        ),
        (
            "default: [[0.5, 1]]",
            "18: disclosure.noise.ptable.default[0][0]: must be a whole number, got a number",
        ),
        (
            "max_perturbation: 2\nvariance: 1\nspread: 3",
            "20: disclosure.noise.ptable.spread: unknown key 'spread'",
        ),
    ],
    ids=lambda v: v.split(":")[0] if "\n" not in v else v.splitlines()[-1][:20],
)
def test_problems_name_line_key_and_fix(tmp_path: Path, ptable: str, expected: str) -> None:
    problems = load(tmp_path, ptable)
    assert isinstance(problems, list)
    assert any(p.startswith(expected) for p in problems), "\n".join(problems)


def test_block_small_passes_with_rows_that_stay_at_or_above_k(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """
block_small: true
rows:
  - {count: 10, perturbations: [[0, 0.5], [1, 0.5]]}
default: [[-1, 0.25], [0, 0.5], [1, 0.25]]
""",
    )
    assert isinstance(spec, PTableSpec) and spec.block_small


def _settings(tmp_path: Path, disclosure: str) -> list[str]:
    base = BASE.replace(
        "disclosure:\n  min_persons_per_cell: 10\n  noise:\n    mechanism: cell_key\n"
        "    ptable:\nPTABLE\n",
        disclosure,
    )
    problems = load(tmp_path, "", base)
    assert isinstance(problems, list)
    return problems


def test_settings_that_do_not_go_with_the_cell_key_method(tmp_path: Path) -> None:
    problems = _settings(
        tmp_path,
        "disclosure:\n"
        "  rounding_base: 5\n"
        "  noise:\n"
        "    mechanism: cell_key\n"
        "    epsilon_per_job: 0.5\n"
        "    ptable: {max_perturbation: 2, variance: 1}\n",
    )
    assert problems[0].startswith(
        "14: disclosure.rounding_base: the cell-key method releases the p-table's values as "
        "they are; rounding them would change their distribution — set `rounding_base: 1`"
    )
    assert problems[1].startswith(
        "17: disclosure.noise.epsilon_per_job: applies only to differential privacy"
    )


def test_cell_key_needs_a_ptable_and_a_ptable_needs_cell_key(tmp_path: Path) -> None:
    missing = _settings(tmp_path, "disclosure:\n  noise: {mechanism: cell_key}\n")
    assert missing[0].startswith(
        "14: disclosure.noise.ptable: the cell-key method needs a p-table — write e.g. "
        "`ptable: {max_perturbation: 2, variance: 1}`"
    )
    stray = _settings(
        tmp_path,
        "disclosure:\n  noise:\n    mechanism: discrete_laplace\n"
        "    ptable: {max_perturbation: 2, variance: 1}\n",
    )
    assert stray == [
        "16: disclosure.noise.ptable: a p-table applies only to `mechanism: cell_key` — remove it"
    ]


def test_the_repository_policies_still_validate() -> None:
    from sandbox.policy import validate_paths

    assert validate_paths([Path(__file__).resolve().parents[2] / "policies"]) == []


def test_an_empty_default_row_is_reported_once(tmp_path: Path) -> None:
    problems = load(tmp_path, "default: []")
    assert problems == [
        "18: disclosure.noise.ptable.default: must list at least 1 item — write e.g. "
        "`ptable: {max_perturbation: 2, variance: 1}`, or list the rows: "
        "`ptable: {default: [[-1, 0.25], [0, 0.5], [1, 0.25]]}` ([perturbation, probability] "
        "pairs, plus `rows: [{count: 10, perturbations: [...]}]` for given counts)"
    ]
