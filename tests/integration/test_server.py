"""The gRPC server as a whole: health, authentication, limits, signals, long-polls, cancel.

Jobs that must stay non-terminal for a while read a dataset whose source file was swapped for a
FIFO after registration: the job's read blocks until the test feeds the pipe, so "still running"
and "still queued" are deterministic rather than timing-dependent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandbox import (
    AggFunc,
    Aggregate,
    CellStatus,
    Client,
    Filter,
    FilterOp,
    JobCancelled,
    JobSpec,
    JobState,
    Query,
    QuotaExceeded,
    QuotaLimits,
    SandboxError,
    Unauthenticated,
)
from sandbox.api.v1 import (
    audit_pb2,
    catalog_pb2,
    federation_pb2,
    jobs_pb2,
    jobs_pb2_grpc,
    keys_pb2,
    projects_pb2,
    review_pb2,
)
from sandbox.audit import AuditLog
from sandbox.client._errors import raise_from_rpc
from sandbox.state import Principals
from tests.conftest import PUMS_DIR, REPO, World, pums_policy
from tests.security._support import workers_held

SERVICE_MODULES = (
    catalog_pb2,
    jobs_pb2,
    projects_pb2,
    audit_pb2,
    keys_pb2,
    review_pb2,
    federation_pb2,
)
COUNT = JobSpec("pums", "census-study", "research", (Aggregate(AggFunc.COUNT),), ("sex",))


# ---- helpers ----------------------------------------------------------------------------------
def health_status(target: str, service: str = "", timeout: float = 2.0) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def all_methods() -> Iterator[tuple[str, type, bool]]:
    """(path, request class, server-streaming) of every RPC of every sandbox service."""
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                request = message_factory.GetMessageClass(method.input_type)
                yield f"/{service.full_name}/{method.name}", request, method.server_streaming


def call_raw(
    channel: grpc.Channel, path: str, request: object, streaming: bool, **kwargs: object
) -> object:
    serializer = type(request).SerializeToString  # type: ignore[attr-defined]
    if streaming:
        stream = channel.unary_stream(path, request_serializer=serializer)
        return list(stream(request, **kwargs))
    return channel.unary_unary(path, request_serializer=serializer)(request, **kwargs)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def open_jobs(world: World) -> int:
    (n,) = world.db.conn.execute(
        "SELECT count(*) FROM jobs WHERE state IN ('QUEUED', 'RUNNING')"
    ).fetchone()
    return int(n)


class Gate:
    """A dataset source replaced by a FIFO: each read blocks until ``release`` feeds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()

    def install(self) -> None:
        self.path.unlink()
        os.mkfifo(self.path)

    def release(self, timeout: float = 10.0) -> None:
        """Feed one reader that is (or is about to be) blocked opening the FIFO."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: no reader yet
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            try:
                os.set_blocking(fd, True)
                view = memoryview(self.data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            return

    def close(self) -> None:
        """Unblock any reader for good: hold the FIFO open, swap the real file back in."""
        if not self.path.exists() or self.path.is_file():
            return
        fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)  # never blocks on Linux
        try:
            tmp = self.path.with_suffix(".restore")
            tmp.write_bytes(self.data)
            os.replace(tmp, self.path)
            with contextlib.suppress(BlockingIOError):
                os.write(fd, self.data)
        finally:
            os.close(fd)


def _pums(world_factory: Callable[..., World], **settings: object) -> World:
    """PUMS_pid as 'pums', registered, granted to 'census-study' for research; ``settings``
    for the server."""
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv")},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
        **settings,
    )
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    return world


@pytest.fixture
def gated(world_factory: Callable[..., World]) -> Iterator[Callable[..., tuple[World, Gate]]]:
    """A PUMS world with one job worker whose source file becomes a FIFO once jobs are queued.

    ``gate.install()`` swaps the FIFO in after the submit-time check of the registered file, so a
    job then blocks inside the engine's read (RUNNING) until ``release``; the check after the
    read would fail such a job, so only a cancelled job can be observed through a gate.
    """
    gates: list[Gate] = []

    def make() -> tuple[World, Gate]:
        world = _pums(world_factory, workers=1)
        gates.append(Gate(world.root / "data" / "pums.csv"))
        return world, gates[-1]

    yield make
    for gate in gates:  # before world_factory stops the servers (their workers must not block)
        gate.close()


# ---- health -----------------------------------------------------------------------------------
def test_health_reports_serving_without_a_token(pums_world: World) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(pums_world.target, "") == serving
    assert health_status(pums_world.target, "sandbox.api.v1.JobService") == serving
    for service in ("CatalogService", "ProjectService", "AuditService"):
        assert health_status(pums_world.target, f"sandbox.api.v1.{service}") == serving
    with pytest.raises(grpc.RpcError) as err:
        health_status(pums_world.target, "no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# ---- authentication ---------------------------------------------------------------------------
def test_every_rpc_without_a_token_is_unauthenticated(pums_world: World) -> None:
    methods = list(all_methods())
    assert len(methods) >= 15
    with grpc.insecure_channel(pums_world.target) as channel:
        for path, request_cls, streaming in methods:
            for metadata in ((), (("authorization", "Basic abc"),), bearer("")):
                with pytest.raises(grpc.RpcError) as err:
                    call_raw(channel, path, request_cls(), streaming, metadata=metadata, timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, path
                with pytest.raises(Unauthenticated):
                    raise_from_rpc(err.value)
    # Through the public client too.
    anonymous = Client(pums_world.target)
    try:
        for call in (
            anonymous.datasets,
            lambda: anonymous.describe("pums"),
            lambda: anonymous.submit(COUNT),
            anonymous.jobs,
            anonymous.projects,
            lambda: anonymous.quota("census-study"),
            anonymous.audit_verify,
            anonymous.audit_entries,
        ):
            with pytest.raises(Unauthenticated):
                call()
    finally:
        anonymous.close()
    assert open_jobs(pums_world) == 0


def test_wrong_and_revoked_tokens_are_unauthenticated(pums_world: World) -> None:
    ana = pums_world.client("ana")
    assert ana.run(COUNT).table.rows  # works before revocation
    wrong = Client(pums_world.target, token="sbx_" + "A" * 43)
    try:
        with pytest.raises(Unauthenticated) as wrong_err:
            wrong.datasets()
    finally:
        wrong.close()
    with pums_world.db.write() as conn:
        Principals(pums_world.db).revoke(conn, "ana")
        AuditLog(pums_world.db).append(conn, "principal.revoked", actor="test", principal="ana")
    for call in (ana.datasets, ana.jobs, lambda: ana.submit(COUNT)):
        with pytest.raises(Unauthenticated) as revoked_err:
            call()
    # A revoked token is indistinguishable from a wrong one.
    assert str(revoked_err.value) == str(wrong_err.value)
    # The server keeps serving everyone else.
    assert health_status(pums_world.target) == health_pb2.HealthCheckResponse.SERVING
    assert [d.id for d in pums_world.client("sam").datasets()] == ["pums"]
    assert pums_world.client("bob").jobs() == []
    assert pums_world.client("chen").audit_verify().ok


def test_a_token_revoked_from_another_process_is_refused_on_the_next_call(
    pums_world: World,
) -> None:
    # The server remembers whom a token names between calls; a change made by any process
    # (here the steward's command line) must reach it before the next call.
    ana = pums_world.client("ana")
    for _ in range(3):  # read, then remembered
        assert ana.run(COUNT).table.rows
    config = str(pums_world.root / "sandbox.toml")
    revoked = subprocess.run(
        [sys.executable, "-m", "sandbox", "principals", "revoke", "ana", "--config", config],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(Unauthenticated):
        ana.datasets()
    with pytest.raises(Unauthenticated):
        ana.submit(COUNT)


# ---- message size -----------------------------------------------------------------------------
def test_oversized_message_is_refused_and_server_keeps_serving(world_factory) -> None:
    world = _pums(world_factory, max_message_bytes=65536)
    ana = world.client("ana")
    huge = tuple(f"{i:04d}" + "x" * 2000 for i in range(60))  # ~120 KB > 64 KiB
    spec = JobSpec(
        "pums",
        "census-study",
        "research",
        (Aggregate(AggFunc.COUNT),),
        filters=(Filter("educ", FilterOp.IN, huge),),
    )
    with pytest.raises(SandboxError) as err:
        ana.submit(spec)
    assert "RESOURCE_EXHAUSTED" in str(err.value)
    assert "x" * 100 not in str(err.value)
    # Nothing was recorded for the refused message, and the server still works.
    assert ana.jobs() == []
    assert open_jobs(world) == 0
    assert health_status(world.target) == health_pb2.HealthCheckResponse.SERVING
    result = ana.run(COUNT, timeout=30)
    assert sum(row.cells[0].value or 0 for row in result.table.rows) == 1000
    assert world.client("chen").audit_verify().ok


# ---- the `sandbox serve` process ----------------------------------------------------------------
SERVE = "from sandbox.cli import main; main()"
# The same command, with a pause between start_server() returning (the port is open and health
# says SERVING) and serve_forever() installing its signal handlers. Nothing is replaced: the
# pause only widens a window that exists anyway, so the ordering can be tested deterministically.
SERVE_WITH_PAUSE = """
import time
import sandbox.server._serve as serve
real_start = serve.start_server
def start_then_pause(*args, **kwargs):
    running = real_start(*args, **kwargs)
    time.sleep(1.5)
    return running
serve.start_server = start_then_pause
from sandbox.cli import main
main()
"""


def run_serve_and_signal(
    tmp_path: Path, sig: signal.Signals, code: str, *, wait_for_log: bool
) -> tuple[int, str, float]:
    """Start `sandbox serve`, wait until healthy, signal it; (exit code, log, seconds to exit)."""
    port = free_port()
    for d in ("data", "policies"):
        (tmp_path / d).mkdir()
    config = tmp_path / "sandbox.toml"
    config.write_text(
        "[server]\n"
        f'listen = "127.0.0.1:{port}"\n'
        'state_dir = "state"\ndata_root = "data"\npolicy_dir = "policies"\n'
        f"grace_period_s = {GRACE}\n"
        "allow_plaintext_tokens = true\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["PYTHONPATH"] = str(REPO)
    added = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE,
            "principals",
            "add",
            "ana",
            "--role",
            "researcher",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    log_path = tmp_path / "serve.log"
    target = f"127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    serving = health_status(target, timeout=0.5)
                except grpc.RpcError:
                    return False
                logged = "serving on port" in log_path.read_text() or not wait_for_log
                return serving == health_pb2.HealthCheckResponse.SERVING and logged

            wait_until(ready, 30, "the server to become healthy")
            if wait_for_log:
                with Client(target, token=token) as ana:
                    assert ana.datasets() == []
            started = time.monotonic()
            proc.send_signal(sig)
            try:
                code_ = proc.wait(timeout=GRACE + 5)
            except subprocess.TimeoutExpired:
                code_ = -999
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with pytest.raises(grpc.RpcError):
        health_status(target, timeout=0.5)
    return code_, log_path.read_text(), elapsed


GRACE = 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_process_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    code, log, elapsed = run_serve_and_signal(tmp_path, sig, SERVE, wait_for_log=True)
    assert code == 0, log
    assert elapsed < GRACE + 5
    assert "stopped" in log
    assert "Traceback" not in log


def test_serve_is_not_reported_healthy_before_it_can_stop_gracefully(tmp_path: Path) -> None:
    # An orchestrator may send SIGTERM as soon as the health check says SERVING. That must
    # already be a graceful stop, not death by the default signal disposition (exit -15).
    code, log, _ = run_serve_and_signal(
        tmp_path, signal.SIGTERM, SERVE_WITH_PAUSE, wait_for_log=False
    )
    assert code == 0, f"exit code {code}; log:\n{log}"
    assert "stopped" in log


# The `sandbox serve` command, then how many objects the process had frozen (printed on exit).
SERVE_THEN_COUNT_FROZEN = """
import gc
from sandbox.cli import main
try:
    main()
finally:
    print("frozen objects:", gc.get_freeze_count(), flush=True)
"""


def test_a_serving_process_exempts_its_start_up_heap_from_the_garbage_collector(
    tmp_path: Path,
) -> None:
    # Full collections over the start-up heap (modules, policies, catalogue) paused every job
    # in flight for tens of milliseconds; once serving, those objects are frozen.
    code, log, _ = run_serve_and_signal(
        tmp_path, signal.SIGTERM, SERVE_THEN_COUNT_FROZEN, wait_for_log=True
    )
    assert code == 0, log
    frozen = int(log.rsplit("frozen objects:", 1)[1].split()[0])
    assert frozen > 20_000, log


def test_a_server_copies_its_log_into_the_store_in_the_background(pums_world: World) -> None:
    # Copying the write-ahead log into the database ends in an fsync; in a commit it would
    # hold the write lock. A server's store does it from a thread instead, so a job's record
    # reaches the database file soon, long before the log holds SQLite's 1,000 pages.
    job_id = pums_world.client("ana").run(COUNT).job_id
    store = pums_world.root / "state" / "state.sqlite3"
    copy = pums_world.root / "copy.sqlite3"
    deadline = time.monotonic() + 10
    while True:
        shutil.copy(store, copy)  # the database file alone, without its log
        with (
            contextlib.suppress(sqlite3.DatabaseError),
            contextlib.closing(sqlite3.connect(copy)) as conn,
        ):  # a copy taken mid-checkpoint can be torn: take another
            if conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone():
                break
        assert time.monotonic() < deadline, "the job never reached the database file"
        time.sleep(0.05)


# ---- long-poll, cancel ------------------------------------------------------------------------
def test_wait_job_long_poll_returns_promptly_when_the_job_finishes(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    hold = contextlib.ExitStack()
    hold.enter_context(workers_held(world))  # the job stays queued until the hold ends
    job = ana.submit(COUNT)
    with grpc.insecure_channel(world.target) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        # A short long-poll on a blocked job honours its timeout and reports a live state.
        started = time.monotonic()
        resp = stub.WaitJob(
            jobs_pb2.WaitJobRequest(job_id=job.job_id, timeout_seconds=0.5),
            metadata=bearer(world.tokens["ana"]),
            timeout=10,
        )
        assert 0.4 <= time.monotonic() - started < 5
        assert resp.job.state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING)
        # A long one is still pending while the job cannot finish ...
        future = stub.WaitJob.future(
            jobs_pb2.WaitJobRequest(job_id=job.job_id, timeout_seconds=25),
            metadata=bearer(world.tokens["ana"]),
            timeout=40,
        )
        time.sleep(0.5)
        assert not future.done()
        # ... and answers as soon as it does, long before its 25 s timeout.
        hold.close()
        released = time.monotonic()
        resp = future.result(timeout=10)
        assert time.monotonic() - released < 3
    assert resp.job.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert job.wait(5).state == JobState.SUCCEEDED
    assert open_jobs(world) == 0


def test_long_polls_on_finished_jobs_leave_no_bookkeeping_behind(pums_world: World) -> None:
    # Every WaitJob registers a wake-up for its job; one on an already finished job must not
    # leave that registration behind, or the server's memory grows with every poll and every
    # fast `Client.run` (white-box: the pipeline's registry of waiters).
    ana = pums_world.client("ana")
    jobs = [ana.submit(COUNT) for _ in range(3)]
    for job in jobs:
        assert job.wait(30).state == JobState.SUCCEEDED
    waiters = pums_world.server.app.jobs._waiting
    baseline = len(waiters)
    with grpc.insecure_channel(pums_world.target) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        for job in jobs:
            for timeout in (0.0, 5.0):
                resp = stub.WaitJob(
                    jobs_pb2.WaitJobRequest(job_id=job.job_id, timeout_seconds=timeout),
                    metadata=bearer(pums_world.tokens["ana"]),
                    timeout=10,
                )
                assert resp.job.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert len(waiters) == baseline == 0, sorted(waiters)


def test_cancel_queued_and_running_jobs(gated) -> None:
    world, gate = gated()
    ana = world.client("ana")
    with workers_held(world):
        running = ana.submit(COUNT)
        queued = ana.submit(COUNT)
        gate.install()  # after both passed the submit-time check of the registered file
    wait_until(lambda: running.state == JobState.RUNNING, 10, "the first job to start")
    # With the one worker blocked reading the first job's source, the second stays queued.
    assert queued.state == JobState.QUEUED
    assert queued.cancel() is True
    assert queued.state == JobState.CANCELLED
    with pytest.raises(JobCancelled):
        queued.result(timeout=5)

    # Cancel the running job through the RPC (returns at once, the engine is interrupted) ...
    with grpc.insecure_channel(world.target) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        info = stub.CancelJob(
            jobs_pb2.CancelJobRequest(job_id=running.job_id),
            metadata=bearer(world.tokens["ana"]),
            timeout=10,
        )
    assert info.state == jobs_pb2.JOB_STATE_RUNNING
    # ... and once the read can proceed, the interrupted query ends the job as CANCELLED.
    gate.release()
    assert running.wait(10).state == JobState.CANCELLED
    with pytest.raises(JobCancelled):
        running.result(timeout=5)
    assert running.cancel() is True  # already cancelled: stays so
    assert open_jobs(world) == 0
    # The queued job never ran and was not charged; the running one read data and was.
    usage = ana.quota("census-study")
    assert usage.jobs_total == 1 and usage.rows_total == 1000
    events = [r.entry["event"] for r in world.client("chen").audit_entries()]
    assert events.count("job.cancelled") == 2
    assert world.client("chen").audit_verify().ok


def test_a_job_admitted_while_a_worker_is_idle_is_running_from_its_admission(
    pums_world: World,
) -> None:
    """With a worker idle, the admission transaction that reserves the quota also records the
    job RUNNING (its read about to start): one write fewer per job. With every worker busy the
    job is QUEUED. A refused submission gives back the worker it claimed."""
    world = pums_world
    ana = world.client("ana")
    world.project("capped", (("pums", "research"),), quota=QuotaLimits(jobs_total=1))
    capped = dataclasses.replace(COUNT, project="capped")
    first = ana.submit(COUNT)
    assert first.info.state == JobState.RUNNING  # as the admission recorded it
    assert first.result(timeout=30).table.rows
    assert ana.run(capped).table.rows
    # More refusals than workers: had each kept its claim, every later job would be QUEUED.
    for _ in range(world.config.workers + 1):
        with pytest.raises(QuotaExceeded):
            ana.submit(capped)
    again = ana.submit(COUNT)
    assert again.info.state == JobState.RUNNING
    again.result(timeout=30)
    with workers_held(world):
        waiting = ana.submit(COUNT)
        assert waiting.info.state == JobState.QUEUED
    waiting.result(timeout=30)
    usage = ana.quota("census-study")
    assert (usage.jobs_total, usage.rows_total) == (3, 3000)
    assert open_jobs(world) == 0 and world.client("chen").audit_verify().ok


def test_a_worker_starts_its_next_queued_job_in_the_release_of_the_one_before(
    world_factory: Callable[..., World],
) -> None:
    """One worker, three jobs queued behind it: it starts the first on its own, then each next
    one in the transaction that records the release of the one before: 4 writes for the three
    runs, not 6 (a start and a release each)."""
    world = _pums(world_factory, workers=1)
    ana = world.client("ana")
    store = world.server.app.jobs._db
    with workers_held(world):
        jobs = [ana.submit(COUNT) for _ in range(3)]
        assert [j.info.state for j in jobs] == [JobState.QUEUED] * 3
        before = store.commits
    tables = [j.result(timeout=30).table for j in jobs]
    assert store.commits - before == 4
    assert tables[0] == tables[1] == tables[2]
    infos = [ana.job(j.job_id).info for j in jobs]
    for earlier, later in itertools.pairwise(infos):
        assert earlier.finished_at is not None and later.started_at is not None
        assert later.started_at >= earlier.finished_at  # started as the one before ended
    usage = ana.quota("census-study")
    assert (usage.jobs_total, usage.rows_total) == (3, 3000)
    assert open_jobs(world) == 0 and world.client("chen").audit_verify().ok


def test_a_job_cancelled_while_queued_is_skipped_by_the_worker_that_would_start_it(
    world_factory: Callable[..., World],
) -> None:
    world = _pums(world_factory, workers=1)
    ana = world.client("ana")
    pipeline = world.server.app.jobs
    with workers_held(world):
        first, cancelled, last = (ana.submit(COUNT) for _ in range(3))
        assert cancelled.cancel() is True
    assert first.result(timeout=30).table == last.result(timeout=30).table
    assert cancelled.state == JobState.CANCELLED
    with pytest.raises(JobCancelled):
        cancelled.result(timeout=5)
    usage = ana.quota("census-study")
    assert (usage.jobs_total, usage.rows_total) == (2, 2000)  # the cancelled one uncharged

    def idle() -> bool:
        with pipeline._waiting_lock:
            return not pipeline._local and not pipeline._queued

    wait_until(idle, 10, "the worker to let go of every job")
    assert open_jobs(world) == 0 and world.client("chen").audit_verify().ok


def test_cancel_of_a_finished_job_changes_nothing(pums_world: World) -> None:
    ana = pums_world.client("ana")
    job = ana.submit(COUNT)
    before = job.result(timeout=30)
    assert job.state == JobState.SUCCEEDED
    assert job.cancel() is False
    assert job.state == JobState.SUCCEEDED
    assert ana.job(job.job_id).state == JobState.SUCCEEDED
    assert ana.job(job.job_id).result(timeout=5).table == before.table
    assert open_jobs(pums_world) == 0


# ---- concurrency limit ------------------------------------------------------------------------
def test_concurrent_rpcs_beyond_the_limit_are_refused(world_factory: Callable[..., World]) -> None:
    world = _pums(world_factory, max_concurrent_rpcs=2)
    ana = world.client("ana")
    hold = contextlib.ExitStack()
    hold.enter_context(workers_held(world))  # the job stays queued until the hold ends
    job = ana.submit(COUNT)
    metadata = bearer(world.tokens["ana"])
    with grpc.insecure_channel(world.target) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)

        def long_poll() -> grpc.Future:
            return stub.WaitJob.future(
                jobs_pb2.WaitJobRequest(job_id=job.job_id, timeout_seconds=25),
                metadata=metadata,
                timeout=40,
            )

        def third_call_refused() -> SandboxError | None:
            try:
                ana.datasets()
            except SandboxError as exc:
                return exc
            return None

        # Hold two long-polls. A call that just returned may still count for a moment, so a
        # poll can itself be refused at first: replace it until two are held by the server.
        polls: list[grpc.Future] = []
        refused: SandboxError | None = None
        deadline = time.monotonic() + 10
        while refused is None:
            assert time.monotonic() < deadline, "two long-polls were never held at once"
            for p in [p for p in polls if p.done()]:
                assert p.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, p.details()
                polls.remove(p)
            polls += [long_poll() for _ in range(2 - len(polls))]
            time.sleep(0.2)
            if not any(p.done() for p in polls):
                refused = third_call_refused()
        # Once both are held, any further call is refused.
        assert "RESOURCE_EXHAUSTED" in str(refused)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.job_id), metadata=metadata, timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not any(p.done() for p in polls)

        hold.close()
        states = [p.result(timeout=10).job.state for p in polls]
        assert states == [jobs_pb2.JOB_STATE_SUCCEEDED] * 2

    def served() -> bool:
        try:
            return [d.id for d in ana.datasets()] == ["pums"]
        except SandboxError:
            return False

    wait_until(served, 10, "the server to take calls again")
    assert open_jobs(world) == 0


def test_the_inline_result_equals_the_stored_release(pums_world: World) -> None:
    # `run` gets the table the worker hands to its waiter in memory; a later fetch streams the
    # stored blob. Both must be the one release, down to its digest (cells, floats, rules).
    ana = pums_world.client("ana")
    query = Query("pums").group_by("educ", "sex").count().sum("income").mean("income")
    inline = ana.run(query, project="census-study", purpose="research")
    stored = ana._result(inline.job_id)
    assert stored.table == inline.table and stored.digest == inline.digest
    assert inline.table.digest() == stored.table.digest()
    statuses = {c.status for r in inline.table.rows for c in r.cells}
    assert {CellStatus.RELEASED, CellStatus.SUPPRESSED} <= statuses
