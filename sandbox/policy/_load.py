"""Load and validate policy YAML files.

Every problem is reported as one line ``FILE:LINE: KEY.PATH: problem — how to fix it``, and all
problems of a file are reported together, not just the first.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeGuard

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sandbox._errors import PolicyInvalid
from sandbox._model import AggFunc, ColumnRole, FilterOp, Scalar
from sandbox.policy._model import (
    BudgetSettings,
    ColumnPolicy,
    DenyRule,
    DisclosureSettings,
    DominanceRule,
    Limits,
    Mechanism,
    NoiseSettings,
    Perturbations,
    Policy,
    PTableSpec,
    PurposePolicy,
)
from sandbox.policy._review import build_review

KeyPath = tuple[str | int, ...]

_VALUE_TAG = "tag:yaml.org,2002:value"  # PyYAML resolves a bare ``=`` to this tag
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAX_NODES = 100_000
_ROLES = {str(r) for r in ColumnRole}

_TOP_HINTS = {
    "dataset": "use lowercase letters, digits and underscores, starting with a letter, "
    "and the same as the file name, e.g. `dataset: residents` in residents.yaml",
    "version": "use a whole number >= 1, e.g. `version: 1`, and bump it on every change",
    "title": "give a short human-readable title, e.g. `title: Resident registry`",
    "description": "describe the dataset in plain text",
    "steward": "name the owning steward or office, e.g. `steward: civil-affairs-data-office`",
    "source": "give a path relative to the data root ending in .parquet or .csv, "
    "e.g. `source: residents.parquet`",
    "person_key": "name the identifier column that identifies a person, "
    "e.g. `person_key: person_id`",
    "population": "use lowercase letters, digits and hyphens, "
    "e.g. `population: harbor-city-residents`",
    "columns": "map each column name to its settings, e.g. `age: {role: dimension}`",
    "purposes": "map each purpose id to the columns it may use, "
    "e.g. `public-health-research: {description: ..., columns: [district, age]}`",
    "disclosure": "e.g. `disclosure: {min_persons_per_cell: 10, rounding_base: 5}`",
    "limits": "e.g. `limits: {max_groups: 1000, max_filters: 16, max_group_by: 4}`",
    "deny": "give a list of rules, e.g. "
    "`- {id: no-income-for-planning, purposes: [urban-planning], columns: [monthly_income]}`",
}
_COLUMN_HINTS = {
    "role": "use one of identifier, dimension, measure, hidden, e.g. `role: dimension`",
    "description": "describe the column in plain text",
    "bins": "list the bin edges in ascending order, e.g. [0, 18, 65, 120]",
    "values": "list the public set of values, e.g. [F, M]",
    "bounds": "give [lower, upper] with lower < upper, e.g. [0, 500000]",
    "aggregates": (
        "list functions from count, count_distinct, sum, mean, variance, stddev, median, "
        "quantile, e.g. [sum, mean]"
    ),
    "operators": "list operators from =, !=, <, <=, >, >=, in, between, quoted, "
    "e.g. ['=', 'in', 'between']",
}
_PURPOSE_HINTS = {
    "description": "describe the purpose in plain text",
    "columns": "list the column names this purpose may use, e.g. [district, age]",
}
_DENY_HINTS = {
    "id": "give each rule a unique id of lowercase letters, digits, '.', '_' or '-', "
    "e.g. `id: no-income-for-planning`",
    "purposes": "list purpose ids defined under purposes, e.g. [urban-planning]",
    "columns": "list column names defined under columns, e.g. [monthly_income]",
    "aggregates": (
        "list functions from count, count_distinct, sum, mean, variance, stddev, median, "
        "quantile, e.g. [sum]"
    ),
    "operators": "list quoted operators from =, !=, <, <=, >, >=, in, between, e.g. ['!=']",
    "reason": "explain the rule in plain text",
}
_SETTINGS_HINTS = {
    "min_persons_per_cell": "use a whole number >= 1, e.g. `min_persons_per_cell: 10`",
    "rounding_base": "use a whole number >= 1 (1 means no rounding), e.g. `rounding_base: 5`",
    "dominance": "write e.g. `dominance: {n: 2, k: 0.85}` (no 2 persons may hold more than 85% "
    "of a sum); remove the key to turn the rule off",
    "dominance.n": "use a whole number from 1 to 100, e.g. `n: 2`: how many of the largest "
    "contributors are taken together",
    "dominance.k": "use a whole percentage above 0 and below 1, e.g. `k: 0.85`: the share of the "
    "cell total the n largest contributors may hold",
    "p_percent": "use a whole percentage above 0 and below 1, e.g. `p_percent: 0.1` (10%); "
    "remove the key to turn the rule off",
    "max_groups": "use a whole number >= 1, e.g. `max_groups: 1000`",
    "max_filters": "use a whole number >= 1, e.g. `max_filters: 16`",
    "max_group_by": "use a whole number >= 1, e.g. `max_group_by: 4`",
    "noise.max_groups_per_person": "use a whole number from 1 to 1000, e.g. "
    "`max_groups_per_person: 4`: the most cells one person may add to",
    "noise.max_rows_per_person": "use a whole number from 1 to 1000000, e.g. "
    "`max_rows_per_person: 10`: the most rows one person may add to one cell",
    "noise.partition_selection": "use true or false, e.g. `partition_selection: true` "
    "(with a `delta_per_job` above 0)",
    "noise.ptable": "write e.g. `ptable: {max_perturbation: 2, variance: 1}`, or list the rows: "
    "`ptable: {default: [[-1, 0.25], [0, 0.5], [1, 0.25]]}` ([perturbation, probability] pairs, "
    "plus `rows: [{count: 10, perturbations: [...]}]` for given counts)",
}
_DP_ONLY_KEYS = ("max_groups_per_person", "max_rows_per_person", "partition_selection")
_TYPE_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "empty",
}


@functools.cache
def policy_schema() -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of a policy file."""
    text = resources.files("sandbox.policy").joinpath("schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(policy_schema())


def load_policy(path: Path, *, match_file_name: bool = True) -> Policy:
    """Load and validate one policy file.

    ``match_file_name=False`` accepts a file whose name is not ``<dataset>.yaml`` (e.g. an
    older version saved elsewhere, for ``sandbox policy diff``); every other check applies.

    Raises:
        PolicyInvalid: one line per problem, each naming file, line, key path and a fix.
    """
    policy, problems = _check_file(Path(path), match_file_name=match_file_name)
    if problems or policy is None:
        raise PolicyInvalid("\n".join(problems))
    return policy


def load_policies(directory: Path) -> dict[str, Policy]:
    """Load every ``*.yaml`` policy (not ``*.test.yaml``) in ``directory``, keyed by dataset.

    Raises:
        PolicyInvalid: the problems of all files together.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PolicyInvalid(
            f"{directory}: not a directory — point to the folder holding the policy YAML files"
        )
    policies: dict[str, Policy] = {}
    problems: list[str] = []
    for file in _policy_files(directory):
        policy, file_problems = _check_file(file)
        problems.extend(file_problems)
        if policy is not None:
            policies[policy.dataset] = policy
    if problems:
        raise PolicyInvalid("\n".join(problems))
    return policies


def validate_paths(paths: Sequence[Path]) -> list[str]:
    """Validate policy files and directories of policy files; returns problem lines (empty: ok)."""
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in _policy_files(path):
                problems.extend(_check_file(file)[1])
        elif path.exists():
            problems.extend(_check_file(path)[1])
        else:
            problems.append(f"{path}: no such file or directory — check the path")
    return problems


def _policy_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.glob("*.yaml") if p.is_file() and not p.name.endswith(".test.yaml")
    )


def _check_file(path: Path, *, match_file_name: bool = True) -> tuple[Policy | None, list[str]]:
    label = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, [f"{label}: cannot read policy file ({reason}) — check the path"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [f"{label}:{line}: (file): not valid UTF-8 — save the file as UTF-8"]
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "syntax error"
        return None, [
            f"{label}:{line}: (yaml): invalid YAML: {problem} — fix the syntax on or just before "
            "this line: check indentation and quote values that start with '>', '!', '&', '*' "
            "or contain ': ' (e.g. write '>=' in quotes)"
        ]
    except yaml.YAMLError as exc:
        return None, [f"{label}:1: (yaml): invalid YAML: {exc} — fix the YAML syntax"]
    if root is None:
        return None, [
            f"{label}:1: (document): the file is empty — write a policy mapping, "
            f"starting with `dataset: {stem}`"
        ]
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1
        return None, [
            f"{label}:{line}: (document): the top level must be a mapping of policy keys — "
            f"start with `dataset: {stem}`, then `version: 1`, `title: ...` and so on"
        ]
    checker = _Checker(label)
    try:
        data = checker.build(root, (), frozenset())
    except _TooLarge:
        return None, [
            f"{label}:1: (document): the document expands to more than {_MAX_NODES} values — "
            "write the policy out without nested aliases"
        ]
    except RecursionError:
        return None, [f"{label}:1: (document): the document is nested too deeply — flatten it"]
    checker.check_schema(data)
    checker.check_semantics(data, stem if match_file_name else None)
    problems = checker.messages()
    if problems:
        return None, problems
    digest = hashlib.sha256(raw).hexdigest()
    return _build(data, digest, label), []


class _TooLarge(Exception):
    pass


_UNREADABLE = object()


class _Checker:
    """Builds plain data from YAML nodes, remembering lines, and collects problems."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[tuple[int, int, str]] = []
        self._nodes = 0
        self._broken: set[KeyPath] = set()
        """Paths whose value could not be read (already reported; the schema is not asked)."""
        self._constructor = yaml.SafeLoader("")

    # -- reporting -------------------------------------------------------------------------

    def add(self, path: KeyPath, problem: str, fix: str, line: int | None = None) -> None:
        at = self.line_of(path) if line is None else line
        text = f"{self.label}:{at}: {_format_path(path)}: {problem}"
        if fix:
            text += f" — {fix}"
        self.problems.append((at, len(self.problems), text))

    def line_of(self, path: KeyPath) -> int:
        """Line of the key at ``path``, or of its nearest enclosing key that exists."""
        while path not in self.lines:
            if not path:
                return 1
            path = path[:-1]
        return self.lines[path]

    def messages(self) -> list[str]:
        seen: set[str] = set()
        out: list[str] = []
        for _, _, text in sorted(self.problems):
            if text not in seen:
                seen.add(text)
                out.append(text)
        return out

    # -- YAML nodes → data -----------------------------------------------------------------

    def build(self, node: yaml.Node, path: KeyPath, active: frozenset[int]) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _TooLarge
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in active:
            self.add(path, "refers to itself through a YAML alias", "write the value out")
            self._broken.add(path)
            return None
        active = active | {id(node)}
        if node.tag not in (_MAP_TAG, _SEQ_TAG) and not isinstance(node, yaml.ScalarNode):
            self.add(path, f"YAML tag '{node.tag}' is not supported", "remove the tag")
            self._broken.add(path)
            return None
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path, active)
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index), active))
            return items
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        return None

    def _build_mapping(
        self, node: yaml.MappingNode, path: KeyPath, active: frozenset[int]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                self.add(
                    path, "YAML merge keys ('<<') are not supported", "write the keys out", line
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.add(path, "a key must be a plain name", "write `name: value`", line)
                continue
            key = self._scalar(key_node, path, is_key=True)
            if key is _UNREADABLE:
                continue
            if not isinstance(key, str):
                shown = key_node.value
                self.add(
                    path,
                    f"key {shown!r} is read as {_kind(key)}, not as a name",
                    f"quote it, e.g. '{shown}':",
                    line,
                )
                continue
            if key in first_line:
                self.add(
                    (*path, key),
                    f"duplicate key '{key}' (first defined on line {first_line[key]})",
                    "remove or rename one of them; YAML would silently keep only the last one",
                    line,
                )
                continue
            first_line[key] = line
            self.lines[(*path, key)] = line
            out[key] = self.build(value_node, (*path, key), active)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath, is_key: bool = False) -> Any:
        if node.tag == _VALUE_TAG:
            return str(node.value)
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.add(
                path,
                f"cannot read this value ({problem})",
                "remove the YAML tag or quote the value",
                node.start_mark.line + 1,
            )
            if is_key:
                return _UNREADABLE
            self._broken.add(path)
            return None

    # -- JSON Schema -----------------------------------------------------------------------

    def check_schema(self, data: Any) -> None:
        errors = sorted(
            _validator().iter_errors(data),
            key=lambda e: (self.line_of(tuple(e.absolute_path)), [str(p) for p in e.absolute_path]),
        )
        for error in errors:
            self._schema_error(error)

    def _schema_error(self, error: ValidationError) -> None:
        path: KeyPath = tuple(error.absolute_path)
        if any(path[: len(broken)] == broken for broken in self._broken):
            return
        kind = error.validator
        instance = error.instance
        value = error.validator_value
        if "propertyNames" in error.absolute_schema_path:
            name = str(instance)
            self.add((*path, name), f"name '{name}' is not allowed", _name_hint(path))
            return
        if kind == "additionalProperties" and value is False and isinstance(instance, dict):
            schema = error.schema
            allowed = sorted(schema.get("properties", {})) if isinstance(schema, dict) else []
            for key in instance:
                if key in allowed:
                    continue
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.7)
                guess = f"did you mean '{close[0]}'? " if close else ""
                self.add(
                    (*path, key),
                    f"unknown key '{key}'",
                    f"{guess}remove it or use one of: {', '.join(allowed)}",
                )
            return
        if kind == "required" and isinstance(instance, dict) and isinstance(value, list):
            for key in value:
                if key not in instance:
                    self.add(
                        (*path, key),
                        "missing required key",
                        f"add it: {_hint((*path, key))}",
                        self.line_of(path),
                    )
            return
        self.add(path, _describe(error), _hint(path))

    # -- checks the schema cannot express --------------------------------------------------

    def check_semantics(self, data: dict[str, Any], stem: str | None) -> None:
        """``stem``: the file name the dataset id must equal (None: any name)."""
        dataset = data.get("dataset")
        if isinstance(dataset, str) and stem is not None and dataset != stem:
            self.add(
                ("dataset",),
                f"'{dataset}' does not match the file name '{stem}'",
                f"set `dataset: {stem}` or rename the file to {dataset}.yaml",
            )
        source = data.get("source")
        if isinstance(source, str):
            self._check_source(source)
        columns = _mapping(data.get("columns"))
        roles: dict[str, str] = {}
        for name, spec in columns.items():
            if isinstance(spec, dict):
                role = spec.get("role")
                if isinstance(role, str) and role in _ROLES:
                    roles[name] = role
                    self._check_column(name, role, spec)
        self._check_person_key(data.get("person_key"), columns, roles)
        purposes = _mapping(data.get("purposes"))
        for purpose_id, spec in purposes.items():
            if isinstance(spec, dict):
                self._check_purpose_columns(purpose_id, spec.get("columns"), columns, roles)
        disclosure = _mapping(data.get("disclosure"))
        self._check_noise(_mapping(disclosure.get("noise")))
        self._check_cell_key(disclosure)
        self._check_dominance(disclosure)
        deny = data.get("deny")
        if isinstance(deny, list):
            known_purposes = purposes if isinstance(data.get("purposes"), dict) else None
            known_columns = columns if isinstance(data.get("columns"), dict) else None
            self._check_deny(deny, known_purposes, known_columns)

    def _check_noise(self, noise: dict[str, Any]) -> None:
        mechanism = noise.get("mechanism")
        path = ("disclosure", "noise")
        if mechanism not in ("discrete_laplace", "discrete_gaussian"):
            for key in _DP_ONLY_KEYS:
                if key in noise:
                    self.add(
                        (*path, key),
                        "applies only to differential privacy "
                        "(mechanism discrete_laplace or discrete_gaussian)",
                        "remove it, or set `mechanism: discrete_laplace`",
                    )
            return
        selection = noise.get("partition_selection") is True
        try:
            epsilon = _amount(noise.get("epsilon_per_job", NoiseSettings.epsilon_per_job))
            delta = _amount(noise.get("delta_per_job", 0))
        except (ValueError, ZeroDivisionError):
            return  # the schema reports the malformed amount
        if epsilon <= 0:
            self.add((*path, "epsilon_per_job"), "must be above 0", "e.g. `epsilon_per_job: 0.1`")
        if mechanism == "discrete_gaussian" and not 0 < delta < 1:
            self.add(
                (*path, "delta_per_job"),
                "the Gaussian mechanism needs a delta between 0 and 1",
                "e.g. `delta_per_job: 0.000001`, or use `mechanism: discrete_laplace`",
            )
        elif selection and not 0 < delta < 1:
            self.add(
                (*path, "delta_per_job"),
                "partition selection needs a delta between 0 and 1: it is the chance that a key "
                "held by one person is released",
                "e.g. `delta_per_job: 0.000000001`, or remove `partition_selection`",
            )
        elif mechanism == "discrete_laplace" and delta != 0 and not selection:
            self.add(
                (*path, "delta_per_job"),
                "the Laplace mechanism is pure epsilon-DP: delta must be 0",
                "remove `delta_per_job` (a delta is used only with `partition_selection: true`)",
            )

    def _check_cell_key(self, disclosure: dict[str, Any]) -> None:
        """The cell-key method's p-table, and the settings that do not go with the method."""
        # Imported here: sandbox.disclosure imports the engine, which imports this package.
        from sandbox.disclosure._cellkey import ptable_problems

        noise = _mapping(disclosure.get("noise"))
        path: KeyPath = ("disclosure", "noise")
        at: KeyPath = (*path, "ptable")
        if noise.get("mechanism") != "cell_key":
            if "ptable" in noise:
                self.add(at, "a p-table applies only to `mechanism: cell_key`", "remove it")
            return
        for key in ("epsilon_per_job", "delta_per_job", "confidence"):
            if key in noise:
                self.add(
                    (*path, key),
                    "applies only to differential privacy; the cell-key method spends no budget",
                    "remove it",
                )
        base = disclosure.get("rounding_base")
        if isinstance(base, int) and not isinstance(base, bool) and base > 1:
            self.add(
                ("disclosure", "rounding_base"),
                "the cell-key method releases the p-table's values as they are; rounding them "
                "would change their distribution",
                "set `rounding_base: 1` or remove it",
            )
        raw = noise.get("ptable")
        if "ptable" not in noise:
            self.add(at, "the cell-key method needs a p-table", _SETTINGS_HINTS["noise.ptable"])
            return
        if not isinstance(raw, dict):
            return  # the schema reports it
        built = [k for k in ("max_perturbation", "variance") if k in raw]
        listed = [k for k in ("rows", "default") if k in raw]
        if built and listed:
            self.add(
                (*at, listed[0]),
                "a p-table is either built (max_perturbation, variance) or listed (rows, "
                "default), not both",
                "keep one of the two",
            )
            return
        required = ("default",) if listed else ("max_perturbation", "variance")
        missing = [k for k in required if k not in raw]
        for key in missing:
            self.add((*at, key), "missing required key", _PTABLE_KEYS[key], self.line_of(at))
        k = disclosure.get("min_persons_per_cell", DisclosureSettings.min_persons_per_cell)
        spec = _ptable_spec(raw)
        if missing or spec is None or not isinstance(k, int) or isinstance(k, bool) or k < 1:
            return  # the schema reports malformed values
        for suffix, problem, fix in ptable_problems(spec, k):
            self.add((*at, *suffix), problem, fix)

    def _check_dominance(self, disclosure: dict[str, Any]) -> None:
        """k and p must be whole percentages (the schema checks they lie strictly in (0, 1))."""
        shares: list[tuple[KeyPath, Any, str]] = [
            (("disclosure", "dominance", "k"), _mapping(disclosure.get("dominance")).get("k"), "k"),
            (("disclosure", "p_percent"), disclosure.get("p_percent"), "p_percent"),
        ]
        for path, value, key in shares:
            if not _share(value):
                continue  # absent, or the schema reports it
            if (_amount(value) * 100).denominator != 1:
                example = "k: 0.85" if key == "k" else "p_percent: 0.1"
                self.add(
                    path,
                    "must be a whole percentage (at most two decimal places)",
                    f"round it to a whole percentage, e.g. `{example}`",
                )

    def _check_source(self, source: str) -> None:
        windows = PureWindowsPath(source)
        if PurePosixPath(source).is_absolute() or windows.is_absolute() or windows.drive:
            self.add(
                ("source",),
                "must be a path relative to the data root, not an absolute path",
                "drop the leading folder part, e.g. `source: residents.parquet`",
            )
        elif ".." in windows.parts:
            self.add(
                ("source",),
                "must not contain '..'",
                "name a file inside the data root, e.g. `source: health/clinic_visits.parquet`",
            )

    def _check_column(self, name: str, role: str, spec: dict[str, Any]) -> None:
        base: KeyPath = ("columns", name)
        bins = spec.get("bins")
        if _numbers(bins):
            if not all(math.isfinite(b) for b in bins):
                self.add((*base, "bins"), "must be finite numbers", _COLUMN_HINTS["bins"])
            elif any(b <= a for a, b in itertools.pairwise(bins)):
                self.add((*base, "bins"), "must be strictly increasing", _COLUMN_HINTS["bins"])
        bounds = spec.get("bounds")
        if _numbers(bounds) and len(bounds) == 2:
            lo, hi = bounds
            if not (math.isfinite(lo) and math.isfinite(hi)):
                self.add((*base, "bounds"), "must be finite numbers", _COLUMN_HINTS["bounds"])
            elif lo >= hi:
                self.add(
                    (*base, "bounds"),
                    "the lower bound must be less than the upper bound",
                    _COLUMN_HINTS["bounds"],
                )
        for key in ("bins", "values", "operators"):
            if key in spec and role != ColumnRole.DIMENSION:
                self.add(
                    (*base, key),
                    f"'{key}' applies only to dimension columns, but '{name}' is {_a(role)} column",
                    "remove it, or set `role: dimension`",
                )
        for key in ("bounds", "aggregates"):
            if key in spec and role != ColumnRole.MEASURE:
                self.add(
                    (*base, key),
                    f"'{key}' applies only to measure columns, but '{name}' is {_a(role)} column",
                    "remove it, or set `role: measure` (with bounds and aggregates)",
                )
        if role == ColumnRole.MEASURE:
            if "bounds" not in spec:
                self.add(
                    (*base, "bounds"),
                    "a measure needs bounds (values are clamped to them)",
                    f"add e.g. `bounds: [0, 500000]` to columns.{name}",
                    self.line_of(base),
                )
            if "aggregates" not in spec:
                self.add(
                    (*base, "aggregates"),
                    "a measure needs the list of aggregates it may appear in",
                    f"add e.g. `aggregates: [sum, mean]` to columns.{name}",
                    self.line_of(base),
                )
        if "bins" in spec and "values" in spec:
            self.add(
                (*base, "values"),
                "a dimension has either bins or values, not both",
                "keep bins for numeric ranges or values for a fixed set of categories",
            )

    def _check_person_key(
        self, person_key: Any, columns: dict[str, Any], roles: dict[str, str]
    ) -> None:
        if not isinstance(person_key, str) or not columns:
            return
        if person_key not in columns:
            self.add(
                ("person_key",),
                f"column '{person_key}' is not declared under columns",
                f"declare it as `{person_key}: {{role: identifier}}` or name an existing "
                "identifier column",
            )
        elif person_key in roles and roles[person_key] != ColumnRole.IDENTIFIER:
            self.add(
                ("person_key",),
                f"column '{person_key}' is {_a(roles[person_key])} column, "
                "but the person key must be an identifier",
                f"set `role: identifier` on columns.{person_key}",
            )

    def _check_purpose_columns(
        self, purpose_id: str, names: Any, columns: dict[str, Any], roles: dict[str, str]
    ) -> None:
        if not isinstance(names, list) or not columns:
            return
        hidden = (ColumnRole.IDENTIFIER, ColumnRole.HIDDEN)
        usable = [c for c in columns if roles.get(c) not in hidden]
        for index, name in enumerate(names):
            if not isinstance(name, str):
                continue
            path: KeyPath = ("purposes", purpose_id, "columns", index)
            if name not in columns:
                self.add(path, f"unknown column '{name}'", _unknown_fix(name, usable, "columns"))
            elif roles.get(name) in hidden:
                self.add(
                    path,
                    f"column '{name}' is {_a(roles[name])} column and cannot be used by a purpose",
                    "remove it; identifier and hidden columns are never usable in jobs",
                )

    def _check_deny(
        self,
        rules: list[Any],
        purposes: dict[str, Any] | None,
        columns: dict[str, Any] | None,
    ) -> None:
        seen: dict[str, int] = {}
        for index, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            rule_id = rule.get("id")
            if isinstance(rule_id, str):
                if rule_id in seen:
                    self.add(
                        ("deny", index, "id"),
                        f"duplicate rule id '{rule_id}' (also used by deny[{seen[rule_id]}])",
                        "give each deny rule a unique id",
                    )
                else:
                    seen[rule_id] = index
            for key, known in (("purposes", purposes), ("columns", columns)):
                names = rule.get(key)
                if not isinstance(names, list) or known is None:
                    continue
                for j, name in enumerate(names):
                    if isinstance(name, str) and name not in known:
                        what = "purpose" if key == "purposes" else "column"
                        self.add(
                            ("deny", index, key, j),
                            f"unknown {what} '{name}'",
                            _unknown_fix(name, list(known), key),
                        )


# -- building the frozen policy ------------------------------------------------------------


def _build(data: dict[str, Any], digest: str, label: str) -> Policy:
    columns = tuple(_build_column(name, spec) for name, spec in data["columns"].items())
    purposes = tuple(
        PurposePolicy(
            id=purpose_id,
            description=str(spec.get("description", "")),
            columns=tuple(str(c) for c in spec["columns"]),
        )
        for purpose_id, spec in data["purposes"].items()
    )
    disclosure = data.get("disclosure", {})
    limits = data.get("limits", {})
    defaults = Limits()
    return Policy(
        review=build_review(data.get("review")),
        dataset=str(data["dataset"]),
        version=int(data["version"]),
        title=str(data["title"]),
        description=str(data.get("description", "")),
        steward=str(data["steward"]),
        source=str(data["source"]),
        person_key=str(data["person_key"]),
        population=str(data["population"]),
        columns=columns,
        purposes=purposes,
        disclosure=DisclosureSettings(
            min_persons_per_cell=int(
                disclosure.get("min_persons_per_cell", DisclosureSettings.min_persons_per_cell)
            ),
            rounding_base=int(disclosure.get("rounding_base", DisclosureSettings.rounding_base)),
            zeros_disclosive=bool(disclosure.get("zeros_disclosive", True)),
            noise=_build_noise(disclosure.get("noise", {})),
            budget=_build_budget(disclosure.get("budget", {})),
            dominance=_build_dominance(disclosure.get("dominance")),
            p_percent=_amount(disclosure["p_percent"]) if "p_percent" in disclosure else None,
        ),
        limits=Limits(
            max_groups=int(limits.get("max_groups", defaults.max_groups)),
            max_filters=int(limits.get("max_filters", defaults.max_filters)),
            max_group_by=int(limits.get("max_group_by", defaults.max_group_by)),
        ),
        deny=tuple(_build_deny(rule) for rule in data.get("deny", [])),
        digest=digest,
        path=label,
    )


def _amount(value: object) -> Fraction:
    """A decimal from YAML as an exact fraction (0.1 is 1/10, not the nearest double)."""
    return Fraction(str(value))


def _build_noise(spec: dict[str, Any]) -> NoiseSettings:
    defaults = NoiseSettings()
    return NoiseSettings(
        mechanism=Mechanism(spec.get("mechanism", "none")),
        epsilon_per_job=_amount(spec.get("epsilon_per_job", defaults.epsilon_per_job)),
        delta_per_job=_amount(spec.get("delta_per_job", defaults.delta_per_job)),
        confidence=float(spec.get("confidence", defaults.confidence)),
        ptable=_ptable_spec(spec.get("ptable")),
        max_groups_per_person=_optional_int(spec.get("max_groups_per_person")),
        max_rows_per_person=_optional_int(spec.get("max_rows_per_person")),
        partition_selection=spec.get("partition_selection") is True,
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


_PTABLE_KEYS = {
    "max_perturbation": "add e.g. `max_perturbation: 2`: no count changes by more than this",
    "variance": "add e.g. `variance: 1`: the variance of the change to a count",
    "default": "add the row of every count not listed, "
    "e.g. `default: [[-1, 0.25], [0, 0.5], [1, 0.25]]`",
}


def _ptable_spec(raw: Any) -> PTableSpec | None:
    """A p-table mapping as written, or None if it is absent or malformed."""
    if not isinstance(raw, dict):
        return None
    try:
        block = raw.get("block_small", False)
        if not isinstance(block, bool):
            return None
        if "default" in raw:
            if not raw["default"]:
                return None  # the schema reports it
            rows = tuple(
                (_whole(row["count"]), _perturbations(row["perturbations"]))
                for row in raw.get("rows", [])
            )
            return PTableSpec(block_small=block, rows=rows, default=_perturbations(raw["default"]))
        return PTableSpec(
            max_perturbation=_whole(raw["max_perturbation"]),
            variance=_amount(raw["variance"]),
            block_small=block,
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _whole(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not a whole number")
    return value


def _perturbations(items: Any) -> Perturbations:
    """``[[perturbation, probability], ...]`` with exact probabilities in [0, 1]."""
    out: list[tuple[int, Fraction]] = []
    for item in items:
        d, p = item
        if isinstance(p, bool) or not isinstance(p, int | float | str):
            raise TypeError("not a probability")
        probability = _amount(p)
        if not 0 <= probability <= 1:
            raise ValueError("not a probability")
        out.append((_whole(d), probability))
    return tuple(out)


def _build_budget(spec: dict[str, Any]) -> BudgetSettings:
    def optional(key: str) -> Fraction | None:
        return _amount(spec[key]) if key in spec else None

    return BudgetSettings(
        epsilon_per_project=optional("epsilon_per_project"),
        epsilon_per_population=optional("epsilon_per_population"),
        delta_per_project=optional("delta_per_project"),
        delta_per_population=optional("delta_per_population"),
        window_days=int(spec.get("window_days", 0)),
    )


def _build_dominance(spec: dict[str, Any] | None) -> DominanceRule | None:
    if spec is None:
        return None
    return DominanceRule(n=int(spec["n"]), k=_amount(spec["k"]))


def _build_column(name: str, spec: dict[str, Any]) -> ColumnPolicy:
    bounds = spec.get("bounds")
    values: tuple[Scalar, ...] = tuple(spec.get("values", ()))
    return ColumnPolicy(
        name=name,
        role=ColumnRole(spec["role"]),
        description=str(spec.get("description", "")),
        bins=tuple(float(b) for b in spec.get("bins", ())),
        values=values,
        bounds=(float(bounds[0]), float(bounds[1])) if bounds is not None else None,
        aggregates=tuple(AggFunc(a) for a in spec.get("aggregates", ())),
        operators=(
            tuple(FilterOp(o) for o in spec["operators"])
            if "operators" in spec
            else tuple(FilterOp)
        ),
    )


def _build_deny(rule: dict[str, Any]) -> DenyRule:
    return DenyRule(
        id=str(rule["id"]),
        purposes=tuple(str(p) for p in rule.get("purposes", ())),
        columns=tuple(str(c) for c in rule.get("columns", ())),
        aggregates=tuple(AggFunc(a) for a in rule.get("aggregates", ())),
        operators=tuple(FilterOp(o) for o in rule.get("operators", ())),
        reason=str(rule.get("reason", "")),
    )


# -- helpers -------------------------------------------------------------------------------


def _format_path(path: KeyPath) -> str:
    if not path:
        return "(document)"
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _hint(path: KeyPath) -> str:
    """A fix hint chosen by where the problem is (not by a column's own name)."""
    names = [p for p in path if isinstance(p, str)]
    if not names:
        return "the top level must be a mapping of policy keys (dataset, version, title, ...)"
    head = names[0]
    if head == "columns" and len(names) >= 2:
        if len(names) == 2:
            return "describe the column as a mapping with a role, e.g. `{role: dimension}`"
        return _COLUMN_HINTS.get(names[2], "")
    if head == "purposes" and len(names) >= 2:
        if len(names) == 2:
            return "describe the purpose as e.g. `{description: ..., columns: [district, age]}`"
        return _PURPOSE_HINTS.get(names[2], "")
    if head == "deny" and len(names) >= 2:
        return _DENY_HINTS.get(names[1], "")
    if head == "deny" and len(path) == 2:
        return "each rule is a mapping with an id, e.g. `{id: no-sum, aggregates: [sum]}`"
    if head in ("disclosure", "limits") and len(names) >= 2:
        nested = ".".join(names[1:3])
        return _SETTINGS_HINTS.get(nested, _SETTINGS_HINTS.get(names[1], ""))
    return _TOP_HINTS.get(head, "")


def _name_hint(path: KeyPath) -> str:
    if path == ("columns",):
        return "column names use letters, digits and underscores and start with a letter or '_'"
    if path == ("purposes",):
        return "purpose ids use lowercase letters, digits and hyphens, e.g. public-health-research"
    return "use a plain name"


def _describe(error: ValidationError) -> str:
    kind = error.validator
    value = error.validator_value
    instance = error.instance
    if kind == "type":
        wanted = value if isinstance(value, list) else [value]
        expected = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in wanted)
        return f"must be {expected}, got {_kind(instance)}"
    if kind == "enum" and isinstance(value, list):
        return f"{_show(instance)} is not allowed; use one of: {', '.join(map(str, value))}"
    if kind == "pattern":
        return f"{_show(instance)} is not in the expected format"
    if kind == "minimum":
        return f"must be at least {value}"
    if kind == "maximum":
        return f"must be at most {value}"
    if kind == "exclusiveMinimum":
        return f"must be above {value}"
    if kind == "exclusiveMaximum":
        return f"must be below {value}"
    if kind in ("minLength", "minProperties"):
        return "must not be empty"
    if kind == "minItems":
        return f"must list at least {value} item{'s' if value != 1 else ''}"
    if kind == "maxItems":
        return f"must list at most {value} item{'s' if value != 1 else ''}"
    if kind == "uniqueItems":
        return "lists the same entry more than once"
    return error.message


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _a(role: str) -> str:
    return f"an {role}" if role[:1] in "aeiou" else f"a {role}"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _share(value: Any) -> TypeGuard[float]:
    """A number strictly between 0 and 1 (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def _numbers(value: Any) -> TypeGuard[list[float]]:
    return isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )


def _unknown_fix(name: str, known: Iterable[str], section: str) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    guess = f"did you mean '{close[0]}'? " if close else ""
    return f"{guess}use a name declared under {section}: {', '.join(known)}"
