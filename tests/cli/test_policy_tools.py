"""``sandbox policy diff | test | explain`` through the command line (CliRunner and a real
process): output in words, exit statuses, and problems printed as ``policy validate`` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sandbox.cli import main
from tests.conftest import REPO

POLICIES = REPO / "policies"


def run(*args: str) -> Result:
    env = {k: None for k in os.environ if k.startswith("SANDBOX_")}
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


def copy_policy(tmp_path: Path, name: str = "residents", *, tests: bool = True) -> Path:
    shutil.copy(POLICIES / f"{name}.yaml", tmp_path / f"{name}.yaml")
    if tests:
        shutil.copy(POLICIES / f"{name}.test.yaml", tmp_path / f"{name}.test.yaml")
    return tmp_path / f"{name}.yaml"


# ---- policy test ----------------------------------------------------------------------------
def test_policy_test_passes_on_the_repository_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for args in (("policy", "test", "policies"), ("policy", "test")):
        result = run(*args)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].startswith("policies/clinic_visits.test.yaml (clinic_visits@v1:")
        assert any(line.startswith("policies/residents.test.yaml (residents@v1:") for line in lines)
        cases = [line for line in lines if line.startswith("  ")]
        assert len(cases) >= 16 and all(line.startswith("  PASS  ") for line in cases)
        assert lines[-1].endswith("passed, 0 failed")
        assert result.stderr == ""


def test_policy_test_as_ci_runs_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "policy", "test", "policies"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed, 0 failed" in done.stdout


def test_policy_test_reports_a_failing_case_and_exits_1(tmp_path: Path) -> None:
    copy_policy(tmp_path, tests=False)
    (tmp_path / "residents.test.yaml").write_text(
        """\
today: 2026-06-01
principals: {ana: researcher}
projects:
  - {id: he, members: [ana], grants: {residents: [urban-planning]}}
defaults: {principal: ana, project: he, purpose: urban-planning}
cases:
  - name: income by district
    job: {aggregates: [mean(monthly_income)], group_by: [district]}
    expect: allow
  - name: counts
    job: {aggregates: [count], group_by: [district]}
    expect: allow
"""
    )
    result = run("policy", "test", str(tmp_path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1] == (
        "  FAIL  income by district (line 7): expected allow, got deny POLICY_DENIED "
        "[column.not_in_purpose, deny.no-income-for-planning]: column 'monthly_income' is not "
        "available under purpose 'urban-planning'; denied by policy rule "
        "'no-income-for-planning': Income data is not needed for urban planning and may not be "
        "used for it."
    )
    assert lines[2] == "  PASS  counts: allow"
    assert lines[-1] == "2 cases: 1 passed, 1 failed"
    # -v adds the trace of the failing case; -k picks cases.
    verbose = run("policy", "test", "-v", str(tmp_path))
    assert "FAIL  aggregates" in verbose.stdout and "skip  canonical form" in verbose.stdout
    only = run("policy", "test", "-k", "COUNTS", str(tmp_path / "residents.yaml"))
    assert only.exit_code == 0, only.output
    assert only.stdout.splitlines()[-1] == "1 case: 1 passed, 0 failed"


def test_policy_test_json(tmp_path: Path) -> None:
    copy_policy(tmp_path)
    result = run("--output", "json", "policy", "test", str(tmp_path / "residents.test.yaml"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["problems"] == []
    first = report["cases"][0]
    assert first["passed"] and first["expected"] == first["got"] == "allow"
    assert first["trace"]["decision"] == "allow"
    assert [s["check"] for s in first["trace"]["steps"]][:3] == [
        "principal",
        "shape",
        "visibility",
    ]


def test_policy_test_problems_exit_1_with_file_and_line(tmp_path: Path) -> None:
    copy_policy(tmp_path, tests=False)
    test_file = tmp_path / "residents.test.yaml"
    test_file.write_text("cases:\n  - name: x\n    job: {aggregates: [cout]}\n    expect: allow\n")
    (tmp_path / "orphan.test.yaml").write_text("cases: []\n")
    result = run("policy", "test", str(tmp_path))
    assert result.exit_code == 1
    err = result.stderr.splitlines()
    assert f"{tmp_path / 'orphan.test.yaml'}:1: (document): no policy orphan.yaml" in err[0]
    assert any(
        line.startswith(f"{test_file}:3: cases[0].job.aggregates[0]: unknown aggregate function")
        for line in err
    ), err
    assert any(line.startswith(f"{test_file}:2: cases[0].principal: missing") for line in err)
    assert result.stdout.splitlines()[-1].startswith("0 cases: 0 passed, 0 failed, ")


def test_policy_test_with_an_invalid_policy(tmp_path: Path) -> None:
    policy = copy_policy(tmp_path)
    policy.write_text(
        policy.read_text().replace("min_persons_per_cell: 10", "min_persons_per_cell: 0")
    )
    validate = run("policy", "validate", str(policy))
    result = run("policy", "test", str(tmp_path))
    assert validate.exit_code == result.exit_code == 1
    assert validate.stderr and validate.stderr == result.stderr


def test_policy_test_without_tests(tmp_path: Path) -> None:
    copy_policy(tmp_path, tests=False)
    result = run("policy", "test", str(tmp_path))
    assert result.exit_code == 1
    assert "no policy test files" in result.stderr
    assert "note: " in result.stdout and "no tests" in result.stdout
    missing = run("policy", "test", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2


# ---- policy explain -------------------------------------------------------------------------
JOB = """\
dataset: residents
project: health-equity
purpose: public-health-research
aggregates: [count, {function: mean, column: monthly_income, alias: avg_income}]
group_by: [district, age]
filters:
  - [age, ">", 59]
  - {column: sex, op: in, values: [F]}
"""


def test_policy_explain_an_allowed_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    result = run("policy", "explain", str(job), "--as", "ana", "--today", "2026-06-01")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("policy   residents@v1:")
    assert "(policies/residents.yaml)" in out.splitlines()[0]
    assert (
        "context  ana (researcher), a member of project 'health-equity', which holds "
        "residents:public-health-research and never expires; on 2026-06-01"
    ) in out
    assert " 1. pass  principal       'ana' is a researcher" in out
    assert "12. pass  canonical form" in out
    assert "14. skip  data version" in out
    assert "decision: allow\n" in out
    assert "job in canonical form, spec digest " in out
    # The canonical job: age > 59 on an integer column is age >= 60; `in` one value is `=`.
    assert "  - [age, '>=', 60]\n  - [sex, '=', F]\n" in out


def test_policy_explain_a_refused_job(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("group_by: [district, age]", "group_by: [person_id]"))
    policy = copy_policy(tmp_path)
    result = run(
        "policy",
        "explain",
        str(job),
        "--policy",
        str(policy),
        "--expires",
        "2026-01-31",
        "--today",
        "2026-06-01",
    )
    assert result.exit_code == 1
    out = result.stdout
    assert (
        "FAIL  project         project 'health-equity' expired on 2026-01-31 [project.expired]"
        in out
    )
    assert "FAIL  group_by        column 'person_id' is an identifier" in out
    assert "skip  canonical form  not reached" in out
    assert "decision: deny — POLICY_DENIED [project.expired, column.identifier]" in out
    assert "job as written (refused before canonical form)" in out
    # Not a member: the dataset is not even visible.
    hidden = run("policy", "explain", str(job), "--policy", str(policy), "--not-member")
    assert hidden.exit_code == 1
    assert "decision: deny — NOT_FOUND\n" in hidden.stdout


def test_policy_explain_json_and_options(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "dataset: residents\nproject: p\npurpose: public-health-research\n"
        "aggregates: [median(monthly_income)]\ngroup_by: [district]\n"
    )
    policy = copy_policy(tmp_path)
    args = ["--output", "json", "policy", "explain", str(job), "--policy", str(policy)]
    allowed = json.loads(run(*args).stdout)
    assert allowed["decision"] == "allow"
    several = run(*args, "--rows-per-person", "several")
    assert several.exit_code == 1
    trace = json.loads(several.stdout)
    assert trace["decision"] == "deny" and trace["reason"] == "POLICY_DENIED"
    assert {s["check"]: s["status"] for s in trace["steps"]}["plan"] == "FAIL"
    steward = json.loads(run(*args, "--role", "steward").stdout)
    assert steward["rule_ids"] == ["principal.role"]
    elsewhere = json.loads(run(*args, "--grant", "residents:urban-planning").stdout)
    assert elsewhere["rule_ids"] == ["project.purpose_not_granted"]


def test_policy_explain_a_test_case(tmp_path: Path) -> None:
    result = run(
        "policy", "explain", str(POLICIES / "residents.test.yaml"), "--case", "expired project"
    )
    assert result.exit_code == 1
    assert "context  case 'expired project' (line " in result.stdout
    assert "expected deny [project.expired], got deny POLICY_DENIED [project.expired]: PASS" in (
        result.stdout
    )
    ambiguous = run("policy", "explain", str(POLICIES / "residents.test.yaml"), "--case", "allow")
    assert ambiguous.exit_code == 2
    assert "more than one case matches 'allow'" in ambiguous.stderr


def test_policy_explain_usage_and_invalid_files(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("aggregates: [count]\n")
    no_dataset = run("policy", "explain", str(job))
    assert no_dataset.exit_code == 2
    assert "the job names no dataset" in no_dataset.stderr
    policy = copy_policy(tmp_path)
    incomplete = run("policy", "explain", str(job), "--policy", str(policy))
    assert incomplete.exit_code == 2
    assert incomplete.stderr.splitlines()[0] == (
        f"{job}:1: project: missing required key — add it, e.g. `project: ...`"
    )
    job.write_text("dataset: [\n")
    broken = run("policy", "explain", str(job))
    assert broken.exit_code == 2 and f"{job}:2: (yaml): invalid YAML" in broken.stderr
    assert (
        run("policy", "explain", str(job), "--grant", "nope", "--policy", str(policy)).exit_code
        == 2
    )


# ---- policy diff ----------------------------------------------------------------------------
def test_policy_diff_identical_and_text_only(tmp_path: Path) -> None:
    policy = POLICIES / "residents.yaml"
    same = run("policy", "diff", str(policy), str(policy))
    assert same.exit_code == 0
    assert same.stdout.splitlines()[2] == "no changes"
    commented = tmp_path / "residents.yaml"
    commented.write_text(policy.read_text() + "# a comment\n")
    text_only = run("policy", "diff", str(policy), str(commented))
    assert text_only.exit_code == 0
    assert "no changes (the files differ only in comments or layout)" in text_only.stdout


def test_policy_diff_in_words(tmp_path: Path) -> None:
    old = POLICIES / "residents.yaml"
    new = tmp_path / "residents.v2.yaml"  # any file name
    text = old.read_text()
    for a, b in (
        ("version: 1", "version: 2"),
        ("min_persons_per_cell: 10", "min_persons_per_cell: 15"),
        ("bins: [0, 18, 35, 50, 65, 80, 101]", "bins: [0, 18, 65, 101]"),
        (
            "columns: [district, sub_district, age, household_size, sex]",
            "columns: [district, sub_district, age, household_size, sex, insurance_type]",
        ),
    ):
        assert a in text
        text = text.replace(a, b)
    new.write_text(text)
    result = run("policy", "diff", str(old), str(new))
    assert result.exit_code == 1
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"--- {old} (residents@v1:")
    assert lines[1].startswith(f"+++ {new} (residents@v2:")
    assert lines[2:] == [
        "policy",
        "  version 1 → 2",
        "columns",
        "  column 'age' bins changed from [0, 18, 35, 50, 65, 80, 101] to [0, 18, 65, 101]",
        "purposes",
        "  purpose 'urban-planning' may now use column 'insurance_type'",
        "disclosure",
        "  k (minimum persons per cell) raised from 10 to 15",
        "4 changes",
    ]
    as_json = json.loads(run("--output", "json", "policy", "diff", str(old), str(new)).stdout)
    assert as_json["changed"] is True
    assert as_json["changes"][0] == {"section": "policy", "change": "version 1 → 2"}


def test_policy_diff_warns_about_a_missing_version_bump(tmp_path: Path) -> None:
    new = tmp_path / "residents.yaml"
    new.write_text(
        (POLICIES / "residents.yaml").read_text().replace("rounding_base: 5", "rounding_base: 1")
    )
    result = run("policy", "diff", str(POLICIES / "residents.yaml"), str(new))
    assert result.exit_code == 1
    assert "  rounding base lowered from 5 to 1" in result.stdout
    assert result.stderr.startswith("warning: the policy changed but its version did not go up")


def test_policy_diff_trouble_exits_2_with_validate_messages(tmp_path: Path) -> None:
    bad = tmp_path / "residents.yaml"
    bad.write_text((POLICIES / "residents.yaml").read_text().replace("version: 1", "version: zero"))
    result = run("policy", "diff", str(POLICIES / "residents.yaml"), str(bad))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == run("policy", "validate", str(bad)).stderr
    assert result.stderr.startswith(f"{bad}:4: version: must be a whole number")
    missing = run("policy", "diff", str(bad), str(tmp_path / "nowhere.yaml"))
    assert missing.exit_code == 2
    assert run("policy", "diff", str(bad)).exit_code == 2
