"""Policy test files (``<dataset>.test.yaml``) and the job format: reading, problems with
file and line, and running cases against the real decision engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from sandbox._errors import PolicyInvalid
from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, Principal, Role
from sandbox.policy import Policy
from sandbox.policy._cases import (
    Expectation,
    PolicyTests,
    YamlProblems,
    find_test_files,
    load_job_file,
    load_test_file,
    read_facts,
)

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"

HEADER = """\
today: 2026-06-01
principals: {ana: researcher, bob: researcher, sam: steward}
projects:
  - id: he
    members: [ana]
    grants: {residents: [public-health-research, urban-planning]}
    expires: 2027-06-30
defaults: {principal: ana, project: he, purpose: public-health-research}
"""


def write_suite(tmp_path: Path, cases: str, header: str = HEADER) -> Path:
    shutil.copy(POLICIES / "residents.yaml", tmp_path / "residents.yaml")
    path = tmp_path / "residents.test.yaml"
    path.write_text(header + "cases:\n" + cases, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        load_test_file(path)
    return info.value.message.splitlines()


def run(tmp_path: Path, cases: str) -> dict[str, tuple[bool, str]]:
    suite = load_test_file(write_suite(tmp_path, cases))
    return {r.case.name: (r.passed, r.got) for r in suite.run()}


# -- the repository's own tests ------------------------------------------------------------


@pytest.mark.parametrize("name", ["residents", "clinic_visits"])
def test_repository_policy_tests_pass(name: str) -> None:
    suite = load_test_file(POLICIES / f"{name}.test.yaml")
    results = suite.run()
    assert len(results) >= 8
    failed = [f"{r.case.name}: {r.got}" for r in results if not r.passed]
    assert not failed, failed
    expected = {str(r.case.expect).split()[0] for r in results}
    assert expected == {"allow", "deny"}
    rules = {rule for r in results for rule in r.trace.rule_ids}
    for rule in ("column.identifier", "column.unknown", "aggregate.not_allowed"):
        assert rule in rules, rule
    for rule in ("project.expired", "project.membership", "limits.max_filters"):
        assert rule in rules, rule
    if name == "residents":
        assert "deny.no-income-for-planning" in rules
        assert "column.not_in_purpose" in rules


def test_repository_test_files_declare_their_data_facts() -> None:
    residents = read_facts(POLICIES / "residents.test.yaml")
    visits = read_facts(POLICIES / "clinic_visits.test.yaml")
    assert residents is not None and visits is not None
    assert residents.one_row_per_person and not visits.one_row_per_person
    assert visits.column_types["visit_date"] == "DATE"


# -- running cases ---------------------------------------------------------------------------


def test_expectations_match_exactly(tmp_path: Path) -> None:
    results = run(
        tmp_path,
        """\
  - name: allowed
    job: {aggregates: [count], group_by: [district]}
    expect: allow
  - name: expected allow but denied
    job: {aggregates: [count], group_by: [person_id]}
    expect: allow
  - name: any refusal
    job: {aggregates: [count], group_by: [person_id]}
    expect: deny
  - name: rule ids in any order
    purpose: urban-planning
    job: {aggregates: [mean(monthly_income)]}
    expect: {deny: [deny.no-income-for-planning, column.not_in_purpose]}
  - name: a subset of the rule ids is not enough
    purpose: urban-planning
    job: {aggregates: [mean(monthly_income)]}
    expect: {deny: [deny.no-income-for-planning]}
  - name: wrong reason
    job: {aggregates: [count], group_by: [person_id]}
    expect: {deny: [column.identifier], reason: INVALID_JOB_SPEC}
  - name: expected deny but allowed
    job: {aggregates: [count]}
    expect: {deny: [column.identifier]}
  - name: no rule ids, a reason
    principal: {name: eve, role: researcher}
    job: {aggregates: [count]}
    expect: {reason: NOT_FOUND, deny: []}
""",
    )
    assert results == {
        "allowed": (True, "allow"),
        "expected allow but denied": (False, "deny POLICY_DENIED [column.identifier]"),
        "any refusal": (True, "deny POLICY_DENIED [column.identifier]"),
        "rule ids in any order": (
            True,
            "deny POLICY_DENIED [column.not_in_purpose, deny.no-income-for-planning]",
        ),
        "a subset of the rule ids is not enough": (
            False,
            "deny POLICY_DENIED [column.not_in_purpose, deny.no-income-for-planning]",
        ),
        "wrong reason": (False, "deny POLICY_DENIED [column.identifier]"),
        "expected deny but allowed": (False, "allow"),
        "no rule ids, a reason": (True, "deny NOT_FOUND []"),
    }


def test_expectation_words() -> None:
    assert str(Expectation(True)) == "allow"
    assert str(Expectation(False)) == "deny"
    assert str(Expectation(False, ("a.b", "c"), "POLICY_DENIED")) == "deny POLICY_DENIED [a.b, c]"


def test_the_world_of_a_case(tmp_path: Path) -> None:
    suite = load_test_file(
        write_suite(
            tmp_path,
            """\
  - name: defaults
    job: {aggregates: [count]}
    expect: allow
  - name: a project of its own, expired
    project: {id: old, members: [ana], grants: ["residents:public-health-research"],
              expires: 2026-01-31}
    job: {aggregates: [count]}
    expect: {deny: [project.expired]}
  - name: the same project on an earlier day
    project: {id: old, members: [ana], grants: ["residents:public-health-research"],
              expires: 2026-01-31}
    today: 2026-01-31
    job: {aggregates: [count]}
    expect: allow
  - name: a project id that names no project
    project: nowhere
    job: {aggregates: [count]}
    expect: {deny: [project.membership]}
  - name: a steward
    principal: sam
    job: {aggregates: [count]}
    expect: {deny: [principal.role], reason: PERMISSION_DENIED}
  - name: the job names its own purpose
    job: {purpose: urban-planning, aggregates: [count], group_by: [insurance_type]}
    expect: {deny: [column.not_in_purpose]}
""",
        )
    )
    assert isinstance(suite, PolicyTests)
    by_name = {c.name: c for c in suite.cases}
    first = by_name["defaults"]
    assert first.principal == Principal("ana", Role.RESEARCHER)
    assert (first.spec.dataset, first.spec.project, first.spec.purpose) == (
        "residents",
        "he",
        "public-health-research",
    )
    assert first.today == dt.date(2026, 6, 1)
    assert first.line == 10
    assert by_name["the same project on an earlier day"].today == dt.date(2026, 1, 31)
    assert [c.id for c in by_name["a project of its own, expired"].projects] == ["he", "old"]
    assert by_name["the job names its own purpose"].spec.purpose == "urban-planning"
    assert all(r.passed for r in suite.run()), [(r.case.name, r.got) for r in suite.run()]
    assert [r.case.name for r in suite.run("STEWARD")] == ["a steward"]


# -- the job format ----------------------------------------------------------------------------


def test_job_format(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        """\
dataset: clinic_visits
project: p
purpose: research
aggregates:
  - count
  - count(*)
  - count_distinct
  - mean(cost)
  - quantile(cost, 0.9)
  - {function: quantile, column: cost, q: '1/4', alias: q1}
  - {function: sum, column: cost, alias: total}
group_by: district
filters:
  - [visit_date, between, [2024-01-01, 2024-12-31]]
  - [department, in, [a, b]]
  - [district, '!=', x]
  - {column: cost_band, op: '=', value: 3}
  - {column: flag, op: in, values: [true]}
margins: true
"""
    )
    spec = load_job_file(path)
    assert spec.aggregates == (
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.COUNT_DISTINCT),
        Aggregate(AggFunc.MEAN, "cost"),
        Aggregate(AggFunc.QUANTILE, "cost", q=Fraction(9, 10)),
        Aggregate(AggFunc.QUANTILE, "cost", "q1", Fraction(1, 4)),
        Aggregate(AggFunc.SUM, "cost", "total"),
    )
    assert spec.group_by == ("district",)
    assert spec.filters == (
        Filter("visit_date", FilterOp.BETWEEN, ("2024-01-01", "2024-12-31")),
        Filter("department", FilterOp.IN, ("a", "b")),
        Filter("district", FilterOp.NE, ("x",)),
        Filter("cost_band", FilterOp.EQ, (3,)),
        Filter("flag", FilterOp.IN, (True,)),
    )
    assert spec.margins


def test_job_file_fills_and_problems(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("aggregates: [count]\n")
    spec = load_job_file(path, dataset="residents", project="p", purpose="q")
    assert (spec.dataset, spec.project, spec.purpose) == ("residents", "p", "q")
    with pytest.raises(YamlProblems) as info:
        load_job_file(path)
    assert info.value.lines == [
        f"{path}:1: dataset: missing required key — add it, e.g. `dataset: ...`",
        f"{path}:1: project: missing required key — add it, e.g. `project: ...`",
        f"{path}:1: purpose: missing required key — add it, e.g. `purpose: ...`",
    ]
    path.write_text(
        "dataset: residents\nproject: p\npurpose: q\n"
        "aggregates: [count, avg(x), 'sum(x']\n"
        "filters:\n  - [age, '=>', 3]\n  - [age, '>']\n"
        "  - {column: age, op: '=', value: 1, values: [2]}\n"
        "group_by: [district]\nmargin: true\n"
    )
    with pytest.raises(YamlProblems) as info:
        load_job_file(path)
    lines = info.value.lines
    assert all(line.startswith(f"{path}:") for line in lines), lines
    text = "\n".join(lines)
    assert f"{path}:4: aggregates[1]: unknown aggregate function 'avg'" in text
    assert f"{path}:4: aggregates[2]: cannot read aggregate 'sum(x'" in text
    assert f"{path}:6: filters[0]: unknown operator '=>'" in text
    assert f"{path}:7: filters[1]: a filter list needs [column, operator, value]" in text
    assert f"{path}:8: filters[2]: give either `value` or `values`" in text
    assert f"{path}:10: margin: unknown key 'margin' — did you mean 'margins'?" in text


def test_job_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("aggregates: [count\n")
    with pytest.raises(YamlProblems) as info:
        load_job_file(path)
    assert info.value.lines[0].startswith(f"{path}:2: (yaml): invalid YAML")


# -- problems in test files ------------------------------------------------------------------


def test_problems_name_file_line_and_key(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        """\
  - name: typo in a key
    job: {aggregates: [count]}
    expext: allow
  - name: unknown principal
    principal: zoe
    job: {aggregates: [count]}
    expect: allow
  - name: bad expectation
    job: {aggregates: [count]}
    expect: maybe
  - name: bad role
    principal: {name: x, role: boss}
    job: {aggregates: [count]}
    expect: allow
  - name: typo in a key
    job: {aggregates: [count]}
    expect: allow
""",
    )
    lines = problems(path)
    assert all(line.startswith(f"{path}:") and " — " in line for line in lines), lines
    text = "\n".join(lines)
    assert f"{path}:12: cases[0].expext: unknown key 'expext' — did you mean 'expect'?" in text
    assert f"{path}:10: cases[0].expect: missing required key" in text
    assert f"{path}:14: cases[1].principal: unknown principal 'zoe'" in text
    assert f"{path}:19: cases[2].expect: cannot read expectation 'maybe'" in text
    assert f"{path}:21: cases[3].principal.role: unknown role 'boss'" in text
    assert f"{path}:24: cases[4].name: duplicate case name (also cases[0])" in text


def test_a_test_file_needs_cases(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "", header=HEADER)
    assert problems(path) == [
        f"{path}:9: cases: must list at least one case — e.g. `cases: [{{name: ...}}]`"
    ]


def test_an_invalid_policy_is_reported_as_validate_reports_it(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "  - {name: x, job: {aggregates: [count]}, expect: allow}\n")
    policy = tmp_path / "residents.yaml"
    policy.write_text(policy.read_text().replace("version: 1", "version: zero"))
    lines = problems(path)
    assert lines and all(line.startswith(f"{policy}:") for line in lines)
    assert lines[0].startswith(f"{policy}:4: version: must be a whole number")


def test_find_test_files(tmp_path: Path) -> None:
    shutil.copy(POLICIES / "residents.yaml", tmp_path / "residents.yaml")
    shutil.copy(POLICIES / "residents.test.yaml", tmp_path / "residents.test.yaml")
    shutil.copy(POLICIES / "clinic_visits.yaml", tmp_path / "clinic_visits.yaml")
    (tmp_path / "orphan.test.yaml").write_text("cases: []\n")
    files, found_problems, notes = find_test_files([tmp_path])
    assert files == [tmp_path / "residents.test.yaml"]
    assert found_problems == [
        f"{tmp_path / 'orphan.test.yaml'}:1: (document): no policy orphan.yaml beside this test "
        "file — a test file tests the policy of the same name"
    ]
    assert notes == [
        f"{tmp_path / 'clinic_visits.yaml'}: no tests (write clinic_visits.test.yaml beside it)"
    ]
    files, found_problems, _ = find_test_files([tmp_path / "residents.yaml"])
    assert (files, found_problems) == ([tmp_path / "residents.test.yaml"], [])
    files, found_problems, _ = find_test_files([tmp_path / "clinic_visits.yaml"])
    assert files == [] and "no tests" in found_problems[0]


def test_jobs_held_for_review(tmp_path: Path) -> None:
    if "review" not in {f.name for f in dataclasses.fields(Policy)}:
        pytest.skip("this build has no review routing")
    path = write_suite(
        tmp_path,
        """\
  - name: planning is reviewed
    purpose: urban-planning
    job: {aggregates: [count], group_by: [district]}
    expect: review
  - name: planning expected to run at once
    purpose: urban-planning
    job: {aggregates: [count], group_by: [district]}
    expect: allow
  - name: research runs at once
    job: {aggregates: [count], group_by: [district]}
    expect: allow
""",
    )
    policy = tmp_path / "residents.yaml"
    policy.write_text(policy.read_text() + "\nreview: {purposes: [urban-planning]}\n")
    results = {r.case.name: (r.passed, r.got) for r in load_test_file(path).run()}
    assert results == {
        "planning is reviewed": (True, "review"),
        "planning expected to run at once": (False, "review"),
        "research runs at once": (True, "allow"),
    }
