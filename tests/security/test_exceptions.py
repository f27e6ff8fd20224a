"""Exceptions to policy refusals: asked with a justification, decided by another, bounded.

A granted exception admits exactly one later job of the requester, in the same project, with
the same spec digest, and waives only the named policy rules. Tests marked "admission" need
the job pipeline to consume exceptions (``Exceptions.covers`` / ``Exceptions.consume``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sandbox import (
    AlreadyExists,
    DisclosureControl,
    InvalidArgument,
    JobState,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    Query,
    QuotaExceeded,
    QuotaLimits,
)
from sandbox._model import ExceptionState, ProjectUpdate
from sandbox.client import Client
from sandbox.state._exceptions import Exceptions, waivable
from tests.conftest import World
from tests.security._support import audit_entries

STUDY = "census-study"
# Purpose "demography" may use age and sex only: grouping by educ is refused by policy.
OFF_PURPOSE = Query("pums").group_by("educ").count()
OTHER_OFF_PURPOSE = Query("pums").group_by("race").count()
# ... and summing income under demography also hits an explicit deny rule.
OFF_PURPOSE_AND_DENIED = Query("pums").group_by("educ").count().sum("income")


def refusal(client: Client, query: Query, purpose: str = "demography") -> PolicyDenied:
    with pytest.raises(PolicyDenied) as info:
        client.run(query, project=STUDY, purpose=purpose, timeout=30)
    return info.value


def granted(world: World, query: Query = OFF_PURPOSE, rules: tuple[str, ...] = ()) -> str:
    """Refuse ``query`` for ana, have her ask for an exception and sam grant it; the job id."""
    ana, sam = world.client("ana"), world.client("sam")
    denied = refusal(ana, query)
    asked = ana.request_exception(
        denied.job_id, rules or denied.rule_ids, "needed for the education chapter of a report"
    )
    assert asked.state == ExceptionState.PENDING
    decided = sam.decide_exception(asked.id, True, "one table, reviewed by the data office")
    assert decided.state == ExceptionState.GRANTED and decided.decided_by == "sam"
    return denied.job_id


def exception_events(world: World) -> list[dict[str, Any]]:
    return [e for e in audit_entries(world) if str(e.get("event", "")).startswith("exception.")]


# ---- admission (needs the pipeline to consume exceptions) --------------------------------
def test_a_granted_exception_admits_exactly_one_identical_job(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    granted(world)
    result = ana.run(OFF_PURPOSE, project=STUDY, purpose="demography", timeout=30)
    assert ana.job(result.job_id).info.state == JobState.SUCCEEDED
    # Used up: the same job is refused again, for the same reason.
    again = refusal(ana, OFF_PURPOSE)
    assert again.rule_ids == ("column.not_in_purpose",)
    [request] = ana.exception_requests()
    assert request.state == ExceptionState.USED and request.used_by_job == result.job_id
    used = [e for e in exception_events(world) if e["event"] == "exception.used"]
    assert [(e["job_id"], e["exception_id"]) for e in used] == [(result.job_id, request.id)]


def test_a_granted_exception_admits_no_other_spec_project_or_researcher(
    pums_world: World,
) -> None:
    world = pums_world
    world.project("second", (("pums", "research"), ("pums", "demography")), members=("ana", "bob"))
    world.client("sam").update_project(STUDY, ProjectUpdate(add_members=("bob",)))
    granted(world)
    ana, bob = world.client("ana"), world.client("bob")
    assert refusal(ana, OTHER_OFF_PURPOSE).rule_ids == ("column.not_in_purpose",)
    assert refusal(bob, OFF_PURPOSE).rule_ids == ("column.not_in_purpose",)
    with pytest.raises(PolicyDenied):
        ana.run(OFF_PURPOSE, project="second", purpose="demography", timeout=30)
    # Still unused: the one job it was granted for runs.
    [request] = ana.exception_requests()
    assert request.state == ExceptionState.GRANTED
    ana.run(OFF_PURPOSE, project=STUDY, purpose="demography", timeout=30)


def test_rules_not_waived_still_apply(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    denied = refusal(ana, OFF_PURPOSE_AND_DENIED)
    assert set(denied.rule_ids) == {"column.not_in_purpose", "deny.no-income-sum-demography"}
    granted(world, OFF_PURPOSE_AND_DENIED, rules=("column.not_in_purpose",))
    again = refusal(ana, OFF_PURPOSE_AND_DENIED)
    assert "deny.no-income-sum-demography" in again.rule_ids
    granted_requests = ana.exception_requests(ExceptionState.GRANTED)
    assert len(granted_requests) == 1  # a refused job does not use it up


def test_concurrent_identical_jobs_share_one_exception(pums_world: World) -> None:
    world = pums_world
    granted(world)
    clients = [world.client("ana") for _ in range(4)]
    barrier = threading.Barrier(len(clients))

    def submit(client: Client) -> str:
        barrier.wait(timeout=10)
        try:
            client.submit(OFF_PURPOSE, project=STUDY, purpose="demography")
        except PolicyDenied:
            return "refused"
        return "accepted"

    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = list(pool.map(submit, clients))
    assert sorted(outcomes) == ["accepted", "refused", "refused", "refused"]
    used = [e for e in exception_events(world) if e["event"] == "exception.used"]
    assert len(used) == 1


def test_quota_still_applies_to_an_excepted_job(pums_world: World) -> None:
    world = pums_world
    granted(world)
    world.client("sam").set_quota(STUDY, QuotaLimits(jobs_total=0))
    with pytest.raises(QuotaExceeded):
        world.client("ana").run(OFF_PURPOSE, project=STUDY, purpose="demography", timeout=30)
    [request] = world.client("ana").exception_requests()
    assert request.state == ExceptionState.GRANTED  # not used up by a refused job


# ---- asking -----------------------------------------------------------------------------------
def test_only_policy_refusals_can_be_excepted(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    with pytest.raises(DisclosureControl) as disclosure:  # the whole population: query set
        ana.run(Query("pums").where("age", ">=", 0).count(), project=STUDY, purpose="research")
    with pytest.raises(InvalidArgument, match="only policy refusals"):
        ana.request_exception(disclosure.value.job_id, disclosure.value.rule_ids, "please")
    world.client("sam").set_quota(STUDY, QuotaLimits(jobs_total=0))
    with pytest.raises(QuotaExceeded) as quota:
        ana.run(OFF_PURPOSE, project=STUDY, purpose="research")
    with pytest.raises(InvalidArgument, match="only policy refusals"):
        ana.request_exception(quota.value.job_id, quota.value.rule_ids, "please")
    succeeded = world.client("sam").set_quota(STUDY, QuotaLimits())
    assert succeeded.quota == QuotaLimits()
    done = ana.run(Query("pums").group_by("sex").count(), project=STUDY, purpose="research")
    with pytest.raises(InvalidArgument, match="only policy refusals"):
        ana.request_exception(done.job_id, ["column.not_in_purpose"], "please")
    assert exception_events(world) == []


def test_only_the_refusal_rules_that_policy_may_waive_can_be_named(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    identifier = refusal(ana, Query("pums").group_by("pid").count(), purpose="research")
    assert "column.identifier" in identifier.rule_ids
    with pytest.raises(InvalidArgument, match="cannot be waived"):
        ana.request_exception(identifier.job_id, ["column.identifier"], "please")
    off = refusal(ana, OFF_PURPOSE)
    with pytest.raises(InvalidArgument, match="not among the refusal rules"):
        ana.request_exception(off.job_id, ["deny.no-income-sum-demography"], "please")
    with pytest.raises(InvalidArgument, match="rule ids"):
        ana.request_exception(off.job_id, [], "please")
    with pytest.raises(InvalidArgument, match="justification"):
        ana.request_exception(off.job_id, off.rule_ids, "   ")
    ana.request_exception(off.job_id, off.rule_ids, "needed")
    with pytest.raises(AlreadyExists):
        ana.request_exception(off.job_id, off.rule_ids, "needed again")
    for rule in ("principal.role", "project.membership", "project.revoked", "purpose.unknown",
                 "disclosure.threshold", "quota.jobs_total", "deny."):  # fmt: skip
        assert not waivable(rule)
    for rule in ("column.not_in_purpose", "deny.no-income-sum-demography",
                 "project.purpose_expired", "limits.max_groups"):  # fmt: skip
        assert waivable(rule)


def test_only_the_refused_researcher_may_ask(pums_world: World) -> None:
    world = pums_world
    off = refusal(world.client("ana"), OFF_PURPOSE)
    with pytest.raises(NotFound):
        world.client("bob").request_exception(off.job_id, off.rule_ids, "mine now")
    for name in ("sam", "chen", "root"):
        with pytest.raises(PermissionDenied):
            world.client(name).request_exception(off.job_id, off.rule_ids, "on her behalf")
    with pytest.raises(NotFound):
        world.client("ana").request_exception("0" * 32, ["column.not_in_purpose"], "x")


# ---- deciding ---------------------------------------------------------------------------------
def test_nobody_decides_their_own_request(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    off = refusal(ana, OFF_PURPOSE)
    asked = ana.request_exception(off.job_id, off.rule_ids, "needed")
    with pytest.raises(PermissionDenied):  # a researcher decides nothing
        ana.decide_exception(asked.id, True, "self-approved")
    # Even promoted to steward, ana cannot decide the request she made.
    with world.db.write() as conn:
        conn.execute("UPDATE principals SET role = 'steward' WHERE name = 'ana'")
    with pytest.raises(PermissionDenied, match="own"):
        ana.decide_exception(asked.id, True, "self-approved")
    assert world.client("sam").exception_requests()[0].state == ExceptionState.PENDING
    for name in ("chen", "bob"):
        with pytest.raises(PermissionDenied):
            world.client(name).decide_exception(asked.id, True, "not mine to decide")


def test_a_rejection_is_logged_and_admits_nothing(pums_world: World) -> None:
    world = pums_world
    ana, sam = world.client("ana"), world.client("sam")
    off = refusal(ana, OFF_PURPOSE)
    asked = ana.request_exception(off.job_id, off.rule_ids, "needed for a report")
    with pytest.raises(InvalidArgument, match="reason"):
        sam.decide_exception(asked.id, False, "")
    rejected = sam.decide_exception(asked.id, False, "use the research purpose instead")
    assert rejected.state == ExceptionState.REJECTED
    assert rejected.decision_reason == "use the research purpose instead"
    with pytest.raises(InvalidArgument, match="decided already"):
        world.client("root").decide_exception(asked.id, True, "overrule")
    assert refusal(ana, OFF_PURPOSE).rule_ids == ("column.not_in_purpose",)
    [seen] = ana.exception_requests()
    assert seen.state == ExceptionState.REJECTED and seen.decided_by == "sam"

    events = exception_events(world)
    assert [e["event"] for e in events] == ["exception.requested", "exception.rejected"]
    requested, decided = events
    assert requested["actor"] == "ana" and requested["job_id"] == off.job_id
    assert requested["rule_ids"] == ["column.not_in_purpose"]
    assert requested["justification"] == "needed for a report"
    assert decided["actor"] == "sam" and decided["decision"] == "deny"
    assert decided["reason"] == "use the research purpose instead"
    assert decided["exception_id"] == requested["exception_id"] == asked.id


def test_listing_exception_requests(pums_world: World) -> None:
    world = pums_world
    world.client("sam").update_project(STUDY, ProjectUpdate(add_members=("bob",)))
    for name in ("ana", "bob"):
        client = world.client(name)
        off = refusal(client, OFF_PURPOSE)
        client.request_exception(off.job_id, off.rule_ids, f"{name} needs it")
    assert {r.principal for r in world.client("ana").exception_requests()} == {"ana"}
    assert {r.principal for r in world.client("sam").exception_requests()} == {"ana", "bob"}
    assert len(world.client("chen").exception_requests(ExceptionState.PENDING)) == 2
    assert world.client("sam").exception_requests(ExceptionState.GRANTED) == []
    assert world.client("sam").exception_requests(project="elsewhere") == []


# ---- the store, as the admission uses it ----------------------------------------------------
def test_consume_is_bounded_to_one_job_one_spec_and_the_named_rules(pums_world: World) -> None:
    world = pums_world
    job_id = granted(world)
    store = Exceptions(world.db)
    spec = next(j for j in world.client("ana").jobs() if j.job_id == job_id).spec
    rules = ("column.not_in_purpose",)

    def consume(**kw: Any) -> bool:
        args: dict[str, Any] = {
            "principal": "ana",
            "project": STUDY,
            "spec_digest": spec.digest(),
            "rule_ids": rules,
            "job_id": "j-" + str(len(kw)),
        }
        args.update(kw)
        with world.db.write() as conn:
            return store.consume(conn, **args)

    assert store.covers("ana", STUDY, spec.digest(), rules) is not None
    assert not consume(principal="bob")
    assert not consume(project="other")
    assert not consume(spec_digest="0" * 64)
    assert not consume(rule_ids=(*rules, "deny.no-income-sum-demography"))
    assert not consume(rule_ids=())
    assert not consume(rule_ids=("column.identifier",))
    assert consume(job_id="the-one")
    assert not consume(job_id="a-second")
    assert store.covers("ana", STUDY, spec.digest(), rules) is None
    [request] = world.client("sam").exception_requests()
    assert request.state == ExceptionState.USED and request.used_by_job == "the-one"
    [used] = [e for e in exception_events(world) if e["event"] == "exception.used"]
    assert used["job_id"] == "the-one" and used["rule_ids"] == list(rules)


def test_a_consumption_rolled_back_with_its_admission_leaves_the_exception(
    pums_world: World,
) -> None:
    world = pums_world
    job_id = granted(world)
    spec = next(j for j in world.client("ana").jobs() if j.job_id == job_id).spec
    store = Exceptions(world.db)
    with pytest.raises(RuntimeError), world.db.write() as conn:
        assert store.consume(
            conn, "ana", STUDY, spec.digest(), ("column.not_in_purpose",), job_id="j1"
        )
        raise RuntimeError("admission failed later in the same transaction")
    [request] = world.client("sam").exception_requests()
    assert request.state == ExceptionState.GRANTED
