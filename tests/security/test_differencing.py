"""Differencing guard: two releases must never subtract to fewer than k persons.

Attacks against a real server on the PUMS sample (k = 10, no rounding, one row per person):
nested filters N vs N-1, a tracker (a large set, then the same set minus the target), a group
split differently, a re-run after a data refresh, and the same pair submitted concurrently.
Each attack's arithmetic is shown to work on the true counts, then shown to fail on what the
sandbox releases.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pandas as pd

from sandbox import CellStatus, Query, Result
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import pums_frame

K = 10
RULE = "disclosure.differencing"
OLD = Query("pums").where("age", ">=", 60)


def _run(world: World, query: Query) -> Result:
    return world.client("ana").run(query, project="census-study", purpose="research")


def _single(result: Result) -> tuple[float | int | None, CellStatus, str]:
    (row,) = result.table.rows
    cell = row.cells[0]
    return cell.value, cell.status, cell.rule


def _small_group(frame: pd.DataFrame) -> int:
    """An education level held by between 1 and k-1 of the persons aged 60 and over."""
    sizes = frame[frame.age >= 60].groupby("educ").size()
    return int(sizes[(sizes > 0) & (sizes < K)].index[0])


def test_nested_filters_n_vs_n_minus_1(pums_world: World) -> None:
    frame = pums_frame()
    educ = _small_group(frame)
    everyone = _run(pums_world, OLD.count())
    assert _single(everyone)[:2] == ((frame.age >= 60).sum(), CellStatus.RELEASED)
    minus = _run(pums_world, OLD.where("educ", "!=", educ).count())
    # The subtraction would isolate fewer than k persons: the second cell is not released.
    assert _single(minus) == (None, CellStatus.SUPPRESSED, RULE)
    assert "earlier release" in minus.report["reason"].iloc[0]
    # A difference of k or more is fine (education 9 is held by 49 persons aged 60+).
    assert _single(_run(pums_world, OLD.where("educ", "!=", 9).count()))[1] == CellStatus.RELEASED


def test_the_guard_works_in_either_order(pums_world: World) -> None:
    educ = _small_group(pums_frame())
    minus = _run(pums_world, OLD.where("educ", "!=", educ).count())
    assert _single(minus)[1] == CellStatus.RELEASED
    assert _single(_run(pums_world, OLD.count())) == (None, CellStatus.SUPPRESSED, RULE)


def test_a_tracker_from_a_large_set_and_the_set_without_the_target(pums_world: World) -> None:
    frame = pums_frame()
    married = frame[frame.married == 1]
    # The target: the only married person of their (education, age).
    counts = married.groupby(["educ", "age"]).size()
    educ, age = next(key for key, n in counts.items() if n == 1)
    group = married[married.educ == educ]
    assert len(group) >= K + 1  # the large set passes the query-set rule on both sides
    tracker = Query("pums").where("married", "=", 1).where("educ", "=", int(educ))
    target_income = float(group[group.age == age].income.iloc[0])
    # The attack on true values: the two sums differ by exactly the target's income.
    without = group[group.age != age].income.sum()
    assert group.income.sum() - without == target_income
    large = _run(pums_world, tracker.count().sum("income"))
    assert [c.status for c in large.table.rows[0].cells] == [CellStatus.RELEASED] * 2
    assert large.table.rows[0].cells[1].value == group.income.sum()
    minus = _run(pums_world, tracker.where("age", "!=", int(age)).count().sum("income"))
    cells = minus.table.rows[0].cells
    assert [(c.value, c.status, c.rule) for c in cells] == [(None, CellStatus.SUPPRESSED, RULE)] * 2


def test_a_group_split_differently(pums_world: World) -> None:
    frame = pums_frame()
    old = frame[frame.age >= 60]
    first = _run(pums_world, OLD.group_by("married").count())
    assert {r.keys[0]: r.cells[0].value for r in first.table.rows} == dict(
        old.groupby("married").size()
    )
    # Everyone aged 60..84: the 85+ of each marital status fall out of each cell.
    second = _run(
        pums_world, Query("pums").where("age", "between", (60, 84)).group_by("married").count()
    )
    over = old[old.age >= 85].groupby("married").size()
    for row in second.table.rows:
        (cell,) = row.cells
        removed = int(over.get(row.keys[0], 0))
        if 0 < removed < K:
            assert (cell.value, cell.status, cell.rule) == (None, CellStatus.SUPPRESSED, RULE)
        else:
            assert cell.status == CellStatus.RELEASED


def test_a_re_run_after_a_data_refresh(pums_world: World) -> None:
    frame = pums_frame()
    by_sex = Query("pums").group_by("sex").count()
    first = {r.keys[0]: r.cells[0].value for r in _run(pums_world, by_sex).table.rows}
    assert first == dict(frame.groupby("sex").size())
    # One new woman (sex 1) arrives; the steward registers the refreshed file.
    newcomer = frame.iloc[[0]].assign(pid=frame.pid.max() + 1, sex=1)
    path = pums_world.root / "data" / "pums.csv"
    tmp = path.with_suffix(".new")
    pd.concat([frame, newcomer]).to_csv(tmp, index=False)
    os.replace(tmp, path)
    pums_world.register("pums")
    second = {r.keys[0]: r.cells for r in _run(pums_world, by_sex).table.rows}
    assert second[0][0].value == first[0]  # unchanged cell: released again
    assert (second[1][0].value, second[1][0].rule) == (None, RULE)  # +1 person: held back


def test_concurrent_nested_queries_never_both_release(pums_world: World) -> None:
    educ = _small_group(pums_frame())
    queries = [OLD.count(), OLD.where("educ", "!=", educ).count()] * 8
    results: list[tuple[int, Result]] = []
    lock = threading.Lock()

    def go(i: int) -> None:
        r = _run(pums_world, queries[i])
        with lock:
            results.append((i % 2, r))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    released = {kind for kind, r in results if _single(r)[1] == CellStatus.RELEASED}
    assert len(results) == 16 and len(released) == 1


def test_the_stored_result_is_the_table_after_the_guard(pums_world: World) -> None:
    """The copy kept (fetched again later, digested in the log) is the table with the guard's
    suppressions, not the one it was handed: both are sealed for storage, one outside the
    write lock in advance."""
    educ = _small_group(pums_frame())
    _run(pums_world, OLD.count())
    minus = _run(pums_world, OLD.where("educ", "!=", educ).count())
    assert _single(minus) == (None, CellStatus.SUPPRESSED, RULE)
    again = pums_world.client("ana").job(minus.job_id).result(timeout=5)
    assert _single(again) == (None, CellStatus.SUPPRESSED, RULE)
    assert again.table == minus.table and again.digest == minus.digest
    (released,) = [
        r.entry
        for r in pums_world.client("chen").audit_entries()
        if r.entry["event"] == "job.released" and r.entry["job_id"] == minus.job_id
    ]
    assert released["result_digest"] == minus.digest


def test_a_release_committed_while_the_guard_waits_for_the_write_lock_is_checked(
    world_factory: Callable[..., World],
) -> None:
    """The guard checks a release against the committed register before the write lock, then,
    inside it, against the cells recorded since. Here a nested cell from another server
    process (recorded straight into the shared store) commits between the two checks: the
    second one must hold the new cell back."""
    educ = _small_group(pums_frame())
    nested = OLD.where("educ", "!=", educ).count()
    # The register row the nested query leaves, taken from a release on a second server.
    other = world_factory(
        {"pums": pums_policy("pums", "pums.csv")}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"}
    )
    other.register("pums")
    other.project("census-study", (("pums", "research"),))
    assert _single(_run(other, nested))[1] == CellStatus.RELEASED
    ((population, region, persons),) = other.server.app.db.conn.execute(
        "SELECT population, region, persons FROM releases"
    ).fetchall()

    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv")}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"}
    )
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    app = world.server.app
    ((version,),) = app.db.conn.execute(
        "SELECT file_fingerprint FROM datasets WHERE id = 'pums'"
    ).fetchall()
    register = app.jobs._releases
    with register._lock:  # the job stops before its first check
        job = world.client("ana").submit(OLD.count(), project="census-study", purpose="research")
        with app.db.write() as conn:  # admitted: now hold the write lock
            register.record(
                conn,
                dataset="pums",
                population=population,
                project="census-study",
                job_id="another-process",
                data_version=version,
                cells=[(region, persons)],
            )
            register._lock.release()  # the first check runs; the row is not committed yet
            try:
                deadline = time.monotonic() + 10
                while not app.db._waiting:  # the release waits for the write lock
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            finally:
                register._lock.acquire()
    assert _single(job.result(timeout=10)) == (None, CellStatus.SUPPRESSED, RULE)
