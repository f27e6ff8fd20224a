"""Benchmark: the floor of the small-job path on this machine, beside the sandbox itself.

The floor is a bare gRPC server with the sandbox's serving layout (processes sharing a port,
a pool of RPC threads, 2 job workers per process) that, per call, does only what any job must:
hand the call to a worker thread, commit one SQLite transaction (the admission) under the
store's cross-process write lock, run the small job's query on an in-memory DuckDB copy of the
file, commit a second transaction (the release), and answer. No policy, disclosure control,
audit tree, signing, sealing or protobuf conversion. Both run in alternating rounds with the
same 16 closed-loop clients, so one window of the machine's speed measures both.

    python bench/bench_floor.py --rounds 3
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing as mp
import os
import socket
import sqlite3
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_jobs

_METHOD = "/floor.Floor/Job"
_REQUEST = b"x" * 300  # about the size of the small job's SubmitJobRequest


def _serve(port: int, store: str, parquet: str, workers: int, stop: mp.synchronize.Event) -> None:
    engine = duckdb.connect(config={"threads": bench_jobs.THREADS})
    engine.execute("CREATE TABLE t AS SELECT * FROM read_parquet(?)", [parquet])
    local = threading.local()
    write_lock = threading.Lock()
    lock_file = os.open(store + ".lock", os.O_RDWR | os.O_CREAT, 0o600)

    def conns() -> tuple[sqlite3.Connection, duckdb.DuckDBPyConnection]:
        if not hasattr(local, "db"):
            local.db = sqlite3.connect(store, timeout=30.0, isolation_level=None)
            local.db.execute("PRAGMA synchronous=NORMAL")
            local.cursor = engine.cursor()
        return local.db, local.cursor

    def transaction(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> None:
        with write_lock:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute(sql, params)
                db.execute("INSERT INTO log (entry) VALUES (?)", ("e" * 400,))
                db.execute("COMMIT")
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def job(request: bytes) -> bytes:
        db, cursor = conns()
        job_id = os.urandom(16).hex()
        transaction(db, "INSERT INTO jobs (job_id, state) VALUES (?, 'RUNNING')", (job_id,))
        rows = cursor.execute(bench_jobs.RAW_SMALL, [18]).fetchall()
        transaction(db, "UPDATE jobs SET state = 'SUCCEEDED' WHERE job_id = ?", (job_id,))
        return repr(rows).encode().ljust(300)

    pool = ThreadPoolExecutor(workers)

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        return pool.submit(job, request).result()

    server = grpc.server(
        ThreadPoolExecutor(32),
        handlers=[
            grpc.method_handlers_generic_handler(
                "floor.Floor", {"Job": grpc.unary_unary_rpc_method_handler(handle)}
            )
        ],
        options=[("grpc.so_reuseport", 1)],
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop.wait()
    server.stop(1).wait()


def start_floor(
    work: Path, processes: int, workers: int
) -> tuple[list[mp.process.BaseProcess], str, mp.synchronize.Event]:
    store = work / "floor.sqlite3"
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(store) + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(store, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL)")
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL)")
    db.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parquet = str(work / "data" / "10000" / "residents.parquet")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [
        ctx.Process(target=_serve, args=(port, str(store), parquet, workers, stop))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(_METHOD)
        bench_jobs.wait_until(lambda: bool(call(_REQUEST, timeout=1)))
    return procs, target, stop


def closed_loop(target: str, clients: int, jobs: int, pids: list[int]) -> dict[str, float]:
    """Each of ``clients`` threads sends its next call when the last returns."""
    latencies: list[float] = []
    lock = threading.Lock()
    begin = threading.Barrier(clients + 1)

    def worker() -> None:
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_unary(_METHOD)
            call(_REQUEST)
            mine = []
            begin.wait()
            for _ in range(jobs // clients):
                start = time.perf_counter()
                call(_REQUEST)
                mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    begin.wait()
    cpu = sum(bench_jobs.cpu_seconds(p) for p in pids)
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = sum(bench_jobs.cpu_seconds(p) for p in pids) - cpu
    latencies.sort()
    return {
        "jobs_per_s": len(latencies) / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "server_cpu_ms": cpu / len(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=3200)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=bench_jobs.REPO / "bench" / "out")
    args = parser.parse_args()
    work = args.workdir.resolve()
    size = 10_000
    bench_jobs.prepare(work, [size], size)
    rows: dict[str, list[dict[str, float]]] = {"floor": [], "sandbox": []}
    print(f"{os.cpu_count()} cores; {args.clients} closed-loop clients; {args.jobs} jobs a run")
    for r in range(args.rounds):
        procs, target, stop = start_floor(work, args.processes, args.workers)
        try:
            pids = [p.pid for p in procs if p.pid is not None]
            closed_loop(target, args.clients, args.jobs // 4, pids)  # warm up
            rows["floor"].append(closed_loop(target, args.clients, args.jobs, pids))
        finally:
            stop.set()
            for p in procs:
                p.join(30)
        proc, target, tokens = bench_jobs.start_server(work, args.processes, args.workers)
        try:
            ds = bench_jobs.dataset_id(size)
            bench_jobs.create_bench_project(
                target, tokens["steward"], [ds], "public-health-research"
            )
            bench_jobs.bench_throughput(target, tokens["ana"], size, args.clients, 800, proc.pid)
            rows["sandbox"].append(
                bench_jobs.bench_throughput(
                    target, tokens["ana"], size, args.clients, args.jobs, proc.pid
                )
            )
        finally:
            bench_jobs.stop_server(proc)
        for name in rows:
            t = rows[name][-1]
            print(
                f"round {r + 1} {name:8s}: {t['jobs_per_s']:4.0f} jobs/s, p50 "
                f"{t['p50_ms']:5.1f} ms, p99 {t['p99_ms']:5.1f} ms, server CPU "
                f"{t['server_cpu_ms']:.2f} ms/job",
                flush=True,
            )
    for name, runs in rows.items():
        print(
            f"median {name:8s}: {statistics.median(t['jobs_per_s'] for t in runs):4.0f} jobs/s, "
            f"p99 {statistics.median(t['p99_ms'] for t in runs):5.1f} ms, server CPU "
            f"{statistics.median(t['server_cpu_ms'] for t in runs):.2f} ms/job"
        )


if __name__ == "__main__":
    main()
