"""The engine's in-memory copies of small registered files (real DuckDB, real Parquet files)."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from sandbox.engine import file_fingerprint
from sandbox.engine._cache import SourceCache
from sandbox.engine._plan import Source

READER = "read_parquet(?)"


def _write(path: Path, rows: int, offset: int = 0) -> Source:
    pd.DataFrame(
        {"pid": range(offset, offset + rows), "x": [i % 7 for i in range(rows)]}
    ).to_parquet(path)
    return Source(str(path), READER, file_fingerprint(path), rows)


def _sum(db: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    row = db.execute(f"SELECT count(*), sum(pid) FROM {table}").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.fixture
def db() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(":memory:")


def test_a_copy_holds_the_registered_file(tmp_path: Path, db: duckdb.DuckDBPyConnection) -> None:
    source = _write(tmp_path / "a.parquet", 100)
    cache = SourceCache(db, 1000, file_fingerprint)
    table = cache.acquire(source)
    assert table is not None
    assert _sum(db, table) == (100, sum(range(100)))
    cache.release(table)
    assert cache.acquire(source) == table  # reused, not loaded again


def test_a_file_that_is_not_the_registered_version_is_never_copied(
    tmp_path: Path, db: duckdb.DuckDBPyConnection
) -> None:
    path = tmp_path / "a.parquet"
    registered = _write(path, 100)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a rewrite
    cache = SourceCache(db, 1000, file_fingerprint)
    assert cache.acquire(registered) is None
    assert db.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)


def test_a_new_registered_version_gets_its_own_copy(
    tmp_path: Path, db: duckdb.DuckDBPyConnection
) -> None:
    path = tmp_path / "a.parquet"
    cache = SourceCache(db, 1000, file_fingerprint)
    old = cache.acquire(_write(path, 100))
    assert old is not None
    cache.release(old)
    new = cache.acquire(_write(path, 50, offset=1000))
    assert new is not None and new != old
    assert _sum(db, new) == (50, sum(range(1000, 1050)))


def test_large_files_and_a_zero_budget_are_read_from_disk(
    tmp_path: Path, db: duckdb.DuckDBPyConnection
) -> None:
    source = _write(tmp_path / "a.parquet", 100)
    assert SourceCache(db, 99, file_fingerprint).acquire(source) is None
    assert SourceCache(db, 0, file_fingerprint).acquire(source) is None


def test_copies_in_use_are_kept_and_idle_ones_make_room(
    tmp_path: Path, db: duckdb.DuckDBPyConnection
) -> None:
    a = _write(tmp_path / "a.parquet", 100)
    b = _write(tmp_path / "b.parquet", 100, offset=500)
    cache = SourceCache(db, 150, file_fingerprint)
    table_a = cache.acquire(a)
    assert table_a is not None
    assert cache.acquire(b) is None  # no room while a is in use: b is read from its file
    assert _sum(db, table_a) == (100, sum(range(100)))
    cache.release(table_a)
    table_b = cache.acquire(b)
    assert table_b is not None
    assert _sum(db, table_b) == (100, sum(range(500, 600)))
    tables = {r[0] for r in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert len(tables) == 1  # a's copy was dropped


def test_a_plan_that_groups_by_text_reads_the_file(
    tmp_path: Path, db: duckdb.DuckDBPyConnection
) -> None:
    # Grouping by text is faster from Parquet's dictionary encoding than from a plain copy.
    source = _write(tmp_path / "a.parquet", 100)
    text_grouped = Source(source.path, READER, source.version, source.rows, cacheable=False)
    assert SourceCache(db, 1000, file_fingerprint).acquire(text_grouped) is None
