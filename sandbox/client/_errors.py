"""Re-raise server errors as the same ``SandboxError`` classes, keyed by stable reason."""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sandbox._errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SandboxError,
    Timeout,
    Unauthenticated,
    Unavailable,
    error_for_reason,
)

_BY_CODE: dict[grpc.StatusCode, type[SandboxError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def raise_from_rpc(error: grpc.RpcError) -> NoReturn:
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                cls = error_for_reason(info.reason)
                rules = tuple(r for r in info.metadata.get("rule_ids", "").split(",") if r)
                raise cls(
                    status.message, rule_ids=rules, job_id=info.metadata.get("job_id", "")
                ) from None
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else ""
    raise _BY_CODE.get(code, SandboxError)(f"{code.name}: {details}") from None
