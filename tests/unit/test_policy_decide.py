"""The decision engine: default deny, explicit deny wins, every reason collected, nothing leaked."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox._model import (
    AggFunc,
    Aggregate,
    ColumnRole,
    Filter,
    FilterOp,
    JobSpec,
    Principal,
    Project,
    Role,
    Scalar,
)
from sandbox.policy import (
    ColumnPolicy,
    Decision,
    DenyRule,
    Limits,
    Policy,
    PurposePolicy,
    decide,
    load_policies,
)

REPO = Path(__file__).resolve().parents[2]
TODAY = dt.date(2025, 6, 1)
ALICE = Principal("alice", Role.RESEARCHER)
SECRET_VALUE = 987654321
SECRET_TEXT = "Q-sentinel-value-Q"

DIM = ColumnRole.DIMENSION
POLICY = Policy(
    dataset="residents",
    version=3,
    title="Residents",
    description="",
    steward="office",
    source="residents.parquet",
    person_key="person_id",
    population="harbor",
    columns=(
        ColumnPolicy("person_id", ColumnRole.IDENTIFIER),
        ColumnPolicy("district", DIM, values=tuple(f"d{i}" for i in range(10))),
        ColumnPolicy("age", DIM, bins=(0, 18, 35, 50, 65, 101)),
        ColumnPolicy("sex", DIM, values=("F", "M")),
        ColumnPolicy("sub_district", DIM),
        ColumnPolicy("sector", DIM, operators=(FilterOp.EQ, FilterOp.IN)),
        ColumnPolicy(
            "income",
            ColumnRole.MEASURE,
            bounds=(0, 500000),
            aggregates=(AggFunc.SUM, AggFunc.MEAN),
        ),
        ColumnPolicy(
            "visits", ColumnRole.MEASURE, bounds=(0, 40), aggregates=(AggFunc.SUM, AggFunc.MEAN)
        ),
        ColumnPolicy("secret", ColumnRole.HIDDEN),
    ),
    purposes=(
        PurposePolicy(
            "research",
            "Research",
            ("district", "age", "sex", "sub_district", "sector", "income", "visits"),
        ),
        PurposePolicy("planning", "Planning", ("district", "age")),
    ),
    limits=Limits(max_groups=50, max_filters=2, max_group_by=3),
    deny=(
        DenyRule("no-income-for-planning", purposes=("planning",), columns=("income",)),
        DenyRule(
            "no-visit-totals",
            columns=("visits",),
            aggregates=(AggFunc.SUM,),
            reason="totals of visits are published by the health bureau",
        ),
        DenyRule("no-between-on-age", columns=("age",), operators=(FilterOp.BETWEEN,)),
        DenyRule("no-secret", columns=("secret",)),
    ),
    digest="ab" * 32,
    path="policies/residents.yaml",
)
PROJECT = Project(
    id="p1",
    title="Study",
    members=("alice",),
    grants=(("residents", "research"), ("residents", "planning")),
    expires=dt.date(2030, 1, 1),
)

COUNT = Aggregate(AggFunc.COUNT)


def job(**changes: object) -> JobSpec:
    spec = JobSpec(
        dataset="residents",
        project="p1",
        purpose="research",
        aggregates=(COUNT, Aggregate(AggFunc.MEAN, "income"), Aggregate(AggFunc.MEAN, "visits")),
        group_by=("district", "age"),
        filters=(Filter("sex", FilterOp.EQ, ("F",)),),
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def run(
    spec: JobSpec,
    principal: Principal = ALICE,
    project: Project | None = PROJECT,
    today: dt.date = TODAY,
    policy: Policy = POLICY,
) -> Decision:
    return decide(policy, spec, principal, project, today)


def denied(decision: Decision, rule_id: str) -> None:
    assert decision.allowed is False
    assert rule_id in decision.rule_ids, decision.reasons


def test_allowed_job() -> None:
    decision = run(job())
    assert decision.allowed, decision.reasons
    assert decision.reasons == ()
    assert decision.rule_ids == ()
    assert decision.policy_version == "residents@v3:abababab"


def test_allowed_with_count_only_and_no_group_by() -> None:
    assert run(job(aggregates=(COUNT, Aggregate(AggFunc.COUNT_DISTINCT)), group_by=())).allowed


def test_max_groups_boundary_is_allowed() -> None:
    # district (10) x age (5 bins) = 50 groups = the limit.
    assert run(job(group_by=("district", "age"))).allowed


# -- who -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.STEWARD, Role.COMPLIANCE, Role.ADMIN])
def test_only_researchers_submit(role: Role) -> None:
    decision = run(job(), principal=Principal("alice", role))
    denied(decision, "principal.role")
    assert decision.rule_ids == ("principal.role",)


def test_not_a_member() -> None:
    decision = run(job(), principal=Principal("mallory", Role.RESEARCHER))
    denied(decision, "project.membership")
    assert decision.reasons[0].message == "principal is not a member of project 'p1'"


def test_non_member_and_missing_project_look_the_same() -> None:
    spec = job(project="p1")
    outsider = Principal("mallory", Role.RESEARCHER)
    expired = dataclasses.replace(PROJECT, expires=dt.date(2000, 1, 1), grants=())
    as_non_member = run(spec, principal=outsider, project=expired)
    as_missing = run(spec, principal=outsider, project=None)
    assert as_non_member == as_missing
    assert as_missing.rule_ids == ("project.membership",)
    # Nothing about an existing project (expiry, grants) is said to a non-member.
    assert "expired" not in str(as_non_member.reasons)


def test_project_id_must_match_spec() -> None:
    denied(run(job(project="p2")), "project.membership")


def test_project_expired() -> None:
    denied(run(job(), today=dt.date(2030, 1, 2)), "project.expired")
    assert run(job(), today=dt.date(2030, 1, 1)).allowed


def test_purpose_not_granted() -> None:
    project = dataclasses.replace(PROJECT, grants=(("residents", "planning"),))
    decision = run(job(), project=project)
    denied(decision, "project.purpose_not_granted")
    assert decision.rule_ids == ("project.purpose_not_granted",)


def test_grant_is_per_dataset() -> None:
    project = dataclasses.replace(PROJECT, grants=(("clinic_visits", "research"),))
    denied(run(job(), project=project), "project.purpose_not_granted")


# -- what ------------------------------------------------------------------------------------


def test_purpose_unknown() -> None:
    project = dataclasses.replace(PROJECT, grants=(("residents", "marketing"),))
    decision = run(job(purpose="marketing"), project=project)
    assert decision.rule_ids == ("purpose.unknown",)


def test_wrong_dataset() -> None:
    denied(run(job(dataset="clinic_visits")), "spec.dataset")


@pytest.mark.parametrize(
    "changes",
    [
        {"group_by": ("nope",)},
        {"filters": (Filter("nope", FilterOp.EQ, (1,)),)},
        {"aggregates": (Aggregate(AggFunc.SUM, "nope"),)},
    ],
)
def test_column_unknown(changes: dict[str, object]) -> None:
    decision = run(job(**changes))
    denied(decision, "column.unknown")
    assert decision.rule_ids == ("column.unknown",)


@pytest.mark.parametrize(
    "changes",
    [
        {"group_by": ("person_id",)},
        {"filters": (Filter("person_id", FilterOp.EQ, (1,)),)},
        {"aggregates": (Aggregate(AggFunc.SUM, "person_id"),)},
        {"aggregates": (Aggregate(AggFunc.COUNT_DISTINCT, "person_id"),)},
    ],
)
def test_column_identifier(changes: dict[str, object]) -> None:
    decision = run(job(**changes))
    assert decision.rule_ids == ("column.identifier",)


def test_column_not_in_purpose() -> None:
    decision = run(job(purpose="planning", group_by=("sex",), filters=(), aggregates=(COUNT,)))
    assert decision.rule_ids == ("column.not_in_purpose",)
    assert "'sex'" in decision.reasons[0].message
    assert "'planning'" in decision.reasons[0].message


@pytest.mark.parametrize(
    "changes",
    [
        {"group_by": ("income",)},
        {"filters": (Filter("income", FilterOp.GT, (5,)),)},
        {"aggregates": (Aggregate(AggFunc.SUM, "district"),)},
        {"aggregates": (Aggregate(AggFunc.MEAN, "age"),)},
    ],
)
def test_column_role(changes: dict[str, object]) -> None:
    decision = run(job(**changes))
    assert decision.rule_ids == ("column.role",)


@pytest.mark.parametrize(
    "aggregate",
    [
        Aggregate(AggFunc.COUNT_DISTINCT, "income"),
        Aggregate(AggFunc.SUM),
        Aggregate(AggFunc.MEAN),
    ],
)
def test_aggregate_not_allowed(aggregate: Aggregate) -> None:
    decision = run(job(aggregates=(aggregate,)))
    assert decision.rule_ids == ("aggregate.not_allowed",)


def test_aggregate_not_allowed_on_measure_with_restricted_functions() -> None:
    only_sum = dataclasses.replace(POLICY.columns[6], aggregates=(AggFunc.SUM,))
    policy = dataclasses.replace(
        POLICY, columns=tuple(only_sum if c.name == "income" else c for c in POLICY.columns)
    )
    decision = run(job(), policy=policy)
    assert decision.rule_ids == ("aggregate.not_allowed",)
    assert "mean" in decision.reasons[0].message and "'income'" in decision.reasons[0].message


def test_operator_not_allowed() -> None:
    decision = run(job(filters=(Filter("sector", FilterOp.LT, ("x",)),)))
    assert decision.rule_ids == ("operator.not_allowed",)
    assert run(job(filters=(Filter("sector", FilterOp.IN, ("x", "y")),))).allowed


@pytest.mark.parametrize(
    ("op", "values"),
    [
        (FilterOp.BETWEEN, (1,)),
        (FilterOp.BETWEEN, (1, 2, 3)),
        (FilterOp.IN, ()),
        (FilterOp.EQ, ()),
        (FilterOp.EQ, ("F", "M")),
        (FilterOp.GE, (1, 2)),
    ],
)
def test_filter_values_count(op: FilterOp, values: tuple[Scalar, ...]) -> None:
    decision = run(job(filters=(Filter("sub_district", op, values),)))
    assert decision.rule_ids == ("filter.values",)


@pytest.mark.parametrize(
    ("op", "values"),
    [(FilterOp.BETWEEN, (1, 2)), (FilterOp.IN, ("a",)), (FilterOp.IN, ("a", "b", "c"))],
)
def test_filter_values_count_ok(op: FilterOp, values: tuple[Scalar, ...]) -> None:
    assert run(job(filters=(Filter("sub_district", op, values),))).allowed


# -- how much --------------------------------------------------------------------------------


def test_limits_max_filters() -> None:
    filters = tuple(Filter("sub_district", FilterOp.NE, (f"s{i}",)) for i in range(3))
    assert run(job(filters=filters)).rule_ids == ("limits.max_filters",)


def test_limits_max_group_by() -> None:
    spec = job(group_by=("sub_district", "sex", "sector", "district"))
    assert run(spec).rule_ids == ("limits.max_group_by",)


def test_limits_max_groups() -> None:
    # 10 x 5 x 2 = 100 > 50.
    decision = run(job(group_by=("district", "age", "sex")))
    assert decision.rule_ids == ("limits.max_groups",)
    assert "100" in decision.reasons[0].message


def test_max_groups_not_checked_without_a_known_key_set() -> None:
    assert run(job(group_by=("district", "sub_district", "sex"))).allowed


def test_spec_no_aggregates() -> None:
    assert run(job(aggregates=())).rule_ids == ("spec.no_aggregates",)


def test_spec_duplicate_group_by() -> None:
    assert run(job(group_by=("district", "district"))).rule_ids == ("spec.duplicate_group_by",)


# -- explicit deny ---------------------------------------------------------------------------


def test_deny_beats_allow() -> None:
    # Everything here is allowed by purpose, role and aggregates -- except the deny rule.
    spec = job(aggregates=(Aggregate(AggFunc.SUM, "visits"),))
    decision = run(spec)
    assert decision.allowed is False
    assert decision.rule_ids == ("deny.no-visit-totals",)
    assert "published by the health bureau" in decision.reasons[0].message
    assert run(job(aggregates=(Aggregate(AggFunc.SUM, "income"),))).allowed


def test_deny_rule_with_purpose_and_column() -> None:
    spec = job(purpose="planning", group_by=("district",), filters=(), aggregates=(COUNT,))
    assert run(spec).allowed
    decision = run(dataclasses.replace(spec, aggregates=(Aggregate(AggFunc.MEAN, "income"),)))
    assert decision.rule_ids == ("column.not_in_purpose", "deny.no-income-for-planning")


def test_deny_rule_with_operator() -> None:
    decision = run(job(filters=(Filter("age", FilterOp.BETWEEN, (20, 30)),)))
    assert decision.rule_ids == ("deny.no-between-on-age",)
    assert run(job(filters=(Filter("age", FilterOp.GE, (20,)),))).allowed


def test_deny_on_the_example_policy() -> None:
    residents = load_policies(REPO / "policies")["residents"]
    project = dataclasses.replace(PROJECT, grants=(("residents", "urban-planning"),))
    spec = JobSpec(
        dataset="residents",
        project="p1",
        purpose="urban-planning",
        aggregates=(Aggregate(AggFunc.MEAN, "monthly_income"),),
        group_by=("district",),
    )
    decision = decide(residents, spec, ALICE, project, TODAY)
    assert not decision.allowed
    assert any(r.startswith("deny.") for r in decision.rule_ids)
    allowed = dataclasses.replace(spec, aggregates=(COUNT,), group_by=("district", "age"))
    assert decide(residents, allowed, ALICE, project, TODAY).allowed


# -- many reasons, and what messages never say ----------------------------------------------


def test_all_reasons_collected() -> None:
    spec = job(
        group_by=("nope", "person_id", "income"),
        filters=(
            Filter("sector", FilterOp.GT, ("x",)),
            Filter("sex", FilterOp.BETWEEN, ("F",)),
            Filter("district", FilterOp.EQ, ("d1",)),
        ),
        aggregates=(Aggregate(AggFunc.SUM, "district"), Aggregate(AggFunc.SUM, "visits")),
    )
    decision = run(spec, principal=Principal("alice", Role.STEWARD), today=dt.date(2031, 1, 1))
    assert set(decision.rule_ids) == {
        "principal.role",
        "project.expired",
        "column.unknown",
        "column.identifier",
        "column.role",
        "operator.not_allowed",
        "filter.values",
        "limits.max_filters",
        "deny.no-visit-totals",
    }
    assert len(decision.reasons) == len(set(decision.reasons))


def test_hidden_column_is_reported_like_a_missing_one() -> None:
    without = dataclasses.replace(
        POLICY, columns=tuple(c for c in POLICY.columns if c.name != "secret")
    )
    for changes in (
        {"group_by": ("secret",)},
        {"filters": (Filter("secret", FilterOp.EQ, (1,)),)},
        {"aggregates": (Aggregate(AggFunc.SUM, "secret"),)},
        {"aggregates": (Aggregate(AggFunc.COUNT, "secret"),)},
    ):
        hidden = run(job(**changes))
        missing = run(job(**changes), policy=without)
        assert hidden == missing
        assert hidden.rule_ids == ("column.unknown",)

    # Same message text, name aside, as a column that never existed.
    as_hidden = run(job(group_by=("secret",))).reasons[0]
    as_unknown = run(job(group_by=("nosuch",))).reasons[0]
    assert as_hidden.rule_id == as_unknown.rule_id
    assert as_hidden.message.replace("secret", "X") == as_unknown.message.replace("nosuch", "X")


def test_messages_never_echo_filter_values() -> None:
    values: tuple[Scalar, ...] = (SECRET_VALUE, SECRET_TEXT)
    filters = [
        Filter("nope", FilterOp.EQ, (SECRET_VALUE,)),
        Filter("secret", FilterOp.IN, values),
        Filter("person_id", FilterOp.EQ, (SECRET_VALUE,)),
        Filter("income", FilterOp.GT, (SECRET_VALUE,)),
        Filter("sector", FilterOp.BETWEEN, values),
        Filter("age", FilterOp.BETWEEN, values),
        Filter("sex", FilterOp.EQ, values),
    ]
    for flt in filters:
        decision = run(job(filters=(flt,)))
        assert not decision.allowed
        for reason in decision.reasons:
            assert str(SECRET_VALUE) not in reason.message
            assert SECRET_TEXT not in reason.message
    everything = run(job(filters=tuple(filters)), principal=Principal("x", Role.ADMIN))
    assert str(SECRET_VALUE) not in str(everything)
    assert SECRET_TEXT not in str(everything)


_COLUMNS = st.sampled_from([c.name for c in POLICY.columns] + ["nope"])
_VALUES = st.one_of(
    st.integers(min_value=10**12, max_value=10**15),
    st.text(alphabet="abcdef", min_size=6, max_size=10).map(lambda s: f"V@{s}"),
)
_FILTERS = st.builds(
    Filter, _COLUMNS, st.sampled_from(list(FilterOp)), st.tuples(_VALUES, _VALUES).map(tuple)
)
_AGGREGATES = st.builds(Aggregate, st.sampled_from(list(AggFunc)), st.one_of(st.just(""), _COLUMNS))


@given(
    group_by=st.lists(_COLUMNS, max_size=5).map(tuple),
    filters=st.lists(_FILTERS, max_size=4).map(tuple),
    aggregates=st.lists(_AGGREGATES, max_size=3).map(tuple),
    purpose=st.sampled_from(["research", "planning", "other"]),
)
def test_decisions_are_consistent_and_never_leak_values(
    group_by: tuple[str, ...],
    filters: tuple[Filter, ...],
    aggregates: tuple[Aggregate, ...],
    purpose: str,
) -> None:
    spec = job(group_by=group_by, filters=filters, aggregates=aggregates, purpose=purpose)
    decision = run(spec)
    assert decision == run(spec)
    assert decision.allowed == (decision.reasons == ())
    text = " ".join(r.message for r in decision.reasons)
    for flt in filters:
        for value in flt.values:
            assert str(value) not in text
    if "secret" in {*group_by, *(f.column for f in filters), *(a.column for a in aggregates)}:
        assert "deny.no-secret" not in decision.rule_ids
