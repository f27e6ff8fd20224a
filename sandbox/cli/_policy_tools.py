"""``sandbox policy diff | test | explain``: policies as code, for stewards (no server needed).

Registered on the ``policy`` group at the end of ``sandbox/cli/__init__.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from sandbox._errors import SandboxError
from sandbox._model import Principal, Project, Role
from sandbox.policy import Policy, load_policy
from sandbox.policy._cases import (
    Case,
    CaseResult,
    DataFacts,
    YamlProblems,
    find_test_files,
    load_job_file,
    load_test_file,
    peek_dataset,
    read_facts,
    run_case,
    tests_path,
)
from sandbox.policy._diff import diff_policies
from sandbox.policy._explain import Trace, explain, job_data

EXIT_TROUBLE = 2
"""Usage errors and unreadable or invalid input (click's own usage errors exit 2 too)."""


def _output() -> str:
    obj = click.get_current_context().find_root().obj
    return str(getattr(obj, "output", "table"))


def _trouble(lines: list[str] | str) -> NoReturn:
    for line in [lines] if isinstance(lines, str) else lines:
        click.echo(line, err=True)
    sys.exit(EXIT_TROUBLE)


def _load(path: Path, *, match_file_name: bool = True) -> Policy:
    """A policy, or exit 2 with its problems as ``policy validate`` prints them."""
    try:
        return load_policy(path, match_file_name=match_file_name)
    except SandboxError as exc:
        _trouble(exc.message.splitlines())


def _day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date like 2026-06-30") from None


# ---- diff -----------------------------------------------------------------------------------
@click.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def policy_diff(old: Path, new: Path) -> None:
    """Show what changed from policy OLD to policy NEW, in words.

    The loaded policies are compared, not their text: comments, layout and key order are no
    change. Every section is covered: version and header, columns (roles, bins, values,
    bounds, aggregates, operators), purposes and their columns, disclosure settings
    (threshold, rounding, dominance, p%, noise, budget), limits, deny rules and review routing.
    The file names need not match the dataset, so an older version can be compared from
    anywhere, e.g. `git show HEAD~1:policies/residents.yaml > /tmp/old.yaml`.

    \b
    Exit status (as `diff` and `git diff --exit-code`):
      0  no change in meaning ("no changes")
      1  the policies differ
      2  trouble: a usage error, or a file that is not a valid policy (its problems are
         printed as `sandbox policy validate` prints them)
    A change without a higher `version` is warned about on stderr.
    """
    before = _load(old, match_file_name=False)
    after = _load(new, match_file_name=False)
    diff = diff_policies(before, after)
    if _output() == "json":
        click.echo(
            json.dumps(
                {
                    "old": before.version_label,
                    "new": after.version_label,
                    "changed": diff.changed,
                    "changes": [{"section": c.section, "change": c.text} for c in diff.changes],
                    "warnings": list(diff.warnings),
                },
                indent=2,
            )
        )
    else:
        click.echo(f"--- {old} ({before.version_label})")
        click.echo(f"+++ {new} ({after.version_label})")
        if not diff.changed:
            note = " (the files differ only in comments or layout)" if diff.text_only else ""
            click.echo(f"no changes{note}")
        section = ""
        for change in diff.changes:
            if change.section != section:
                section = change.section
                click.echo(section)
            click.echo(f"  {change.text}")
        if diff.changed:
            n = len(diff.changes)
            click.echo(f"{n} change{'s' if n != 1 else ''}")
    for warning in diff.warnings:
        click.echo(f"warning: {warning}", err=True)
    sys.exit(1 if diff.changed else 0)


# ---- test -----------------------------------------------------------------------------------
@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("-k", "only", default="", help="Run only cases whose name contains this text.")
@click.option(
    "--today", default=None, help="Date for cases and files that set none (default: today)."
)
@click.option("-v", "--verbose", is_flag=True, help="Print the decision trace of failing cases.")
def policy_test(paths: tuple[Path, ...], only: str, today: str | None, verbose: bool) -> None:
    """Run the policy test cases in PATHS (default: ./policies).

    A test file `<dataset>.test.yaml` beside `<dataset>.yaml` lists cases: a principal, a
    project, a purpose and a job, and the decision expected (allow, or deny with its rule
    ids). Each case runs through the real decision engine and every check the server makes
    before accepting a job that needs no data (see docs/policy-tests.md). PATHS may be
    directories, policies or test files.

    Prints one line per case (PASS or FAIL, with the decision and rule ids) and a summary.
    Exit 0 when every case passes; 1 when a case fails or a policy or test file is invalid
    (its problems are printed as FILE:LINE: KEY: problem — fix); 2 on usage errors.
    """
    day = _day(today)
    files, problems, notes = find_test_files(list(paths) or [Path("policies")])
    json_out = _output() == "json"
    results: list[CaseResult] = []
    report: list[dict[str, Any]] = []
    broken = list(problems)
    for test_path in files:
        try:
            suite = load_test_file(test_path, today=day)
        except SandboxError as exc:
            broken += exc.message.splitlines()
            continue
        ran = suite.run(only)
        results += ran
        if json_out:
            report += [_case_json(test_path, r) for r in ran]
            continue
        click.echo(f"{test_path} ({suite.policy.version_label})")
        for result in ran:
            click.echo(_case_line(result))
            if verbose and not result.passed:
                _print_trace(result.trace, indent="        ")
    failed = sum(not r.passed for r in results)
    if json_out:
        click.echo(json.dumps({"cases": report, "problems": broken}, indent=2))
    else:
        for note in notes:
            click.echo(f"note: {note}")
        for line in broken:
            click.echo(line, err=True)
        summary = f"{len(results)} case{'s' if len(results) != 1 else ''}: "
        summary += f"{len(results) - failed} passed, {failed} failed"
        if broken:
            summary += f", {len(broken)} problem{'s' if len(broken) != 1 else ''} in the files"
        click.echo(summary)
    if not files and not problems:
        click.echo("error: no policy test files (*.test.yaml) found", err=True)
        sys.exit(1)
    sys.exit(1 if failed or broken else 0)


def _case_line(result: CaseResult) -> str:
    case = result.case
    if result.passed:
        return f"  PASS  {case.name}: {result.got}"
    why = f": {result.trace.message}" if result.trace.message else ""
    return f"  FAIL  {case.name} (line {case.line}): expected {case.expect}, got {result.got}{why}"


def _case_json(path: Path, result: CaseResult) -> dict[str, Any]:
    return {
        "file": str(path),
        "case": result.case.name,
        "line": result.case.line,
        "passed": result.passed,
        "expected": str(result.case.expect),
        "got": result.got,
        "trace": result.trace.to_json(),
    }


# ---- explain --------------------------------------------------------------------------------
@click.command("explain")
@click.argument(
    "job_file", metavar="JOB.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Policy file (default: policies/<the job's dataset>.yaml).",
)
@click.option(
    "--case", "case_name", default=None, help="JOB.yaml is a policy test file: explain this case."
)
@click.option(
    "--as", "principal_name", default="researcher", show_default=True, help="Who submits the job."
)
@click.option(
    "--role",
    type=click.Choice([str(r) for r in Role]),
    default="researcher",
    show_default=True,
)
@click.option(
    "--grant",
    "grants",
    multiple=True,
    help="DATASET:PURPOSE the project holds (default: the job's own dataset and purpose).",
)
@click.option("--not-member", is_flag=True, help="The principal is not a member of the project.")
@click.option("--expires", default=None, help="The project's last day (default: never).")
@click.option("--today", default=None, help="Date to decide on (default: today).")
@click.option(
    "--column-type",
    "column_types",
    multiple=True,
    help="COLUMN=TYPE engine type (default: from the test file's data section, else guessed "
    "from the policy).",
)
@click.option(
    "--rows-per-person",
    type=click.Choice(["one", "several"]),
    default=None,
    help="Whether the dataset has one row per person or several (default: from the test "
    "file's data section, else one).",
)
def policy_explain(
    job_file: Path,
    policy_path: Path | None,
    case_name: str | None,
    principal_name: str,
    role: str,
    grants: tuple[str, ...],
    not_member: bool,
    expires: str | None,
    today: str | None,
    column_types: tuple[str, ...],
    rows_per_person: str | None,
) -> None:
    """Print the decision trace of the job in JOB.yaml: every check in order, pass or fail,
    with its rule ids, then the decision and the job in canonical form.

    JOB.yaml holds a job in the test-case format (dataset, project, purpose, aggregates,
    group_by, filters, margins; see docs/policy-tests.md). Unless told otherwise the
    principal is taken to be a researcher who is a member of the job's project, and the
    project to hold the job's dataset and purpose and not to have expired; --as, --role,
    --grant, --not-member and --expires change that. With --case, JOB.yaml is a policy
    test file and the named case is explained in its own world.

    Exit 0 if the job would be accepted, 1 if refused, 2 on usage errors or invalid files.
    """
    day = _day(today) or dt.date.today()
    if case_name is not None:
        _explain_case(job_file, case_name, _day(today))
        return
    try:
        dataset = peek_dataset(job_file)
    except YamlProblems as exc:
        _trouble(exc.lines)
    if policy_path is None:
        if not dataset:
            raise click.UsageError("the job names no dataset: add `dataset:` or pass --policy")
        policy_path = Path("policies") / f"{dataset}.yaml"
        if not policy_path.is_file():
            raise click.UsageError(f"no policy {policy_path}: pass --policy FILE")
    policy = _load(policy_path, match_file_name=False)
    try:
        spec = load_job_file(job_file, dataset=policy.dataset)
    except YamlProblems as exc:
        _trouble(exc.lines)
    parsed = tuple(_grant(g) for g in grants) or ((spec.dataset, spec.purpose),)
    principal = Principal(principal_name, Role(role))
    last_day = _day(expires) or dt.date.max
    project = Project(
        spec.project,
        spec.project,
        () if not_member else (principal.name,),
        parsed,
        last_day,
    )
    facts = read_facts(tests_path(policy_path)) or DataFacts()
    types = facts.types_for(policy) | dict(_column_type(c) for c in column_types)
    one_row = facts.one_row_per_person if rows_per_person is None else rows_per_person == "one"
    trace = explain(
        policy,
        spec,
        principal,
        [project],
        day,
        column_types=types,
        one_row_per_person=one_row,
    )
    member = "not a member" if not_member else "a member"
    until = "never expires" if last_day == dt.date.max else f"expires {last_day.isoformat()}"
    context = (
        f"{principal.name} ({principal.role}), {member} of project '{project.id}', which holds "
        f"{', '.join(f'{d}:{p}' for d, p in parsed)} and {until}; on {day.isoformat()}"
    )
    _show_trace(policy_path, trace, context)


def _explain_case(test_file: Path, name: str, today: dt.date | None) -> None:
    try:
        suite = load_test_file(test_file, today=today)
    except SandboxError as exc:
        _trouble(exc.message.splitlines())
    exact = [c for c in suite.cases if c.name == name]
    matches = exact or [c for c in suite.cases if name.lower() in c.name.lower()]
    if len(matches) != 1:
        names = "; ".join(c.name for c in (matches or suite.cases))
        raise click.UsageError(
            f"{'no' if not matches else 'more than one'} case matches '{name}' (cases: {names})"
        )
    case: Case = matches[0]
    result = run_case(suite.policy, suite.facts, case)
    context = (
        f"case '{case.name}' (line {case.line}): {case.principal.name} "
        f"({case.principal.role}), on {case.today.isoformat()}; expected {case.expect}, "
        f"got {result.got}: {'PASS' if result.passed else 'FAIL'}"
    )
    _show_trace(Path(suite.policy.path), result.trace, context)


def _show_trace(path: Path, trace: Trace, context: str) -> None:
    if _output() == "json":
        click.echo(json.dumps(trace.to_json() | {"context": context}, indent=2, default=str))
    else:
        click.echo(f"policy   {trace.policy_version}  ({path})")
        click.echo(f"context  {context}")
        click.echo("")
        _print_trace(trace)
    sys.exit(0 if trace.allowed else 1)


def _print_trace(trace: Trace, indent: str = "") -> None:
    width = max(len(s.check) for s in trace.steps)
    for number, step in enumerate(trace.steps, 1):
        rules = f" [{', '.join(step.rule_ids)}]" if step.rule_ids else ""
        click.echo(
            f"{indent}{number:>2}. {step.status:<4}  {step.check:<{width}}  {step.message}{rules}"
        )
    click.echo("")
    if trace.allowed:
        held = " (held for human review first)" if trace.review else ""
        click.echo(f"{indent}decision: allow{held}")
    else:
        rules = f" [{', '.join(trace.rule_ids)}]" if trace.rule_ids else ""
        click.echo(f"{indent}decision: deny — {trace.reason}{rules}")
        click.echo(f"{indent}  {trace.message}")
    state = "in canonical form" if trace.canonical else "as written (refused before canonical form)"
    click.echo(f"{indent}job {state}, spec digest {trace.spec.digest()[:12]}:")
    text = yaml.safe_dump(
        job_data(trace.spec), sort_keys=False, allow_unicode=True, default_flow_style=None
    )
    for line in text.rstrip().splitlines():
        click.echo(f"{indent}  {line}")


def _grant(value: str) -> tuple[str, str]:
    dataset, sep, purpose = value.partition(":")
    if not sep or not dataset or not purpose:
        raise click.BadParameter(f"'{value}' is not DATASET:PURPOSE", param_hint="--grant")
    return dataset, purpose


def _column_type(value: str) -> tuple[str, str]:
    column, sep, kind = value.partition("=")
    if not sep or not column or not kind:
        raise click.BadParameter(f"'{value}' is not COLUMN=TYPE", param_hint="--column-type")
    return column, kind.upper()
