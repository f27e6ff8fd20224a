"""Helpers shared by the security tests: custom datasets, audit and ledger read-outs."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from sandbox import QuotaLimits
from tests.conftest import PUMS_DIR, World

WorldFactory = Callable[..., World]


def pums_frame() -> pd.DataFrame:
    """PUMS_pid.csv (1000 persons, one row each) as a DataFrame."""
    return pd.read_csv(PUMS_DIR / "PUMS_pid.csv")


def csv_world(
    world_factory: WorldFactory,
    tmp_path: Path,
    datasets: dict[str, tuple[pd.DataFrame | Path, str]],
    **settings: object,
) -> World:
    """A world serving ``datasets`` (id → (frame or CSV path, policy YAML)), all registered.

    Each dataset's CSV is ``<id>.csv`` under the data root; the policy's ``source`` must say so.
    """
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    files: dict[str, Path] = {}
    policies: dict[str, str] = {}
    for name, (data, policy) in datasets.items():
        if isinstance(data, Path):
            files[f"{name}.csv"] = data
        else:
            path = src / f"{name}.csv"
            data.to_csv(path, index=False)
            files[f"{name}.csv"] = path
        policies[name] = policy
    world = world_factory(policies, files, **settings)
    for name in datasets:
        world.register(name)
    return world


def add_project(
    world: World,
    project_id: str,
    grants: tuple[tuple[str, str], ...],
    *,
    members: tuple[str, ...] = ("ana",),
    expires: dt.date | None = None,
    quota: QuotaLimits = QuotaLimits(),
) -> None:
    world.project(project_id, grants, members=members, expires=expires, quota=quota)


def audit_entries(world: World) -> list[dict[str, Any]]:
    """Every audit entry, in seq order, read through the compliance reviewer's client."""
    chen = world.client("chen")
    out: list[dict[str, Any]] = []
    after = -1
    while True:
        page = chen.audit_entries(after_seq=after, limit=1000)
        if not page:
            return out
        out.extend(r.entry for r in page)
        after = page[-1].seq


def entries_for(world: World, job_id: str) -> list[dict[str, Any]]:
    return [e for e in audit_entries(world) if e.get("job_id") == job_id]


def ledger_rows(world: World) -> dict[str, tuple[str, str, int, int]]:
    """job_id → (project, state, jobs, rows) straight from the state store."""
    rows = world.db.conn.execute("SELECT job_id, project, state, jobs, rows FROM ledger").fetchall()
    return {job: (project, state, jobs, n) for job, project, state, jobs, n in rows}


def epsilon_spent(world: World) -> Fraction:
    """ε reserved or committed in the privacy ledger, summed exactly."""
    rows = world.db.conn.execute(
        "SELECT epsilon FROM privacy_ledger WHERE state IN ('reserved', 'committed')"
    ).fetchall()
    return sum((Fraction(r[0]) for r in rows), Fraction(0))


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace, UTF-8), written independently of sandbox."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@contextlib.contextmanager
def workers_held(world: World) -> Iterator[None]:
    """Keep every job worker thread busy so that submitted jobs stay QUEUED.

    This only occupies the pipeline's worker pool with a task that waits, and counts those
    workers busy; nothing on the job path is replaced. Jobs submitted meanwhile run (or are
    skipped if cancelled) on exit.
    """
    pipeline = world.server.app.jobs
    n = world.config.workers
    started = threading.Barrier(n + 1)
    release = threading.Event()

    def hold() -> None:
        started.wait(timeout=10)
        release.wait(timeout=30)

    # Counted as busy workers too, so that no admission claims a worker for its job.
    held = {f"held-worker-{i}" for i in range(n)}
    with pipeline._waiting_lock:
        pipeline._local.update(held)
    futures = [pipeline._executor.submit(hold) for _ in range(n)]
    started.wait(timeout=10)
    try:
        yield
    finally:
        release.set()
        for f in futures:
            f.result(timeout=30)
        with pipeline._waiting_lock:
            pipeline._local.difference_update(held)
