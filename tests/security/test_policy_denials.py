"""Invariant 4: default deny, explicit deny beats allow — and every refusal is logged (inv. 6).

Each refusal goes through the real client and server; the test then checks the error, the
``job.denied`` audit entry recorded for that job id, and the DENIED job record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sandbox import (
    Client,
    JobState,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    Query,
    SandboxError,
)
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import add_project, audit_entries, csv_world, entries_for, pums_frame

CUSTOM_POLICY = """\
dataset: custom
version: 1
title: Custom PUMS
description: PUMS with a hidden column, a restricted operator and a deny rule
steward: test-office
source: custom.csv
person_key: pid
population: custom-persons
columns:
  pid: {role: identifier}
  age: {role: dimension}
  sex: {role: dimension, values: [0, 1], operators: ['=']}
  race: {role: dimension}
  region: {role: dimension}
  income: {role: measure, bounds: [0, 500000], aggregates: [mean]}
  wage: {role: measure, bounds: [0, 500000], aggregates: [sum, mean]}
  secret: {role: hidden}
purposes:
  research: {columns: [age, sex, race, region, income, wage]}
  narrow: {columns: [age, sex, wage]}
disclosure: {min_persons_per_cell: 10}
deny:
  - {id: no-wage-sum-narrow, purposes: [narrow], columns: [wage], aggregates: [sum],
     reason: totals of wages are not released for this purpose}
"""


@pytest.fixture
def world(world_factory: Callable[..., World], tmp_path: Path) -> World:
    frame = pums_frame()
    rng = np.random.default_rng(7)
    frame["wage"] = (frame["income"] * 0.8).round()
    frame["secret"] = rng.integers(0, 1_000_000, len(frame))
    frame["region"] = np.resize(["north", "south", "east", "west"], len(frame))
    w = csv_world(
        world_factory,
        tmp_path,
        {
            "pums": (PUMS_DIR / "PUMS_pid.csv", pums_policy("pums", "pums.csv")),
            "custom": (frame, CUSTOM_POLICY),
        },
    )
    today = dt.date.today()
    add_project(
        w,
        "census-study",
        (
            ("pums", "research"),
            ("pums", "demography"),
            ("custom", "research"),
            ("custom", "narrow"),
        ),
    )
    add_project(w, "demo-only", (("pums", "demography"),))
    add_project(w, "bob-study", (("pums", "research"),), members=("bob",))
    add_project(w, "old-study", (("pums", "research"),), expires=today - dt.timedelta(days=1))
    return w


@dataclass(frozen=True)
class Case:
    principal: str
    query: Query
    project: str
    purpose: str
    error: type[SandboxError]
    rule_ids: tuple[str, ...]


def q(dataset: str = "pums") -> Query:
    return Query(dataset)


CASES: dict[str, Case] = {
    "purpose-not-granted": Case(
        "ana", q().group_by("sex").count(), "demo-only", "research",
        PolicyDenied, ("project.purpose_not_granted",),
    ),
    "non-member": Case(
        "bob", q().group_by("sex").count(), "census-study", "research",
        PolicyDenied, ("project.membership",),
    ),
    "expired-project": Case(
        "ana", q().group_by("sex").count(), "old-study", "research",
        PolicyDenied, ("project.expired",),
    ),
    "identifier-group-by": Case(
        "ana", q().group_by("pid").count(), "census-study", "research",
        PolicyDenied, ("column.identifier",),
    ),
    "identifier-filter": Case(
        "ana", q().where("pid", "=", 17).count(), "census-study", "research",
        PolicyDenied, ("column.identifier",),
    ),
    "identifier-aggregate": Case(
        "ana", q().sum("pid"), "census-study", "research",
        PolicyDenied, ("column.identifier",),
    ),
    "hidden-column": Case(
        "ana", q("custom").group_by("secret").count(), "census-study", "research",
        PolicyDenied, ("column.unknown",),
    ),
    "unknown-column": Case(
        "ana", q("custom").group_by("nosuch").count(), "census-study", "research",
        PolicyDenied, ("column.unknown",),
    ),
    "aggregate-not-allowed": Case(
        "ana", q("custom").sum("income"), "census-study", "research",
        PolicyDenied, ("aggregate.not_allowed",),
    ),
    "operator-not-allowed": Case(
        "ana", q("custom").where("sex", ">", 0).count(), "census-study", "research",
        PolicyDenied, ("operator.not_allowed",),
    ),
    "column-not-in-purpose": Case(
        "ana", q().group_by("sex").mean("income"), "census-study", "demography",
        PolicyDenied, ("column.not_in_purpose",),
    ),
    "explicit-deny-beats-allow": Case(
        "ana", q("custom").group_by("sex").sum("wage"), "census-study", "narrow",
        PolicyDenied, ("deny.no-wage-sum-narrow",),
    ),
    "non-researcher": Case(
        "sam", q().group_by("sex").count(), "census-study", "research",
        PermissionDenied, ("principal.role",),
    ),
}  # fmt: skip


def refuse(world: World, case: Case) -> SandboxError:
    client = world.client(case.principal)
    with pytest.raises(case.error) as info:
        client.run(case.query, project=case.project, purpose=case.purpose, timeout=30)
    assert type(info.value) is case.error
    return info.value


@pytest.mark.parametrize("name", list(CASES))
def test_refused_logged_and_recorded(world: World, name: str) -> None:
    case = CASES[name]
    exc = refuse(world, case)
    # The error names exactly the expected rule(s) and the job it was recorded as.
    assert exc.rule_ids == case.rule_ids
    assert exc.job_id
    assert exc.message and exc.reason in str(exc)
    # One job.denied audit entry for that job, carrying the same decision.
    entries = entries_for(world, exc.job_id)
    assert [e["event"] for e in entries] == ["job.denied"]
    entry = entries[0]
    assert entry["decision"] == "deny"
    assert entry["rule_ids"] == list(case.rule_ids)
    assert entry["reason"] == exc.reason
    assert entry["message"] == exc.message
    assert entry["actor"] == case.principal
    assert (entry["project"], entry["purpose"]) == (case.project, case.purpose)
    # The refused job is kept, DENIED with its reason, and listed to its submitter
    # (a steward's own refusal is listed to stewards, who see every job).
    lister = world.client(case.principal)
    jobs = {j.job_id: j for j in lister.jobs()}
    assert exc.job_id in jobs
    job = jobs[exc.job_id]
    assert job.state == JobState.DENIED
    assert (job.reason, job.message, job.rule_ids) == (exc.reason, exc.message, case.rule_ids)
    # Nothing was reserved or charged for a job refused at submission.
    ledger = world.db.conn.execute("SELECT count(*) FROM ledger WHERE job_id = ?", (exc.job_id,))
    assert ledger.fetchone()[0] == 0


def test_denied_job_listed_in_researchers_jobs(world: World) -> None:
    ana = world.client("ana")
    refused = [refuse(world, c) for c in CASES.values() if c.principal == "ana"]
    listed = {j.job_id: j for j in ana.jobs()}
    for exc in refused:
        assert listed[exc.job_id].state == JobState.DENIED
        assert listed[exc.job_id].reason == "POLICY_DENIED"
        assert listed[exc.job_id].message == exc.message
    # Other principals' refusals are not listed to ana.
    bob_exc = refuse(world, CASES["non-member"])
    assert bob_exc.job_id not in {j.job_id for j in ana.jobs()}


def test_the_same_jobs_are_allowed_where_the_policy_allows_them(world: World) -> None:
    """The refusals above are caused by the rule named, not by something else in the job."""
    ana = world.client("ana")
    allowed = [
        (q().group_by("sex").count(), "demo-only", "demography"),
        (q().group_by("sex").count(), "census-study", "research"),
        (q("custom").group_by("region").count(), "census-study", "research"),
        (q("custom").mean("income"), "census-study", "research"),
        (q("custom").where("sex", "=", 0).count(), "census-study", "research"),
        (q().group_by("sex").mean("income"), "census-study", "research"),
        # Same aggregate on the same column: allowed under research, denied under narrow.
        (q("custom").group_by("sex").sum("wage"), "census-study", "research"),
        (q("custom").group_by("sex").mean("wage"), "census-study", "narrow"),
    ]
    for query, project, purpose in allowed:
        result = ana.run(query, project=project, purpose=purpose, timeout=30)
        assert len(result.table.rows) >= 1


def test_hidden_and_unknown_columns_are_indistinguishable(world: World) -> None:
    ana = world.client("ana")
    seen = {}
    for column in ("secret", "nosuch"):
        uses = {
            "group_by": q("custom").group_by(column).count(),
            "filter": q("custom").where(column, "=", 1).count(),
            "aggregate": q("custom").mean(column),
        }
        for use, query in uses.items():
            with pytest.raises(PolicyDenied) as info:
                ana.run(query, project="census-study", purpose="research")
            exc = info.value
            logged = entries_for(world, exc.job_id)[0]
            seen[(column, use)] = (
                type(exc),
                str(exc).replace(column, "<col>"),
                exc.rule_ids,
                logged["message"].replace(column, "<col>"),
                logged["rule_ids"],
            )
    for use in ("group_by", "filter", "aggregate"):
        assert seen[("secret", use)] == seen[("nosuch", use)]
        assert seen[("secret", use)][2] == ("column.unknown",)
    # The catalogue does not reveal the hidden column either.
    described = [c.name for c in ana.describe("custom").columns]
    assert "secret" not in described and "region" in described


def test_dataset_of_no_granted_project_looks_nonexistent(world: World) -> None:
    """A researcher whose projects hold no grant on a dataset gets exactly "not found"."""
    outsider = world.client("bob")  # bob's project holds pums only, not custom
    errors = {}
    for dataset in ("custom", "no-such-dataset"):
        with pytest.raises(NotFound) as info:
            outsider.run(q(dataset).count(), project="bob-study", purpose="research")
        errors[dataset] = (str(info.value).replace(dataset, "<ds>"), info.value.rule_ids)
        with pytest.raises(NotFound) as described:
            outsider.describe(dataset)
        errors[dataset + "/describe"] = str(described.value).replace(dataset, "<ds>")
    assert errors["custom"] == errors["no-such-dataset"]
    assert errors["custom/describe"] == errors["no-such-dataset/describe"]
    assert [d.id for d in outsider.datasets()] == ["pums"]


def test_every_refusal_is_in_the_log_before_the_caller_sees_it(world: World) -> None:
    before = len(audit_entries(world))
    refused = [refuse(world, c) for c in CASES.values()]
    after = audit_entries(world)[before:]
    denied = [e for e in after if e["event"] == "job.denied"]
    assert [e["job_id"] for e in denied] == [exc.job_id for exc in refused]
    assert all(e["decision"] == "deny" for e in denied)


def test_client_built_in_sql_subset_is_refused_the_same(world: World) -> None:
    """The SQL front end compiles to the same JobSpec; the policy refuses it the same way."""
    ana: Client = world.client("ana")
    with pytest.raises(PolicyDenied) as info:
        ana.sql("SELECT pid, COUNT(*) FROM pums GROUP BY pid", project="census-study",
                purpose="research")  # fmt: skip
    assert info.value.rule_ids == ("column.identifier",)
