"""Time SmartNoise SQL on the DP benchmark queries. Run by bench/bench_dp.py, not by hand.

    bench/.venv-smartnoise/bin/python bench/smartnoise_runner.py SPEC.json > RESULT.json

Runs in its own virtualenv (SmartNoise SQL pins an older OpenDP than the sandbox uses) and
never imports the sandbox package. SPEC.json holds ``data`` (a Parquet file), ``metadata``
(SmartNoise metadata YAML), ``table`` (the metadata's schema.table), ``epsilon``, ``delta``,
``runs`` and ``queries`` (name → SmartNoise SQL). The data is read with pandas and handed to
SmartNoise's pandas reader (which loads it into an in-memory SQLite database); that load is
timed on its own and is not part of any query time. Each query runs once to warm up, then
``runs`` times, the queries interleaved. Prints JSON: per query the timed runs in seconds and
the first row of the last answer; progress goes to stderr.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
import snsql


def main() -> None:
    spec: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    start = time.perf_counter()
    frame = pd.read_parquet(spec["data"])
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    reader = snsql.from_df(
        frame,
        privacy=snsql.Privacy(epsilon=spec["epsilon"], delta=spec["delta"]),
        metadata=spec["metadata"],
    )
    load_s = time.perf_counter() - start
    print(
        f"  smartnoise: {len(frame):,} rows read in {read_s:.1f}s, "
        f"loaded into its reader in {load_s:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    queries: dict[str, str] = spec["queries"]
    times: dict[str, list[float]] = {name: [] for name in queries}
    warm: dict[str, float] = {}
    answers: dict[str, list[Any]] = {}
    for run in range(spec["runs"] + 1):  # run 0 warms up (parsing, SQLite page cache)
        for name, sql in queries.items():
            start = time.perf_counter()
            answer = reader.execute(sql)
            elapsed = time.perf_counter() - start
            if run == 0:
                warm[name] = elapsed
            else:
                times[name].append(elapsed)
            answers[name] = answer
        print(f"  smartnoise: round {run}/{spec['runs']} done", file=sys.stderr, flush=True)
    result = {
        "rows": len(frame),
        "read_s": read_s,
        "load_s": load_s,
        "versions": {p: version(p) for p in ("smartnoise-sql", "opendp", "pandas")},
        "queries": {
            name: {
                "warm_s": warm[name],
                "times_s": times[name],
                "median_s": statistics.median(times[name]) if times[name] else warm[name],
                "columns": [str(c) for c in answers[name][0]],
                "cells": len(answers[name]) - 1,
                "first_row": [_plain(v) for v in answers[name][1]]
                if len(answers[name]) > 1
                else [],
            }
            for name in queries
        },
    }
    json.dump(result, sys.stdout)


def _plain(value: Any) -> Any:
    """A JSON-able copy of one answer value (numpy scalars → Python numbers)."""
    return value.item() if hasattr(value, "item") else value


if __name__ == "__main__":
    main()
