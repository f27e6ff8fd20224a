"""The gRPC server (thin: authentication, conversion, status mapping)."""

from sandbox.server._serve import RunningServer, serve_forever, start_server

__all__ = ["RunningServer", "serve_forever", "start_server"]
