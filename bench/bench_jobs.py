"""Benchmark: sandbox end to end vs raw DuckDB on the same file, and small-job throughput.

    python bench/bench_jobs.py                      # 1 M and 12 M residents, 7 runs each
    python bench/bench_jobs.py --sizes 1000000 --runs 5 --small-jobs 2000

The server runs as a separate process (``sandbox serve``) on a loopback port; the client and
DuckDB run here. Both engines use the same number of threads. Ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandbox import Client, Project, QuotaLimits, Role
from sandbox.demo import generate_demo_data
from sandbox.state import Database, Principals

REPO = Path(__file__).resolve().parents[1]
QUERY = (
    "SELECT district, COUNT(*) AS n, AVG(monthly_income) AS mean_income FROM {ds} GROUP BY district"
)
RAW = (
    "SELECT district, count(*) AS n, avg(monthly_income) AS mean_income "
    "FROM read_parquet(?) GROUP BY district"
)
SMALL = "SELECT sex, COUNT(*) AS n FROM {ds} WHERE age >= 18 GROUP BY sex"
RAW_SMALL = "SELECT sex, count(*) AS n FROM t WHERE age >= ? GROUP BY sex"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def dataset_id(size: int) -> str:
    return f"residents_{size}"


def prepare(work: Path, sizes: list[int], small: int) -> None:
    policy_text = (REPO / "policies" / "residents.yaml").read_text()
    (work / "policies").mkdir(parents=True, exist_ok=True)
    for size in sorted({*sizes, small}):
        data = work / "data" / str(size)
        if not (data / "residents.parquet").exists():
            t = time.perf_counter()
            generate_demo_data(data, size, seed=7)
            print(f"generated {size:,} residents in {time.perf_counter() - t:.1f}s", flush=True)
        ds = dataset_id(size)
        text = policy_text.replace("dataset: residents", f"dataset: {ds}", 1)
        text = text.replace("source: residents.parquet", f"source: {size}/residents.parquet", 1)
        (work / "policies" / f"{ds}.yaml").write_text(text)


def start_server(
    work: Path, processes: int = 1, workers: int = 2, process_ports: bool = True
) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """A ``sandbox serve`` on the prepared ``work`` dir; with ``processes`` above 1 and
    ``process_ports``, each process also listens on a port of its own (process_port_base)."""
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    port, *own = free_ports(1 + processes if processes > 1 and process_ports else 1)
    config = work / "sandbox.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "state"\ndata_root = "data"\n'
        f'policy_dir = "policies"\nworkers = {workers}\nrpc_threads = 32\n'
        "max_concurrent_rpcs = 128\n"
        f"engine_threads = {THREADS}\nprocesses = {processes}\nallow_plaintext_tokens = true\n"
        + (f"process_port_base = {own[0]}\n" if own else "")
    )
    db = Database(state / "state.sqlite3")
    tokens = {}
    with db.write() as conn:
        tokens["steward"] = Principals(db).add(conn, "steward", Role.STEWARD)
        tokens["ana"] = Principals(db).add(conn, "ana", Role.RESEARCHER)
    db.close()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from sandbox.cli import main; main()",
            "serve",
            "--config",
            str(config),
            "--log-level",
            "INFO",
        ],
        cwd=work,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Measure only once every server process serves: the first answers health checks while
    # the others still start, and connections made then would all land on it.
    serving = threading.Event()
    threading.Thread(target=relay_log, args=(proc, serving), daemon=True).start()
    deadline = time.monotonic() + 120
    while not serving.wait(0.1) and proc.poll() is None and time.monotonic() < deadline:
        pass
    if not serving.is_set():
        proc.kill()
        raise RuntimeError(f"the server did not start serving (exit status {proc.returncode})")
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        wait_until(lambda: stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1)
    return proc, target, tokens


def free_ports(n: int) -> list[int]:
    """``n`` consecutive ports free on the loopback interface now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n > 65536:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + n):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return list(range(first, first + n))
    raise RuntimeError(f"found no {n} consecutive free ports")


def relay_log(proc: subprocess.Popen[str], serving: threading.Event) -> None:
    """Copy the server's log to stderr, except INFO lines; set ``serving`` when the server
    says it serves with all its processes."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if " INFO " not in line:
            sys.stderr.write(line)
        elif " serving on " in line:
            serving.set()


def wait_until(ready: Callable[[], bool], seconds: float = 30) -> None:
    """Poll ``ready`` (a call to a starting server) until it is true; its RPC errors count as
    not yet, until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ready():
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the server started by ``start_server`` and wait for its graceful shutdown."""
    proc.terminate()
    proc.wait(30)


def create_bench_project(
    target: str, steward_token: str, datasets: list[str], purpose: str
) -> None:
    """As the steward: register ``datasets`` and grant them to project "bench" (member ana)."""
    with Client(target, token=steward_token, timeout=600) as steward:
        for ds in datasets:
            steward.register_dataset(ds)
        steward.create_project(
            Project(
                "bench",
                "benchmark",
                ("ana",),
                tuple((ds, purpose) for ds in datasets),
                dt.date.today() + dt.timedelta(days=1),
                QuotaLimits(),
            )
        )


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def bench_ratio(client: Client, work: Path, size: int, runs: int) -> dict[str, float]:
    ds = dataset_id(size)
    path = str(work / "data" / str(size) / "residents.parquet")
    raw = duckdb.connect(config={"threads": THREADS})
    sql = QUERY.format(ds=ds)

    def via_sandbox() -> None:
        client.sql(sql, project="bench", purpose="public-health-research", timeout=600)

    def via_duckdb() -> None:
        raw.execute(RAW, [path]).fetchall()

    via_sandbox()
    via_duckdb()  # warm both (file cache, metadata)
    sandbox_t, raw_t = [], []
    for _ in range(runs):  # interleaved, so noise hits both alike
        sandbox_t.append(timed(via_sandbox))
        raw_t.append(timed(via_duckdb))
    raw.close()
    s, r = statistics.median(sandbox_t), statistics.median(raw_t)
    return {"size": size, "sandbox_ms": s * 1000, "duckdb_ms": r * 1000, "ratio": s / r}


def raw_small_query_ms(work: Path, size: int, calls: int = 1000) -> float:
    """Median time of the small job's query in raw DuckDB, one call after another, on an
    in-memory copy of the file (as the server holds files this small): the engine's own
    floor per job."""
    raw = duckdb.connect(config={"threads": THREADS})
    path = str(work / "data" / str(size) / "residents.parquet")
    raw.execute("CREATE TABLE t AS SELECT * FROM read_parquet(?)", [path])
    times = []
    for i in range(calls + 100):
        start = time.perf_counter()
        raw.execute(RAW_SMALL, [18]).fetchall()
        if i >= 100:  # the first calls warm up
            times.append(time.perf_counter() - start)
    raw.close()
    return statistics.median(times) * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants alive now (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(c)) for c in children)


def bench_throughput(
    target: str,
    token: str,
    size: int,
    clients: int,
    jobs: int,
    server_pid: int,
    rate: float = 0.0,
) -> dict[str, float]:
    """Closed loop (each client sends its next job when the last returns), or, with ``rate``
    jobs/s, open loop: each client sends on a fixed schedule (total ``rate``), and a job's
    latency counts from its scheduled time, so queueing behind a slow server is not hidden."""
    sql = SMALL.format(ds=dataset_id(size))
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = jobs // clients
    errors: list[BaseException] = []
    interval = clients / rate if rate else 0.0
    begin = threading.Barrier(clients + 1)

    def worker(offset: float) -> None:
        with Client(target, token=token) as c:
            for _ in range(2):  # warm up: the first call may move the client to a process port
                c.sql(sql, project="bench", purpose="public-health-research")
            mine = []
            begin.wait()
            zero = time.perf_counter() + offset
            for i in range(per_client):
                t = zero + i * interval if rate else time.perf_counter()
                if rate:
                    time.sleep(max(0.0, t - time.perf_counter()))
                try:
                    c.sql(sql, project="bench", purpose="public-health-research")
                except BaseException as exc:  # report, don't hide
                    errors.append(exc)
                    return
                mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)

    threads = [
        threading.Thread(target=worker, args=(i * interval / clients,)) for i in range(clients)
    ]
    for t in threads:
        t.start()
    begin.wait()
    server_cpu = cpu_seconds(server_pid)
    client_cpu = time.process_time()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    server_cpu = cpu_seconds(server_pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    if errors:
        raise RuntimeError(f"{len(errors)} jobs failed: {errors[0]!r}")
    latencies.sort()
    return {
        "jobs": len(latencies),
        "jobs_per_s": len(latencies) / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "server_cpu_ms": server_cpu / len(latencies) * 1000,
        "client_cpu_ms": client_cpu / len(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 12_000_000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--small-size", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--small-jobs", type=int, default=3200)
    parser.add_argument(
        "--processes", type=int, default=4, help="server processes (config 'processes')"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="job workers per server process (config 'workers')"
    )
    parser.add_argument(
        "--rate", type=float, default=300.0, help="open-loop run at this many jobs/s (0: skip)"
    )
    parser.add_argument(
        "--shared-port-only",
        action="store_true",
        help="no process ports: clients reach the processes through the shared port only",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    work = args.workdir.resolve()
    prepare(work, args.sizes, args.small_size)
    proc, target, tokens = start_server(
        work, args.processes, args.workers, process_ports=not args.shared_port_only
    )
    try:
        datasets = [dataset_id(size) for size in sorted({*args.sizes, args.small_size})]
        create_bench_project(target, tokens["steward"], datasets, "public-health-research")
        print(
            f"\n{os.cpu_count()} cores; {args.processes} server processes of {args.workers} "
            f"job workers; engine threads {THREADS}; median of {args.runs} runs; clients "
            + (
                "on the shared port only"
                if args.shared_port_only or args.processes == 1
                else "handed the processes' own ports in turn"
            )
        )
        print("group-by aggregate (district: count, mean income), end to end vs raw DuckDB")
        print(f"{'residents':>12} {'sandbox ms':>11} {'duckdb ms':>10} {'ratio':>6}")
        with Client(target, token=tokens["ana"], timeout=600) as ana:
            for size in args.sizes:
                r = bench_ratio(ana, work, size, args.runs)
                print(
                    f"{size:>12,} {r['sandbox_ms']:>11.1f} {r['duckdb_ms']:>10.1f} "
                    f"{r['ratio']:>6.2f}",
                    flush=True,
                )
        t = bench_throughput(
            target, tokens["ana"], args.small_size, args.clients, args.small_jobs, proc.pid
        )
        print(
            f"\n{args.clients} concurrent clients, small jobs on {args.small_size:,} residents: "
            f"{t['jobs']:.0f} jobs, {t['jobs_per_s']:.0f} jobs/s, p50 {t['p50_ms']:.1f} ms, "
            f"p99 {t['p99_ms']:.1f} ms"
        )
        print(
            f"CPU per job: server {t['server_cpu_ms']:.2f} ms, "
            f"benchmark clients {t['client_cpu_ms']:.2f} ms; raw DuckDB's small query alone "
            f"{raw_small_query_ms(work, args.small_size):.2f} ms"
        )
        if args.rate:
            t = bench_throughput(
                target,
                tokens["ana"],
                args.small_size,
                args.clients,
                args.small_jobs,
                proc.pid,
                rate=args.rate,
            )
            print(
                f"open loop, {args.clients} clients sending {args.rate:.0f} jobs/s in all: "
                f"{t['jobs']:.0f} jobs, {t['jobs_per_s']:.0f} jobs/s, p50 {t['p50_ms']:.1f} ms, "
                f"p99 {t['p99_ms']:.1f} ms (from each job's scheduled send time)"
            )
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
