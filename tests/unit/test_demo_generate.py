"""Deterministic synthetic Harbor City data: reproducibility, schema, domains, consistency."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.demo import generate_demo_data
from sandbox.demo._generate import (
    BLOCK_ROWS,
    DEPARTMENTS,
    EMPLOYMENT,
    INSURANCE,
    RESIDENTS_SCHEMA,
    VISITS_SCHEMA,
)

N = 20_000


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(paths: dict[str, Path]) -> dict[str, str]:
    return {name: _sha256(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_demo_data(tmp_path_factory.mktemp("demo"), residents=N, seed=7)


@pytest.fixture
def con(demo: dict[str, Path]) -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute(f"CREATE VIEW r AS SELECT * FROM read_parquet('{demo['residents']}')")
    c.execute(f"CREATE VIEW v AS SELECT * FROM read_parquet('{demo['clinic_visits']}')")
    return c


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[object, ...]:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row


def test_returns_final_paths_and_leaves_no_temp_files(demo: dict[str, Path]) -> None:
    assert set(demo) == {"residents", "clinic_visits"}
    assert demo["residents"].name == "residents.parquet"
    assert demo["clinic_visits"].name == "clinic_visits.parquet"
    out_dir = demo["residents"].parent
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "clinic_visits.parquet",
        "residents.parquet",
    ]


def test_same_seed_gives_identical_bytes(demo: dict[str, Path], tmp_path: Path) -> None:
    again = generate_demo_data(tmp_path, residents=N, seed=7)
    assert _digests(again) == _digests(demo)


def test_different_seed_gives_different_data(demo: dict[str, Path], tmp_path: Path) -> None:
    other = generate_demo_data(tmp_path, residents=N, seed=8)
    for name in ("residents", "clinic_visits"):
        assert _sha256(other[name]) != _sha256(demo[name])
    a = pq.read_table(demo["residents"])
    b = pq.read_table(other["residents"])
    assert a.num_rows == b.num_rows == N
    assert a.column("person_id").equals(b.column("person_id"))
    assert not a.column("age").equals(b.column("age"))
    assert not a.column("district").equals(b.column("district"))


def test_chunking_and_threads_do_not_change_the_data(demo: dict[str, Path], tmp_path: Path) -> None:
    """Three chunks (10k, 10k, 5k residents) equal one chunk; progress sees every chunk."""
    n = 2 * BLOCK_ROWS + BLOCK_ROWS // 2
    calls: list[tuple[int, int]] = []
    chunked = generate_demo_data(
        tmp_path / "chunked",
        residents=n,
        seed=7,
        progress=lambda done, total: calls.append((done, total)),
        chunk_rows=BLOCK_ROWS,
        workers=1,
    )
    single = generate_demo_data(tmp_path / "single", residents=n, seed=7, chunk_rows=10 * n)
    assert calls == [(BLOCK_ROWS, n), (2 * BLOCK_ROWS, n), (n, n)]
    assert pq.ParquetFile(chunked["residents"]).metadata.num_row_groups == 3
    assert pq.ParquetFile(single["residents"]).metadata.num_row_groups == 1
    for name in ("residents", "clinic_visits"):
        assert pq.read_table(chunked[name]).equals(pq.read_table(single[name]))
    # A different chunk size only regroups rows: the first rows equal the 20k-resident run.
    prefix = pq.read_table(chunked["residents"]).slice(0, N)
    assert prefix.equals(pq.read_table(demo["residents"]))
    # Thread count never changes the bytes.
    threaded = generate_demo_data(
        tmp_path / "threaded", residents=n, seed=7, chunk_rows=BLOCK_ROWS, workers=3
    )
    assert _digests(threaded) == _digests(chunked)


def test_schemas(demo: dict[str, Path]) -> None:
    residents = pq.read_table(demo["residents"])
    visits = pq.read_table(demo["clinic_visits"])
    assert residents.schema.equals(RESIDENTS_SCHEMA)
    assert visits.schema.equals(VISITS_SCHEMA)
    assert residents.column_names == [
        "person_id",
        "district",
        "sub_district",
        "age",
        "sex",
        "household_size",
        "employment_sector",
        "monthly_income",
        "insurance_type",
        "clinic_visits",
    ]
    assert visits.column_names == [
        "visit_id",
        "person_id",
        "visit_date",
        "department",
        "district",
        "cost",
    ]
    assert residents.schema.field("person_id").type == pa.int64()
    assert residents.schema.field("district").type == pa.string()
    assert visits.schema.field("visit_date").type == pa.date32()
    assert visits.schema.field("cost").type == pa.int64()
    assert pq.ParquetFile(demo["residents"]).metadata.row_group(0).column(0).compression == "ZSTD"


def test_row_counts_and_unique_ids(con: duckdb.DuckDBPyConnection) -> None:
    rows, persons, lo, hi = _one(
        con, "SELECT count(*), count(DISTINCT person_id), min(person_id), max(person_id) FROM r"
    )
    assert (rows, persons, lo, hi) == (N, N, 1, N)
    visits, distinct_ids, lo_v, hi_v = _one(
        con, "SELECT count(*), count(DISTINCT visit_id), min(visit_id), max(visit_id) FROM v"
    )
    assert visits == distinct_ids == hi_v
    assert lo_v == 1


def test_resident_value_domains(con: duckdb.DuckDBPyConnection) -> None:
    lo, hi = _one(con, "SELECT min(age), max(age) FROM r")
    assert lo == 0
    assert 90 <= hi <= 100  # type: ignore[operator]
    assert _one(con, "SELECT count(DISTINCT district) FROM r") == (10,)
    per_district = con.execute(
        "SELECT district, count(DISTINCT sub_district), count(*) FROM r GROUP BY 1"
    ).fetchall()
    assert all(4 <= subs <= 8 for _, subs, _ in per_district)
    sizes = sorted(n for _, _, n in per_district)
    assert sizes[-1] > 3 * sizes[0]  # unequal district populations
    assert _one(
        con,
        "SELECT count(*) FROM (SELECT sub_district FROM r GROUP BY 1 "
        "HAVING count(DISTINCT district) > 1)",
    ) == (0,)
    assert {s for (s,) in con.execute("SELECT DISTINCT sex FROM r").fetchall()} == {"F", "M"}
    female = _one(con, "SELECT avg(CASE WHEN sex = 'F' THEN 1 ELSE 0 END) FROM r")[0]
    assert 0.49 < female < 0.54  # type: ignore[operator]
    assert _one(con, "SELECT min(household_size), max(household_size) FROM r") == (1, 8)
    mode = _one(con, "SELECT mode(household_size) FROM r")[0]
    assert mode in (2, 3)
    assert _one(con, "SELECT min(clinic_visits), max(clinic_visits) <= 40 FROM r") == (0, True)
    assert _one(con, "SELECT min(monthly_income), max(monthly_income) <= 500000 FROM r") == (
        0,
        True,
    )
    sectors = {s for (s,) in con.execute("SELECT DISTINCT employment_sector FROM r").fetchall()}
    assert sectors == set(EMPLOYMENT)
    insurance = {s for (s,) in con.execute("SELECT DISTINCT insurance_type FROM r").fetchall()}
    assert insurance == set(INSURANCE)


def test_population_is_plausible(con: duckdb.DuckDBPyConnection) -> None:
    young, old = _one(
        con,
        "SELECT count(*) FILTER (WHERE age BETWEEN 20 AND 29), "
        "count(*) FILTER (WHERE age BETWEEN 80 AND 89) FROM r",
    )
    assert young > 3 * old  # type: ignore[operator]
    assert _one(
        con, "SELECT count(*) FROM r WHERE age < 18 AND employment_sector <> 'student'"
    ) == (0,)
    retired_share = _one(
        con,
        "SELECT avg(CASE WHEN employment_sector = 'retired' THEN 1 ELSE 0 END) FROM r "
        "WHERE age >= 70",
    )[0]
    assert retired_share > 0.8  # type: ignore[operator]
    assert _one(con, "SELECT count(*) FROM r WHERE age < 16 AND monthly_income > 0") == (0,)
    worker_median, child_visits, old_visits = _one(
        con,
        "SELECT median(monthly_income) FILTER (WHERE employment_sector NOT IN "
        "('student', 'retired', 'unemployed')), "
        "avg(clinic_visits) FILTER (WHERE age BETWEEN 10 AND 19), "
        "avg(clinic_visits) FILTER (WHERE age >= 70) FROM r",
    )
    assert 2_000 < worker_median < 20_000  # type: ignore[operator]
    assert old_visits > 2 * child_visits  # type: ignore[operator]


def test_visits_consistent_with_registry(con: duckdb.DuckDBPyConnection) -> None:
    assert _one(con, "SELECT count(*) FROM v") == _one(con, "SELECT sum(clinic_visits) FROM r")
    assert _one(con, "SELECT count(*) FROM v ANTI JOIN r USING (person_id)") == (0,)
    mismatched = _one(
        con,
        "SELECT count(*) FROM r LEFT JOIN (SELECT person_id, count(*) AS n FROM v GROUP BY 1) c "
        "USING (person_id) WHERE coalesce(c.n, 0) <> r.clinic_visits",
    )
    assert mismatched == (0,)
    several = _one(
        con, "SELECT count(*) FROM (SELECT person_id FROM v GROUP BY 1 HAVING count(*) > 1)"
    )
    assert several[0] > N // 4  # type: ignore[operator]


def test_visit_value_domains(con: duckdb.DuckDBPyConnection) -> None:
    lo, hi = _one(con, "SELECT min(visit_date), max(visit_date) FROM v")
    assert str(lo).startswith("2025-01") and str(hi).startswith("2025-12")
    departments = {d for (d,) in con.execute("SELECT DISTINCT department FROM v").fetchall()}
    assert departments == set(DEPARTMENTS)
    assert _one(con, "SELECT min(cost) >= 20, max(cost) <= 20000 FROM v") == (True, True)
    wrong = _one(
        con,
        "SELECT count(*) FROM v JOIN r USING (person_id) "
        "WHERE (department = 'paediatrics' AND age >= 16) "
        "OR (department = 'obstetrics' AND sex <> 'F')",
    )
    assert wrong == (0,)
    home_share = _one(
        con,
        "SELECT avg(CASE WHEN v.district = r.district THEN 1 ELSE 0 END) "
        "FROM v JOIN r USING (person_id)",
    )[0]
    assert 0.75 < home_share < 0.95  # type: ignore[operator]
    assert _one(con, "SELECT count(DISTINCT district) FROM v") == (10,)
    # Rows are ordered by person, then date.
    unordered = _one(
        con,
        "SELECT count(*) FROM (SELECT person_id, visit_date, "
        "lag(person_id) OVER w AS pp, lag(visit_date) OVER w AS pd FROM v "
        "WINDOW w AS (ORDER BY visit_id)) WHERE pp > person_id "
        "OR (pp = person_id AND pd > visit_date)",
    )
    assert unordered == (0,)


def test_empty_population(tmp_path: Path) -> None:
    paths = generate_demo_data(tmp_path, residents=0)
    assert pq.read_table(paths["residents"]).num_rows == 0
    assert pq.read_table(paths["clinic_visits"]).schema.equals(VISITS_SCHEMA)


def test_failure_leaves_no_files(tmp_path: Path) -> None:
    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        generate_demo_data(tmp_path, residents=N, progress=boom, chunk_rows=BLOCK_ROWS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"residents": -1}, {"seed": -1}, {"chunk_rows": 0}, {"workers": 0}],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate_demo_data(tmp_path, **kwargs)  # type: ignore[arg-type]
