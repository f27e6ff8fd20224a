"""Policies as code: job files and policy test files (``<dataset>.test.yaml``).

A job file is a job spec in YAML (the format ``sandbox policy explain`` reads and test cases
embed); a test file is a small world (principals, projects, data facts) and a list of cases,
each a job and the decision expected for it. The format is documented in
``docs/policy-tests.md``. Problems are reported like policy problems, one line each:
``FILE:LINE: KEY.PATH: problem — how to fix it``.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from sandbox._errors import PolicyInvalid
from sandbox._model import (
    AggFunc,
    Aggregate,
    Filter,
    FilterOp,
    JobSpec,
    Principal,
    Project,
    Role,
    Scalar,
)
from sandbox.policy._explain import Trace, explain, infer_column_types
from sandbox.policy._load import KeyPath, _Checker, _TooLarge, _unknown_fix, load_policy
from sandbox.policy._model import Policy

TEST_SUFFIX = ".test.yaml"
_JOB_KEYS = ("dataset", "project", "purpose", "aggregates", "group_by", "filters", "margins")
_FILE_KEYS = ("today", "data", "principals", "projects", "defaults", "cases")
_DATA_KEYS = ("one_row_per_person", "column_types")
_CASE_KEYS = ("name", "principal", "project", "purpose", "today", "job", "expect")
_DEFAULT_KEYS = ("principal", "project", "purpose", "today")
_PROJECT_KEYS = ("id", "title", "members", "grants", "expires", "revoked")
_EXPECT_KEYS = ("deny", "reason")
_AGG_KEYS = ("function", "column", "alias", "q")
_FILTER_KEYS = ("column", "op", "value", "values")
_ROLES = tuple(str(r) for r in Role)
_AGG_HINT = (
    "write e.g. `count`, `mean(monthly_income)`, `quantile(monthly_income, 0.9)` or "
    "`{function: sum, column: monthly_income, alias: total}`"
)
_FILTER_HINT = (
    "write e.g. `[age, '>=', 60]`, `[district, in, [Riverside, Eastbank]]` or "
    "`{column: age, op: between, values: [18, 64]}`"
)
_EXPECT_HINT = (
    "write `expect: allow`, `expect: review` (allowed, held for human review first), "
    "`expect: deny`, or `expect: {deny: [column.not_in_purpose]}` (the refusal's rule ids, "
    "any order), optionally with `reason: POLICY_DENIED`"
)


# -- model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFacts:
    """What registration learns from a dataset's file, which a trace cannot read."""

    one_row_per_person: bool = True
    column_types: dict[str, str] = field(default_factory=dict)
    """Engine types by column; columns not listed get types inferred from the policy."""

    def types_for(self, policy: Policy) -> dict[str, str]:
        return infer_column_types(policy) | self.column_types


@dataclass(frozen=True)
class Expectation:
    allow: bool
    rule_ids: tuple[str, ...] | None = None
    """The refusal's rule ids, exactly (any order); None: any."""
    reason: str = ""
    """The refusal's stable reason, e.g. ``NOT_FOUND``; "": any."""
    review: bool = False
    """Allowed, but held for human review first (``allow`` expects it to run at once)."""

    def __str__(self) -> str:
        if self.allow:
            return "review" if self.review else "allow"
        return _outcome("deny", self.reason, self.rule_ids)


@dataclass(frozen=True)
class Case:
    name: str
    line: int
    principal: Principal
    projects: tuple[Project, ...]
    """The state store's projects for this case (the job's project is looked up among them)."""
    spec: JobSpec
    today: dt.date
    expect: Expectation


@dataclass(frozen=True)
class CaseResult:
    case: Case
    trace: Trace

    @property
    def passed(self) -> bool:
        expect, trace = self.case.expect, self.trace
        if expect.allow:
            return trace.allowed and bool(trace.review) == expect.review
        if trace.allowed:
            return False
        if expect.reason and expect.reason != trace.reason:
            return False
        return expect.rule_ids is None or set(expect.rule_ids) == set(trace.rule_ids)

    @property
    def got(self) -> str:
        """The decision in the same words as ``Expectation``'s."""
        if self.trace.allowed:
            return "review" if self.trace.review else "allow"
        return _outcome("deny", self.trace.reason, self.trace.rule_ids)


@dataclass(frozen=True)
class PolicyTests:
    path: Path
    policy: Policy
    facts: DataFacts
    cases: tuple[Case, ...]

    def run(self, only: str = "") -> list[CaseResult]:
        """Run every case (whose name contains ``only``, if given) against the policy."""
        return [
            run_case(self.policy, self.facts, case)
            for case in self.cases
            if only.lower() in case.name.lower()
        ]


def _outcome(decision: str, reason: str, rule_ids: Iterable[str] | None) -> str:
    text = decision
    if reason:
        text += f" {reason}"
    if rule_ids is not None:
        text += f" [{', '.join(rule_ids)}]"
    return text


def run_case(policy: Policy, facts: DataFacts, case: Case) -> CaseResult:
    trace = explain(
        policy,
        case.spec,
        case.principal,
        case.projects,
        case.today,
        column_types=facts.types_for(policy),
        one_row_per_person=facts.one_row_per_person,
    )
    return CaseResult(case, trace)


# -- finding test files ----------------------------------------------------------------------


def policy_of(test_path: Path) -> Path:
    """The policy a test file tests: ``x.test.yaml`` tests ``x.yaml`` beside it."""
    return test_path.with_name(test_path.name.removesuffix(TEST_SUFFIX) + ".yaml")


def tests_path(policy_path: Path) -> Path:
    """The test file of a policy: ``x.yaml`` is tested by ``x.test.yaml`` beside it."""
    return policy_path.with_name(policy_path.name.removesuffix(".yaml") + TEST_SUFFIX)


def find_test_files(paths: Sequence[Path]) -> tuple[list[Path], list[str], list[str]]:
    """Test files under ``paths`` (directories, policies or test files).

    Returns the test files that have their policy, problems (a test file without its policy,
    a named policy without tests) and notes (policies in a directory that have no tests).
    """
    found: list[Path] = []
    problems: list[str] = []
    notes: list[str] = []
    for path in paths:
        if path.is_dir():
            tests = sorted(p for p in path.glob(f"*{TEST_SUFFIX}") if p.is_file())
            found += tests
            for policy in sorted(path.glob("*.yaml")):
                if not policy.name.endswith(TEST_SUFFIX) and not tests_path(policy).exists():
                    notes.append(f"{policy}: no tests (write {tests_path(policy).name} beside it)")
        elif path.name.endswith(TEST_SUFFIX):
            found.append(path)
        elif path.suffix in (".yaml", ".yml") and tests_path(path).is_file():
            found.append(tests_path(path))
        else:
            problems.append(f"{path}: no tests — write {tests_path(path).name} beside it")
    runnable: list[Path] = []
    for test in dict.fromkeys(found):
        if policy_of(test).is_file():
            runnable.append(test)
        else:
            problems.append(
                f"{test}:1: (document): no policy {policy_of(test).name} beside this test file — "
                f"a test file tests the policy of the same name"
            )
    return runnable, problems, notes


def load_test_file(path: Path, *, today: dt.date | None = None) -> PolicyTests:
    """Load a test file and the policy beside it.

    Args:
        today: The date for cases that set none (and the file sets none); default: today.

    Raises:
        PolicyInvalid: the policy's problems (as ``sandbox policy validate`` gives them) or the
            test file's, one line each.
    """
    policy = load_policy(policy_of(path))
    try:
        checker, data = read_yaml(path)
    except YamlProblems as exc:
        raise PolicyInvalid("\n".join(exc.lines)) from None
    test_file = _TestFileReader(checker, policy, today or dt.date.today()).read(data, path)
    problems = checker.messages()
    if problems or test_file is None:
        raise PolicyInvalid("\n".join(problems))
    return test_file


# -- reading YAML with lines -----------------------------------------------------------------


class YamlProblems(ValueError):
    """A job or test file with problems, one line each (``FILE:LINE: KEY: problem — fix``).

    Local to the steward's tools: not a ``SandboxError``, so it never travels over the wire.
    """

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def read_yaml(path: Path) -> tuple[_Checker, Any]:
    """A file's YAML as plain data, and a checker that knows each key's line.

    Raises:
        YamlProblems: the file cannot be read, is not UTF-8 or not valid YAML.
    """
    label = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlProblems(
            [f"{label}: cannot read ({exc.strerror or type(exc).__name__}) — check the path"]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblems(
            [f"{label}:{line}: (file): not valid UTF-8 — save the file as UTF-8"]
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "syntax error"
        raise YamlProblems(
            [
                f"{label}:{line}: (yaml): invalid YAML: {problem} — fix the syntax on or just "
                "before this line; quote values that start with '>', '!', '&' or '*' "
                "(e.g. write '>=' in quotes)"
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise YamlProblems([f"{label}:1: (yaml): invalid YAML: {exc} — fix the syntax"]) from None
    checker = _Checker(label)
    if root is None:
        return checker, None
    try:
        data = checker.build(root, (), frozenset())
    except _TooLarge:
        raise YamlProblems(
            [f"{label}:1: (document): too many values — write the file without nested aliases"]
        ) from None
    except RecursionError:
        raise YamlProblems([f"{label}:1: (document): nested too deeply — flatten it"]) from None
    return checker, data


# -- job files -------------------------------------------------------------------------------


def load_job_file(
    path: Path,
    *,
    dataset: str = "",
    project: str = "",
    purpose: str = "",
) -> JobSpec:
    """Read a job file; ``dataset``, ``project`` and ``purpose`` fill keys the file leaves out.

    Raises:
        YamlProblems: one line per problem.
    """
    checker, data = read_yaml(path)
    spec = _JobReader(checker).job(data, (), dataset=dataset, project=project, purpose=purpose)
    problems = checker.messages()
    if problems or spec is None:
        raise YamlProblems(problems or [f"{path}:1: (document): not a job"])
    return spec


def peek_dataset(path: Path) -> str:
    """The ``dataset`` a job file names ("" if none), to find its policy."""
    _, data = read_yaml(path)
    value = data.get("dataset") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def read_facts(test_path: Path) -> DataFacts | None:
    """The ``data`` section of a test file (None when the file or the section is unusable)."""
    try:
        checker, data = read_yaml(test_path)
    except YamlProblems:
        return None
    if not isinstance(data, dict) or "data" not in data:
        return None
    facts = _JobReader(checker).facts(data["data"], ("data",))
    return None if checker.messages() else facts


class _JobReader:
    """Builds jobs (and the other parts of a test file) from plain data, reporting problems."""

    def __init__(self, checker: _Checker) -> None:
        self.ck = checker

    def problem(self, path: KeyPath, problem: str, fix: str = "") -> None:
        self.ck.add(path, problem, fix)

    def mapping(self, value: Any, path: KeyPath, keys: Sequence[str], what: str) -> bool:
        if not isinstance(value, dict):
            self.problem(path, f"{what} must be a mapping, got {_kind(value)}", "")
            return False
        for key in value:
            if key not in keys:
                self.problem((*path, key), f"unknown key '{key}'", _key_fix(str(key), keys))
        return True

    def text(self, value: Any, path: KeyPath, fix: str = "") -> str | None:
        if isinstance(value, str) and value:
            return value
        self.problem(path, f"must be a non-empty string, got {_kind(value)}", fix)
        return None

    def date(self, value: Any, path: KeyPath) -> dt.date | None:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        self.problem(path, f"must be a date, got {_kind(value)}", "write e.g. 2026-06-30")
        return None

    def names(self, value: Any, path: KeyPath) -> tuple[str, ...] | None:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            self.problem(path, f"must be a list of names, got {_kind(value)}", "e.g. [a, b]")
            return None
        return tuple(items)

    # -- a job ---------------------------------------------------------------------------

    def job(
        self, data: Any, path: KeyPath, *, dataset: str, project: str, purpose: str
    ) -> JobSpec | None:
        if not self.mapping(data, path, _JOB_KEYS, "job keys"):
            return None
        fills = {"dataset": dataset, "project": project, "purpose": purpose}
        named: dict[str, str] = {}
        for key, fill in fills.items():
            if key in data:
                named[key] = self.text(data[key], (*path, key)) or ""
            elif fill:
                named[key] = fill
            else:
                self.problem((*path, key), "missing required key", f"add it, e.g. `{key}: ...`")
        if "aggregates" not in data:
            self.problem((*path, "aggregates"), "missing required key", f"add it: {_AGG_HINT}")
            aggregates: tuple[Aggregate, ...] = ()
        else:
            aggregates = self.aggregates(data["aggregates"], (*path, "aggregates"))
        group_by: tuple[str, ...] = ()
        if "group_by" in data:
            group_by = self.names(data["group_by"], (*path, "group_by")) or ()
        filters: tuple[Filter, ...] = ()
        if "filters" in data:
            filters = self.filters(data["filters"], (*path, "filters"))
        margins = data.get("margins", False)
        if not isinstance(margins, bool):
            self.problem((*path, "margins"), "must be true or false", "")
            margins = False
        if len(named) < 3:
            return None
        return JobSpec(
            dataset=named["dataset"],
            project=named["project"],
            purpose=named["purpose"],
            aggregates=aggregates,
            group_by=group_by,
            filters=filters,
            margins=margins,
        )

    def aggregates(self, value: Any, path: KeyPath) -> tuple[Aggregate, ...]:
        items = [value] if isinstance(value, str | dict) else value
        if not isinstance(items, list):
            self.problem(path, f"must be a list, got {_kind(value)}", _AGG_HINT)
            return ()
        out: list[Aggregate] = []
        for index, item in enumerate(items):
            agg = self.aggregate(item, (*path, index))
            if agg is not None:
                out.append(agg)
        return tuple(out)

    def aggregate(self, item: Any, path: KeyPath) -> Aggregate | None:
        if isinstance(item, str):
            return self.aggregate_text(item, path)
        if not self.mapping(item, path, _AGG_KEYS, "aggregate keys"):
            return None
        fn = self.function(item.get("function"), (*path, "function"))
        column = item.get("column", "")
        alias = item.get("alias", "")
        if not isinstance(column, str) or not isinstance(alias, str):
            self.problem(path, "column and alias must be strings", _AGG_HINT)
            return None
        q = self.level(item["q"], (*path, "q")) if "q" in item else None
        if fn is None:
            return None
        return Aggregate(fn, column, alias, q)

    def aggregate_text(self, text: str, path: KeyPath) -> Aggregate | None:
        name, sep, rest = text.strip().partition("(")
        if sep and not rest.endswith(")"):
            self.problem(path, f"cannot read aggregate '{text}'", _AGG_HINT)
            return None
        args = [a.strip() for a in rest[:-1].split(",")] if sep else []
        args = [a for a in args if a and a != "*"]
        fn = self.function(name.strip(), path)
        if fn is None:
            return None
        if len(args) > 2 or (len(args) == 2 and fn != AggFunc.QUANTILE):
            self.problem(path, f"too many arguments in '{text}'", _AGG_HINT)
            return None
        column = args[0] if args else ""
        q = self.level(args[1], path) if len(args) == 2 else None
        return Aggregate(fn, column, "", q)

    def function(self, value: Any, path: KeyPath) -> AggFunc | None:
        names = [str(f) for f in AggFunc]
        if isinstance(value, str) and value in names:
            return AggFunc(value)
        self.problem(
            path,
            f"unknown aggregate function {_show(value)}",
            f"use one of: {', '.join(names)}",
        )
        return None

    def level(self, value: Any, path: KeyPath) -> Fraction | None:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.problem(path, "a quantile level must be a number, e.g. 0.9 or '9/10'", "")
            return None
        try:
            return Fraction(str(value))
        except (ValueError, ZeroDivisionError):
            self.problem(path, "a quantile level must be a number, e.g. 0.9 or '9/10'", "")
            return None

    def filters(self, value: Any, path: KeyPath) -> tuple[Filter, ...]:
        if not isinstance(value, list):
            self.problem(path, f"must be a list, got {_kind(value)}", _FILTER_HINT)
            return ()
        out: list[Filter] = []
        for index, item in enumerate(value):
            flt = self.filter(item, (*path, index))
            if flt is not None:
                out.append(flt)
        return tuple(out)

    def filter(self, item: Any, path: KeyPath) -> Filter | None:
        if isinstance(item, list):
            if len(item) != 3:
                self.problem(path, "a filter list needs [column, operator, value]", _FILTER_HINT)
                return None
            column, op, raw = item
        elif self.mapping(item, path, _FILTER_KEYS, "filter keys"):
            column, op = item.get("column"), item.get("op")
            if ("value" in item) == ("values" in item):
                self.problem(path, "give either `value` or `values`", _FILTER_HINT)
                return None
            raw = item["value"] if "value" in item else item["values"]
            if "values" in item and not isinstance(raw, list):
                self.problem((*path, "values"), "must be a list", _FILTER_HINT)
                return None
        else:
            return None
        if not isinstance(column, str) or not column:
            self.problem(path, "a filter needs a column name", _FILTER_HINT)
            return None
        ops = [str(o) for o in FilterOp]
        if not isinstance(op, str) or op not in ops:
            self.problem(path, f"unknown operator {_show(op)}", f"use one of: {', '.join(ops)}")
            return None
        values = raw if isinstance(raw, list) else [raw]
        scalars: list[Scalar] = []
        for v in values:
            scalar = _scalar(v)
            if scalar is None:
                self.problem(path, f"a filter value must be a plain value, got {_kind(v)}", "")
                return None
            scalars.append(scalar)
        return Filter(column, FilterOp(op), tuple(scalars))

    # -- the rest of a test file -----------------------------------------------------------

    def facts(self, value: Any, path: KeyPath) -> DataFacts:
        if not self.mapping(value, path, _DATA_KEYS, "data keys"):
            return DataFacts()
        one_row = value.get("one_row_per_person", True)
        if not isinstance(one_row, bool):
            self.problem((*path, "one_row_per_person"), "must be true or false", "")
            one_row = True
        types: dict[str, str] = {}
        raw = value.get("column_types", {})
        if isinstance(raw, dict) and all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()
        ):
            types = {k: v.upper() for k, v in raw.items()}
        else:
            self.problem(
                (*path, "column_types"),
                "must map column names to engine types",
                "e.g. `{age: SMALLINT, visit_date: DATE, district: VARCHAR}`",
            )
        return DataFacts(one_row, types)

    def principal(self, value: Any, path: KeyPath, known: dict[str, Role]) -> Principal | None:
        if isinstance(value, str):
            if value in known:
                return Principal(value, known[value])
            self.problem(
                path,
                f"unknown principal '{value}'",
                _unknown_fix(value, known, "principals")
                if known
                else "declare it under principals, e.g. `principals: {ana: researcher}`",
            )
            return None
        if not self.mapping(value, path, ("name", "role"), "principal keys"):
            return None
        name = self.text(value.get("name"), (*path, "name"))
        role = self.role(value.get("role", "researcher"), (*path, "role"))
        return Principal(name, role) if name and role else None

    def role(self, value: Any, path: KeyPath) -> Role | None:
        if isinstance(value, str) and value in _ROLES:
            return Role(value)
        self.problem(path, f"unknown role {_show(value)}", f"use one of: {', '.join(_ROLES)}")
        return None

    def project(self, value: Any, path: KeyPath) -> Project | None:
        if not self.mapping(value, path, _PROJECT_KEYS, "project keys"):
            return None
        pid = self.text(value.get("id"), (*path, "id"), "e.g. `id: health-equity`")
        members = self.names(value.get("members", []), (*path, "members"))
        grants, grant_expiry = self.grants(value.get("grants", {}), (*path, "grants"))
        expires = (
            self.date(value["expires"], (*path, "expires")) if "expires" in value else dt.date.max
        )
        title = value.get("title", pid)
        revoked = value.get("revoked", False)
        if not isinstance(revoked, bool):
            self.problem((*path, "revoked"), "must be true or false", "")
            revoked = False
        if pid is None or members is None or grants is None or expires is None:
            return None
        return Project(
            pid,
            str(title),
            members,
            grants,
            expires,
            grant_expiry=grant_expiry,
            revoked=revoked,
        )

    def grants(
        self, value: Any, path: KeyPath
    ) -> tuple[tuple[tuple[str, str], ...] | None, tuple[tuple[str, str, dt.date], ...]]:
        """``{dataset: [purpose, ...]}``, ``{dataset: {purpose: last day}}`` or
        ``[dataset:purpose, ...]``."""
        grants: list[tuple[str, str]] = []
        expiry: list[tuple[str, str, dt.date]] = []
        fix = "write e.g. `grants: {residents: [public-health-research]}`"
        if isinstance(value, list):
            for index, item in enumerate(value):
                dataset, sep, purpose = (
                    item.partition(":") if isinstance(item, str) else ("", "", "")
                )
                if not (dataset and sep and purpose):
                    self.problem((*path, index), "must be DATASET:PURPOSE", fix)
                    return None, ()
                grants.append((dataset, purpose))
            return tuple(grants), ()
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, got {_kind(value)}", fix)
            return None, ()
        for dataset, purposes in value.items():
            if isinstance(purposes, dict):
                for purpose, last in purposes.items():
                    grants.append((str(dataset), str(purpose)))
                    if last is not None:
                        day = self.date(last, (*path, dataset, purpose))
                        if day is not None:
                            expiry.append((str(dataset), str(purpose), day))
                continue
            names = self.names(purposes, (*path, dataset))
            if names is None:
                return None, ()
            grants += [(str(dataset), p) for p in names]
        return tuple(grants), tuple(expiry)

    def expect(self, value: Any, path: KeyPath) -> Expectation | None:
        if value == "allow":
            return Expectation(True)
        if value == "review":
            return Expectation(True, review=True)
        if value == "deny":
            return Expectation(False)
        if not isinstance(value, dict):
            self.problem(path, f"cannot read expectation {_show(value)}", _EXPECT_HINT)
            return None
        if not self.mapping(value, path, _EXPECT_KEYS, "expect keys"):
            return None
        rule_ids: tuple[str, ...] | None = None
        if "deny" in value:
            rule_ids = self.names(value["deny"] or [], (*path, "deny"))
            if rule_ids is None:
                return None
        reason = value.get("reason", "")
        if not isinstance(reason, str) or (reason and reason != reason.upper()):
            self.problem((*path, "reason"), "must be a stable reason", "e.g. POLICY_DENIED")
            return None
        return Expectation(False, rule_ids, reason)


class _TestFileReader(_JobReader):
    def __init__(self, checker: _Checker, policy: Policy, today: dt.date) -> None:
        super().__init__(checker)
        self.policy = policy
        self.today = today

    def read(self, data: Any, path: Path) -> PolicyTests | None:
        if data is None:
            self.problem((), "the file is empty", "write `cases:` with at least one case")
            return None
        if not self.mapping(data, (), _FILE_KEYS, "test file keys"):
            return None
        today = self.date(data["today"], ("today",)) if "today" in data else self.today
        facts = self.facts(data["data"], ("data",)) if "data" in data else DataFacts()
        known = self.principals(data.get("principals", {}))
        projects = self.projects(data.get("projects", []))
        defaults = data.get("defaults", {})
        if not self.mapping(defaults, ("defaults",), _DEFAULT_KEYS, "defaults keys"):
            defaults = {}
        cases_data = data.get("cases")
        if not isinstance(cases_data, list) or not cases_data:
            self.problem(("cases",), "must list at least one case", "e.g. `cases: [{name: ...}]`")
            return None
        cases: list[Case] = []
        names: dict[str, int] = {}
        for index, raw in enumerate(cases_data):
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str) and name in names:
                self.problem(
                    ("cases", index, "name"),
                    f"duplicate case name (also cases[{names[name]}])",
                    "give each case its own name",
                )
            elif isinstance(name, str):
                names[name] = index
            case = self.case(raw, ("cases", index), defaults, known, projects, today or self.today)
            if case is not None:
                cases.append(case)
        return PolicyTests(path, self.policy, facts, tuple(cases))

    def principals(self, value: Any) -> dict[str, Role]:
        if not isinstance(value, dict):
            self.problem(("principals",), "must map names to roles", "e.g. `{ana: researcher}`")
            return {}
        out: dict[str, Role] = {}
        for name, role in value.items():
            parsed = self.role(role, ("principals", name))
            if parsed is not None:
                out[str(name)] = parsed
        return out

    def projects(self, value: Any) -> dict[str, Project]:
        if not isinstance(value, list):
            self.problem(("projects",), "must be a list of projects", "e.g. `- {id: ..., ...}`")
            return {}
        out: dict[str, Project] = {}
        for index, item in enumerate(value):
            project = self.project(item, ("projects", index))
            if project is not None:
                if project.id in out:
                    self.problem(("projects", index, "id"), "duplicate project id", "")
                out[project.id] = project
        return out

    def case(
        self,
        raw: Any,
        path: KeyPath,
        defaults: dict[str, Any],
        known: dict[str, Role],
        projects: dict[str, Project],
        today: dt.date,
    ) -> Case | None:
        if not self.mapping(raw, path, _CASE_KEYS, "case keys"):
            return None
        merged = defaults | raw
        at = {k: (*path, k) if k in raw else ("defaults", k) for k in merged}
        name = self.text(raw.get("name"), (*path, "name"), "give the case a short name")
        principal = None
        if "principal" in merged:
            principal = self.principal(merged["principal"], at["principal"], known)
        else:
            self.problem((*path, "principal"), "missing required key", "e.g. `principal: ana`")
        world = dict(projects)
        project_id = ""
        if "project" in merged:
            value = merged["project"]
            if isinstance(value, str):
                project_id = value  # may name no project: the job's project then does not exist
            else:
                project = self.project(value, at["project"])
                if project is not None:
                    world[project.id] = project
                    project_id = project.id
        purpose = merged.get("purpose", "")
        if not isinstance(purpose, str):
            self.problem(at["purpose"], "must be a purpose id", "e.g. `purpose: urban-planning`")
            purpose = ""
        day = self.date(merged["today"], at["today"]) if "today" in merged else today
        spec = None
        if "job" in raw:
            spec = self.job(
                raw["job"],
                (*path, "job"),
                dataset=self.policy.dataset,
                project=project_id,
                purpose=purpose,
            )
        else:
            self.problem(
                (*path, "job"),
                "missing required key",
                "add the job, e.g. `job: {aggregates: [count], group_by: [district]}`",
            )
        expect = None
        if "expect" in raw:
            expect = self.expect(raw["expect"], (*path, "expect"))
        else:
            self.problem((*path, "expect"), "missing required key", _EXPECT_HINT)
        if name is None or principal is None or spec is None or expect is None or day is None:
            return None
        return Case(
            name=name,
            line=self.ck.line_of(path),
            principal=principal,
            projects=tuple(world.values()),
            spec=spec,
            today=day,
            expect=expect,
        )


def _key_fix(key: str, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    guess = f"did you mean '{close[0]}'? " if close else ""
    return f"{guess}use one of: {', '.join(keys)}"


def _scalar(value: Any) -> Scalar | None:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool | int | float | str):
        return value
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else _kind(value)
