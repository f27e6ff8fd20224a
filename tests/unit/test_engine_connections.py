"""The engine keeps one DuckDB connection per worker thread (real DuckDB, no mocks)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox._errors import JobCancelled
from sandbox.engine import Engine

LONG = "SELECT count(*) FROM range(1000000000000) a"  # runs until interrupted


def test_an_interrupted_worker_connection_runs_the_next_job() -> None:
    engine = Engine(threads=1)
    worker = ThreadPoolExecutor(max_workers=1)  # every job below runs on this one thread
    try:
        long_job = worker.submit(engine._execute, "job-a", LONG, [])
        deadline = time.monotonic() + 10
        while "job-a" not in engine._running:
            assert time.monotonic() < deadline, "the long query never started"
            time.sleep(0.01)
        first = engine._running["job-a"]
        # Again until it ends, as the pipeline's watcher does: an interrupt that lands before
        # the query has started is lost (DuckDB clears it when a query begins).
        while not long_job.done():
            assert time.monotonic() < deadline + 20, "the interrupt never stopped the query"
            engine.interrupt("job-a")
            time.sleep(0.05)
        with pytest.raises(JobCancelled):
            long_job.result()

        assert worker.submit(engine._execute, "job-b", "SELECT 42", []).result(10) == [(42,)]
        # A late interrupt of a job that already ended reaches nothing that runs next.
        engine.interrupt("job-b")
        assert worker.submit(engine._execute, "job-c", "SELECT 7", []).result(10) == [(7,)]
        assert worker.submit(lambda: engine._thread.cursor).result(10) is first  # kept
    finally:
        worker.shutdown()
        engine.close()
