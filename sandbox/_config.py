"""Server configuration: a frozen dataclass from a TOML file plus ``SANDBOX_*`` variables.

Nothing is read at import time; ``load_config`` is called explicitly and its result passed on.
Relative paths in the file are resolved against the file's directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox._errors import ConfigError


@dataclass(frozen=True)
class TLSConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None
    """When set, clients must present a certificate signed by this CA."""


@dataclass(frozen=True)
class ServerConfig:
    state_dir: Path
    data_root: Path
    policy_dir: Path
    listen: str = "127.0.0.1:50051"
    workers: int = 2
    """Threads running jobs (outside the RPC threads)."""
    rpc_threads: int = 16
    max_concurrent_rpcs: int = 64
    max_message_bytes: int = 4 * 1024 * 1024
    keepalive_time_s: int = 60
    keepalive_timeout_s: int = 20
    grace_period_s: float = 10.0
    max_wait_s: float = 30.0
    engine_threads: int = 2
    engine_memory_limit: str = ""
    engine_cache_rows: int = 2_000_000
    """Rows of small registered files the engine keeps in memory, in all (0: none)."""
    max_mock_rows: int = 100_000
    """Most synthetic rows one MockRows call may ask for."""
    tls: TLSConfig | None = None

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.sqlite3"


_PATHS = {"state_dir", "data_root", "policy_dir"}
_ENV_PREFIX = "SANDBOX_"


def _coerce(name: str, raw: Any, kind: type, base: Path) -> Any:
    try:
        if name in _PATHS:
            path = Path(str(raw)).expanduser()
            return path if path.is_absolute() else (base / path).resolve()
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{name}' must be a {kind.__name__}") from None


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Load the config file (if any), then apply ``SANDBOX_<KEY>`` overrides from ``env``."""
    env = env or {}
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file '{path}' not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file '{path}': {exc}") from None
        base = path.resolve().parent
    data = dict(data.get("server", data))
    tls_data = data.pop("tls", None)
    fields = {f.name: f for f in dataclasses.fields(ServerConfig) if f.name != "tls"}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(fields))})")
    for name in fields:
        value = env.get(_ENV_PREFIX + name.upper())
        if value is not None:
            data[name] = value
    kinds = {"int": int, "float": float, "str": str}
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _coerce(name, data[name], kinds.get(str(f.type), str), base)
    missing = [n for n in ("state_dir", "data_root", "policy_dir") if n not in values]
    if missing:
        raise ConfigError(f"missing config keys: {', '.join(missing)}")
    tls = None
    if tls_data is not None:
        if not isinstance(tls_data, dict) or not {"cert", "key"} <= tls_data.keys():
            raise ConfigError("[server.tls] needs 'cert' and 'key' paths")
        unknown = sorted(set(tls_data) - {"cert", "key", "client_ca"})
        if unknown:
            raise ConfigError(
                f"unknown config key 'tls.{unknown[0]}' (known: cert, key, client_ca)"
            )
        tls = TLSConfig(
            cert=_resolve(tls_data["cert"], base),
            key=_resolve(tls_data["key"], base),
            client_ca=_resolve(tls_data["client_ca"], base) if "client_ca" in tls_data else None,
        )
    return ServerConfig(**values, tls=tls)


def _resolve(raw: Any, base: Path) -> Path:
    path = Path(str(raw)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


__all__ = ["ServerConfig", "TLSConfig", "load_config"]
