"""The decision engine: may this principal run this job under this project and policy?

Default deny; an explicit deny rule beats any allow. All reasons are collected, each with a
stable rule id. Messages name columns, purposes, projects and rules, never data values (filter
values are never echoed), and a hidden column is reported exactly like a column that does not
exist. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sandbox._model import (
    AggFunc,
    ColumnRole,
    Filter,
    FilterOp,
    JobSpec,
    Principal,
    Project,
    Role,
)
from sandbox.policy._model import ColumnPolicy, DenyRule, Policy, PurposePolicy

_COLUMNLESS = (AggFunc.COUNT, AggFunc.COUNT_DISTINCT)
DECISION_CHECKS = (
    "principal",
    "project",
    "purpose",
    "spec",
    "group_by",
    "filters",
    "aggregates",
    "limits",
    "deny",
)
"""The checks of a decision, in the order ``decide_with_trace`` reports them."""


@dataclass(frozen=True)
class Reason:
    rule_id: str
    """Stable id, e.g. ``column.not_in_purpose`` or ``deny.<rule id>``."""
    message: str


@dataclass(frozen=True)
class Step:
    """One check of a decision trace (see ``decide_with_trace`` and ``explain``)."""

    check: str
    """What was checked, e.g. ``project`` or ``group_by``."""
    passed: bool
    """Whether the job cleared this check (False also when it was not reached)."""
    rule_ids: tuple[str, ...] = ()
    """Rule ids of the check's refusals, in order (empty when it passed)."""
    message: str = ""
    """What was checked, in words, or why the job fails it (never a filter value)."""
    skipped: bool = False
    """Not evaluated: an earlier check already refused the job, or it needs what a trace
    cannot know (data, state); ``message`` says which."""
    reason: str = ""
    """The stable error reason a refusal here is reported with, e.g. ``POLICY_DENIED``."""

    @property
    def status(self) -> str:
        """``pass``, ``FAIL`` or ``skip``."""
        if self.skipped:
            return "skip"
        return "pass" if self.passed else "FAIL"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[Reason, ...]
    """Why the job is refused (empty when allowed)."""
    policy_version: str

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Distinct rule ids of the reasons, in order."""
        return tuple(dict.fromkeys(r.rule_id for r in self.reasons))


def decide(
    policy: Policy,
    spec: JobSpec,
    principal: Principal,
    project: Project | None,
    today: dt.date,
) -> Decision:
    """Decide whether ``principal`` may run ``spec`` under ``project`` on ``policy``'s dataset.

    ``project`` is None when the named project does not exist; that is reported exactly like a
    project the principal is not a member of.
    """
    return decide_with_trace(policy, spec, principal, project, today)[0]


def decide_with_trace(
    policy: Policy,
    spec: JobSpec,
    principal: Principal,
    project: Project | None,
    today: dt.date,
) -> tuple[Decision, tuple[Step, ...]]:
    """``decide``, plus one ``Step`` per check in the order they run.

    The decision is exactly ``decide``'s. Every check runs (all reasons are collected), so a
    refused job's trace shows each check it fails, each with its rule ids.
    """
    check = _Check(policy, spec)
    steps: list[Step] = []

    def step(name: str, passed_text: str) -> None:
        new = check.reasons[len(check.reasons) - check.added :]
        check.added = 0
        if new:
            steps.append(
                Step(
                    name,
                    False,
                    tuple(dict.fromkeys(r.rule_id for r in new)),
                    "; ".join(r.message for r in new),
                    reason="POLICY_DENIED",
                )
            )
        else:
            steps.append(Step(name, True, (), passed_text))

    check.principal(principal)
    step("principal", f"'{principal.name}' is a researcher")
    check.project(principal, project, today)
    step("project", _project_text(spec, project, today))
    purpose = check.purpose()
    step("purpose", f"purpose '{spec.purpose}' is defined for dataset '{policy.dataset}'")
    check.shape()
    step("spec", f"{_count(len(spec.aggregates), 'aggregate')}, no group-by column repeated")
    check.group_by(purpose)
    step("group_by", _use_text("group by", spec.group_by, purpose, "no group-by columns"))
    check.filters(purpose)
    step(
        "filters",
        _use_text("filter on", tuple(f.column for f in spec.filters), purpose, "no filters"),
    )
    check.aggregates(purpose)
    step("aggregates", _aggregates_text(spec))
    check.limits()
    step("limits", _limits_text(policy, spec))
    check.deny()
    step("deny", f"no deny rule matches ({_count(len(policy.deny), 'rule')} checked)")
    reasons = tuple(check.reasons)
    decision = Decision(allowed=not reasons, reasons=reasons, policy_version=policy.version_label)
    return decision, tuple(steps)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _project_text(spec: JobSpec, project: Project | None, today: dt.date) -> str:
    expires = ""
    if project is not None and project.expires != dt.date.max:
        expires = f", expires {project.expires.isoformat()}"
    return (
        f"member of project '{spec.project}' (on {today.isoformat()}{expires}), which holds "
        f"purpose '{spec.purpose}' on dataset '{spec.dataset}'"
    )


def _use_text(use: str, names: tuple[str, ...], purpose: PurposePolicy | None, none: str) -> str:
    if not names:
        return none
    under = f" under purpose '{purpose.id}'" if purpose is not None else ""
    return f"{use} {', '.join(dict.fromkeys(names))}: allowed{under}"


def _aggregates_text(spec: JobSpec) -> str:
    shown = [f"{a.function}({a.column})" if a.column else str(a.function) for a in spec.aggregates]
    return f"{', '.join(shown) or 'none'}: allowed"


def _limits_text(policy: Policy, spec: JobSpec) -> str:
    limits = policy.limits
    names = tuple(dict.fromkeys(spec.group_by))
    sizes = [_group_count(policy.column(name)) for name in names]
    if not names:
        groups = "1 group"
    elif any(size is None for size in sizes):
        groups = "a number of groups known only from the data"
    else:
        groups = _count(math.prod(s + spec.margins for s in sizes if s is not None), "group")
    return (
        f"{_count(len(spec.filters), 'filter')} (at most {limits.max_filters}), "
        f"{_count(len(spec.group_by), 'group-by column')} (at most {limits.max_group_by}), "
        f"{groups} (at most {limits.max_groups})"
    )


class _Check:
    def __init__(self, policy: Policy, spec: JobSpec) -> None:
        self.policy = policy
        self.spec = spec
        self.reasons: list[Reason] = []
        self.added = 0
        """Reasons added since the last trace step was taken."""

    def add(self, rule_id: str, message: str) -> None:
        reason = Reason(rule_id, message)
        if reason not in self.reasons:
            self.reasons.append(reason)
            self.added += 1

    def visible(self, name: str) -> ColumnPolicy | None:
        """The column if it exists and is not hidden."""
        col = self.policy.column(name)
        if col is None or col.role == ColumnRole.HIDDEN:
            return None
        return col

    # -- who -------------------------------------------------------------------------------

    def principal(self, principal: Principal) -> None:
        if principal.role != Role.RESEARCHER:
            self.add(
                "principal.role",
                f"role '{principal.role}' may not submit jobs; only researchers can",
            )

    def project(self, principal: Principal, project: Project | None, today: dt.date) -> None:
        spec = self.spec
        if project is None or project.id != spec.project or principal.name not in project.members:
            # Identical whether or not the project exists; nothing more is said about it.
            self.add("project.membership", f"principal is not a member of project '{spec.project}'")
            return
        if project.revoked:
            self.add("project.revoked", f"project '{project.id}' was revoked")
        if today > project.expires:
            self.add(
                "project.expired",
                f"project '{project.id}' expired on {project.expires.isoformat()}",
            )
        last_day = project.grant_expires(spec.dataset, spec.purpose)
        if (spec.dataset, spec.purpose) not in project.grants:
            self.add(
                "project.purpose_not_granted",
                f"project '{project.id}' holds no grant for purpose '{spec.purpose}' "
                f"on dataset '{spec.dataset}'",
            )
        elif last_day is not None and today > last_day:
            self.add(
                "project.purpose_expired",
                f"the grant of project '{project.id}' for purpose '{spec.purpose}' on dataset "
                f"'{spec.dataset}' expired on {last_day.isoformat()}",
            )

    # -- what ------------------------------------------------------------------------------

    def purpose(self) -> PurposePolicy | None:
        if self.spec.dataset != self.policy.dataset:
            self.add(
                "spec.dataset",
                f"job is for dataset '{self.spec.dataset}' but the policy is for "
                f"'{self.policy.dataset}'",
            )
        purpose = self.policy.purpose(self.spec.purpose)
        if purpose is None:
            self.add(
                "purpose.unknown",
                f"purpose '{self.spec.purpose}' is not defined for dataset '{self.policy.dataset}'",
            )
        return purpose

    def shape(self) -> None:
        if not self.spec.aggregates:
            self.add("spec.no_aggregates", "job has no aggregates; add at least one, e.g. count")
        seen: set[str] = set()
        for name in self.spec.group_by:
            if name in seen:
                self.add(
                    "spec.duplicate_group_by", f"column '{name}' appears more than once in group by"
                )
            seen.add(name)

    def usable(self, name: str, use: str, purpose: PurposePolicy | None) -> ColumnPolicy | None:
        """Column checks common to every use; the column when its role checks should follow."""
        col = self.visible(name)
        if col is None:
            self.add(
                "column.unknown",
                f"column '{name}' does not exist in dataset '{self.policy.dataset}'",
            )
            return None
        if col.role == ColumnRole.IDENTIFIER:
            self.add("column.identifier", f"column '{name}' is an identifier and cannot be {use}")
            return None
        if purpose is not None and name not in purpose.columns:
            self.add(
                "column.not_in_purpose",
                f"column '{name}' is not available under purpose '{purpose.id}'",
            )
        return col

    def group_by(self, purpose: PurposePolicy | None) -> None:
        for name in dict.fromkeys(self.spec.group_by):
            col = self.usable(name, "grouped by", purpose)
            if col is not None and col.role == ColumnRole.MEASURE:
                self.add(
                    "column.role",
                    f"column '{name}' is a measure and can only be used inside an aggregate "
                    f"({_names(col.aggregates)}), not grouped by",
                )

    def filters(self, purpose: PurposePolicy | None) -> None:
        for flt in self.spec.filters:
            col = self.usable(flt.column, "filtered on", purpose)
            if col is not None and col.role == ColumnRole.MEASURE:
                self.add(
                    "column.role",
                    f"column '{flt.column}' is a measure and can only be used inside an "
                    f"aggregate ({_names(col.aggregates)}), not filtered on",
                )
            elif col is not None and flt.op not in col.operators:
                self.add(
                    "operator.not_allowed",
                    f"operator '{flt.op}' is not allowed on column '{flt.column}' "
                    f"(allowed: {_names(col.operators)})",
                )
            self.filter_values(flt)

    def filter_values(self, flt: Filter) -> None:
        count = len(flt.values)
        if flt.op == FilterOp.BETWEEN:
            ok, need = count == 2, "exactly 2 values"
        elif flt.op == FilterOp.IN:
            ok, need = count >= 1, "at least 1 value"
        else:
            ok, need = count == 1, "exactly 1 value"
        if not ok:
            # The count is said, never the values themselves.
            self.add(
                "filter.values",
                f"filter on column '{flt.column}' with operator '{flt.op}' needs {need}, "
                f"got {count}",
            )

    def aggregates(self, purpose: PurposePolicy | None) -> None:
        for agg in self.spec.aggregates:
            fn = agg.function
            if not agg.column:
                if fn not in _COLUMNLESS:
                    self.add("aggregate.not_allowed", f"{fn} needs a measure column")
                continue
            col = self.usable(agg.column, f"aggregated ({fn})", purpose)
            if col is None:
                continue
            if col.role != ColumnRole.MEASURE:
                self.add(
                    "column.role",
                    f"column '{agg.column}' is a {col.role}; only measure columns can be "
                    f"aggregated ({fn})",
                )
            elif fn not in col.aggregates:
                self.add(
                    "aggregate.not_allowed",
                    f"{fn} is not allowed on measure '{agg.column}' "
                    f"(allowed: {_names(col.aggregates)})",
                )

    # -- how much --------------------------------------------------------------------------

    def limits(self) -> None:
        limits = self.policy.limits
        spec = self.spec
        if len(spec.filters) > limits.max_filters:
            self.add(
                "limits.max_filters",
                f"job has {len(spec.filters)} filters; the policy allows at most "
                f"{limits.max_filters}",
            )
        if len(spec.group_by) > limits.max_group_by:
            self.add(
                "limits.max_group_by",
                f"job groups by {len(spec.group_by)} columns; the policy allows at most "
                f"{limits.max_group_by}",
            )
        names = tuple(dict.fromkeys(spec.group_by))
        sizes = [_group_count(self.visible(name)) for name in names]
        if not names or any(size is None for size in sizes):
            return
        # Margins add a TOTAL key to every column.
        groups = math.prod(size + spec.margins for size in sizes if size is not None)
        if groups > limits.max_groups:
            self.add(
                "limits.max_groups",
                f"grouping by {', '.join(names)} gives up to {groups} groups; the policy allows "
                f"at most {limits.max_groups}",
            )

    # -- explicit denials ------------------------------------------------------------------

    def deny(self) -> None:
        for rule in self.policy.deny:
            if self.matches(rule):
                why = f": {rule.reason}" if rule.reason else ""
                self.add(f"deny.{rule.id}", f"denied by policy rule '{rule.id}'{why}")

    def matches(self, rule: DenyRule) -> bool:
        """A rule matches when every condition it sets matches.

        ``aggregates`` matches an aggregate using one of those functions and ``operators`` a
        filter using one of those operators (on one of ``columns``, when given); ``columns``
        alone matches any use of those columns. Hidden or unknown columns never match, so a
        rule cannot reveal that a hidden column exists.
        """
        spec = self.spec
        if rule.purposes and spec.purpose not in rule.purposes:
            return False
        cols = {c for c in rule.columns if self.visible(c) is not None}
        if rule.columns and not cols:
            return False

        def on(column: str) -> bool:
            return not rule.columns or column in cols

        if rule.aggregates and not any(
            a.function in rule.aggregates and on(a.column) for a in spec.aggregates
        ):
            return False
        if rule.operators and not any(
            f.op in rule.operators and on(f.column) for f in spec.filters
        ):
            return False
        if rule.columns and not rule.aggregates and not rule.operators:
            used = {*spec.group_by, *(f.column for f in spec.filters)}
            used.update(a.column for a in spec.aggregates if a.column)
            return bool(used & cols)
        return True


def _group_count(col: ColumnPolicy | None) -> int | None:
    """How many groups a dimension can produce, when its key set is known."""
    if col is None or col.role != ColumnRole.DIMENSION:
        return None
    if col.bins:
        return len(col.bins) - 1
    if col.values:
        return len(col.values)
    return None


def _names(items: tuple[str, ...]) -> str:
    return ", ".join(str(i) for i in items) or "none"
