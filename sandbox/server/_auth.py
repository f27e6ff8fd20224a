"""Authentication interceptor: every RPC is authenticated; the role comes only from the state
store, for the principal named by a bearer token or by a verified client certificate.

The transport facts come from gRPC's auth context: the connection is secure when its security
level is ``TSI_PRIVACY_AND_INTEGRITY`` (TLS), and a client certificate the server verified
(mutual TLS) names its subject in ``x509_subject``, OpenSSL's RFC 2253 rendering of the subject
DN, most specific attribute first (``CN=ana,OU=Health,O=City,C=NL``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from sandbox._errors import SandboxError, Unauthenticated
from sandbox._model import Principal
from sandbox.server._status import abort_with
from sandbox.state import Peer

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


class Authenticate(Protocol):
    """``Principals.authenticate``: a token (or None) and what the transport established."""

    def __call__(self, token: str | None, /, peer: Peer | None = None) -> Principal: ...


def peer_of(context: grpc.ServicerContext) -> Peer:
    """The transport facts of a call: a secure channel, and a verified client certificate."""
    auth = context.auth_context() or {}
    secure = b"TSI_PRIVACY_AND_INTEGRITY" in auth.get("security_level", ())
    subjects = list(auth.get("x509_subject", ())) if secure else []
    subject = bytes(subjects[0]).decode("utf-8", "replace") if subjects else None
    return Peer(secure=secure, cert_subject=subject)


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates every call except health checks (see ``Principals.authenticate``)."""

    def __init__(self, authenticate: Authenticate) -> None:
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
                    principal = self._authenticate(token, peer=peer_of(context))
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
