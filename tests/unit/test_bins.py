"""Binned group keys: the engine's bin index agrees with the policy's bins at every edge."""

from __future__ import annotations

import bisect

import duckdb
import pytest

from sandbox.engine._plan import _bin_index

CASES = [
    ("INTEGER", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)),  # integer division path
    ("BIGINT", (-20, -10, 0, 10)),
    ("INTEGER", (0, 18, 35, 50, 65, 101)),  # unequal widths: CASE search
    ("DOUBLE", (0.0, 0.1, 0.2, 0.3, 0.4)),
    ("DOUBLE", (0, 10, 20, 30)),
    ("INTEGER", (5, 6)),  # one bin
]


def expected(edges: tuple[float, ...], x: float | None) -> int | None:
    if x is None or not edges[0] <= x < edges[-1]:
        return None
    return bisect.bisect_right(edges, x) - 1


@pytest.mark.parametrize(("sql_type", "edges"), CASES)
def test_bin_index_matches_bisect_at_and_around_every_edge(
    sql_type: str, edges: tuple[float, ...]
) -> None:
    values: list[float | None] = [None]
    for e in edges:
        if sql_type == "DOUBLE":
            values += [e - 1e-9, e, e + 1e-9]
        else:
            values += [int(e) - 1, int(e), int(e) + 1]
    params: list[object] = []
    expr = _bin_index('"x"', sql_type, edges, params)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (x {sql_type})")
    con.executemany("INSERT INTO t VALUES (?)", [[v] for v in values])
    rows = con.execute(f"SELECT x, {expr} FROM t", params).fetchall()
    assert len(rows) == len(values)
    for x, index in rows:
        assert index == expected(edges, x), (x, index)
