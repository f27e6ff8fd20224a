"""Several server processes on one state store (``processes`` > 1).

Sibling processes share the SQLite store and nothing else: each has its own engine, job
workers and waiters. A job runs in the process that accepted it; another process can still
wait for it (it polls the store) and cancel it (it flags the job; the owner interrupts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandbox import (
    Client,
    JobCancelled,
    JobState,
    Project,
    Query,
    QuotaExceeded,
    QuotaLimits,
    SandboxError,
    Unavailable,
)
from sandbox.api.v1 import jobs_pb2, jobs_pb2_grpc
from sandbox.server import start_server
from sandbox.server._serve import ProcessSlot
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.integration.test_server import Gate, bearer, gated, wait_until  # noqa: F401
from tests.security._support import ledger_rows, workers_held

COUNT = Query("pums").group_by("sex").count()


def test_a_sibling_process_waits_for_and_cancels_a_job_it_does_not_run(
    gated: Callable[[], tuple[World, Gate]],  # noqa: F811 - the fixture imported above
) -> None:
    world, gate = gated()
    # A second server on the same state store: a sibling process in all but the port.
    sibling = start_server(dataclasses.replace(world.config, listen="127.0.0.1:0"), recover=False)
    try:
        with Client(f"127.0.0.1:{sibling.port}", token=world.tokens["ana"]) as there:
            with workers_held(world):
                job = world.client("ana").submit(COUNT, project="census-study", purpose="research")
                gate.install()
            wait_until(lambda: job.state == JobState.RUNNING, 10, "the job to start")
            remote = there.job(job.job_id)
            # A short wait in the sibling honours its timeout and reports the live state.
            started = time.monotonic()
            assert remote.wait(0.5).state == JobState.RUNNING
            assert 0.4 <= time.monotonic() - started < 5
            # A long one is pending while the job cannot finish.
            outcome: list[object] = []
            waiter = threading.Thread(target=lambda: outcome.append(remote.wait(25)))
            waiter.start()
            # Cancel through the sibling: it flags the job; the owner interrupts its engine.
            with grpc.insecure_channel(f"127.0.0.1:{sibling.port}") as channel:
                info = jobs_pb2_grpc.JobServiceStub(channel).CancelJob(
                    jobs_pb2.CancelJobRequest(job_id=job.job_id),
                    metadata=bearer(world.tokens["ana"]),
                    timeout=10,
                )
            assert info.state == jobs_pb2.JOB_STATE_RUNNING
            owner_engine = world.server.app.jobs._engine
            wait_until(lambda: job.job_id in owner_engine._cancelled, 5, "the owner to interrupt")
            released = time.monotonic()
            gate.release()
            waiter.join(10)
            assert not waiter.is_alive()
            assert time.monotonic() - released < 3  # polled, not left to its 25 s timeout
            assert outcome[0].state == JobState.CANCELLED  # type: ignore[attr-defined]
            with pytest.raises(JobCancelled):
                remote.result(timeout=5)
        # The job read data, so it was charged once; the audit log of both writers is sound.
        usage = world.client("ana").quota("census-study")
        assert usage.jobs_total == 1 and usage.rows_total == 1000
        assert world.client("chen").audit_verify().ok
    finally:
        sibling.stop(grace=1)


def client_ports(server_port: int) -> set[int]:
    """Local ports of the open connections to ``server_port`` (clients' ends; gRPC's sockets
    may be IPv6 ones holding IPv4-mapped addresses)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if int(remote.rsplit(":", 1)[1], 16) == server_port and state == "01":  # open
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.parametrize("processes", [2, 1])
def test_clients_of_a_multi_process_server_reconnect_so_the_kernel_spreads_them_anew(
    pums_world: World, processes: int
) -> None:
    # The kernel spreads connections, not calls, over the processes on one port: a client
    # keeps its connection, and so its process, unless the server closes it after a while.
    config = dataclasses.replace(pums_world.config, listen="127.0.0.1:0", max_connection_age_s=0.3)
    # A server process of a multi-process server shares its port; a single one does not.
    server = start_server(config, recover=False, reuse_port=processes > 1)
    seen: set[int] = set()
    try:
        with Client(f"127.0.0.1:{server.port}", token=pums_world.tokens["ana"]) as ana:
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:  # every job is answered across the reconnects
                job = COUNT.to_spec(project="census-study", purpose="research")
                assert ana.run(job).to_dataframe()["count"].notna().all()
                seen |= client_ports(server.port)
    finally:
        server.stop(grace=1)
    if processes > 1:
        assert len(seen) >= 3  # ~8 connection lifetimes in 2.5 s
    else:
        assert len(seen) == 1


def test_a_dataset_registered_through_a_sibling_is_served_by_every_process(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv"), "late": pums_policy("late", "pums.csv")},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
    )
    sibling = start_server(dataclasses.replace(world.config, listen="127.0.0.1:0"), recover=False)
    try:
        # Registered and granted through this process, after the sibling loaded its policies.
        world.register("late")
        world.client("sam").create_project(_project("late-study", "late"))
        late = Query("late").group_by("sex").count("n")
        with Client(f"127.0.0.1:{sibling.port}", token=world.tokens["ana"]) as there:
            assert there.describe("late").id == "late"
            got = there.run(late, project="late-study", purpose="research").to_dataframe()
        assert got["n"].sum() == 1000
    finally:
        sibling.stop(grace=1)


# ---- real processes -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status)


@contextlib.contextmanager
def _serve_two(
    world_factory: Callable[..., World], extra_config: str = ""
) -> Iterator[tuple[World, str, subprocess.Popen[bytes]]]:
    """A PUMS world whose state is then served by ``sandbox serve`` with two processes."""
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv"), "late": pums_policy("late", "pums.csv")},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
    )
    world.register("pums")
    world.project("race", (("pums", "research"),), quota=QuotaLimits(jobs_total=10))
    world.project("open", (("pums", "research"),))
    world.stop()
    port = _free_port()
    config = world.root / "sandbox.toml"
    text = re.sub(r'listen = "[^"]*"', f'listen = "127.0.0.1:{port}"', config.read_text())
    config.write_text(text + "processes = 2\nrpc_threads = 40\n" + extra_config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--config", str(config)], cwd=world.root
    )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # both processes started and listening on the shared port, one serving
        with contextlib.suppress(grpc.RpcError, OSError):
            servers = _server_processes(proc.pid)
            if (
                len(servers) == 2
                and _listening_pids(port, servers) == set(servers)
                and _health(target) == health_pb2.HealthCheckResponse.SERVING
            ):
                break
        assert proc.poll() is None, "the server exited while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    try:
        yield world, target, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def served(
    world_factory: Callable[..., World],
) -> Iterator[tuple[World, str, subprocess.Popen[bytes]]]:
    with _serve_two(world_factory) as served:
        yield served


def _server_processes(pid: int) -> list[int]:
    """The server processes under ``pid`` (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _project(project_id: str, dataset: str) -> Project:
    today = dt.date.today()
    return Project(
        project_id,
        project_id,
        ("ana",),
        ((dataset, "research"),),
        today + dt.timedelta(days=30),
        QuotaLimits(),
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_processes_share_one_quota_one_log_and_stop_together(
    served: tuple[World, str, subprocess.Popen[bytes]],
) -> None:
    world, target, proc = served
    children = _server_processes(proc.pid)
    assert len(children) == 2
    idle = [_cpu_seconds(c) for c in children]
    n = 32
    start = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def worker(i: int) -> None:
        # One connection per client: the kernel spreads connections over the processes.
        with Client(target, token=world.tokens["ana"], timeout=60) as client:
            start.wait(timeout=30)
            try:
                outcomes[i] = client.run(COUNT, project="race", purpose="research", timeout=60)
            except SandboxError as exc:
                outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # Both processes took work (32 connections all landing on one: odds 2^-31).
    assert all(_cpu_seconds(c) - before > 0.02 for c, before in zip(children, idle, strict=True))
    errors = [o for o in outcomes if isinstance(o, SandboxError)]
    assert len(errors) == n - 10 and all(type(e) is QuotaExceeded for e in errors)
    assert len([o for o in outcomes if o is not None and o not in errors]) == 10

    # Jobs submitted through one connection are awaited through others (either process).
    with Client(target, token=world.tokens["ana"]) as submitter:
        jobs = [submitter.submit(COUNT, project="open", purpose="research") for _ in range(6)]
    expected = None
    for _ in range(4):
        with Client(target, token=world.tokens["ana"]) as other:
            for job in jobs:
                result = other.job(job.job_id).result(timeout=30)
                rows = result.to_dataframe().to_dict("records")
                assert expected is None or rows == expected
                expected = rows

    with Client(target, token=world.tokens["chen"]) as chen:
        assert chen.audit_verify().ok  # both processes appended to one consistent log
        events = [r.entry["event"] for r in chen.audit_entries(limit=1000)]
    assert events.count("job.released") == 10 + 6
    assert events.count("job.denied") == n - 10
    ledger = [v for v in ledger_rows(world).values() if v[0] == "race"]
    assert len(ledger) == 10 and all(state == "committed" for _, state, _, _ in ledger)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(_alive(c) for c in children)


def test_server_processes_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    for name in ("data", "policies"):
        (tmp_path / name).mkdir()
    port = _free_port()
    config = tmp_path / "sandbox.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "state"\ndata_root = "data"\n'
        'policy_dir = "policies"\nprocesses = 2\ngrace_period_s = 1\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--config", str(config), "--log-level", "ERROR"],
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(children := _server_processes(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        while True:  # both serving
            with contextlib.suppress(grpc.RpcError):
                if _health(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL: no chance to stop its children
        proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children):
        assert time.monotonic() < deadline, "a server process outlived its supervisor"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


# ---- process ports ------------------------------------------------------------------------
def _listening_pids(port: int, pids: list[int]) -> set[int]:
    """Which of ``pids`` hold a socket listening on ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # listening
                inodes.add(f"socket:[{fields[9]}]")
    owners = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    owners.add(pid)
    return owners


def _free_ports(n: int) -> int:
    """The first of ``n`` consecutive ports free now."""
    for _ in range(100):
        first = _free_port()
        if all(_bindable(port) for port in range(first + 1, first + n)):
            return first
    raise AssertionError(f"no {n} consecutive free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_clients_are_handed_each_process_port_in_turn_and_move_there(
    world_factory: Callable[..., World],
) -> None:
    base = _free_ports(2)
    with _serve_two(world_factory, f"process_port_base = {base}\n") as (world, target, proc):
        deadline = time.monotonic() + 60
        for port in (base, base + 1):  # the first process serves before the second starts
            while True:
                with contextlib.suppress(grpc.RpcError):
                    if _health(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING:
                        break
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        servers = _server_processes(proc.pid)
        # Each process listens on the shared port and on a port of its own.
        shared = int(target.rsplit(":", 1)[1])
        assert _listening_pids(shared, servers) == set(servers)
        owners = [_listening_pids(base + i, servers) for i in range(2)]
        assert all(len(o) == 1 for o in owners) and owners[0] != owners[1]

        # Asked over fresh connections (whichever process the kernel picks), the server hands
        # its processes' ports out in turn: the count is shared by the processes.
        handed = []
        for _ in range(6):
            with grpc.insecure_channel(target) as channel:
                handed.append(
                    jobs_pb2_grpc.JobServiceStub(channel)
                    .GetProcessPort(
                        jobs_pb2.GetProcessPortRequest(),
                        metadata=bearer(world.tokens["ana"]),
                        timeout=10,
                    )
                    .port
                )
        assert set(handed) == {base, base + 1}
        assert all(a != b for a, b in itertools.pairwise(handed))

        # Four clients: after its first call each moves to the port it was handed, two per
        # process, and every job is answered.
        clients = [Client(target, token=world.tokens["ana"]) for _ in range(4)]
        try:
            for client in clients:
                for _ in range(2):
                    job = COUNT.to_spec(project="open", purpose="research")
                    assert client.run(job).to_dataframe()["count"].sum() == 1000
            assert [len(client_ports(base + i)) for i in range(2)] == [2, 2]
        finally:
            for client in clients:
                client.close()


def test_a_client_of_a_server_without_process_ports_stays_on_its_target(
    pums_world: World,
) -> None:
    port = int(pums_world.target.rsplit(":", 1)[1])
    before = client_ports(port)
    with Client(pums_world.target, token=pums_world.tokens["ana"]) as ana:
        for _ in range(2):
            job = COUNT.to_spec(project="census-study", purpose="research")
            assert ana.run(job).to_dataframe()["count"].notna().all()
        assert len(client_ports(port) - before) == 1  # its one connection, still there


def test_a_client_whose_process_port_is_gone_asks_again_on_its_next_call(
    pums_world: World,
) -> None:
    shared, own = _free_ports(2), _free_ports(1)
    job = COUNT.to_spec(project="census-study", purpose="research")
    placed = dataclasses.replace(
        pums_world.config, listen=f"127.0.0.1:{shared}", processes=2, process_port_base=own
    )
    # One process of a two-process server, as the supervisor starts it (turn 0: its own port).
    turns = multiprocessing.get_context("spawn").Value("Q", 0)
    first = start_server(placed, recover=False, reuse_port=True, slot=ProcessSlot(0, turns))
    with Client(f"127.0.0.1:{shared}", token=pums_world.tokens["ana"]) as ana:
        try:
            for _ in range(2):
                assert ana.run(job).to_dataframe()["count"].sum() == 1000
            assert len(client_ports(own)) == 1
        finally:
            first.stop(grace=1)
        # Restarted on the same port without process ports: the port the client was handed
        # is gone. The call that finds it so fails; the next one asks again and stays.
        plain = dataclasses.replace(placed, processes=1, process_port_base=0)
        second = start_server(plain, recover=False)
        try:
            with pytest.raises(Unavailable):
                ana.run(job)
            assert ana.run(job).to_dataframe()["count"].sum() == 1000
            assert not client_ports(own) and len(client_ports(shared)) == 1
        finally:
            second.stop(grace=1)
