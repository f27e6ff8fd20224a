"""Build and run the gRPC server: limits, keepalive, health, graceful shutdown."""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sandbox._app import Sandbox
from sandbox._config import ServerConfig
from sandbox.server._auth import AuthInterceptor
from sandbox.server._servicer import add_services

log = logging.getLogger("sandbox.server")
_PARENT_CHECK_S = 0.5
SERVICES = (
    "sandbox.api.v1.CatalogService",
    "sandbox.api.v1.JobService",
    "sandbox.api.v1.ProjectService",
    "sandbox.api.v1.AuditService",
    "sandbox.api.v1.KeyService",
    "sandbox.api.v1.ReviewService",
    "sandbox.api.v1.FederationNodeService",
    "sandbox.api.v1.FederationService",
)


@dataclass
class RunningServer:
    server: grpc.Server
    app: Sandbox
    port: int
    health: health.HealthServicer

    def stop(self, grace: float | None = None) -> None:
        """Stop taking RPCs, let in-flight ones finish within the grace period, close state."""
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(self.app.config.grace_period_s if grace is None else grace).wait()
        self.app.close()


@dataclass(frozen=True)
class ProcessSlot:
    """A process's place in a multi-process server: its index, and the count of clients
    handed a process port so far, shared by all its processes."""

    index: int
    turns: Synchronized[int]

    def next_port(self, config: ServerConfig) -> int:
        """The process port the next client should use (the processes in turn)."""
        lock = self.turns.get_lock()
        if not lock.acquire(timeout=1.0):  # held by a sibling that died: this process's own
            return config.process_port_base + self.index
        try:
            turn = self.turns.value
            self.turns.value = turn + 1
        finally:
            lock.release()
        return config.process_port_base + turn % config.processes


def start_server(
    config: ServerConfig,
    app: Sandbox | None = None,
    *,
    recover: bool = True,
    reuse_port: bool = False,
    slot: ProcessSlot | None = None,
) -> RunningServer:
    """Start one server process's gRPC server.

    ``recover`` resumes the jobs an earlier run left (only one process may); ``reuse_port``
    lets the processes of one server share its port (the kernel spreads connections);
    ``slot``: this process's place in a multi-process server, which with
    ``process_port_base`` also listens on a port of its own.
    """
    placed = slot if config.process_port_base else None  # clients are placed on processes
    app = app or Sandbox(config)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", config.keepalive_time_s * 1000),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_s * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", int(reuse_port)),
    ]
    if reuse_port and placed is None and config.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000)))
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="sandbox-rpc"),
        interceptors=[AuthInterceptor(app.principals.authenticate)],
        options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    add_services(server, app, partial(placed.next_port, config) if placed else lambda: 0)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(config.tls.key.read_bytes(), config.tls.cert.read_bytes())],
            root_certificates=config.tls.client_ca.read_bytes() if config.tls.client_ca else None,
            require_client_auth=config.tls.client_ca is not None,
        )
        listen: Callable[[str], int] = partial(
            server.add_secure_port, server_credentials=credentials
        )
    else:
        listen = server.add_insecure_port
    addresses = [config.listen]
    if placed is not None:
        host = config.listen.rsplit(":", 1)[0]
        addresses.append(f"{host}:{config.process_port_base + placed.index}")
    ports = [listen(address) for address in addresses]
    port = ports[0]
    if 0 in ports:
        app.close()
        raise OSError(f"cannot listen on {addresses[ports.index(0)]}")
    if recover:
        app.jobs.recover()
    server.start()
    app.checkpointer.start(interval=1.0)
    for name in ("", *SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, app, port, health_servicer)


def exempt_startup_heap() -> None:
    """Exempt every object alive now (modules, policies, catalogue, caches) from the cyclic
    garbage collector, in a process that will only serve from here on.

    A full collection walks every tracked object. Over the ~115,000 a server holds after start
    up it took 40-170 ms per process here (0.3 ms once they are frozen): a pause for every job
    in flight in that process, and for every process while it holds the store's write lock.
    It recurs once the objects kept since the last one reach a quarter of those it walked: with
    under one kept per job, every few tens of thousands of jobs. Objects made later are
    collected as usual; frozen ones are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()


def serve_forever(config: ServerConfig, on_ready: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully within the grace period.

    With ``config.processes`` above 1, this process supervises that many server processes
    on one port and stops them all when it is told to stop or when any of them dies.
    """
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: shutting down (grace %.1fs)", signum, config.grace_period_s)
        stop.set()

    # Handlers first: a signal arriving while the server starts still shuts it down cleanly.
    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if config.processes > 1:
            _supervise(config, stop, on_ready)
            return

        def ready(running: RunningServer) -> None:
            log.info("serving on port %d", running.port)
            if on_ready is not None:
                on_ready.set()

        _serve_until(stop, config, ready, recover=True, reuse_port=False)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        log.info("stopped")


def _supervise(
    config: ServerConfig, stop: threading.Event, on_ready: threading.Event | None
) -> None:
    """Start the server processes, the first alone (it resumes earlier jobs), then the rest."""
    context = multiprocessing.get_context("spawn")  # no gRPC or SQLite state crosses a fork
    children: list[multiprocessing.process.BaseProcess] = []
    turns = context.Value("Q", 0)  # clients handed a process port (process_port_base)
    try:
        for index in range(config.processes):
            # A pipe, not a shared Event: a supervisor killed mid-wait would leave an Event's
            # lock held, and the child would block forever setting it.
            ready, tell_ready = context.Pipe(duplex=False)
            child = context.Process(
                target=_serve_child,
                args=(config, ProcessSlot(index, turns), tell_ready, os.getpid()),
                name=f"sandbox-server-{index}",
            )
            child.start()
            tell_ready.close()
            children.append(child)
            while not ready.poll(0.1):
                if stop.is_set() or not child.is_alive():
                    return
            ready.close()
        own = config.process_port_base
        ports = f" (process ports {own}-{own + len(children) - 1})" if own else ""
        log.info("serving on %s with %d processes%s", config.listen, len(children), ports)
        if on_ready is not None:
            on_ready.set()
        while not stop.wait(0.5):
            if not all(c.is_alive() for c in children):
                log.error("a server process ended unexpectedly: stopping the others")
                return
    finally:
        for process in children:
            if process.is_alive():
                process.terminate()  # SIGTERM: each stops gracefully within the grace period
        for process in children:
            process.join(config.grace_period_s + 10)
            if process.is_alive():
                process.kill()
                process.join()


def _serve_child(
    config: ServerConfig, slot: ProcessSlot, ready: Connection, supervisor: int
) -> None:
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda signum, frame: stop.set())

    def orphaned() -> None:  # the supervisor was killed outright: stop, never serve alone
        while not stop.wait(_PARENT_CHECK_S):
            if os.getppid() != supervisor:
                log.error("the supervising process is gone: stopping")
                stop.set()

    threading.Thread(target=orphaned, name="sandbox-parent-watch", daemon=True).start()

    def tell_ready(running: RunningServer) -> None:
        with contextlib.suppress(OSError):  # the supervisor may be gone already
            ready.send_bytes(b"ready")
        ready.close()

    # The first process alone resumes the jobs an earlier run left.
    _serve_until(stop, config, tell_ready, recover=slot.index == 0, reuse_port=True, slot=slot)


def _serve_until(
    stop: threading.Event,
    config: ServerConfig,
    ready: Callable[[RunningServer], None],
    *,
    recover: bool,
    reuse_port: bool,
    slot: ProcessSlot | None = None,
) -> None:
    """One serving process: start, report ``ready``, serve until ``stop``, stop gracefully."""
    running = start_server(config, recover=recover, reuse_port=reuse_port, slot=slot)
    exempt_startup_heap()
    try:
        ready(running)
        stop.wait()
    finally:
        running.stop()
