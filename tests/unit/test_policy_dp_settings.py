"""Policy settings of DP contribution bounding and partition selection: loading and errors."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from sandbox.policy import load_policy
from tests.unit.test_policy_load import BASE, find, problems


def with_noise(noise: str) -> str:
    return BASE + f"disclosure:\n  noise: {{{noise}}}\n"  # the noise mapping is on line 32


def test_bounds_and_partition_selection_load(tmp_path: Path) -> None:
    path = tmp_path / "residents.yaml"
    path.write_text(
        with_noise(
            "mechanism: discrete_laplace, epsilon_per_job: 1, delta_per_job: 0.000001, "
            "max_groups_per_person: 3, max_rows_per_person: 7, partition_selection: true"
        )
    )
    noise = load_policy(path).disclosure.noise
    assert noise.contribution_bounds == (3, 7)
    assert noise.partition_selection and noise.delta_per_job == Fraction(1, 10**6)


@pytest.mark.parametrize(
    ("declared", "bounds"),
    [("", None), ("max_groups_per_person: 2", (2, 1)), ("max_rows_per_person: 5", (1, 5))],
)
def test_an_undeclared_bound_defaults_to_one_and_none_declared_means_no_bounding(
    tmp_path: Path, declared: str, bounds: tuple[int, int] | None
) -> None:
    path = tmp_path / "residents.yaml"
    extra = f", {declared}" if declared else ""
    path.write_text(with_noise(f"mechanism: discrete_laplace, epsilon_per_job: 1{extra}"))
    noise = load_policy(path).disclosure.noise
    assert noise.contribution_bounds == bounds and not noise.partition_selection


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("max_groups_per_person: 0", "at least 1"),
        ("max_groups_per_person: 1001", "1000"),
        ("max_groups_per_person: 2.5", "whole number"),
        ("max_rows_per_person: 0", "at least 1"),
        ("max_rows_per_person: many", "whole number"),
        ("partition_selection: yes please", "true or false"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, setting: str, fragment: str) -> None:
    key = setting.split(":")[0]
    path, lines = problems(
        tmp_path, with_noise(f"mechanism: discrete_laplace, epsilon_per_job: 1, {setting}")
    )
    find(lines, f"{path}:32: disclosure.noise.{key}: ", fragment)


def test_partition_selection_needs_a_delta(tmp_path: Path) -> None:
    text = with_noise("mechanism: discrete_laplace, epsilon_per_job: 1, partition_selection: true")
    path, lines = problems(tmp_path, text)
    find(lines, f"{path}:32: disclosure.noise.delta_per_job: ", "partition selection")


def test_laplace_delta_without_partition_selection_is_still_refused(tmp_path: Path) -> None:
    text = with_noise("mechanism: discrete_laplace, epsilon_per_job: 1, delta_per_job: 0.001")
    path, lines = problems(tmp_path, text)
    find(lines, f"{path}:32: disclosure.noise.delta_per_job: ", "pure epsilon-DP")


@pytest.mark.parametrize("mechanism", ["none", "cell_key"])
@pytest.mark.parametrize(
    "setting", ["max_groups_per_person: 2", "max_rows_per_person: 2", "partition_selection: true"]
)
def test_dp_settings_outside_dp_mode_are_refused(
    tmp_path: Path, mechanism: str, setting: str
) -> None:
    ptable = ", ptable: {max_perturbation: 2, variance: 1}" if mechanism == "cell_key" else ""
    text = with_noise(f"mechanism: {mechanism}{ptable}, {setting}")
    path, lines = problems(tmp_path, text)
    key = setting.split(":")[0]
    find(lines, f"{path}:32: disclosure.noise.{key}: ", "only to differential privacy")
