"""Policy settings of the dominance rules: `disclosure.dominance` and `disclosure.p_percent`."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from sandbox._errors import PolicyInvalid
from sandbox.policy import DisclosureSettings, DominanceRule, load_policy, validate_paths

BASE = """\
dataset: residents
version: 1
title: Resident registry
steward: civil-affairs-data-office
source: residents.parquet
person_key: person_id
population: harbor-city-residents
columns:
  person_id: {role: identifier}
  district: {role: dimension}
  income: {role: measure, bounds: [0, 500000], aggregates: [sum, mean]}
purposes:
  research: {columns: [district, income]}
disclosure:
  min_persons_per_cell: 10
"""
LINE = 16  # the first line after `disclosure:`


def _load(tmp_path: Path, extra: str) -> DisclosureSettings:
    path = tmp_path / "residents.yaml"
    path.write_text(BASE + extra, encoding="utf-8")
    return load_policy(path).disclosure


def _problems(tmp_path: Path, extra: str) -> tuple[str, list[str]]:
    path = tmp_path / "residents.yaml"
    path.write_text(BASE + extra, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    assert validate_paths([path]) == info.value.message.splitlines()
    return str(path), info.value.message.splitlines()


def _one(lines: list[str], prefix: str, *fragments: str) -> str:
    hits = [ln for ln in lines if ln.startswith(prefix) and all(f in ln for f in fragments)]
    assert len(hits) == 1, f"{prefix!r} {fragments} in:\n" + "\n".join(lines)
    assert " — " in hits[0], f"no fix hint in {hits[0]!r}"
    return hits[0]


def test_rules_are_off_unless_written(tmp_path: Path) -> None:
    settings = _load(tmp_path, "")
    assert settings.dominance is None and settings.p_percent is None


def test_rules_load_as_exact_decimals(tmp_path: Path) -> None:
    settings = _load(tmp_path, "  dominance: {n: 2, k: 0.85}\n  p_percent: 0.10\n")
    assert settings.dominance == DominanceRule(n=2, k=Fraction(17, 20))
    assert settings.p_percent == Fraction(1, 10)
    block = "  dominance:\n    n: 1\n    k: 0.5\n"
    assert _load(tmp_path, block).dominance == DominanceRule(n=1, k=Fraction(1, 2))
    assert _load(tmp_path, "  p_percent: 0.99\n").p_percent == Fraction(99, 100)
    assert _load(tmp_path, "  dominance: {n: 100, k: 0.01}\n").dominance == DominanceRule(
        100, Fraction(1, 100)
    )


@pytest.mark.parametrize(
    ("extra", "key", "fragments"),
    [
        ("  dominance: {n: 0, k: 0.85}\n", "disclosure.dominance.n", ("at least 1", "n: 2")),
        ("  dominance: {n: 101, k: 0.85}\n", "disclosure.dominance.n", ("at most 100",)),
        ("  dominance: {n: 2.5, k: 0.85}\n", "disclosure.dominance.n", ("whole number",)),
        ("  dominance: {n: 2, k: 0}\n", "disclosure.dominance.k", ("above 0", "k: 0.85")),
        ("  dominance: {n: 2, k: 1}\n", "disclosure.dominance.k", ("below 1",)),
        ("  dominance: {n: 2, k: 85}\n", "disclosure.dominance.k", ("below 1",)),
        ("  dominance: {n: 2, k: true}\n", "disclosure.dominance.k", ("a number",)),
        ("  dominance: {n: 2, k: 0.855}\n", "disclosure.dominance.k", ("whole percentage",)),
        ("  dominance: {n: 2}\n", "disclosure.dominance.k", ("missing", "k: 0.85")),
        ("  dominance: {k: 0.85}\n", "disclosure.dominance.n", ("missing", "n: 2")),
        ("  dominance: {n: 2, k: 0.85, p: 1}\n", "disclosure.dominance.p", ("unknown key",)),
        ("  dominance: 2\n", "disclosure.dominance", ("a mapping", "{n: 2, k: 0.85}")),
        ("  p_percent: 0\n", "disclosure.p_percent", ("above 0", "p_percent: 0.1")),
        ("  p_percent: 1\n", "disclosure.p_percent", ("below 1",)),
        ("  p_percent: 10\n", "disclosure.p_percent", ("below 1",)),
        ("  p_percent: -0.1\n", "disclosure.p_percent", ("above 0",)),
        ("  p_percent: 0.105\n", "disclosure.p_percent", ("whole percentage",)),
        ("  p_percent: '0.1'\n", "disclosure.p_percent", ("a number",)),
        ("  p_pecent: 0.1\n", "disclosure.p_pecent", ("did you mean 'p_percent'",)),
    ],
)
def test_bad_settings_name_file_line_key_and_fix(
    tmp_path: Path, extra: str, key: str, fragments: tuple[str, ...]
) -> None:
    path, lines = _problems(tmp_path, extra)
    _one(lines, f"{path}:{LINE}: {key}: ", *fragments)


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path, lines = _problems(tmp_path, "  dominance:\n    n: 0\n    k: 1.5\n  p_percent: 0.333\n")
    assert len(lines) == 3
    _one(lines, f"{path}:{LINE + 1}: disclosure.dominance.n: ", "at least 1")
    _one(lines, f"{path}:{LINE + 2}: disclosure.dominance.k: ", "below 1")
    _one(lines, f"{path}:{LINE + 3}: disclosure.p_percent: ", "whole percentage")
