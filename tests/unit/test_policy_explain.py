"""Decision traces: ``decide_with_trace`` agrees with ``decide``; ``explain`` follows the
server's checks in order, stops where the server stops, and agrees with a real server."""

from __future__ import annotations

import datetime as dt
import textwrap
from fractions import Fraction
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import SandboxError
from sandbox._model import (
    AggFunc,
    Aggregate,
    Filter,
    FilterOp,
    JobSpec,
    Principal,
    Project,
    Role,
)
from sandbox.policy import Policy, decide, load_policy
from sandbox.policy._cases import load_job_file
from sandbox.policy._decide import DECISION_CHECKS, decide_with_trace
from sandbox.policy._explain import Trace, explain, infer_column_types, job_data
from tests.conftest import World

REPO = Path(__file__).resolve().parents[2]
RESIDENTS = load_policy(REPO / "policies" / "residents.yaml")
TODAY = dt.date(2026, 6, 1)
ANA = Principal("ana", Role.RESEARCHER)
PROJECT = Project(
    "health-equity",
    "Health equity",
    ("ana",),
    (("residents", "public-health-research"), ("residents", "urban-planning")),
    dt.date(2027, 6, 30),
)
TYPES = {
    "person_id": "BIGINT",
    "district": "VARCHAR",
    "sub_district": "VARCHAR",
    "age": "SMALLINT",
    "sex": "VARCHAR",
    "household_size": "SMALLINT",
    "employment_sector": "VARCHAR",
    "monthly_income": "BIGINT",
    "insurance_type": "VARCHAR",
    "clinic_visits": "SMALLINT",
}


def job(
    *aggregates: Aggregate,
    group_by: tuple[str, ...] = (),
    filters: tuple[Filter, ...] = (),
    purpose: str = "public-health-research",
    project: str = "health-equity",
) -> JobSpec:
    return JobSpec(
        "residents", project, purpose, aggregates or (Aggregate(AggFunc.COUNT),), group_by, filters
    )


def trace_of(
    spec: JobSpec, principal: Principal = ANA, *, one_row_per_person: bool = True
) -> Trace:
    return explain(
        RESIDENTS,
        spec,
        principal,
        [PROJECT],
        TODAY,
        column_types=TYPES,
        one_row_per_person=one_row_per_person,
    )


def statuses(trace: Trace) -> dict[str, str]:
    return {s.check: s.status for s in trace.steps}


# -- decide_with_trace ------------------------------------------------------------------------

COLUMNS = [c.name for c in RESIDENTS.columns] + ["nope"]
specs = st.builds(
    JobSpec,
    dataset=st.sampled_from(["residents", "other"]),
    project=st.sampled_from(["health-equity", "elsewhere"]),
    purpose=st.sampled_from(["public-health-research", "urban-planning", "marketing"]),
    aggregates=st.lists(
        st.builds(
            Aggregate,
            function=st.sampled_from(list(AggFunc)),
            column=st.sampled_from(["", *COLUMNS]),
        ),
        max_size=3,
    ).map(tuple),
    group_by=st.lists(st.sampled_from(COLUMNS), max_size=6).map(tuple),
    filters=st.lists(
        st.builds(
            Filter,
            column=st.sampled_from(COLUMNS),
            op=st.sampled_from(list(FilterOp)),
            values=st.lists(st.integers(0, 99), max_size=3).map(tuple),
        ),
        max_size=18,
    ).map(tuple),
    margins=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    spec=specs,
    role=st.sampled_from(list(Role)),
    today=st.sampled_from([TODAY, dt.date(2028, 1, 1)]),
)
def test_trace_agrees_with_decide(spec: JobSpec, role: Role, today: dt.date) -> None:
    principal = Principal("ana", role)
    decision, steps = decide_with_trace(RESIDENTS, spec, principal, PROJECT, today)
    assert decision == decide(RESIDENTS, spec, principal, PROJECT, today)
    assert tuple(s.check for s in steps) == DECISION_CHECKS
    failed = [s for s in steps if not s.passed]
    assert decision.allowed == (not failed)
    # Every reason is attributed to exactly one step, in order.
    traced = [rule for s in failed for rule in s.rule_ids]
    assert tuple(dict.fromkeys(traced)) == decision.rule_ids
    assert all(s.reason == "POLICY_DENIED" and s.message for s in failed)
    assert all(s.message and not s.rule_ids for s in steps if s.passed)


def test_trace_step_messages() -> None:
    spec = job(
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.MEAN, "monthly_income"),
        group_by=("district", "person_id"),
        purpose="urban-planning",
    )
    decision, steps = decide_with_trace(RESIDENTS, spec, ANA, PROJECT, TODAY)
    by_check = {s.check: s for s in steps}
    assert not decision.allowed
    assert by_check["group_by"].rule_ids == ("column.identifier",)
    assert by_check["aggregates"].rule_ids == ("column.not_in_purpose",)
    assert by_check["deny"].rule_ids == ("deny.no-income-for-planning",)
    assert by_check["deny"].status == "FAIL"
    assert by_check["limits"].passed
    assert by_check["project"].message.startswith("member of project 'health-equity'")


# -- explain: allowed jobs --------------------------------------------------------------------


def test_an_allowed_job_is_traced_to_its_canonical_form() -> None:
    spec = job(
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.MEAN, "monthly_income"),
        group_by=("district", "age"),
        filters=(Filter("age", FilterOp.GT, (59,)), Filter("sex", FilterOp.IN, ("F",))),
    )
    trace = trace_of(spec)
    assert trace.allowed and trace.decision == "allow"
    assert (trace.reason, trace.rule_ids, trace.message) == ("", (), "")
    assert trace.policy_version == RESIDENTS.version_label
    assert [s.check for s in trace.steps] == [
        "principal",
        "shape",
        "visibility",
        *DECISION_CHECKS[1:],
        "canonical form",
        "plan",
        "data version",
        "noise",
        "review",
        "quota",
    ]
    assert statuses(trace)["data version"] == statuses(trace)["quota"] == "skip"
    assert all(s.status == "pass" for s in trace.steps if s.check not in ("data version", "quota"))
    # Integer column: age > 59 becomes age >= 60; a one-value `in` becomes `=`.
    assert trace.canonical
    assert trace.spec.filters == (
        Filter("age", FilterOp.GE, (60,)),
        Filter("sex", FilterOp.EQ, ("F",)),
    )
    assert trace.to_json()["spec_digest"] == trace.spec.digest()


# -- explain: where the server stops ----------------------------------------------------------


def test_a_non_researcher_is_refused_first() -> None:
    trace = trace_of(job(group_by=("person_id",)), Principal("sam", Role.STEWARD))
    assert (trace.reason, trace.rule_ids) == ("PERMISSION_DENIED", ("principal.role",))
    after = [s for s in trace.steps if s.check != "principal"]
    assert all(s.skipped for s in after)  # the identifier is never looked at
    assert not trace.canonical


def test_a_malformed_job_is_refused_before_the_policy() -> None:
    spec = job(Aggregate(AggFunc.COUNT), Aggregate(AggFunc.COUNT))
    trace = trace_of(spec)
    assert trace.reason == "INVALID_JOB_SPEC"
    assert trace.rule_ids == ()
    assert "unique" in trace.message
    assert statuses(trace)["shape"] == "FAIL"
    assert statuses(trace)["project"] == "skip"


def test_a_dataset_the_researcher_cannot_see_is_not_found() -> None:
    eve = Principal("eve", Role.RESEARCHER)
    trace = trace_of(job(), eve)
    assert (trace.reason, trace.rule_ids) == ("NOT_FOUND", ())
    assert statuses(trace)["visibility"] == "FAIL"
    assert all(statuses(trace)[c] == "skip" for c in DECISION_CHECKS[1:])
    # Seen through another project, the named project's membership is what fails.
    other = Project("transit", "t", ("eve",), (("residents", "urban-planning"),), TODAY)
    seen = explain(RESIDENTS, job(), eve, [PROJECT, other], TODAY, column_types=TYPES)
    assert (seen.reason, seen.rule_ids) == ("POLICY_DENIED", ("project.membership",))


def test_the_policy_decision_reports_every_reason_then_stops() -> None:
    spec = job(
        Aggregate(AggFunc.VARIANCE, "monthly_income"),
        group_by=("person_id",),
        filters=(Filter("sex", FilterOp.IN, ("F", "M")),),  # a tautology, never reached
    )
    trace = trace_of(spec)
    assert trace.reason == "POLICY_DENIED"
    assert trace.rule_ids == ("column.identifier", "aggregate.not_allowed")
    assert statuses(trace)["canonical form"] == "skip"
    assert statuses(trace)["plan"] == "skip"
    assert trace.spec == spec  # as written


def test_canonical_form_refusals() -> None:
    trace = trace_of(job(group_by=("district",), filters=(Filter("sex", FilterOp.IN, ("F", "M")),)))
    assert (trace.reason, trace.rule_ids) == ("INVALID_JOB_SPEC", ("filter.tautology",))
    assert statuses(trace)["canonical form"] == "FAIL"
    assert statuses(trace)["plan"] == statuses(trace)["noise"] == "skip"


def test_column_types_decide_how_filters_are_read(tmp_path: Path) -> None:
    policy = load_policy(REPO / "policies" / "clinic_visits.yaml")
    spec = JobSpec(
        "clinic_visits",
        "p",
        "public-health-research",
        (Aggregate(AggFunc.COUNT),),
        ("department",),
        (Filter("visit_date", FilterOp.GE, ("last year",)),),
    )
    project = Project("p", "p", ("ana",), (("clinic_visits", "public-health-research"),), TODAY)
    as_date = explain(policy, spec, ANA, [project], TODAY, column_types={"visit_date": "DATE"})
    assert as_date.rule_ids == ("filter.date_format",)
    # Not declared: inferred as text, where the same filter is a plain range.
    assert explain(policy, spec, ANA, [project], TODAY).allowed


def test_the_plan_refuses_quantiles_over_several_rows_per_person() -> None:
    spec = job(Aggregate(AggFunc.MEDIAN, "monthly_income"), group_by=("district",))
    assert trace_of(spec).allowed
    trace = trace_of(spec, one_row_per_person=False)
    assert trace.reason == "POLICY_DENIED"
    assert statuses(trace)["plan"] == "FAIL"
    assert trace.rule_ids and all(r.startswith("quantile.") for r in trace.rule_ids)


POLICY_TEMPLATE = """\
dataset: visits
version: 1
title: Visits
steward: office
source: visits.parquet
person_key: pid
population: harbor
columns:
  pid: {{role: identifier}}
  dept: {{role: dimension, values: [a, b]}}
  ward: {{role: dimension}}
  cost: {{role: measure, bounds: [0, 100], aggregates: [sum, mean]}}
purposes:
  research: {{columns: [dept, ward, cost]}}
disclosure:
  min_persons_per_cell: 10
  noise: {noise}
"""


def visits_policy(tmp_path: Path, noise: str) -> Policy:
    path = tmp_path / "visits.yaml"
    path.write_text(POLICY_TEMPLATE.format(noise=noise))
    return load_policy(path)


def visits_trace(policy: Policy, *aggregates: Aggregate, group_by: tuple[str, ...]) -> Trace:
    spec = JobSpec("visits", "p", "research", aggregates, group_by)
    project = Project("p", "p", ("ana",), (("visits", "research"),), TODAY)
    return explain(policy, spec, ANA, [project], TODAY)


def test_the_noise_step_applies_differential_privacy_limits(tmp_path: Path) -> None:
    policy = visits_policy(tmp_path, "{mechanism: discrete_laplace, epsilon_per_job: 0.5}")
    ok = visits_trace(policy, Aggregate(AggFunc.SUM, "cost"), group_by=("dept",))
    assert ok.allowed
    assert "epsilon 1/2" in {s.check: s for s in ok.steps}["noise"].message
    keys = visits_trace(policy, Aggregate(AggFunc.COUNT), group_by=("ward",))
    assert (keys.reason, keys.rule_ids) == ("POLICY_DENIED", ("dp.public_keys",))
    assert statuses(keys)["noise"] == "FAIL"


def test_the_noise_step_applies_the_cell_key_method(tmp_path: Path) -> None:
    policy = visits_policy(
        tmp_path, "{mechanism: cell_key, ptable: {max_perturbation: 2, variance: 1}}"
    )
    assert visits_trace(policy, Aggregate(AggFunc.COUNT), group_by=("dept",)).allowed
    summed = visits_trace(policy, Aggregate(AggFunc.SUM, "cost"), group_by=("dept",))
    assert summed.rule_ids == ("cell_key.counts_only",)


# -- column types inferred from the policy ----------------------------------------------------


def test_infer_column_types(tmp_path: Path) -> None:
    assert infer_column_types(RESIDENTS) == {
        "person_id": "BIGINT",
        "district": "VARCHAR",
        "sub_district": "VARCHAR",
        "age": "BIGINT",
        "sex": "VARCHAR",
        "household_size": "VARCHAR",
        "employment_sector": "VARCHAR",
        "monthly_income": "BIGINT",
        "insurance_type": "VARCHAR",
        "clinic_visits": "BIGINT",
    }
    text = POLICY_TEMPLATE.format(noise="{mechanism: none}")
    text = text.replace(
        "dept: {role: dimension, values: [a, b]}", "dept: {role: dimension, values: [1, 2]}"
    )
    text = text.replace("ward: {role: dimension}", "ward: {role: dimension, bins: [0, 0.5, 1]}")
    text = text.replace("bounds: [0, 100]", "bounds: [0, 99.5]")
    path = tmp_path / "visits.yaml"
    path.write_text(text)
    assert infer_column_types(load_policy(path)) == {
        "pid": "BIGINT",
        "dept": "BIGINT",
        "ward": "DOUBLE",
        "cost": "DOUBLE",
    }


# -- the job format round-trips ---------------------------------------------------------------


def test_job_data_reads_back_as_the_same_job(tmp_path: Path) -> None:
    spec = JobSpec(
        "residents",
        "health-equity",
        "public-health-research",
        (
            Aggregate(AggFunc.COUNT),
            Aggregate(AggFunc.QUANTILE, "monthly_income", "p90", q=Fraction(9, 10)),
        ),
        ("district",),
        (Filter("age", FilterOp.BETWEEN, (18, 64)), Filter("sex", FilterOp.EQ, ("F",))),
        margins=True,
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_data(spec), sort_keys=False))
    assert load_job_file(path) == spec


# -- against a real server --------------------------------------------------------------------

SERVER_JOBS = {
    "allowed": ("ana", "census-study", "aggregates: [count]\ngroup_by: [sex]"),
    "allowed with filter": (
        "ana",
        "census-study",
        "aggregates: [count, mean(income)]\ngroup_by: [sex]\nfilters: [[age, '>', 40]]",
    ),
    "deny rule": (
        "ana",
        "census-study",
        "purpose: demography\naggregates: [sum(income)]\ngroup_by: [sex]",
    ),
    "identifier": ("ana", "census-study", "aggregates: [count]\ngroup_by: [pid]"),
    "unknown column": ("ana", "census-study", "aggregates: [count]\ngroup_by: [zip]"),
    "tautology": ("ana", "census-study", "aggregates: [count]\nfilters: [[sex, in, [0, 1]]]"),
    "empty": (
        "ana",
        "census-study",
        "aggregates: [count]\nfilters: [[married, '=', 0], [married, '=', 1]]",
    ),
    "too many filters": (
        "ana",
        "census-study",
        "aggregates: [count]\nfilters: [[age, '>', 1], [age, '>', 2], [age, '>', 3],"
        " [age, '>', 4], [age, '>', 5]]",
    ),
    "unknown project": ("ana", "no-such-study", "aggregates: [count]\ngroup_by: [sex]"),
    "no grant": ("bob", "census-study", "aggregates: [count]\ngroup_by: [sex]"),
    "steward": ("sam", "census-study", "aggregates: [count]\ngroup_by: [sex]"),
    "duplicate names": ("ana", "census-study", "aggregates: [count, count]"),
}


def test_explain_agrees_with_a_real_server(pums_world: World, tmp_path: Path) -> None:
    policy = load_policy(pums_world.root / "policies" / "pums.yaml")
    info = pums_world.client("sam").describe("pums")
    types = {c.name: c.type for c in info.columns}
    projects = [p for p in pums_world.client("sam").projects()]
    roles = {"ana": Role.RESEARCHER, "bob": Role.RESEARCHER, "sam": Role.STEWARD}
    for name, (who, project, body) in SERVER_JOBS.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        text = f"dataset: pums\nproject: {project}\n" + body
        if "purpose:" not in body:
            text += "\npurpose: research"
        path.write_text(textwrap.dedent(text) + "\n")
        spec = load_job_file(path)
        trace = explain(
            policy, spec, Principal(who, roles[who]), projects, dt.date.today(), column_types=types
        )
        try:
            pums_world.client(who).submit(spec)
        except SandboxError as exc:
            got = ("deny", exc.reason, tuple(exc.rule_ids))
        else:
            got = ("allow", "", ())
        assert (trace.decision, trace.reason, trace.rule_ids) == got, name
