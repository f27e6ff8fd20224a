"""Jobs read only the file version a steward registered (its recorded facts stay true).

Registration records facts about the file that disclosure control relies on — distinct persons,
whether each person has one row, each measure's observed range (which decides whether clamping
can be skipped). A file swapped or rewritten afterwards would make them false, so such a file is
refused before a job is accepted, and a read that raced with a swap is never released.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from sandbox import DatasetChanged, JobState, Query
from tests.conftest import World
from tests.security._support import entries_for, ledger_rows, pums_frame, workers_held

COUNT_BY_SEX = Query("pums").group_by("sex").count()


def _source(world: World) -> Path:
    return world.root / "data" / "pums.csv"


def _replace(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_suffix(".new")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _counts(frame: pd.DataFrame) -> dict[int, int]:
    return {int(k): int(v) for k, v in frame.groupby("sex").size().items()}


def _run_counts(world: World) -> dict[int, int]:
    df = world.client("ana").run(COUNT_BY_SEX, project="census-study", purpose="research")
    df = df.to_dataframe()
    return {int(k): int(v) for k, v in zip(df["sex"], df["count"], strict=True)}


def _rewritten_in_place(path: Path, smaller: pd.DataFrame) -> None:
    with path.open("w") as fh:  # same inode: only size and mtime change
        smaller.to_csv(fh, index=False)


def _touched(path: Path, smaller: pd.DataFrame) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("change", [_replace, _rewritten_in_place, _touched])
def test_a_source_changed_after_registration_is_refused_until_registered_again(
    pums_world: World, change: object
) -> None:
    full = pums_frame()
    assert _run_counts(pums_world) == _counts(full)
    smaller = full.iloc[100:]
    change(_source(pums_world), smaller)  # type: ignore[operator]

    ana = pums_world.client("ana")
    before = ana.quota("census-study")
    with pytest.raises(DatasetChanged) as err:
        ana.run(COUNT_BY_SEX, project="census-study", purpose="research")
    assert "register it again" in str(err.value)
    # Refused before anything was read: logged as a denial, nothing charged.
    assert ana.quota("census-study").jobs_total == before.jobs_total
    entries = entries_for(pums_world, err.value.job_id)
    assert [e["event"] for e in entries] == ["job.denied"]
    assert entries[0]["reason"] == "DATASET_CHANGED"

    pums_world.register("pums")  # the steward accepts the new version
    expected = _counts(full) if change is _touched else _counts(smaller)
    assert _run_counts(pums_world) == expected


def test_a_source_swapped_while_a_job_waits_is_never_released(pums_world: World) -> None:
    ana = pums_world.client("ana")
    with workers_held(pums_world):
        job = ana.submit(COUNT_BY_SEX, project="census-study", purpose="research")
        assert job.state == JobState.QUEUED
        _replace(_source(pums_world), pums_frame().iloc[100:])
    assert job.wait(30).state == JobState.FAILED
    with pytest.raises(DatasetChanged):
        job.result(timeout=5)
    # The job read data, so it is charged, and the log says why nothing was released.
    assert ledger_rows(pums_world)[job.job_id][1] == "committed"
    events = [e["event"] for e in entries_for(pums_world, job.job_id)]
    assert events == ["job.accepted", "job.failed"]
