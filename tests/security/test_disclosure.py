"""Invariants 1 and 2: only disclosure-controlled aggregates leave the server.

Thresholds count distinct persons, suppressed cells stay in the table, small query sets are
refused identically whether or not the singled-out person exists, counts are rounded, and no
row-level value (a planted income or category) appears in anything a caller or log can see.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from sandbox import (
    AggFunc,
    Aggregate,
    CellStatus,
    DisclosureControl,
    InvalidJobSpec,
    JobSpec,
    JobState,
    PolicyDenied,
    Query,
    SandboxError,
)
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import (
    add_project,
    audit_entries,
    csv_world,
    entries_for,
    ledger_rows,
    pums_frame,
)

K = 10


def policy(name: str, columns: str, purpose_columns: str, *, k: int = K, base: int = 1) -> str:
    """A policy for ``<name>.csv`` with person key ``pid`` and one purpose ``research``."""
    return (
        f"dataset: {name}\nversion: 1\ntitle: {name}\nsteward: test-office\n"
        f"source: {name}.csv\nperson_key: pid\npopulation: {name}-persons\n"
        f"columns:\n  pid: {{role: identifier}}\n{columns}"
        f"purposes:\n  research: {{columns: [{purpose_columns}]}}\n"
        f"disclosure: {{min_persons_per_cell: {k}, rounding_base: {base}}}\n"
    )


# ---- (a) thresholds count distinct persons --------------------------------------------------
REGIONS_POLICY = policy(
    "regions",
    "  region: {role: dimension}\n"
    "  income: {role: measure, bounds: [0, 100000], aggregates: [sum, mean]}\n",
    "region, income",
)


def regions_frame() -> pd.DataFrame:
    """Region A: 12 rows but only 3 persons; B: 15 persons; C: 20 persons (one row each)."""
    rows = [("A", pid, 1000.0 * pid) for pid in (1, 2, 3) for _ in range(4)]
    rows += [("B", pid, 100.0 * pid) for pid in range(4, 19)]
    rows += [("C", pid, 50.0 * pid) for pid in range(19, 39)]
    return pd.DataFrame(rows, columns=["region", "pid", "income"])


def test_small_cells_are_suppressed_on_distinct_persons_not_rows(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame = regions_frame()
    counts = frame.groupby("region").agg(rows=("pid", "size"), persons=("pid", "nunique"))
    assert counts.loc["A", "rows"] >= K > counts.loc["A", "persons"]  # rows alone would pass

    world = csv_world(world_factory, tmp_path, {"regions": (frame, REGIONS_POLICY)})
    add_project(world, "p", (("regions", "research"),))
    result = world.client("ana").run(
        Query("regions").group_by("region").count().count_persons().mean("income"),
        project="p",
        purpose="research",
    )
    frame_out = result.to_dataframe(status=True).set_index("region")
    assert list(frame_out.index) == ["A", "B", "C"]
    for col in ("count", "count_distinct", "mean_income"):
        assert frame_out.loc["A", f"{col}_status"] == CellStatus.SUPPRESSED.value
        assert pd.isna(frame_out.loc["A", col])
    report = result.report.set_index(["region", "column"])
    assert set(report.loc["A"]["rule"]) == {"disclosure.min_persons"}
    assert result.suppressed == 3
    for region in ("B", "C"):
        assert frame_out.loc[region, "count"] == counts.loc[region, "rows"]
        assert frame_out.loc[region, "count_distinct"] == counts.loc[region, "persons"]
        assert frame_out.loc[region, "count_status"] == CellStatus.RELEASED.value


def test_query_set_counts_distinct_persons_not_rows(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    world = csv_world(world_factory, tmp_path, {"regions": (regions_frame(), REGIONS_POLICY)})
    add_project(world, "p", (("regions", "research"),))
    ana = world.client("ana")
    # 12 rows, 3 persons: refused although the rows would pass.
    for query in (
        Query("regions").where("region", "=", "A").count(),
        Query("regions").where("region", "=", "A").group_by("region").count(),
    ):
        with pytest.raises(DisclosureControl) as info:
            ana.run(query, project="p", purpose="research")
        assert info.value.rule_ids == ("disclosure.query_set",)
    # A and B together hold 18 persons, C (the complement) 20: allowed, A's cell suppressed.
    result = ana.run(
        Query("regions").where("region", "in", ["A", "B"]).group_by("region").count(),
        project="p",
        purpose="research",
    )
    out = result.to_dataframe(status=True).set_index("region")
    assert list(out["count_status"]) == ["suppressed", "released"]
    assert out.loc["B", "count"] == 15


def test_pums_dup_thresholds_follow_persons(world_factory: Callable[..., World]) -> None:
    source = PUMS_DIR / "PUMS_dup.csv"
    world = world_factory({"dup": pums_policy("dup", "dup.csv")}, {"dup.csv": source})
    world.register("dup")
    add_project(world, "p", (("dup", "research"),))
    truth = duckdb.sql(
        f"SELECT race, count(*) AS n, count(DISTINCT pid) AS p "
        f"FROM read_csv('{source}') GROUP BY race ORDER BY race"
    ).df()
    # The data really has a group that passes on rows but not on persons.
    assert ((truth["n"] >= K) & (truth["p"] < K)).any()
    assert (truth["n"] != truth["p"]).any()

    result = world.client("ana").run(
        Query("dup").group_by("race").count().count_persons(), project="p", purpose="research"
    )
    got = result.to_dataframe(status=True).set_index("race")
    assert sorted(got.index) == sorted(truth["race"])
    released_differ = False
    for race, n, p in truth.itertuples(index=False):
        if p < K:
            assert got.loc[race, "count_status"] == "suppressed", race
            assert got.loc[race, "count_distinct_status"] == "suppressed", race
            assert pd.isna(got.loc[race, "count"]) and pd.isna(got.loc[race, "count_distinct"])
        else:
            assert got.loc[race, "count"] == n
            assert got.loc[race, "count_distinct"] == p
            released_differ |= n != p
    assert released_differ  # count(*) and distinct persons are different numbers


# ---- (b) suppressed cells are rows, never dropped -------------------------------------------
def test_declared_key_without_data_is_a_suppressed_row(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame = pums_frame()
    frame["region"] = np.resize(["north", "south", "east"], len(frame))
    world = csv_world(
        world_factory,
        tmp_path,
        {
            "geo": (
                frame,
                policy(
                    "geo",
                    "  region: {role: dimension, values: [north, south, east, west]}\n"
                    "  sex: {role: dimension, values: [0, 1]}\n",
                    "region, sex",
                ),
            )
        },
    )
    add_project(world, "p", (("geo", "research"),))
    ana = world.client("ana")
    result = ana.run(Query("geo").group_by("region").count(), project="p", purpose="research")
    out = result.to_dataframe(status=True)
    assert list(out["region"]) == ["north", "south", "east", "west"]
    west = out[out["region"] == "west"].iloc[0]
    assert west["count_status"] == "suppressed" and pd.isna(west["count"])
    assert (out[out["region"] != "west"]["count_status"] == "released").all()
    # With two declared dimensions every combination is a row (4 x 2 = 8).
    both = ana.run(
        Query("geo").group_by("region", "sex").count(), project="p", purpose="research"
    ).to_dataframe(status=True)
    assert len(both) == 8
    assert set(both[both["region"] == "west"]["count_status"]) == {"suppressed"}


# ---- (c) query-set restriction --------------------------------------------------------------
def _few_oldest_threshold() -> tuple[int, int]:
    """An age T such that 1..K-1 persons are aged >= T (computed from the data)."""
    ages = pd.read_csv(PUMS_DIR / "PUMS_pid.csv")["age"]
    few = [(int(t), int((ages >= t).sum())) for t in sorted(ages.unique())]
    threshold, n = min((t, n) for t, n in few if 0 < n < K)
    return threshold, n


def test_query_set_smaller_than_k_is_refused(pums_world: World) -> None:
    ana = pums_world.client("ana")
    threshold, n = _few_oldest_threshold()
    for query in (
        Query("pums").where("age", ">=", threshold).count(),
        Query("pums").where("age", ">=", threshold).group_by("sex").count(),
    ):
        with pytest.raises(DisclosureControl) as info:
            ana.run(query, project="census-study", purpose="research")
        assert info.value.rule_ids == ("disclosure.query_set",)
        assert str(n) not in info.value.message.replace(str(K), "")
        info_job = ana.job(info.value.job_id).info
        assert info_job.state == JobState.DENIED and info_job.reason == "DISCLOSURE_CONTROL"


def test_query_set_whose_complement_is_smaller_than_k_is_refused(pums_world: World) -> None:
    ana = pums_world.client("ana")
    threshold, _ = _few_oldest_threshold()
    queries = {
        "all but a few": Query("pums").where("age", "<", threshold).mean("income"),
        "all but a few, grouped": Query("pums")
        .where("age", "<", threshold)
        .group_by("sex")
        .count(),
        "tautology": Query("pums").where("age", ">=", 0).count(),
    }
    for label, query in queries.items():
        with pytest.raises(DisclosureControl) as info:
            ana.run(query, project="census-study", purpose="research")
        assert info.value.rule_ids == ("disclosure.query_set",), label
    # Both sides large: allowed.
    ok = ana.run(Query("pums").where("age", ">=", 50).count(), project="census-study",
                 purpose="research")  # fmt: skip
    assert ok.table.rows[0].cells[0].status == CellStatus.RELEASED


# ---- (d) refusal identical whether the singled-out person exists ----------------------------
def test_refusal_does_not_reveal_whether_the_target_exists(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    frame = pums_frame()
    frame["region"] = np.resize(["north", "south", "east", "west"], len(frame))
    frame["sector"] = np.resize(["s1", "s2", "s3"], len(frame))
    planted = frame.iloc[[0]].assign(pid=5001, region="north", sector="s-rare", age=41)
    frame = pd.concat([frame, planted], ignore_index=True)
    world = csv_world(
        world_factory,
        tmp_path,
        {
            "firms": (
                frame,
                policy(
                    "firms",
                    "  region: {role: dimension}\n  sector: {role: dimension}\n"
                    "  age: {role: dimension}\n",
                    "region, sector, age",
                ),
            )
        },
    )
    add_project(world, "p", (("firms", "research"),))
    ana = world.client("ana")
    targets = {
        "exists": (("region", "north"), ("sector", "s-rare")),
        "absent": (("region", "south"), ("sector", "s-rare")),
    }
    assert ((frame["region"] == "north") & (frame["sector"] == "s-rare")).sum() == 1
    assert ((frame["region"] == "south") & (frame["sector"] == "s-rare")).sum() == 0
    seen = {}
    for label, conds in targets.items():
        query = Query("firms")
        for column, value in conds:
            query = query.where(column, "=", value)
        before = ana.quota("p")
        with pytest.raises(SandboxError) as info:
            ana.run(query.count().count_persons(), project="p", purpose="research")
        after = ana.quota("p")
        exc = info.value
        job = ana.job(exc.job_id).info
        entry = next(e for e in entries_for(world, exc.job_id) if e["event"] == "job.denied")
        volatile = {"seq", "time", "job_id", "spec", "spec_digest"}
        seen[label] = {
            "class": type(exc),
            "str": str(exc),
            "message": exc.message,
            "rules": exc.rule_ids,
            "state": (job.state, job.reason, job.message, job.rule_ids, job.rows_scanned),
            "charge": ledger_rows(world)[exc.job_id],
            "quota": (after.jobs_total - before.jobs_total, after.rows_total - before.rows_total),
            "events": [e["event"] for e in entries_for(world, exc.job_id)],
            "entry": {k: v for k, v in entry.items() if k not in volatile},
        }
    assert seen["exists"] == seen["absent"]
    assert seen["exists"]["class"] is DisclosureControl
    assert seen["exists"]["state"][:2] == (JobState.DENIED, "DISCLOSURE_CONTROL")


# ---- (e) rounding ---------------------------------------------------------------------------
def test_released_counts_and_sums_are_rounded_to_the_base(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv", base=5)}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"}
    )
    world.register("pums")
    add_project(world, "p", (("pums", "research"),))
    truth = duckdb.sql(
        f"SELECT educ, count(*) AS n, sum(income) AS s, avg(income) AS m "
        f"FROM read_csv('{PUMS_DIR / 'PUMS_pid.csv'}') GROUP BY educ ORDER BY educ"
    ).df()
    assert (truth["n"] % 5 != 0).any()  # rounding has something to do
    result = world.client("ana").run(
        Query("pums").group_by("educ").count().sum("income").mean("income"),
        project="p",
        purpose="research",
    )
    got = result.to_dataframe(status=True).set_index("educ")
    for educ, n, s, m in truth.itertuples(index=False):
        assert n >= K  # every educ group is large enough, so nothing is suppressed here
        for col, true in (("count", n), ("sum_income", s)):
            value = got.loc[educ, col]
            assert got.loc[educ, f"{col}_status"] == CellStatus.ROUNDED.value
            assert value % 5 == 0
            assert abs(value - true) <= 2.5
        assert got.loc[educ, "mean_income"] == pytest.approx(m)
    assert set(result.report[result.report["status"] == "rounded"]["rule"]) == {
        "disclosure.rounding"
    }


# ---- (f) no row-level value leaves ----------------------------------------------------------
UNIQUE_INCOME = 987_654_321
UNIQUE_CATEGORY = "ZZ-UNIQUE-CATEGORY"
LEAK_PATTERNS = (
    "987654321",
    "987,654,321",
    "987_654_321",
    "9.87654321e",
    "9.87654321E",
    UNIQUE_CATEGORY,
    UNIQUE_CATEGORY.lower(),
)


def _leaks(text: str) -> list[str]:
    return [p for p in LEAK_PATTERNS if p in text]


def test_no_row_level_value_leaves_the_server(
    world_factory: Callable[..., World], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sandbox")
    frame = pums_frame()
    frame["category"] = np.resize(["cat-a", "cat-b", "cat-c", "cat-d"], len(frame))
    planted = frame.iloc[[0]].assign(
        pid=9001, income=float(UNIQUE_INCOME), category=UNIQUE_CATEGORY, age=44
    )
    frame = pd.concat([frame, planted], ignore_index=True)
    world = csv_world(
        world_factory,
        tmp_path,
        {
            "leaky": (
                frame,
                policy(
                    "leaky",
                    "  category: {role: dimension}\n  sex: {role: dimension}\n"
                    "  age: {role: dimension}\n"
                    "  income: {role: measure, bounds: [0, 1000000000], "
                    "aggregates: [sum, mean]}\n",
                    "category, sex, age, income",
                ),
            )
        },
    )
    add_project(world, "p", (("leaky", "research"),))
    ana = world.client("ana")
    threshold, _ = _few_oldest_threshold()
    jobs = {
        "by category": Query("leaky").group_by("category").count().sum("income").mean("income"),
        "by age": Query("leaky").group_by("age").count().mean("income"),
        "by category and age": Query("leaky").group_by("category", "age").count().sum("income"),
        "filtered": Query("leaky").where("age", ">=", 40).group_by("category").mean("income"),
        "small query set": Query("leaky").where("age", ">=", threshold).mean("income"),
        "measure filtered": Query("leaky").where("income", ">=", 0).sum("income"),
        "identifier": Query("leaky").group_by("pid").sum("income"),
        "measure grouped": Query("leaky").group_by("income").count(),
        "aggregate on dimension": Query("leaky").mean("category"),
        "wrong value type": Query("leaky").where("category", "=", 3).count(),
        "unknown column": Query("leaky").group_by("salary").count(),
        # Built as a JobSpec: the client-side builder would already refuse this one.
        "duplicate output": JobSpec(
            "leaky", "p", "research", (Aggregate(AggFunc.COUNT, alias="category"),), ("category",)
        ),
    }
    texts: list[str] = []
    results = {}
    refusals = {}
    for label, query in jobs.items():
        try:
            results[label] = ana.run(query, project="p", purpose="research", timeout=30)
        except SandboxError as exc:
            refusals[label] = exc
            texts += [str(exc), exc.message, repr(exc)]
    # The mix really exercised every path.
    assert {"by category", "by age", "by category and age", "filtered"} <= results.keys()
    assert isinstance(refusals["small query set"], DisclosureControl)
    assert isinstance(refusals["identifier"], PolicyDenied)
    assert isinstance(refusals["wrong value type"], InvalidJobSpec | PolicyDenied)
    assert any(r.suppressed for r in results.values())

    # The planted person's cell is suppressed; its value is nowhere in any released cell.
    by_category = results["by category"]
    unique_rows = [r for r in by_category.table.rows if r.keys == (UNIQUE_CATEGORY,)]
    for row in unique_rows:
        assert all(c.status == CellStatus.SUPPRESSED and c.value is None for c in row.cells)
    for result in results.values():
        cells = [c.value for r in result.table.rows for c in r.cells]
        assert not _leaks(json.dumps(cells)), result
        assert float(UNIQUE_INCOME) not in cells
        assert not _leaks(result.to_dataframe().drop(
            columns=list(result.table.key_columns)).to_string())  # fmt: skip
        assert not _leaks(json.dumps(result.table.settings))
        # Keys other than the (declared-nowhere) category itself never carry the value.
        keys = [k for r in result.table.rows for k in r.keys if k != UNIQUE_CATEGORY]
        assert not _leaks(json.dumps(keys))

    texts += [repr(j) for j in ana.jobs(project="p", limit=1000)]
    texts += [j.message for j in ana.jobs(project="p", limit=1000)]
    texts.append(repr(ana.describe("leaky")))
    texts.append(repr(ana.quota("p")))
    entries = audit_entries(world)
    texts.append(json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    texts.append(caplog.text)
    texts += [str(r.msg) + " " + str(r.args) for r in caplog.records]
    assert len(entries) > len(jobs)
    for text in texts:
        assert not _leaks(text), text


def test_measure_values_are_clamped_to_declared_bounds(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    """A measure's declared bounds clamp its values (DESIGN §4; the loader says so too).

    One person far above the upper bound must not move a sum by more than the bound.
    """
    frame = pums_frame()
    planted = frame.iloc[[0]].assign(pid=9001, income=float(UNIQUE_INCOME))
    frame = pd.concat([frame, planted], ignore_index=True)
    upper = 500_000
    world = csv_world(
        world_factory,
        tmp_path,
        {
            "clamped": (
                frame,
                policy(
                    "clamped",
                    "  sex: {role: dimension}\n"
                    f"  income: {{role: measure, bounds: [0, {upper}], aggregates: [sum, mean]}}\n",
                    "sex, income",
                ),
            )
        },
    )
    add_project(world, "p", (("clamped", "research"),))
    result = world.client("ana").run(
        Query("clamped").sum("income").mean("income"), project="p", purpose="research"
    )
    released_sum, released_mean = (c.value for c in result.table.rows[0].cells)
    clipped = frame["income"].clip(0, upper)
    assert frame["income"].sum() - clipped.sum() > upper  # clamping makes a big difference
    assert released_sum == pytest.approx(clipped.sum())
    assert released_mean == pytest.approx(clipped.mean())
