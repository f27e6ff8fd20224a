"""Project lifecycle through a real server: update, expire, revoke (RPC and CLI), all audited."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from click.testing import CliRunner

from sandbox import (
    InvalidArgument,
    JobState,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    Project,
    Query,
    QuotaExceeded,
    QuotaLimits,
)
from sandbox._model import Grant, ProjectUpdate
from sandbox.cli import main
from sandbox.client import Client
from tests.conftest import World
from tests.security._support import audit_entries, ledger_rows, workers_held

COUNT = Query("pums").group_by("sex").count()
STUDY = "census-study"


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def run(client: Client, project: str = STUDY, purpose: str = "research") -> None:
    client.run(COUNT, project=project, purpose=purpose, timeout=30)


def refused(client: Client, project: str = STUDY, purpose: str = "research") -> tuple[str, ...]:
    with pytest.raises(PolicyDenied) as info:
        run(client, project, purpose)
    return info.value.rule_ids


def project_events(world: World, project: str = STUDY) -> list[dict[str, Any]]:
    return [
        e
        for e in audit_entries(world)
        if e.get("project") == project and str(e.get("event", "")).startswith("project.")
    ]


# ---- update -----------------------------------------------------------------------------------
def test_member_grant_and_quota_changes_take_effect_on_the_next_job(pums_world: World) -> None:
    world = pums_world
    sam, ana, bob = world.client("sam"), world.client("ana"), world.client("bob")
    with pytest.raises(NotFound):  # no project grants bob the dataset: it is not there for him
        run(bob)

    added = sam.update_project(STUDY, ProjectUpdate(add_members=("bob",)))
    assert added.members == ("ana", "bob")
    run(bob)

    sam.update_project(STUDY, ProjectUpdate(remove_members=("ana",)))
    with pytest.raises(NotFound):
        run(ana)
    sam.update_project(
        STUDY, ProjectUpdate(add_members=("ana",), remove_grants=(("pums", "demography"),))
    )
    assert refused(ana, purpose="demography") == ("project.purpose_not_granted",)
    run(ana)  # the other grant still holds

    sam.update_project(STUDY, ProjectUpdate(add_grants=(Grant("pums", "demography"),)))
    run(ana, purpose="demography")

    used = ana.quota(STUDY).jobs_total
    capped = sam.update_project(
        STUDY, ProjectUpdate(title="Census study", quota=QuotaLimits(jobs_total=used))
    )
    assert capped.title == "Census study" and capped.quota == QuotaLimits(jobs_total=used)
    with pytest.raises(QuotaExceeded):
        run(ana)
    sam.update_project(STUDY, ProjectUpdate(quota=QuotaLimits()))
    run(ana)

    later = utc_today() + dt.timedelta(days=400)
    moved = sam.update_project(STUDY, ProjectUpdate(expires=later))
    assert moved.expires == later and moved.title == "Census study"
    assert [p.expires for p in ana.projects() if p.id == STUDY] == [later]


def test_invalid_updates_change_nothing(pums_world: World) -> None:
    sam = pums_world.client("sam")
    before = [p for p in sam.projects() if p.id == STUDY]
    bad = [
        ProjectUpdate(remove_grants=(("pums", "not-held"),)),
        ProjectUpdate(
            add_grants=(Grant("pums", "research"),), remove_grants=(("pums", "research"),)
        ),
        ProjectUpdate(add_grants=(Grant("pums", "Bad Purpose"),)),
        ProjectUpdate(add_members=("no such name!",)),
        ProjectUpdate(quota=QuotaLimits(jobs_total=-1)),
    ]
    for update in bad:
        with pytest.raises(InvalidArgument):
            sam.update_project(STUDY, update)
    with pytest.raises(NotFound):
        sam.update_project("no-such-project", ProjectUpdate(title="x"))
    assert [p for p in sam.projects() if p.id == STUDY] == before
    assert [e["event"] for e in project_events(pums_world)] == ["project.created"]


# ---- expiry -----------------------------------------------------------------------------------
def test_a_grant_ends_on_its_own_date_with_no_one_acting(
    pums_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = pums_world
    sam, ana = world.client("sam"), world.client("ana")
    today = utc_today()
    sam.create_project(
        Project(
            "short",
            "short",
            ("ana",),
            (("pums", "research"), ("pums", "demography")),
            today + dt.timedelta(days=30),
            grant_expiry=(
                ("pums", "demography", today - dt.timedelta(days=1)),
                ("pums", "research", today),
            ),
        )
    )
    listed = next(p for p in ana.projects() if p.id == "short")
    assert listed.grant_expires("pums", "demography") == today - dt.timedelta(days=1)
    assert listed.grant_expires("pums", "research") == today

    # The grant that ended yesterday refuses its purpose, with its own rule.
    assert refused(ana, "short", "demography") == ("project.purpose_expired",)
    # The grant whose last day is today still holds today ...
    run(ana, "short", "research")
    # ... and tomorrow it is refused without anyone acting (the server's clock moves on).
    tomorrow = today + dt.timedelta(days=1)
    monkeypatch.setattr(world.server.app.jobs, "_today", lambda: tomorrow)
    assert refused(ana, "short", "research") == ("project.purpose_expired",)
    monkeypatch.undo()

    # A steward re-grants the purpose with no end date of its own: it holds again.
    sam.update_project("short", ProjectUpdate(add_grants=(Grant("pums", "demography"),)))
    run(ana, "short", "demography")


def test_expire_now_refuses_every_new_job(pums_world: World) -> None:
    world = pums_world
    sam, ana = world.client("sam"), world.client("ana")
    run(ana)
    expired = sam.expire_project(STUDY, reason="study ended")
    assert expired.expires == utc_today() - dt.timedelta(days=1)
    assert refused(ana) == ("project.expired",)
    assert refused(ana, purpose="demography") == ("project.expired",)
    # Expiring again keeps the earlier end; extending it (an update) lets jobs run again.
    assert sam.expire_project(STUDY).expires == expired.expires
    sam.update_project(STUDY, ProjectUpdate(expires=utc_today()))
    run(ana)


# ---- revocation -------------------------------------------------------------------------------
def test_revoke_cancels_queued_jobs_uncharged_and_refuses_new_ones(pums_world: World) -> None:
    world = pums_world
    sam, ana = world.client("sam"), world.client("ana")
    world.project("other", (("pums", "research"),))
    with workers_held(world):
        queued = [ana.submit(COUNT, project=STUDY, purpose="research") for _ in range(3)]
        elsewhere = ana.submit(COUNT, project="other", purpose="research")
        assert all(j.info.state == JobState.QUEUED for j in [*queued, elsewhere])
        assert ana.quota(STUDY).jobs_total == 3  # reserved while queued

        revoked, stopped = sam.revoke_project(STUDY, reason="consent withdrawn")
        assert revoked.revoked and stopped == 3
        for job in queued:
            info = ana.job(job.job_id).info
            assert info.state == JobState.CANCELLED
            assert "revoked" in info.message
    ledger = ledger_rows(world)
    for job in queued:
        assert ledger[job.job_id][1] == "released"  # uncharged: the reservation was freed
    usage = ana.quota(STUDY)
    assert (usage.jobs_total, usage.rows_total) == (0, 0)
    # Another project's job is untouched and runs once the workers are free.
    assert elsewhere.wait(timeout=30).state == JobState.SUCCEEDED
    for job in queued:  # nothing ran after the workers were released
        assert ana.job(job.job_id).info.state == JobState.CANCELLED

    assert "project.revoked" in refused(ana)
    assert [p.revoked for p in sam.projects() if p.id == STUDY] == [True]
    cancelled = [
        e
        for e in audit_entries(world)
        if e.get("event") == "job.cancelled" and e.get("job_id") in {j.job_id for j in queued}
    ]
    assert len(cancelled) == 3
    assert all(e["actor"] == "sam" and e["cause"] == "project.revoked" for e in cancelled)
    assert all(e["charged"] == {"jobs": 0, "rows": 0} for e in cancelled)


def test_revocation_is_final(pums_world: World) -> None:
    sam = pums_world.client("sam")
    sam.revoke_project(STUDY)
    for change in (
        lambda: sam.update_project(STUDY, ProjectUpdate(expires=utc_today())),
        lambda: sam.set_quota(STUDY, QuotaLimits(jobs_total=5)),
        lambda: sam.expire_project(STUDY),
    ):
        with pytest.raises(InvalidArgument):
            change()
    project, stopped = sam.revoke_project(STUDY)  # again: nothing new, nothing logged
    assert project.revoked and stopped == 0
    assert [e["event"] for e in project_events(pums_world)].count("project.revoked") == 1


# ---- who may ---------------------------------------------------------------------------------
def test_only_stewards_and_admins_change_projects(pums_world: World) -> None:
    world = pums_world
    for name in ("ana", "chen"):
        client = world.client(name)
        for call in (
            lambda c=client: c.update_project(STUDY, ProjectUpdate(add_members=("bob",))),
            lambda c=client: c.expire_project(STUDY),
            lambda c=client: c.revoke_project(STUDY),
            lambda c=client: c.set_quota(STUDY, QuotaLimits(jobs_total=1)),
        ):
            with pytest.raises(PermissionDenied):
                call()
    assert [p.members for p in world.client("sam").projects() if p.id == STUDY] == [("ana",)]
    root = world.client("root")
    assert root.update_project(STUDY, ProjectUpdate(title="by admin")).title == "by admin"
    assert root.revoke_project(STUDY)[0].revoked


# ---- audit -----------------------------------------------------------------------------------
def test_every_change_is_in_the_audit_log(pums_world: World) -> None:
    world = pums_world
    sam = world.client("sam")
    today = utc_today()
    sam.update_project(
        STUDY,
        ProjectUpdate(
            add_members=("bob",),
            add_grants=(Grant("pums", "demography", today + dt.timedelta(days=7)),),
            quota=QuotaLimits(jobs_per_day=9),
        ),
    )
    sam.expire_project(STUDY, reason="ended early")
    sam.revoke_project(STUDY, reason="consent withdrawn")

    events = project_events(world)
    assert [e["event"] for e in events] == [
        "project.created",
        "project.updated",
        "project.expired",
        "project.revoked",
    ]
    assert all(e["actor"] == "sam" and e["role"] == "steward" for e in events)
    updated, expired, revoked = events[1:]
    last = (today + dt.timedelta(days=7)).isoformat()
    assert updated["changes"] == {
        "members": {"from": ["ana"], "to": ["ana", "bob"]},
        "grants": {
            "from": [["pums", "demography"], ["pums", "research"]],
            "to": [["pums", "demography", last], ["pums", "research"]],
        },
        "quota": {
            "from": {"jobs_per_day": None, "jobs_total": None, "rows_per_day": None,
                     "rows_total": None},
            "to": {"jobs_per_day": 9, "jobs_total": None, "rows_per_day": None,
                   "rows_total": None},
        },
    }  # fmt: skip
    assert expired["changes"]["expires"]["to"] == (today - dt.timedelta(days=1)).isoformat()
    assert expired["reason"] == "ended early"
    assert revoked["changes"] == {"revoked": {"from": False, "to": True}}
    assert revoked["reason"] == "consent withdrawn"
    assert world.client("chen").audit_verify().ok


# ---- command line ----------------------------------------------------------------------------
def test_projects_update_expire_revoke_from_the_command_line(pums_world: World) -> None:
    world = pums_world
    runner = CliRunner()

    def cli(who: str, *args: str, output: str = "json", input: str | None = None) -> Any:
        return runner.invoke(
            main,
            ["--output", output, "projects", *args, "--target", world.target, "--token",
             world.tokens[who]],
            input=input,
            catch_exceptions=False,
        )  # fmt: skip

    last = (utc_today() + dt.timedelta(days=5)).isoformat()
    res = cli(
        "sam", "update", STUDY, "--add-member", "bob", "--grant", f"pums:demography:{last}",
        "--jobs-total", "50",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.stdout)
    assert row["members"] == ["ana", "bob"]
    assert row["grants"] == [f"pums:demography:{last}", "pums:research"]
    assert cli("sam", "update", STUDY).exit_code == 2  # nothing to change: a usage error

    denied = cli("ana", "expire", STUDY)
    assert denied.exit_code == 1 and "PERMISSION_DENIED" in denied.stderr
    res = cli("sam", "expire", STUDY, "--reason", "done")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["expires"] == (utc_today() - dt.timedelta(1)).isoformat()

    assert cli("sam", "revoke", STUDY, input="n\n").exit_code == 1  # not confirmed
    assert not [p for p in world.client("sam").projects() if p.revoked]
    res = cli("sam", "revoke", STUDY, "--yes", "--reason", "withdrawn")
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.stdout)
    assert row["revoked"] is True and row["jobs_stopped"] == 0
    listed = cli("sam", "list", output="table")
    assert listed.exit_code == 0 and "True" in listed.stdout
