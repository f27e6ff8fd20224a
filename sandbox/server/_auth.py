"""Authentication interceptor: every RPC is authenticated; the role comes only from the token."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc

from sandbox._errors import SandboxError, Unauthenticated
from sandbox._model import Principal
from sandbox.server._status import abort_with

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "sandbox_principal", default=None
)
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def current_principal() -> Principal:
    principal = _PRINCIPAL.get()
    if principal is None:  # pragma: no cover - the interceptor guarantees it
        raise Unauthenticated("no credential")
    return principal


def _token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return None


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, authenticate: Callable[[str], Principal]) -> None:
        self._authenticate = authenticate

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(_OPEN_PREFIXES):
            return handler
        token = _token(details.invocation_metadata)

        def authed(behavior: Callable[..., Any], stream: bool = False) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    if not token:
                        raise Unauthenticated("missing bearer token")
                    principal = self._authenticate(token)
                except SandboxError as exc:
                    abort_with(context, exc)
                reset = _PRINCIPAL.set(principal)
                try:
                    out = behavior(request, context)
                    # A stream is materialised here, so the generator runs authenticated.
                    return iter(list(out)) if stream else out
                finally:
                    _PRINCIPAL.reset(reset)

            return run

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                authed(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                authed(handler.unary_stream, stream=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
