"""Invariant 5: quota is reserved atomically before data is read; concurrency never overspends."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sandbox import Client, JobState, Query, QuotaExceeded, QuotaLimits, SandboxError
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import audit_entries, ledger_rows, workers_held

N_CLIENTS = 32
JOBS_TOTAL = 10


def _pums_world(world_factory: Callable[..., World], **settings: object) -> World:
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv")},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
        **settings,
    )
    world.register("pums")
    return world


def test_concurrent_submits_never_overspend_the_jobs_quota(
    world_factory: Callable[..., World],
) -> None:
    world = _pums_world(world_factory, rpc_threads=N_CLIENTS + 8, workers=4)
    world.project("race", (("pums", "research"),), quota=QuotaLimits(jobs_total=JOBS_TOTAL))
    start = threading.Barrier(N_CLIENTS)
    outcomes: list[object] = [None] * N_CLIENTS

    def worker(i: int) -> None:
        with Client(world.target, token=world.tokens["ana"], timeout=60) as client:
            query = Query("pums").group_by("sex").count()
            start.wait(timeout=30)
            try:
                outcomes[i] = client.run(query, project="race", purpose="research", timeout=60)
            except SandboxError as exc:
                outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    errors = [o for o in outcomes if isinstance(o, BaseException)]
    succeeded = [o for o in outcomes if o is not None and not isinstance(o, BaseException)]
    assert len(succeeded) == JOBS_TOTAL
    assert len(errors) == N_CLIENTS - JOBS_TOTAL
    assert all(type(e) is QuotaExceeded for e in errors), {type(e) for e in errors}
    assert all(e.rule_ids == ("quota.jobs_total",) for e in errors)  # type: ignore[attr-defined]

    ledger = [v for v in ledger_rows(world).values() if v[0] == "race"]
    assert len(ledger) == JOBS_TOTAL
    assert all(state == "committed" and jobs == 1 for _, state, jobs, _ in ledger)

    entries = [e for e in audit_entries(world) if e.get("project") == "race"]
    released = [e for e in entries if e["event"] == "job.released"]
    denied = [e for e in entries if e["event"] == "job.denied"]
    assert len(released) == JOBS_TOTAL
    assert len(denied) == N_CLIENTS - JOBS_TOTAL
    assert all(e["reason"] == "QUOTA_EXCEEDED" for e in denied)
    assert all(e["rule_ids"] == ["quota.jobs_total"] for e in denied)
    # The refused jobs' ids are exactly those logged as denied; the released ones are charged.
    assert {e["job_id"] for e in denied} == {e.job_id for e in errors}  # type: ignore[attr-defined]
    charged = {job for job, (project, _, _, _) in ledger_rows(world).items() if project == "race"}
    assert {e["job_id"] for e in released} == charged
    assert {r.job_id for r in succeeded} == charged  # type: ignore[attr-defined]
    assert world.client("ana").quota("race").jobs_total == JOBS_TOTAL
    # And the quota stays spent.
    with pytest.raises(QuotaExceeded):
        world.client("ana").run(Query("pums").count(), project="race", purpose="research")


def test_rows_per_day_quota(world_factory: Callable[..., World]) -> None:
    world = _pums_world(world_factory)
    world.project("rows", (("pums", "research"),), quota=QuotaLimits(rows_per_day=2500))
    ana = world.client("ana")
    for _ in range(2):
        ana.run(Query("pums").count(), project="rows", purpose="research")
    assert ana.quota("rows").rows_today == 2000
    with pytest.raises(QuotaExceeded) as info:
        ana.run(Query("pums").count(), project="rows", purpose="research")
    assert info.value.rule_ids == ("quota.rows_per_day",)
    assert ana.quota("rows").rows_today == 2000  # the refused job reserved nothing
    assert info.value.job_id not in ledger_rows(world)
    job = ana.job(info.value.job_id).info
    assert job.state == JobState.DENIED and job.reason == "QUOTA_EXCEEDED"


def test_cancelled_job_releases_its_reservation(
    world_factory: Callable[..., World],
) -> None:
    world = _pums_world(world_factory, workers=1)
    world.project("one-job", (("pums", "research"),), quota=QuotaLimits(jobs_total=1))
    ana = world.client("ana")
    with workers_held(world):
        job = ana.submit(Query("pums").count(), project="one-job", purpose="research")
        assert job.state == JobState.QUEUED
        assert ana.quota("one-job").jobs_total == 1  # reserved
        assert job.cancel()
        assert ana.quota("one-job").jobs_total == 0  # released at once
    assert ledger_rows(world)[job.job_id][1] == "released"
    assert job.info.state == JobState.CANCELLED
    # The freed reservation pays for the next job.
    result = ana.run(Query("pums").count(), project="one-job", purpose="research")
    assert result.table.rows[0].cells[0].value == 1000
    events = [(e["event"], e.get("job_id")) for e in audit_entries(world)]
    assert ("job.accepted", job.job_id) in events
    assert ("job.cancelled", job.job_id) in events
    assert ("job.released", job.job_id) not in events
