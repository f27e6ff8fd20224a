"""Server configuration: a frozen dataclass from a TOML file plus ``SANDBOX_*`` variables.

Nothing is read at import time; ``load_config`` is called explicitly and its result passed on.
Relative paths in the file are resolved against the file's directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    processes: int = 1
    """Server processes sharing the listening port and the state store (Python runs one
    thread at a time per process; more than 1 needs a fixed port)."""
    max_connection_age_s: float = 5.0
    """With ``processes`` above 1: a client connection is closed this long after it opened,
    once its calls in flight end, and the client reconnects, so the kernel spreads
    connections over the processes anew; one pinned to a busy process does not stay there
    (0: never)."""
    process_port_base: int = 0
    """With ``processes`` above 1: server process i also listens on this port + i (on the
    host of ``listen``), and a client asks on its first call which of these ports to use;
    they are handed out in turn, so every process serves an equal share of the clients (the
    kernel's spread of connections over the shared port is uneven). Connections are then not
    closed by ``max_connection_age_s``. 0: off (the ports must be reachable by clients)."""
    workers: int = 2
    """Threads running jobs (outside the RPC threads), per process."""
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
    allow_plaintext_tokens: bool = False
    """Accept bearer tokens on a connection without TLS. For local use (the demo, tests) only:
    without it, a server without ``[server.tls]`` refuses every token."""
    checkpoint_every_entries: int = 1000
    checkpoint_every_s: float = 60.0
    """A signed checkpoint of the audit log after this many entries or seconds (and at
    shutdown), whichever comes first."""
    at_rest_key_file: Path | None = None
    """Key file of the data-at-rest keys sealing stored results (default: ``state_dir /
    "at_rest.keys"``, created on first start); rotate with ``sandbox keys rotate``."""
    at_rest_keys: str = field(default="", repr=False)
    """Instead of the key file: the keys themselves, base64, comma-separated, newest last
    (from ``SANDBOX_AT_REST_KEYS``)."""
    federation_config: Path | None = None
    """TOML file of the federation settings (``[federation]``: the coordinators a node serves,
    the nodes and federated datasets a coordinator runs jobs over); see
    ``load_federation_config``. None: this server takes part in no federation."""
    tls: TLSConfig | None = None

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.sqlite3"


_PATHS = {"state_dir", "data_root", "policy_dir", "at_rest_key_file", "federation_config"}
_ENV_PREFIX = "SANDBOX_"


def _coerce(name: str, raw: Any, kind: type, base: Path) -> Any:
    try:
        if name in _PATHS:
            path = Path(str(raw)).expanduser()
            return path if path.is_absolute() else (base / path).resolve()
        if kind is bool:
            return _boolean(name, raw)
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
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
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
    config = ServerConfig(**values, tls=tls)
    if config.processes < 1:
        raise ConfigError("config key 'processes' must be at least 1")
    if config.max_connection_age_s < 0:
        raise ConfigError("config key 'max_connection_age_s' must be 0 (never) or more")
    if config.processes > 1 and config.listen.rsplit(":", 1)[-1] == "0":
        raise ConfigError("config key 'processes' above 1 needs a fixed port in 'listen'")
    if config.process_port_base:
        _check_process_ports(config)
    return config


def _check_process_ports(config: ServerConfig) -> None:
    base, last = config.process_port_base, config.process_port_base + config.processes - 1
    if config.processes < 2:
        raise ConfigError("config key 'process_port_base' needs 'processes' above 1")
    if base < 1 or last > 65535:
        raise ConfigError(
            f"config key 'process_port_base' must leave {config.processes} ports within 1-65535"
        )
    port = config.listen.rsplit(":", 1)[-1]
    if port.isdigit() and base <= int(port) <= last:
        raise ConfigError(
            "config key 'process_port_base': the processes' ports must not include the port "
            "in 'listen'"
        )


def _boolean(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"config key '{name}' must be true or false")


def _resolve(raw: Any, base: Path) -> Path:
    path = Path(str(raw)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


__all__ = ["ServerConfig", "TLSConfig", "load_config"]


# ---- federation ---------------------------------------------------------------------------

FAILURE_MODES = ("fail", "proceed")
PERSONS_MODES = ("disjoint", "overlapping")


@dataclass(frozen=True)
class FederationNodeConfig:
    """A node a coordinator fans jobs out to, and how it authenticates there."""

    name: str
    """The node's party name (logged, and counted towards ``min_nodes``)."""
    target: str
    """``host:port`` of the node's sandbox server."""
    project: str
    """The coordinator's project on the node (it must grant the jobs' purposes)."""
    token: str = field(default="", repr=False)
    """Bearer token of the coordinator's principal on the node (or ``token_file``)."""
    ca: Path | None = None
    cert: Path | None = None
    """Client certificate for mutual TLS (with ``key``)."""
    key: Path | None = None
    server_name: str = ""
    tls: bool = False
    """Use TLS (implied by ``ca``/``cert``); without it tokens travel in plaintext."""
    datasets: tuple[tuple[str, str], ...] = ()
    """Federated dataset id → the node's dataset id, where they differ."""

    def dataset_for(self, federated: str) -> str:
        return dict(self.datasets).get(federated, federated)


@dataclass(frozen=True)
class FederatedDatasetConfig:
    """A dataset that several nodes hold about one population, as the coordinator sees it."""

    id: str
    policy: Path
    """The coordinator's policy for the combined table (purposes, columns, key sets, bins,
    bounds, disclosure settings); its ``source`` is not read."""
    nodes: tuple[str, ...]
    min_nodes: int = 2
    """Fewest nodes whose partials may be combined and decrypted (at least 2)."""
    on_node_failure: str = "fail"
    """``fail``: any node down or slow fails the job; ``proceed``: go on without it if at
    least ``min_nodes`` answered (a node refusing the job or sending a malformed answer
    always fails it)."""
    persons: str = "overlapping"
    """``disjoint``: no person is in two nodes' data, so distinct persons add up exactly;
    ``overlapping``: they may be, so thresholds use a lower bound and distinct counts are
    refused."""
    max_rows_per_node: int = 10**9
    """Most rows one node may have in one cell (sizes the encoding; larger is refused)."""
    decimals: int = 2
    """Fixed-point decimals of sums."""


@dataclass(frozen=True)
class FederationConfig:
    coordinators: tuple[str, ...] = ()
    """Node side: the principals that may ask this server for encrypted partials (none:
    it serves no coordinator)."""
    timeout_s: float = 30.0
    """Coordinator side: deadline of each node's call."""
    key_bits: int = 2048
    """Paillier modulus bits of each job's fresh key."""
    nodes: tuple[FederationNodeConfig, ...] = ()
    datasets: tuple[FederatedDatasetConfig, ...] = ()

    def dataset(self, dataset_id: str) -> FederatedDatasetConfig | None:
        return next((d for d in self.datasets if d.id == dataset_id), None)

    def node(self, name: str) -> FederationNodeConfig:
        return next(n for n in self.nodes if n.name == name)


_FED_KEYS = {"coordinators", "timeout_s", "key_bits", "nodes", "datasets"}
_NODE_KEYS = {"name", "target", "project", "token", "token_file", "tls", "datasets"}
_NODE_TLS_KEYS = {"ca", "cert", "key", "server_name"}
_DATASET_KEYS = {
    "id",
    "policy",
    "nodes",
    "min_nodes",
    "on_node_failure",
    "persons",
    "max_rows_per_node",
    "decimals",
}


def load_federation_config(path: Path) -> FederationConfig:
    """The ``[federation]`` table of a TOML file; relative paths are the file's.

    Raises:
        ConfigError: a missing file, an unknown key, a wrong type or an inconsistent setting
            (names the key).
    """
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"federation config '{path}' not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"federation config '{path}': {exc}") from None
    base = path.resolve().parent
    fed = data.get("federation", {})
    if not isinstance(fed, dict):
        raise ConfigError("[federation] must be a table")
    _known("federation", fed, _FED_KEYS)
    nodes = tuple(_fed_node(n, base) for n in _fed_list(fed, "nodes"))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ConfigError("federation.nodes: node names must be unique")
    datasets = tuple(_fed_dataset(d, base, names) for d in _fed_list(fed, "datasets"))
    if len({d.id for d in datasets}) != len(datasets):
        raise ConfigError("federation.datasets: dataset ids must be unique")
    coordinators = fed.get("coordinators", [])
    if not isinstance(coordinators, list) or not all(isinstance(c, str) for c in coordinators):
        raise ConfigError("federation.coordinators must be a list of principal names")
    try:
        timeout = float(fed.get("timeout_s", 30.0))
        bits = int(fed.get("key_bits", 2048))
    except (TypeError, ValueError):
        raise ConfigError("federation.timeout_s and key_bits must be numbers") from None
    if timeout <= 0 or bits < 2048:
        raise ConfigError("federation.timeout_s must be > 0 and key_bits >= 2048")
    return FederationConfig(tuple(coordinators), timeout, bits, nodes, datasets)


def _known(where: str, table: dict[str, Any], keys: set[str]) -> None:
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ConfigError(
            f"unknown config key '{where}.{unknown[0]}' (known: {', '.join(sorted(keys))})"
        )


def _fed_list(fed: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = fed.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"federation.{key} must be an array of tables ([[federation.{key}]])")
    return items


def _fed_str(where: str, table: dict[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ConfigError(f"config key '{where}.{key}' must be a non-empty string")
    return value


def _fed_node(table: dict[str, Any], base: Path) -> FederationNodeConfig:
    where = "federation.nodes"
    _known(where, table, _NODE_KEYS)
    name = _fed_str(where, table, "name")
    token = _fed_str(where, table, "token", "")
    if "token_file" in table:
        try:
            token = _resolve(table["token_file"], base).read_text().strip()
        except OSError:
            raise ConfigError(f"{where}.token_file of node '{name}' cannot be read") from None
    tls = table.get("tls", False)
    paths: dict[str, Path | None] = {"ca": None, "cert": None, "key": None}
    server_name = ""
    if isinstance(tls, dict):
        _known(f"{where}.tls", tls, _NODE_TLS_KEYS)
        for k in ("ca", "cert", "key"):
            paths[k] = _resolve(tls[k], base) if k in tls else None
        server_name = _fed_str(f"{where}.tls", tls, "server_name", "")
        tls = True
    elif not isinstance(tls, bool):
        raise ConfigError(f"config key '{where}.tls' must be true, false or a table")
    if (paths["cert"] is None) != (paths["key"] is None):
        raise ConfigError(f"{where}.tls of node '{name}': 'cert' and 'key' go together")
    datasets = table.get("datasets", {})
    if not isinstance(datasets, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in datasets.items()
    ):
        raise ConfigError(f"config key '{where}.datasets' must map dataset ids to ids")
    return FederationNodeConfig(
        name=name,
        target=_fed_str(where, table, "target"),
        project=_fed_str(where, table, "project"),
        token=token,
        ca=paths["ca"],
        cert=paths["cert"],
        key=paths["key"],
        server_name=server_name,
        tls=bool(tls),
        datasets=tuple(sorted(datasets.items())),
    )


def _fed_dataset(table: dict[str, Any], base: Path, names: list[str]) -> FederatedDatasetConfig:
    where = "federation.datasets"
    _known(where, table, _DATASET_KEYS)
    dataset_id = _fed_str(where, table, "id")
    nodes = table.get("nodes", names)
    if not isinstance(nodes, list) or not all(n in names for n in nodes) or not nodes:
        raise ConfigError(f"{where}.nodes of '{dataset_id}' must list configured node names")
    if len(set(nodes)) != len(nodes):
        raise ConfigError(f"{where}.nodes of '{dataset_id}' lists a node twice")
    try:
        min_nodes = int(table.get("min_nodes", 2))
        max_rows = int(table.get("max_rows_per_node", 10**9))
        decimals = int(table.get("decimals", 2))
    except (TypeError, ValueError):
        raise ConfigError(f"{where} of '{dataset_id}': numbers expected") from None
    if not 2 <= min_nodes <= len(nodes):
        raise ConfigError(
            f"{where}.min_nodes of '{dataset_id}' must be at least 2 and at most its nodes"
        )
    if max_rows < 1 or not 0 <= decimals <= 18:
        raise ConfigError(f"{where} of '{dataset_id}': max_rows_per_node >= 1, decimals 0..18")
    mode = _fed_str(where, table, "on_node_failure", "fail")
    persons = _fed_str(where, table, "persons", "overlapping")
    if mode not in FAILURE_MODES or persons not in PERSONS_MODES:
        raise ConfigError(
            f"{where} of '{dataset_id}': on_node_failure is fail or proceed, persons is "
            "disjoint or overlapping"
        )
    return FederatedDatasetConfig(
        id=dataset_id,
        policy=_resolve(_fed_str(where, table, "policy"), base),
        nodes=tuple(nodes),
        min_nodes=min_nodes,
        on_node_failure=mode,
        persons=persons,
        max_rows_per_node=max_rows,
        decimals=decimals,
    )


__all__ += [
    "FederatedDatasetConfig",
    "FederationConfig",
    "FederationNodeConfig",
    "load_federation_config",
]
