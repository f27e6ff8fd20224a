"""Build and run the gRPC server: limits, keepalive, health, graceful shutdown."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sandbox._app import Sandbox
from sandbox._config import ServerConfig
from sandbox.api.v1 import audit_pb2_grpc, catalog_pb2_grpc, jobs_pb2_grpc, projects_pb2_grpc
from sandbox.server._auth import AuthInterceptor
from sandbox.server._servicer import AuditServicer, CatalogServicer, JobServicer, ProjectServicer

log = logging.getLogger("sandbox.server")
SERVICES = (
    "sandbox.api.v1.CatalogService",
    "sandbox.api.v1.JobService",
    "sandbox.api.v1.ProjectService",
    "sandbox.api.v1.AuditService",
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


def start_server(config: ServerConfig, app: Sandbox | None = None) -> RunningServer:
    app = app or Sandbox(config)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", config.keepalive_time_s * 1000),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_s * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="sandbox-rpc"),
        interceptors=[AuthInterceptor(app.principals.authenticate)],
        options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(app), server)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(app), server)
    projects_pb2_grpc.add_ProjectServiceServicer_to_server(ProjectServicer(app), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(app), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(config.tls.key.read_bytes(), config.tls.cert.read_bytes())],
            root_certificates=config.tls.client_ca.read_bytes() if config.tls.client_ca else None,
            require_client_auth=config.tls.client_ca is not None,
        )
        port = server.add_secure_port(config.listen, credentials)
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        app.close()
        raise OSError(f"cannot listen on {config.listen}")
    app.jobs.recover()
    server.start()
    for name in ("", *SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, app, port, health_servicer)


def serve_forever(config: ServerConfig, on_ready: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully within the grace period."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: shutting down (grace %.1fs)", signum, config.grace_period_s)
        stop.set()

    # Handlers first: a signal arriving while the server starts still shuts it down cleanly.
    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    running = start_server(config)
    log.info("serving on port %d", running.port)
    if on_ready is not None:
        on_ready.set()
    try:
        stop.wait()
    finally:
        running.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        log.info("stopped")
