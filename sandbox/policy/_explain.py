"""Decision traces: every check a job passes before it is accepted, in order, without its data.

``explain`` follows ``JobPipeline.vet`` step by step (role, shape, visibility, the policy
decision, canonical filters, the plan, the noise terms) and, where vet stops at the first
refusal, marks the later checks as skipped. What needs data or state (the source file's
version, quota and privacy budget) is listed as skipped too. Column types and whether the
dataset has one row per person, which the server learns at registration, come from the caller
(or are inferred from the policy: see ``infer_column_types``).

Messages come from the checks themselves, so they name columns, purposes and rules, never
filter values. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox._errors import SandboxError
from sandbox._model import ColumnRole, JobSpec, Principal, Project, Role, Scalar
from sandbox.policy._canonicalize import canonicalize
from sandbox.policy._decide import DECISION_CHECKS, Step, decide_with_trace
from sandbox.policy._model import ColumnPolicy, Policy

_NOT_REACHED = "not reached: the job is refused by an earlier check"


@dataclass(frozen=True)
class Trace:
    """The checks a job went through and the decision they add up to."""

    policy_version: str
    """The policy's ``version_label`` (dataset, version and digest)."""
    steps: tuple[Step, ...]
    allowed: bool
    reason: str
    """Stable reason of a refusal (``POLICY_DENIED``, ``INVALID_JOB_SPEC``, ...); "" if allowed."""
    rule_ids: tuple[str, ...]
    """Rule ids of the refusal, as the server reports them (may be empty, e.g. NOT_FOUND)."""
    message: str
    """The refusal's message; "" if allowed."""
    spec: JobSpec
    """The job in canonical form if the trace got that far, else as given."""
    canonical: bool
    review: tuple[str, ...] = ()
    """Why an allowed job would wait for human review (empty: it would run at once)."""

    @property
    def decision(self) -> str:
        """``allow`` or ``deny``."""
        return "allow" if self.allowed else "deny"

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "decision": self.decision,
            "reason": self.reason,
            "rule_ids": list(self.rule_ids),
            "message": self.message,
            "review": list(self.review),
            "steps": [
                {
                    "check": s.check,
                    "status": s.status,
                    "rule_ids": list(s.rule_ids),
                    "reason": s.reason,
                    "message": s.message,
                }
                for s in self.steps
            ],
            "canonical": self.canonical,
            "spec_digest": self.spec.digest(),
            "job": job_data(self.spec),
        }


def explain(
    policy: Policy,
    spec: JobSpec,
    principal: Principal,
    projects: Sequence[Project],
    today: dt.date,
    *,
    column_types: Mapping[str, str] | None = None,
    one_row_per_person: bool = True,
) -> Trace:
    """Trace ``spec`` through every check the server makes before accepting it.

    Args:
        policy: The dataset's policy.
        spec: The job as submitted.
        principal: Who submits it.
        projects: The projects in the state store (the job's project is looked up by id among
            them, and a researcher sees the dataset only through a grant in one of them).
        today: The date expiry is checked against.
        column_types: Engine types by column, as registration records them; default: inferred
            from the policy (``infer_column_types``).
        one_row_per_person: Whether the dataset has exactly one row per person (registration
            learns this from the data).
    """
    types = dict(column_types) if column_types is not None else infer_column_types(policy)
    project = next((p for p in projects if p.id == spec.project), None)
    run = _Run()
    current = spec
    canonical = False
    review: tuple[str, ...] = ()
    # 1. Only researchers submit jobs (vet refuses anyone else at once).
    if principal.role != Role.RESEARCHER:
        run.add(
            Step(
                "principal",
                False,
                ("principal.role",),
                f"role '{principal.role}' may not submit jobs; only researchers can",
                reason="PERMISSION_DENIED",
            )
        )
    else:
        run.add(Step("principal", True, (), f"'{principal.name}' is a researcher"))
    # 2. The job's shape (output names, margins, quantile levels).
    run.add(_shape_step(spec) if run.going else run.skipped("shape"))
    # 3. Visibility: a dataset the caller may not see is reported as unknown.
    run.add(_visibility_step(spec, principal, projects) if run.going else run.skipped("visibility"))
    # 4. The policy decision: every check runs and every reason is collected.
    if run.going:
        decision, decision_steps = decide_with_trace(policy, spec, principal, project, today)
        for step in decision_steps:
            if step.check != "principal":  # the role gate above
                run.add(step, refuses=False)
        if not decision.allowed:
            run.refuse(
                Step(
                    "decision",
                    False,
                    decision.rule_ids,
                    "; ".join(r.message for r in decision.reasons),
                    reason="POLICY_DENIED",
                )
            )
    else:
        for check in DECISION_CHECKS[1:]:
            run.add(run.skipped(check))
    # 5. Filters rewritten to one canonical form, or refused.
    if run.going:
        try:
            current = canonicalize(spec, policy, column_types=types)
        except SandboxError as exc:
            run.add(_refused("canonical form", exc))
        else:
            canonical = True
            run.add(Step("canonical form", True, (), _canonical_text(spec, current)))
    else:
        run.add(run.skipped("canonical form"))
    # 6. The plan: columns known to the engine, quantile grids.
    run.add(
        _plan_step(current, policy, types, one_row_per_person) if run.going else run.skipped("plan")
    )
    run.add(
        run.skipped(
            "data version",
            "checked on the server: the source file must be the version registered",
        )
    )
    # 7. Noise: what differential privacy or the cell-key method can protect.
    run.add(_noise_step(current, policy, one_row_per_person) if run.going else run.skipped("noise"))
    # 8. Human review (an allowed job may wait for stewards' approval before it runs).
    if run.going:
        review = _review(policy, current)
        text = "held for human review: " + "; ".join(review) if review else "not routed to review"
        run.add(Step("review", True, (), text))
    else:
        run.add(run.skipped("review"))
    run.add(
        run.skipped(
            "quota",
            "checked against the state store at submission: project quota and privacy budget",
        )
    )
    final = run.refusal
    return Trace(
        policy_version=policy.version_label,
        steps=tuple(run.steps),
        allowed=final is None,
        reason="" if final is None else final.reason,
        rule_ids=() if final is None else final.rule_ids,
        message="" if final is None else final.message,
        spec=current,
        canonical=canonical,
        review=review,
    )


class _Run:
    """Steps so far, and the first refusal (after which vet would have stopped)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.refusal: Step | None = None

    @property
    def going(self) -> bool:
        return self.refusal is None

    def add(self, step: Step, *, refuses: bool = True) -> None:
        self.steps.append(step)
        if refuses and not step.passed and not step.skipped:
            self.refuse(step)

    def refuse(self, step: Step) -> None:
        if self.refusal is None:
            self.refusal = step

    def skipped(self, check: str, why: str = _NOT_REACHED) -> Step:
        return Step(check, False, (), why, skipped=True)


def _refused(check: str, exc: SandboxError) -> Step:
    return Step(check, False, exc.rule_ids, exc.message, reason=exc.reason)


def _shape_step(spec: JobSpec) -> Step:
    # The pipeline's own check, so the trace cannot drift from it. Imported here: the pipeline
    # imports this package.
    from sandbox._pipeline import _check_shape

    try:
        _check_shape(spec)
    except SandboxError as exc:
        return _refused("shape", exc)
    return Step(
        "shape",
        True,
        (),
        "dataset, project and purpose named; at least one aggregate; output names unique",
    )


def _visibility_step(spec: JobSpec, principal: Principal, projects: Sequence[Project]) -> Step:
    if principal.role == Role.RESEARCHER and not any(
        principal.name in p.members and any(d == spec.dataset for d, _ in p.grants)
        for p in projects
    ):
        return Step(
            "visibility",
            False,
            (),
            f"dataset '{spec.dataset}' not found: '{principal.name}' holds no grant on it in any "
            "project, so the server answers exactly as for a dataset that does not exist",
            reason="NOT_FOUND",
        )
    return Step(
        "visibility",
        True,
        (),
        f"'{principal.name}' sees dataset '{spec.dataset}' through a project grant",
    )


def _canonical_text(before: JobSpec, after: JobSpec) -> str:
    if not before.filters:
        return f"no filters to rewrite; spec digest {after.digest()[:12]}"
    return (
        f"filters put in canonical form ({len(before.filters)} as written, "
        f"{len(after.filters)} after); spec digest {after.digest()[:12]}"
    )


def _plan_step(
    spec: JobSpec, policy: Policy, types: dict[str, str], one_row_per_person: bool
) -> Step:
    # Imported here: the engine and the state store import this package.
    from sandbox.engine import plan
    from sandbox.state import DatasetRecord

    record = DatasetRecord(
        id=policy.dataset,
        source="(not read)",
        file_format="parquet",
        file_digest="",
        row_count=0,
        persons=0,
        persons_unique=one_row_per_person,
        column_types=dict(types),
        policy_version=policy.version_label,
        measure_ranges={},
    )
    try:
        plan(spec, record, policy)
    except SandboxError as exc:
        return _refused("plan", exc)
    rows = "one row per person" if one_row_per_person else "several rows per person"
    return Step("plan", True, (), f"query planned for the engine's column types ({rows})")


def _noise_step(spec: JobSpec, policy: Policy, one_row_per_person: bool) -> Step:
    from sandbox.disclosure import check_cell_key_job, noise_terms

    noise = policy.disclosure.noise
    try:
        if noise.cell_key:
            check_cell_key_job(spec)
            return Step("noise", True, (), "cell-key method: counts only, perturbed per cell")
        if not noise.enabled:
            return Step("noise", True, (), "rule-based mode: no noise")
        terms = noise_terms(spec, policy, one_row_per_person)
    except SandboxError as exc:
        return _refused("noise", exc)
    return Step(
        "noise",
        True,
        (),
        f"differential privacy ({terms.mechanism}): spends epsilon {terms.epsilon} and "
        f"delta {terms.delta}",
    )


def _review(policy: Policy, spec: JobSpec) -> tuple[str, ...]:
    routing = getattr(policy, "review", None)
    if routing is None:
        return ()
    from sandbox.policy._review import review_reasons

    return review_reasons(routing, spec)


# -- column types ----------------------------------------------------------------------------


def infer_column_types(policy: Policy) -> dict[str, str]:
    """Engine types guessed from the policy alone, for traces made without the data.

    A dimension with declared values takes their type (all whole numbers: ``BIGINT``), one
    with bins is numeric (``BIGINT`` if every edge is whole, else ``DOUBLE``), any other is
    ``VARCHAR``; a measure is ``BIGINT`` if both bounds are whole, else ``DOUBLE``; an
    identifier ``BIGINT``. Dates cannot be guessed: declare them (``DATE``) where it matters.
    """
    return {col.name: _infer(col) for col in policy.columns}


def _infer(col: ColumnPolicy) -> str:
    if col.role == ColumnRole.DIMENSION:
        if col.values:
            return _type_of(col.values)
        if col.bins:
            return "BIGINT" if all(float(b).is_integer() for b in col.bins) else "DOUBLE"
        return "VARCHAR"
    if col.role == ColumnRole.MEASURE:
        whole = col.bounds is not None and all(float(b).is_integer() for b in col.bounds)
        return "BIGINT" if whole else "DOUBLE"
    if col.role == ColumnRole.IDENTIFIER:
        return "BIGINT"
    return "VARCHAR"


def _type_of(values: tuple[Scalar, ...]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOLEAN"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "BIGINT"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "DOUBLE"
    return "VARCHAR"


# -- the job file format ---------------------------------------------------------------------


def job_data(spec: JobSpec) -> dict[str, Any]:
    """``spec`` in the job file format that ``sandbox policy explain`` and test cases read."""
    aggregates: list[Any] = []
    for agg in spec.aggregates:
        item: dict[str, Any] = {"function": str(agg.function)}
        if agg.column:
            item["column"] = agg.column
        if agg.q is not None:
            item["q"] = str(agg.q)
        if agg.alias:
            item["alias"] = agg.alias
        aggregates.append(item if len(item) > 1 else str(agg.function))
    out: dict[str, Any] = {
        "dataset": spec.dataset,
        "project": spec.project,
        "purpose": spec.purpose,
        "aggregates": aggregates,
    }
    if spec.group_by:
        out["group_by"] = list(spec.group_by)
    if spec.filters:
        out["filters"] = [
            [f.column, str(f.op), f.values[0] if len(f.values) == 1 else list(f.values)]
            for f in spec.filters
        ]
    if spec.margins:
        out["margins"] = True
    return out
