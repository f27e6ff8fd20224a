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


@dataclass(frozen=True)
class Reason:
    rule_id: str
    """Stable id, e.g. ``column.not_in_purpose`` or ``deny.<rule id>``."""
    message: str


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
    check = _Check(policy, spec)
    check.principal(principal)
    check.project(principal, project, today)
    purpose = check.purpose()
    check.shape()
    check.group_by(purpose)
    check.filters(purpose)
    check.aggregates(purpose)
    check.limits()
    check.deny()
    reasons = tuple(check.reasons)
    return Decision(allowed=not reasons, reasons=reasons, policy_version=policy.version_label)


class _Check:
    def __init__(self, policy: Policy, spec: JobSpec) -> None:
        self.policy = policy
        self.spec = spec
        self.reasons: list[Reason] = []

    def add(self, rule_id: str, message: str) -> None:
        reason = Reason(rule_id, message)
        if reason not in self.reasons:
            self.reasons.append(reason)

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
        if today > project.expires:
            self.add(
                "project.expired",
                f"project '{project.id}' expired on {project.expires.isoformat()}",
            )
        if (spec.dataset, spec.purpose) not in project.grants:
            self.add(
                "project.purpose_not_granted",
                f"project '{project.id}' holds no grant for purpose '{spec.purpose}' "
                f"on dataset '{spec.dataset}'",
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
