"""Loading and validating policy YAML files: every problem names file, line, key path and a fix."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from sandbox._errors import PolicyInvalid
from sandbox._model import AggFunc, ColumnRole, FilterOp
from sandbox.policy import (
    DisclosureSettings,
    DominanceRule,
    Limits,
    load_policies,
    load_policy,
    policy_schema,
    validate_paths,
)

REPO = Path(__file__).resolve().parents[2]

# Line numbers are asserted against this text; keep it in sync with the comments.
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
  district:
    role: dimension
    values: [Old Town, Harbourside]
  age:
    role: dimension
    bins: [0, 18, 65, 120]
  income:
    role: measure
    bounds: [0, 500000]
    aggregates: [sum, mean]
  secret: {role: hidden}
purposes:
  research:
    description: Research.
    columns: [district, age, income]
  planning:
    columns: [district]
deny:
  - id: no-income-for-planning
    purposes: [planning]
    columns: [income]
"""
# 1 dataset  2 version  5 source  6 person_key  10 district  13 age  15 bins  16 income
# 17 role (income)  18 bounds  19 aggregates  20 secret  22 research  24 research.columns
# 28 deny[0]  29 deny[0].purposes  30 deny[0].columns


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def problems(tmp_path: Path, text: str, name: str = "residents.yaml") -> tuple[str, list[str]]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    assert info.value.reason == "POLICY_INVALID"
    return str(path), info.value.message.splitlines()


def find(lines: list[str], prefix: str, *fragments: str) -> str:
    """The one problem line starting with ``prefix`` and containing every fragment."""
    hits = [ln for ln in lines if ln.startswith(prefix) and all(f in ln for f in fragments)]
    assert hits, f"no line {prefix!r} with {fragments} in:\n" + "\n".join(lines)
    assert " — " in hits[0], f"no fix hint in {hits[0]!r}"
    return hits[0]


# -- the valid cases -----------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    schema = policy_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["additionalProperties"] is False


def test_base_fixture_loads(tmp_path: Path) -> None:
    path = tmp_path / "residents.yaml"
    path.write_text(BASE, encoding="utf-8")
    policy = load_policy(path)
    assert policy.dataset == "residents"
    assert policy.version == 1
    assert policy.path == str(path)
    assert len(policy.digest) == 64
    assert policy.version_label == f"residents@v1:{policy.digest[:8]}"
    age = policy.column("age")
    assert age is not None
    assert age.role is ColumnRole.DIMENSION
    assert age.bins == (0.0, 18.0, 65.0, 120.0)
    assert age.operators == tuple(FilterOp)
    income = policy.column("income")
    assert income is not None
    assert income.bounds == (0.0, 500000.0)
    assert income.aggregates == (AggFunc.SUM, AggFunc.MEAN)
    assert policy.column("nope") is None
    research = policy.purpose("research")
    assert research is not None
    assert research.columns == ("district", "age", "income")
    assert policy.purpose("nope") is None
    assert policy.disclosure == DisclosureSettings(10, 1)
    assert policy.limits == Limits(1000, 16, 4)
    assert [r.id for r in policy.deny] == ["no-income-for-planning"]


def test_digest_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "residents.yaml"
    path.write_text(BASE, encoding="utf-8")
    first = load_policy(path)
    path.write_text(BASE + "# a comment\n", encoding="utf-8")
    assert load_policy(path).digest != first.digest


def test_operators_may_be_written_bare_or_quoted(tmp_path: Path) -> None:
    text = edit("    values: [Old Town, Harbourside]\n", "    operators: [=, '!=', in]\n")
    path = tmp_path / "residents.yaml"
    path.write_text(text, encoding="utf-8")
    district = load_policy(path).column("district")
    assert district is not None
    assert district.operators == (FilterOp.EQ, FilterOp.NE, FilterOp.IN)


def test_example_policies_load() -> None:
    policies = load_policies(REPO / "policies")
    assert set(policies) >= {"residents", "clinic_visits"}
    residents = policies["residents"]
    assert residents.source == "residents.parquet"
    assert residents.person_key == "person_id"
    assert residents.population == "harbor-city-residents"
    assert residents.disclosure == DisclosureSettings(
        min_persons_per_cell=10,
        rounding_base=5,
        dominance=DominanceRule(2, Fraction(17, 20)),
        p_percent=Fraction(1, 10),
    )
    district = residents.column("district")
    assert district is not None and len(district.values) == 10
    assert {p.id for p in residents.purposes} == {
        "public-health-research",
        "urban-planning",
        "labour-market-statistics",
    }
    assert any("monthly_income" in r.columns for r in residents.deny)
    visits = policies["clinic_visits"]
    assert visits.population == residents.population
    cost = visits.column("cost")
    assert cost is not None and cost.bounds == (0.0, 20000.0)
    assert validate_paths([REPO / "policies"]) == []


# -- one test per kind of problem ------------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("source: residents.parquet", "source: a.parquet: x"))
    assert len(lines) == 1
    find(lines, f"{path}:5: ", "invalid YAML", "mapping values are not allowed", "quote")


def test_unknown_key_typo(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("    bins: [0,", "    bin: [0,"))
    find(lines, f"{path}:15: columns.age.bin: ", "unknown key 'bin'", "did you mean 'bins'")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("title:", "titel:"))
    find(lines, f"{path}:3: titel: ", "unknown key", "did you mean 'title'")
    find(lines, f"{path}:1: title: ", "missing required key")


def test_wrong_type(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("version: 1", "version: one"))
    find(lines, f"{path}:2: version: ", "must be a whole number, got a string", "version: 1")


def test_wrong_type_in_a_list(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("[0, 18, 65, 120]", "[0, 18, sixty, 120]"))
    find(lines, f"{path}:15: columns.age.bins[2]: ", "must be a number", "ascending order")


def test_missing_required_key(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("source: residents.parquet\n", ""))
    find(lines, f"{path}:1: source: ", "missing required key", "source: residents.parquet")


def test_missing_nested_required_key(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("    role: measure\n", ""))
    find(lines, f"{path}:16: columns.income.role: ", "missing required key", "role: dimension")


def test_bins_not_increasing(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("[0, 18, 65, 120]", "[0, 65, 18, 120]"))
    assert lines == [
        f"{path}:15: columns.age.bins: must be strictly increasing — list the bin edges in "
        "ascending order, e.g. [0, 18, 65, 120]"
    ]


def test_bins_with_repeated_edge(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("[0, 18, 65, 120]", "[0, 18, 18, 120]"))
    find(lines, f"{path}:15: columns.age.bins: ", "strictly increasing")


@pytest.mark.parametrize("bounds", ["[500000, 0]", "[5, 5]"])
def test_bounds_lo_not_below_hi(tmp_path: Path, bounds: str) -> None:
    path, lines = problems(tmp_path, edit("[0, 500000]", bounds))
    find(lines, f"{path}:18: columns.income.bounds: ", "lower bound must be less", "[0, 500000]")


def test_bounds_need_two_numbers(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("[0, 500000]", "[0]"))
    find(lines, f"{path}:18: columns.income.bounds: ", "at least 2 items", "[lower, upper]")


def test_measure_needs_bounds(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("    bounds: [0, 500000]\n", ""))
    find(lines, f"{path}:16: columns.income.bounds: ", "needs bounds", "bounds: [0, 500000]")


def test_person_key_not_identifier(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("person_key: person_id", "person_key: district"))
    find(lines, f"{path}:6: person_key: ", "'district' is a dimension", "role: identifier")


def test_person_key_not_declared(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("person_key: person_id", "person_key: resident_id"))
    find(lines, f"{path}:6: person_key: ", "'resident_id' is not declared", "{role: identifier}")


def test_purpose_names_unknown_column(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("[district, age, income]", "[district, age, incme]"))
    find(
        lines,
        f"{path}:24: purposes.research.columns[2]: ",
        "unknown column 'incme'",
        "did you mean 'income'",
    )


@pytest.mark.parametrize("column", ["secret", "person_id"])
def test_purpose_names_unusable_column(tmp_path: Path, column: str) -> None:
    path, lines = problems(tmp_path, edit("[district, age, income]", f"[district, {column}]"))
    find(lines, f"{path}:24: purposes.research.columns[1]: ", f"'{column}'", "remove it")


def test_aggregates_on_a_dimension(tmp_path: Path) -> None:
    text = edit(
        "    bins: [0, 18, 65, 120]\n", "    bins: [0, 18, 65, 120]\n    aggregates: [sum]\n"
    )
    path, lines = problems(tmp_path, text)
    find(
        lines,
        f"{path}:16: columns.age.aggregates: ",
        "applies only to measure columns",
        "role: measure",
    )


def test_bins_on_a_measure(tmp_path: Path) -> None:
    text = edit("    bounds: [0, 500000]\n", "    bounds: [0, 500000]\n    bins: [0, 10]\n")
    path, lines = problems(tmp_path, text)
    find(lines, f"{path}:19: columns.income.bins: ", "applies only to dimension columns")


def test_unknown_aggregate_function(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("[sum, mean]", "[sum, mode]"))
    find(lines, f"{path}:19: columns.income.aggregates[1]: ", "'mode' is not allowed", "count")


def test_duplicate_key(tmp_path: Path) -> None:
    text = edit(
        "  secret: {role: hidden}\n", "  secret: {role: hidden}\n  district: {role: hidden}\n"
    )
    path, lines = problems(tmp_path, text)
    find(lines, f"{path}:21: columns.district: ", "duplicate key 'district'", "line 10")


def test_dataset_must_equal_file_stem(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, BASE, name="people.yaml")
    assert lines == [
        f"{path}:1: dataset: 'residents' does not match the file name 'people' — "
        "set `dataset: people` or rename the file to residents.yaml"
    ]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("/srv/data/residents.parquet", "not an absolute path"),
        ("C:/data/residents.parquet", "not an absolute path"),
        ("../residents.parquet", "must not contain '..'"),
        ("raw/../../etc/residents.csv", "must not contain '..'"),
    ],
)
def test_source_must_stay_under_data_root(tmp_path: Path, source: str, fragment: str) -> None:
    path, lines = problems(tmp_path, edit("source: residents.parquet", f"source: {source}"))
    find(lines, f"{path}:5: source: ", fragment, "source:")


def test_source_must_be_parquet_or_csv(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, edit("residents.parquet", "residents.xlsx"))
    find(lines, f"{path}:5: source: ", "expected format", ".parquet or .csv")


def test_deny_rule_references_must_exist(tmp_path: Path) -> None:
    text = edit(
        "    purposes: [planning]\n    columns: [income]", "    purposes: [plan]\n    columns: [x]"
    )
    path, lines = problems(tmp_path, text)
    find(lines, f"{path}:29: deny[0].purposes[0]: ", "unknown purpose 'plan'", "planning")
    find(lines, f"{path}:30: deny[0].columns[0]: ", "unknown column 'x'")


def test_deny_rule_ids_unique(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, BASE + "  - {id: no-income-for-planning}\n")
    find(lines, f"{path}:31: deny[1].id: ", "duplicate rule id", "unique")


def test_settings_ranges(tmp_path: Path) -> None:
    text = (
        BASE + "disclosure: {min_persons_per_cell: 0, rounding_base: 5}\nlimits: {max_groupz: 9}\n"
    )
    path, lines = problems(tmp_path, text)
    find(lines, f"{path}:31: disclosure.min_persons_per_cell: ", "at least 1", "10")
    find(lines, f"{path}:32: limits.max_groupz: ", "unknown key", "did you mean 'max_groups'")


def test_empty_file(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, "# nothing yet\n")
    assert len(lines) == 1
    find(lines, f"{path}:1: (document): ", "empty", "dataset: residents")


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, "- dataset: residents\n")
    find(lines, f"{path}:1: (document): ", "must be a mapping")


def test_non_string_key(tmp_path: Path) -> None:
    path, lines = problems(tmp_path, BASE.replace("  secret:", "  yes:"))
    find(lines, f"{path}:20: columns: ", "key 'yes' is read as a boolean", "quote it")


@pytest.mark.parametrize(
    "value",
    ["!!python/object/apply:os.system [echo]", "!!python/name:os.system", "!!set {a: null}"],
)
def test_yaml_tags_are_not_constructed(tmp_path: Path, value: str) -> None:
    path, lines = problems(tmp_path, edit("title: Resident registry", f"title: {value}"))
    assert len(lines) == 1
    find(lines, f"{path}:3: title: ", "tag")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "residents.yaml"
    path.write_bytes(b"dataset: residents\ntitle: \xff\n")
    with pytest.raises(PolicyInvalid, match=r"residents\.yaml:2: .*UTF-8"):
        load_policy(path)


# -- reporting many problems -----------------------------------------------------------------


def test_all_problems_reported_together_in_line_order(tmp_path: Path) -> None:
    text = edit("version: 1", "version: 0")
    text = edit("person_key: person_id", "person_key: age", text)
    text = edit("    bins: [0,", "    bin: [0,", text)
    text = edit("[0, 500000]", "[9, 1]", text)
    text = edit("[district, age, income]", "[district, agee]", text)
    path, lines = problems(tmp_path, text)
    assert [ln.split(":")[1] for ln in lines] == ["2", "6", "15", "18", "24"]
    find(lines, f"{path}:2: version: ", "at least 1")
    find(lines, f"{path}:6: person_key: ", "identifier")
    find(lines, f"{path}:15: columns.age.bin: ", "unknown key")
    find(lines, f"{path}:18: columns.income.bounds: ", "lower bound")
    find(lines, f"{path}:24: purposes.research.columns[1]: ", "did you mean 'age'")


def test_load_policies_aggregates_errors_and_skips_test_files(tmp_path: Path) -> None:
    (tmp_path / "residents.yaml").write_text(edit("version: 1", "version: x"), encoding="utf-8")
    (tmp_path / "people.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "residents.test.yaml").write_text("cases: [", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a policy", encoding="utf-8")
    with pytest.raises(PolicyInvalid) as info:
        load_policies(tmp_path)
    lines = info.value.message.splitlines()
    assert len(lines) == 2
    find(lines, f"{tmp_path / 'people.yaml'}:1: dataset: ", "file name")
    find(lines, f"{tmp_path / 'residents.yaml'}:2: version: ", "whole number")


def test_load_policies_ok(tmp_path: Path) -> None:
    (tmp_path / "residents.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "residents.test.yaml").write_text("cases: [", encoding="utf-8")
    assert list(load_policies(tmp_path)) == ["residents"]


def test_load_policies_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid, match="not a directory"):
        load_policies(tmp_path / "nope")


def test_validate_paths_on_directory_and_files(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "residents.yaml").write_text(BASE, encoding="utf-8")
    assert validate_paths([good]) == []
    assert validate_paths([good / "residents.yaml"]) == []

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "residents.yaml").write_text(edit("[0, 18, 65, 120]", "[5, 1]"), encoding="utf-8")
    (bad / "other.yaml").write_text("", encoding="utf-8")
    lines = validate_paths([good, bad, tmp_path / "missing.yaml"])
    assert len(lines) == 3
    find(lines, f"{bad / 'other.yaml'}:1: (document): ", "empty")
    find(lines, f"{bad / 'residents.yaml'}:15: columns.age.bins: ", "strictly increasing")
    assert lines[2].startswith(f"{tmp_path / 'missing.yaml'}: no such file")


def test_a_policy_may_be_loaded_under_another_file_name(tmp_path: Path) -> None:
    path = tmp_path / "residents.v1.yaml"  # e.g. an older version, for `sandbox policy diff`
    path.write_text(BASE, encoding="utf-8")
    with pytest.raises(PolicyInvalid, match="does not match the file name"):
        load_policy(path)
    policy = load_policy(path, match_file_name=False)
    assert policy.dataset == "residents"
    # Every other check still applies.
    path.write_text(edit("version: 1\n", "version: 0\n"), encoding="utf-8")
    with pytest.raises(PolicyInvalid, match=r"residents\.v1\.yaml:2: version: must be at least 1"):
        load_policy(path, match_file_name=False)
