"""Human review: policy-routed jobs wait for independent stewards; separation of duties holds.

The steward who registered a dataset's policy (sam) may not approve its jobs; a reviewer counts
once; researchers and compliance cannot review; a rejection ends the job DENIED and uncharged;
every hold and decision is in the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sandbox import (
    AwaitingApproval,
    InvalidArgument,
    Job,
    JobCancelled,
    JobState,
    PermissionDenied,
    Query,
    Role,
    SandboxError,
    Timeout,
)
from tests.conftest import PUMS_DIR, World, pums_policy

REVIEWED = Query("pums").group_by("sex").count("n")
REVIEW = "review:\n  approvals: 2\n  purposes: [research]\n  aggregates: [sum]\n"


@pytest.fixture
def reviewed(world_factory: Callable[..., World]) -> World:
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv") + REVIEW},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
    )
    world.register("pums")  # by sam: the policy's author for review purposes
    world.project("census-study", (("pums", "research"), ("pums", "demography")))
    world.add_principal("sue", Role.STEWARD)
    world.add_principal("tom", Role.STEWARD)
    return world


def _held(world: World) -> str:
    with pytest.raises(AwaitingApproval) as info:
        world.client("ana").run(REVIEWED, project="census-study", purpose="research")
    assert "jobs for purpose 'research' are reviewed" in info.value.message
    return info.value.job_id


def test_a_routed_job_waits_with_its_reason_and_its_quota_reserved(reviewed: World) -> None:
    ana = reviewed.client("ana")
    job_id = _held(reviewed)
    job = ana.job(job_id)
    assert job.state == JobState.AWAITING_APPROVAL
    assert "awaiting approval" in job.info.message
    assert ana.quota("census-study").jobs_total == 1  # reserved, so approval cannot overspend
    with pytest.raises(Timeout):  # a long-poll on a held job just waits
        job.result(timeout=0.5)
    (pending,) = reviewed.client("sue").pending_reviews()
    assert pending.job.job_id == job_id and pending.approvals_required == 2
    assert pending.approved_by == () and pending.why
    # A purpose the policy does not route runs at once.
    counted = ana.run(
        Query("pums").group_by("sex").count("n"), project="census-study", purpose="demography"
    )
    assert counted.to_dataframe()["n"].sum() == 1000


def test_two_independent_stewards_who_did_not_write_the_policy_must_approve(
    reviewed: World,
) -> None:
    job_id = _held(reviewed)
    for who, rule in [
        ("sam", "review.policy_author"),
        ("ana", "review.role"),
        ("chen", "review.role"),
    ]:
        with pytest.raises(PermissionDenied) as info:
            reviewed.client(who).review(job_id, approve=True, reason="looks fine")
        assert info.value.rule_ids == (rule,)
    with pytest.raises(InvalidArgument):
        reviewed.client("sue").review(job_id, approve=True, reason="  ")
    assert reviewed.client("sue").review(job_id, approve=True, reason="aggregate only").state == (
        JobState.AWAITING_APPROVAL
    )
    with pytest.raises(PermissionDenied) as info:  # the same steward twice is not two approvals
        reviewed.client("sue").review(job_id, approve=True, reason="again")
    assert info.value.rule_ids == ("review.independent",)
    (pending,) = reviewed.client("tom").pending_reviews()
    assert pending.approved_by == ("sue",)
    reviewed.client("tom").review(job_id, approve=True, reason="agreed")
    result = reviewed.client("ana").job(job_id).result(timeout=30)
    assert result.to_dataframe()["n"].sum() == 1000
    assert reviewed.client("sue").pending_reviews() == []
    events = [
        e.entry for e in reviewed.client("chen").audit_entries() if e.entry.get("job_id") == job_id
    ]
    assert [e["event"] for e in events] == [
        "job.held",
        "review.approved",
        "review.approved",
        "job.released",
    ]
    assert [e.get("actor") for e in events[1:3]] == ["sue", "tom"]
    assert reviewed.client("chen").audit_verify().ok


def test_a_rejection_ends_the_job_denied_and_uncharged(reviewed: World) -> None:
    ana = reviewed.client("ana")
    job_id = _held(reviewed)
    info = reviewed.client("tom").review(job_id, approve=False, reason="purpose too broad")
    assert info.state == JobState.DENIED
    job = ana.job(job_id)
    assert job.info.reason == "REVIEW_REJECTED" and "purpose too broad" in job.info.message
    assert ana.quota("census-study").jobs_total == 0
    with pytest.raises(InvalidArgument):  # decided: nothing more to review
        reviewed.client("sue").review(job_id, approve=True, reason="too late")
    events = [e.entry["event"] for e in reviewed.client("chen").audit_entries()]
    assert "review.rejected" in events


def test_a_held_job_can_be_cancelled_by_its_researcher(reviewed: World) -> None:
    ana = reviewed.client("ana")
    job_id = _held(reviewed)
    assert ana.job(job_id).cancel() is True
    with pytest.raises(JobCancelled):
        ana.job(job_id).result(timeout=5)
    assert ana.quota("census-study").jobs_total == 0
    assert reviewed.client("sue").pending_reviews() == []


def test_routing_by_aggregate(reviewed: World) -> None:
    ana = reviewed.client("ana")
    with pytest.raises(AwaitingApproval) as info:
        # demography is not routed, but the sum aggregate is (and is denied there anyway)
        ana.run(
            Query("pums").group_by("sex").sum("income"), project="census-study", purpose="research"
        )
    assert "jobs using sum are reviewed" in info.value.message


RELEASE_REVIEW = "review:\n  disclosure: [disclosure.min_persons]\n"
SMALL_CELLS = Query("pums").group_by("race", "sex").count("n")  # some cells under k


@pytest.fixture
def release_reviewed(world_factory: Callable[..., World]) -> World:
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv") + RELEASE_REVIEW},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
    )
    world.register("pums")
    world.project("census-study", (("pums", "research"), ("pums", "demography")))
    world.add_principal("sue", Role.STEWARD)
    return world


def test_a_table_with_a_flagged_outcome_is_held_unreleased_until_approved(
    release_reviewed: World,
) -> None:
    world = release_reviewed
    ana = world.client("ana")
    # A table with no cell under k is released at once.
    ana.run(Query("pums").group_by("sex").count("n"), project="census-study", purpose="research")
    job = ana.submit(SMALL_CELLS, project="census-study", purpose="research")
    wait_until_state(job, JobState.AWAITING_APPROVAL)
    assert "awaiting approval of its release" in job.info.message
    assert "disclosure.min_persons" in job.info.message
    with pytest.raises(Timeout):  # computed, but nothing leaves before approval
        job.result(timeout=0.5)
    assert ana.quota("census-study").jobs_total == 2  # it read data: charged either way
    world.client("sue").review(job.job_id, approve=True, reason="suppression pattern is fine")
    result = job.result(timeout=10)
    assert result.to_dataframe(status=True)["n"].isna().any()  # released with its suppressions
    events = [
        e.entry for e in world.client("chen").audit_entries() if e.entry.get("job_id") == job.job_id
    ]
    assert [e["event"] for e in events] == [
        "job.accepted",
        "job.held",
        "review.approved",
        "job.released",
    ]


def test_a_rejected_release_is_never_released_and_stays_charged(release_reviewed: World) -> None:
    world = release_reviewed
    ana = world.client("ana")
    job = ana.submit(SMALL_CELLS, project="census-study", purpose="research")
    wait_until_state(job, JobState.AWAITING_APPROVAL)
    world.client("sue").review(job.job_id, approve=False, reason="too many small cells")
    info = ana.job(job.job_id).info
    assert info.state == JobState.DENIED and info.reason == "REVIEW_REJECTED"
    with pytest.raises(SandboxError):
        ana.job(job.job_id).result(timeout=5)
    assert ana.quota("census-study").jobs_total == 1
    (blob,) = world.db.conn.execute(
        "SELECT result FROM jobs WHERE job_id = ?", (job.job_id,)
    ).fetchone()
    assert blob is None  # the held table is gone


def wait_until_state(job: Job, state: JobState, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while job.wait(0.2).state != state:
        assert time.monotonic() < deadline, f"job stayed {job.state}"
