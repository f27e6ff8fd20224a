"""A researcher job through a real server equals DuckDB computed directly on the same file."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from sandbox import CellStatus, JobState, QuotaLimits
from tests.conftest import PUMS_DIR, World, pums_policy


@pytest.fixture(params=[2_000_000, 0], ids=["in-memory-copy", "from-file"])
def exact_world(world_factory, request: pytest.FixtureRequest) -> World:
    # k = 1 and rounding base 1: nothing suppressed or rounded, so values must match exactly.
    # Jobs read the engine's in-memory copy of the registered file, or (no cache) the file.
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv", k=1)},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
        engine_cache_rows=request.param,
    )
    world.register("pums")
    world.project("p1", (("pums", "research"),))
    return world


def test_sql_job_equals_direct_duckdb(exact_world: World) -> None:
    ana = exact_world.client("ana")
    result = ana.sql(
        "SELECT race, COUNT(*) AS n, SUM(income) AS total, AVG(income) AS mean "
        "FROM pums WHERE age >= 30 GROUP BY race",
        project="p1",
        purpose="research",
    )
    got = result.to_dataframe().sort_values("race").reset_index(drop=True)
    expected = duckdb.sql(
        f"SELECT race, count(*) AS n, sum(income) AS total, avg(income) AS mean "
        f"FROM read_csv('{PUMS_DIR / 'PUMS_pid.csv'}') WHERE age >= 30 GROUP BY race ORDER BY race"
    ).df()
    assert list(got["race"]) == list(expected["race"])
    assert list(got["n"]) == [float(v) for v in expected["n"]]
    assert got["total"].tolist() == pytest.approx(expected["total"].tolist())
    assert got["mean"].tolist() == pytest.approx(expected["mean"].tolist())
    assert all(s == CellStatus.RELEASED.value for s in result.report["status"])


def test_builder_job_handle_lifecycle(exact_world: World) -> None:
    ana = exact_world.client("ana")
    query = ana.query("pums").where("sex", "=", 1).group_by("married").count().mean("income")
    job = ana.submit(query, project="p1", purpose="research", request_id="req-1")
    result = job.result(timeout=30)
    assert job.done() and job.state == JobState.SUCCEEDED
    frame = result.to_dataframe(status=True)
    source = PUMS_DIR / "PUMS_pid.csv"
    expected = duckdb.sql(
        f"SELECT married, count(*) AS n, avg(income) AS m FROM read_csv('{source}') "
        "WHERE sex = 1 GROUP BY married ORDER BY married"
    ).df()
    assert frame["married"].tolist() == expected["married"].tolist()
    assert frame["count"].tolist() == [float(v) for v in expected["n"]]
    assert frame["mean_income"].tolist() == pytest.approx(expected["m"].tolist())
    assert set(frame["count_status"]) == {"released"}
    # Idempotent on the request id: the same job comes back, nothing new runs or is charged.
    again = ana.submit(query, project="p1", purpose="research", request_id="req-1")
    assert again.job_id == job.job_id
    assert ana.quota("p1").jobs_total == 1
    # The researcher lists and reads back their own job.
    assert [j.job_id for j in ana.jobs()] == [job.job_id]
    assert ana.job(job.job_id).info.rows_scanned == 1000


def test_other_researchers_jobs_look_nonexistent(exact_world: World) -> None:
    from sandbox import NotFound

    job = exact_world.client("ana").submit(
        exact_world.client("ana").query("pums").count(), project="p1", purpose="research"
    )
    job.result(timeout=30)
    bob = exact_world.client("bob")
    with pytest.raises(NotFound) as seen:
        bob.job(job.job_id)
    with pytest.raises(NotFound) as missing:
        bob.job("0" * 32)
    assert str(seen.value).replace(job.job_id, "X") == str(missing.value).replace("0" * 32, "X")
    assert bob.jobs() == []


def test_quota_and_dataframe_types(exact_world: World) -> None:
    exact_world.client("sam").set_quota("p1", QuotaLimits(jobs_per_day=5))
    ana = exact_world.client("ana")
    frame = ana.sql(
        "SELECT sex, COUNT(*) FROM pums GROUP BY sex", project="p1", purpose="research"
    ).to_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert str(frame["count"].dtype) == "Float64"
    usage = ana.quota("p1")
    assert usage.jobs_today == 1 and usage.limits.jobs_per_day == 5 and usage.rows_total == 1000
