"""Benchmark: differential-privacy mode, sandbox end to end vs raw DuckDB vs SmartNoise SQL.

    python bench/bench_dp.py                        # 1.2 M and 12 M rows, 7 interleaved runs
    python bench/bench_dp.py --sizes 100000 --runs 5 --sn-runs 3
    python bench/bench_dp.py --skip-smartnoise

Five queries on PUMS-shaped data (rows resampled from the 1,000-person US Census PUMS sample in
shared/data/pums, one row per person): count by sex; mean income by race; sum of income by
sex x education; age histogram in 10-year bins; count of persons over 60 and married.

* sandbox: ``client.sql`` end to end against ``sandbox serve`` in its own process (client →
  gRPC → policy → budget reservation → DuckDB → OpenDP discrete Laplace noise → log → client).
  The policy puts the dataset in DP mode (``disclosure.noise``). A repeated DP query is answered
  from its first release (no new noise, no charge, no data read), so every timed run gives its
  output a fresh alias: each timed job is a new release, charged to the budget. The time of
  such a repeat is shown too ("repeat ms").
* duckdb: the same query, exact and without any policy, on the same Parquet file with the same
  number of threads.
* smartnoise: SmartNoise SQL (pandas reader, i.e. the data loaded into in-memory SQLite, which
  runs one thread) with the same bounds, ε and discrete Laplace mechanism, installed in its own
  virtualenv (bench/.venv-smartnoise, made on first use) and run by bench/smartnoise_runner.py
  after the sandbox runs. Loading the data into its reader is timed apart, not per query.

Sandbox and DuckDB runs are interleaved; each table shows medians. Results go to
``<workdir>/results_dp.json`` (``results_dp_person_key.json`` with ``--sn-person-key``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from bench_jobs import REPO, THREADS, create_bench_project, start_server, stop_server, timed

from sandbox import Client, Result

PUMS_SAMPLE = REPO.parent / "shared" / "data" / "pums" / "PUMS.csv"
SMARTNOISE_VENV = REPO / "bench" / ".venv-smartnoise"
SMARTNOISE_PACKAGES = ("smartnoise-sql==1.0.10", "pyarrow")
RUNNER = REPO / "bench" / "smartnoise_runner.py"
PURPOSE = "dp-benchmark"
AGE_BINS = list(range(0, 101, 10))
INCOME_BOUNDS = (0, 500_000)
CATEGORIES = {
    "sex": [0, 1],
    "race": list(range(1, 7)),
    "educ": list(range(1, 17)),
    "married": [0, 1],
}
BUDGET = 100_000
"""ε per project and per population: ample for any run of this script (checked in main)."""
SN_TABLE = "PUMS.PUMS"


@dataclass(frozen=True)
class DPQuery:
    name: str
    sandbox: str
    """The sandbox SQL subset; ``{ds}`` is the dataset id, ``{tag}`` makes the alias unique."""
    duckdb: str
    """Raw DuckDB over ``read_parquet(?)``."""
    smartnoise: str
    """SmartNoise SQL over ``{table}``."""


QUERIES = (
    DPQuery(
        "count by sex",
        "SELECT sex, COUNT(*) AS n{tag} FROM {ds} GROUP BY sex",
        "SELECT sex, count(*) AS n FROM read_parquet(?) GROUP BY sex",
        "SELECT sex, COUNT(*) AS n FROM {table} GROUP BY sex",
    ),
    DPQuery(
        "mean income by race",
        "SELECT race, AVG(income) AS mean_income{tag} FROM {ds} GROUP BY race",
        "SELECT race, avg(income) AS mean_income FROM read_parquet(?) GROUP BY race",
        "SELECT race, AVG(income) AS mean_income FROM {table} GROUP BY race",
    ),
    DPQuery(
        "sum income by sex x educ",
        "SELECT sex, educ, SUM(income) AS total{tag} FROM {ds} GROUP BY sex, educ",
        "SELECT sex, educ, sum(income) AS total FROM read_parquet(?) GROUP BY sex, educ",
        "SELECT sex, educ, SUM(income) AS total FROM {table} GROUP BY sex, educ",
    ),
    DPQuery(
        "age histogram (10y bins)",
        "SELECT age, COUNT(*) AS n{tag} FROM {ds} GROUP BY age",  # bins come from the policy
        "SELECT age // 10 * 10 AS decade, count(*) AS n FROM read_parquet(?) GROUP BY decade",
        "SELECT FLOOR(age / 10) * 10 AS decade, COUNT(*) AS n FROM {table} "
        "GROUP BY FLOOR(age / 10) * 10",
    ),
    DPQuery(
        "count age>60 & married",
        "SELECT COUNT(*) AS n{tag} FROM {ds} WHERE age > 60 AND married = 1",
        "SELECT count(*) AS n FROM read_parquet(?) WHERE age > 60 AND married = 1",
        "SELECT COUNT(*) AS n FROM {table} WHERE age > 60 AND married = 1",
    ),
)


def dataset_id(size: int) -> str:
    return f"pums_{size}"


def parquet_path(work: Path, size: int) -> Path:
    return work / "data" / str(size) / "pums.parquet"


# ---- data and policies ---------------------------------------------------------------------


def generate_pums(sample: Path, size: int, out: Path, seed: int = 7) -> None:
    """``size`` persons: whole rows of the PUMS sample drawn with replacement (seeded).

    Rows are drawn whole, so the columns keep their joint distribution. Each income is spread
    by a uniform ±10 % (zeros stay zero) so the column has many distinct values, as real
    incomes do; ``pid`` is a unique person id in random order.
    """
    base = pd.read_csv(sample)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(base), size)
    income = base["income"].to_numpy(np.float64)[rows] * rng.uniform(0.9, 1.1, size)
    columns: dict[str, Any] = {"pid": rng.permutation(size).astype(np.int64) + 1}
    for name in ("age", "sex", "educ", "race"):
        columns[name] = base[name].to_numpy(np.int32)[rows]
    columns["income"] = np.clip(np.rint(income), *INCOME_BOUNDS).astype(np.int64)
    columns["married"] = base["married"].to_numpy(np.int32)[rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    pq.write_table(pa.table(columns), partial)
    partial.replace(out)  # a cached file is always a complete one


def dp_policy(size: int, epsilon: float) -> dict[str, Any]:
    """The DP policy of one benchmark dataset (written as YAML, validated before use)."""
    return {
        "dataset": dataset_id(size),
        "version": 1,
        "title": f"PUMS-shaped persons, {size:,} rows (DP benchmark)",
        "description": "US Census PUMS sample rows resampled with replacement; one per person.",
        "steward": "benchmark",
        "source": f"{size}/pums.parquet",
        "person_key": "pid",
        "population": f"pums-bench-{size}",
        "columns": {
            "pid": {"role": "identifier", "description": "Unique person id; the privacy unit."},
            "age": {"role": "dimension", "description": "Age in years.", "bins": AGE_BINS},
            "sex": {"role": "dimension", "values": CATEGORIES["sex"]},
            "educ": {
                "role": "dimension",
                "description": "Education code.",
                "values": CATEGORIES["educ"],
            },
            "race": {
                "role": "dimension",
                "description": "Race code.",
                "values": CATEGORIES["race"],
            },
            "married": {"role": "dimension", "values": CATEGORIES["married"]},
            "income": {
                "role": "measure",
                "description": "Annual income in dollars.",
                "bounds": list(INCOME_BOUNDS),
                "aggregates": ["sum", "mean"],
            },
        },
        "purposes": {
            PURPOSE: {
                "description": "Benchmark of differentially private aggregates.",
                "columns": ["age", "sex", "educ", "race", "married", "income"],
            }
        },
        "disclosure": {
            "min_persons_per_cell": 10,
            "rounding_base": 1,
            "noise": {"mechanism": "discrete_laplace", "epsilon_per_job": epsilon},
            "budget": {
                "epsilon_per_project": BUDGET,
                "epsilon_per_population": BUDGET,
                "window_days": 365,
            },
        },
        "limits": {"max_groups": 1000, "max_filters": 16, "max_group_by": 4},
    }


def smartnoise_metadata(size: int, person_key: bool) -> dict[str, Any]:
    """SmartNoise metadata with the policy's bounds and no key thresholding (public keys).

    By default each row is declared a person (``row_privacy``), which is what the sandbox
    knows from registration (one row per person) and SmartNoise's fastest plan. With
    ``person_key`` the privacy unit is ``pid`` instead (``private_id``, at most one row per
    person), as shared/data/pums/PUMS_pid.yaml declares it: SmartNoise then first groups by
    person in a subquery.
    """
    schema, table = SN_TABLE.split(".")
    privacy_unit: dict[str, Any] = (
        {"max_ids": 1, "pid": {"type": "int", "private_id": True}}
        if person_key
        else {"row_privacy": True, "pid": {"type": "int"}}
    )
    columns: dict[str, Any] = {
        **privacy_unit,
        "censor_dims": False,  # like the sandbox's public key sets: no key thresholding
        "rows": size,
        "age": {"type": "int", "lower": AGE_BINS[0], "upper": AGE_BINS[-1]},
        "sex": {"type": "int"},
        "educ": {"type": "int"},
        "race": {"type": "int"},
        "income": {"type": "int", "lower": INCOME_BOUNDS[0], "upper": INCOME_BOUNDS[1]},
        "married": {"type": "int"},
    }
    return {"": {schema: {table: columns}}}


def prepare(work: Path, sizes: list[int], sample: Path, epsilon: float) -> None:
    policies = work / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    for old in policies.glob("*.yaml"):
        old.unlink()  # serve exactly the datasets of this run
    for size in sizes:
        path = parquet_path(work, size)
        if not path.exists():
            start = time.perf_counter()
            generate_pums(sample, size, path)
            print(f"generated {size:,} PUMS-shaped rows in {time.perf_counter() - start:.1f}s")
        text = yaml.safe_dump(dp_policy(size, epsilon), sort_keys=False)
        (policies / f"{dataset_id(size)}.yaml").write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "sandbox", "policy", "validate", str(policies)],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise SystemExit(f"policy validation failed:\n{check.stdout}{check.stderr}")
    print(f"sandbox policy validate {policies}: ok")


# ---- sandbox vs DuckDB ---------------------------------------------------------------------


def _key(value: Any) -> Any:
    """Group keys made comparable: a bin label "[60, 70)" → 60; numbers → int."""
    if isinstance(value, str) and value.startswith("["):
        return int(float(value[1:].split(",")[0]))
    return int(value) if isinstance(value, int | float) else value


def _compare(result: Result, exact: list[tuple[Any, ...]]) -> tuple[int, int, int]:
    """Released cells compared with the exact answer: (compared, within their CI, no CI)."""
    released = {
        tuple(_key(k) for k in row.keys): row.cells[0]
        for row in result.table.rows
        if row.cells[0].value is not None  # suppressed: noisy count under the threshold
    }
    compared = within = no_ci = 0
    for *keys, value in exact:
        cell = released.get(tuple(_key(k) for k in keys))
        if cell is None or cell.value is None:
            continue
        compared += 1
        if cell.ci is None:
            no_ci += 1
        elif abs(float(cell.value) - float(value)) <= cell.ci:
            within += 1
    return compared, within, no_ci


def bench_size(client: Client, work: Path, size: int, runs: int) -> list[dict[str, Any]]:
    ds = dataset_id(size)
    path = str(parquet_path(work, size))
    raw = duckdb.connect(config={"threads": THREADS})

    def sandbox_sql(query: DPQuery, tag: str) -> Result:
        sql = query.sandbox.format(ds=ds, tag=tag)
        return client.sql(sql, project="bench", purpose=PURPOSE, timeout=600)

    def duckdb_sql(query: DPQuery) -> list[tuple[Any, ...]]:
        return raw.execute(query.duckdb, [path]).fetchall()

    # Warm both (file cache, metadata) and check the sandbox really noised the right numbers.
    for query in QUERIES:
        first = sandbox_sql(query, "_w")
        again = sandbox_sql(query, "_w")
        exact = duckdb_sql(query)
        privacy = first.table.privacy
        if privacy.get("mechanism") != "discrete_laplace":
            raise RuntimeError(f"{query.name}: not a DP release: {privacy}")
        if again.digest != first.digest:
            raise RuntimeError(f"{query.name}: a repeated query was not answered from its release")
        compared, within, no_ci = _compare(first, exact)
        print(
            f"  check {query.name:<26} {privacy['mechanism']}, ε {privacy['epsilon']}: "
            f"{within}/{compared} released cells within their {privacy['confidence']} interval"
            f" of the exact value" + (f" ({no_ci} without an interval)" if no_ci else "")
        )
    samples: dict[str, dict[str, list[float]]] = {
        q.name: {"sandbox": [], "duckdb": [], "repeat": []} for q in QUERIES
    }
    for run in range(runs):  # interleaved, so machine noise hits every engine alike
        for query in QUERIES:
            s = samples[query.name]
            s["sandbox"].append(timed(functools.partial(sandbox_sql, query, f"_{run}")))
            s["duckdb"].append(timed(functools.partial(duckdb_sql, query)))
            s["repeat"].append(timed(functools.partial(sandbox_sql, query, "_w")))
    raw.close()
    rows = []
    for query in QUERIES:
        s = samples[query.name]
        sandbox_ms = statistics.median(s["sandbox"]) * 1000
        duckdb_ms = statistics.median(s["duckdb"]) * 1000
        rows.append(
            {
                "size": size,
                "query": query.name,
                "sandbox_ms": sandbox_ms,
                "duckdb_ms": duckdb_ms,
                "ratio": sandbox_ms / duckdb_ms,
                "repeat_ms": statistics.median(s["repeat"]) * 1000,
                "runs": runs,
                "samples_ms": {k: [t * 1000 for t in v] for k, v in s.items()},
            }
        )
    return rows


# ---- SmartNoise SQL ------------------------------------------------------------------------


def smartnoise_python(venv: Path) -> Path:
    """The virtualenv's python, creating the venv and installing SmartNoise SQL on first use."""
    python = venv / "bin" / "python"
    probe = [str(python), "-I", "-c", "import snsql, pyarrow"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with {', '.join(SMARTNOISE_PACKAGES)} (first use only)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *SMARTNOISE_PACKAGES], check=True
    )
    subprocess.run(probe, check=True)
    return python


def bench_smartnoise(
    python: Path, work: Path, size: int, runs: int, epsilon: float, person_key: bool
) -> dict[str, Any]:
    out = work / "smartnoise"
    out.mkdir(exist_ok=True)
    name = f"{dataset_id(size)}_{'person_key' if person_key else 'rows'}"
    metadata = out / f"{name}.yaml"
    metadata.write_text(yaml.safe_dump(smartnoise_metadata(size, person_key), sort_keys=False))
    spec = {
        "data": str(parquet_path(work, size)),
        "metadata": str(metadata),
        "epsilon": epsilon,
        "delta": 0.0,
        "runs": runs,
        "queries": {q.name: q.smartnoise.format(table=SN_TABLE) for q in QUERIES},
    }
    spec_file = out / f"{name}.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [str(python), "-I", str(RUNNER), str(spec_file)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---- report --------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], with_smartnoise: bool) -> None:
    head = f"{'query':<26} {'sandbox ms':>10} {'duckdb ms':>9} {'ratio':>5} {'repeat ms':>9}"
    if with_smartnoise:
        head += f" {'smartnoise ms':>13} {'speedup':>7}"
    print(head)
    for r in rows:
        line = (
            f"{r['query']:<26} {r['sandbox_ms']:>10.1f} {r['duckdb_ms']:>9.1f} "
            f"{r['ratio']:>5.2f} {r['repeat_ms']:>9.1f}"
        )
        if with_smartnoise and "smartnoise_ms" in r:
            line += f" {r['smartnoise_ms']:>13.1f} {r['speedup']:>6.0f}x"
        print(line)


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_200_000, 12_000_000])
    parser.add_argument("--runs", type=int, default=7, help="timed sandbox/DuckDB runs")
    parser.add_argument("--sn-runs", type=int, default=5, help="timed SmartNoise runs")
    parser.add_argument(
        "--sn-runs-large",
        type=int,
        default=3,
        help="timed SmartNoise runs at sizes of 10 M rows and more (it is slow there)",
    )
    parser.add_argument("--skip-smartnoise", action="store_true")
    parser.add_argument(
        "--sn-person-key",
        action="store_true",
        help="SmartNoise privacy unit: pid as private_id (default: one row = one person)",
    )
    parser.add_argument("--epsilon", type=float, default=1.0, help="ε per job (and per query)")
    parser.add_argument("--pums", type=Path, default=PUMS_SAMPLE, help="the PUMS sample CSV")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "dp")
    parser.add_argument("--smartnoise-venv", type=Path, default=SMARTNOISE_VENV)
    args = parser.parse_args()
    if len(QUERIES) * (args.runs + 1) * args.epsilon > BUDGET:
        parser.error(f"--runs x --epsilon would spend more than the policy budget ε {BUDGET}")
    work = args.workdir.resolve()
    prepare(work, args.sizes, args.pums, args.epsilon)
    results: dict[int, list[dict[str, Any]]] = {}
    proc, target, tokens = start_server(work)
    try:
        create_bench_project(
            target, tokens["steward"], [dataset_id(s) for s in args.sizes], PURPOSE
        )
        print(
            f"\n{os.cpu_count()} cores; engine threads {THREADS}; DP: discrete Laplace, "
            f"ε {args.epsilon:g} per job; median of {args.runs} interleaved runs"
        )
        with Client(target, token=tokens["ana"], timeout=600) as ana:
            for size in args.sizes:
                print(f"\n{size:,} rows: sandbox (DP) end to end vs raw DuckDB", flush=True)
                results[size] = bench_size(ana, work, size, args.runs)
                print_table(results[size], with_smartnoise=False)
    finally:
        stop_server(proc)
    smartnoise: dict[int, dict[str, Any]] = {}
    if not args.skip_smartnoise:
        python = smartnoise_python(args.smartnoise_venv.resolve())
        for size in args.sizes:
            runs = args.sn_runs_large if size >= 10_000_000 else args.sn_runs
            print(f"\n{size:,} rows: SmartNoise SQL, median of {runs} runs", flush=True)
            smartnoise[size] = bench_smartnoise(
                python, work, size, runs, args.epsilon, args.sn_person_key
            )
            for row in results[size]:
                sn = smartnoise[size]["queries"][row["query"]]
                row["smartnoise_ms"] = sn["median_s"] * 1000
                row["smartnoise_runs"] = len(sn["times_s"])
                row["speedup"] = row["smartnoise_ms"] / row["sandbox_ms"]
        versions = next(iter(smartnoise.values()))["versions"]
        unit = "pid (private_id)" if args.sn_person_key else "row (row_privacy)"
        print(
            f"\nSmartNoise: {', '.join(f'{k} {v}' for k, v in versions.items())}; "
            f"privacy unit {unit}"
        )
    for size in args.sizes:
        note = ""
        if size in smartnoise:
            sn = smartnoise[size]
            runs = results[size][0]["smartnoise_runs"]
            note = (
                f"; SmartNoise median of {runs} (its pandas reader took "
                f"{sn['load_s']:.1f}s to load the data, not counted)"
            )
        print(f"\n{size:,} rows, DP, median of {args.runs} runs{note}")
        print_table(results[size], with_smartnoise=size in smartnoise)
    all_rows = [r for size in args.sizes for r in results[size]]
    worst = max(all_rows, key=lambda r: r["ratio"])
    print(
        f"\ntarget sandbox <= 1.5x DuckDB: worst {worst['ratio']:.2f}x ({worst['query']}, "
        f"{worst['size']:,} rows) {'met' if worst['ratio'] <= 1.5 else 'MISSED'}"
    )
    if smartnoise:
        slow = min((r for r in all_rows if "speedup" in r), key=lambda r: r["speedup"])
        print(
            f"target >= 50x faster than SmartNoise: least {slow['speedup']:.0f}x "
            f"({slow['query']}, {slow['size']:,} rows) "
            f"{'met' if slow['speedup'] >= 50 else 'MISSED'}"
        )
    total = time.perf_counter() - started
    saved = work / ("results_dp_person_key.json" if args.sn_person_key else "results_dp.json")
    saved.write_text(
        json.dumps({"rows": all_rows, "smartnoise": smartnoise, "total_s": total}, indent=2)
    )
    print(f"benchmark took {total:.0f}s; results in {saved}")


if __name__ == "__main__":
    main()
