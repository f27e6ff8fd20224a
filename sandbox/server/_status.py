"""SandboxError → gRPC status with a ``google.rpc.ErrorInfo`` carrying the stable reason."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from sandbox._errors import SandboxError

DOMAIN = "sandbox"


def status_for(exc: SandboxError) -> grpc.Status:
    code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL)
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason,
        domain=DOMAIN,
        metadata={"rule_ids": ",".join(exc.rule_ids), "job_id": exc.job_id},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=[detail])
    return rpc_status.to_status(status)


def abort_with(context: grpc.ServicerContext, exc: SandboxError) -> NoReturn:
    context.abort_with_status(status_for(exc))
    raise AssertionError("unreachable")  # abort_with_status always raises


log = logging.getLogger("sandbox.server")
F = TypeVar("F", bound=Callable[..., Any])


def rpc(method: F) -> F:
    """Map SandboxError to its status; anything else to a generic INTERNAL (no internals)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except SandboxError as exc:
            abort_with(context, exc)
        except Exception as exc:
            log.error("internal error in %s: %s", method.__name__, type(exc).__name__)
            abort_with(context, SandboxError("internal error"))

    return wrapper  # type: ignore[return-value]
