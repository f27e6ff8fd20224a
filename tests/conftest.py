"""Shared fixtures: a real sandbox server on a loopback port, real files, real tokens."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox import Client, Project, QuotaLimits, Role
from sandbox._config import ServerConfig, load_config
from sandbox.audit import AuditLog
from sandbox.server import RunningServer, start_server
from sandbox.state import Database, Principals

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    env = os.environ.get("SANDBOX_SHARED_DIR")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared", REPO / "shared"]
    for c in candidates:
        if (c / "data" / "pums" / "PUMS.csv").is_file():
            return c
    raise RuntimeError("shared/data/pums not found beside the repository (set SANDBOX_SHARED_DIR)")


PUMS_DIR = shared_dir() / "data" / "pums"

PUMS_POLICY = """\
dataset: {name}
version: 1
title: PUMS sample
description: US Census public use microdata sample
steward: census-office
source: {source}
person_key: pid
population: pums-persons
columns:
  pid: {{role: identifier}}
  age: {{role: dimension{age_bins}}}
  sex: {{role: dimension, values: [0, 1]}}
  educ: {{role: dimension}}
  race: {{role: dimension}}
  married: {{role: dimension, values: [0, 1]}}
  income: {{role: measure, bounds: [0, 500000], aggregates: [sum, mean]}}
purposes:
  research: {{description: General research, columns: [age, sex, educ, race, married, income]}}
  demography: {{description: Population counts only, columns: [age, sex]}}
disclosure: {{min_persons_per_cell: {k}, rounding_base: {base}}}
limits: {{max_groups: 1000, max_filters: 4, max_group_by: 3}}
deny:
  - {{id: no-income-sum-demography, purposes: [demography], aggregates: [sum]}}
"""


def pums_policy(
    name: str, source: str, *, k: int = 10, base: int = 1, age_bins: bool = False
) -> str:
    bins = ", bins: [0, 18, 35, 50, 65, 101]" if age_bins else ""
    return PUMS_POLICY.format(name=name, source=source, k=k, base=base, age_bins=bins)


@dataclass
class World:
    """A running server plus its principals; tests talk to it only through real clients."""

    root: Path
    config: ServerConfig
    server: RunningServer
    tokens: dict[str, str] = field(default_factory=dict)
    _clients: list[Client] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def db(self) -> Database:
        return self.server.app.db

    def client(self, name: str, **kwargs: object) -> Client:
        c = Client(self.target, token=self.tokens[name], **kwargs)  # type: ignore[arg-type]
        self._clients.append(c)
        return c

    def add_principal(self, name: str, role: Role) -> str:
        with self.db.write() as conn:
            self.tokens[name] = Principals(self.db).add(conn, name, role)
            AuditLog(self.db).append(conn, "principal.added", actor="test", principal=name)
        return self.tokens[name]

    def register(self, dataset: str) -> None:
        self.client("sam").register_dataset(dataset)

    def project(
        self,
        project_id: str,
        grants: tuple[tuple[str, str], ...],
        members: tuple[str, ...] = ("ana",),
        expires: dt.date | None = None,
        quota: QuotaLimits = QuotaLimits(),
    ) -> None:
        self.client("sam").create_project(
            Project(
                project_id,
                project_id,
                members,
                grants,
                expires or dt.date.today() + dt.timedelta(days=30),
                quota,
            )
        )

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self.server.stop(grace=1)


def make_world(
    root: Path, policies: dict[str, str], files: dict[str, Path], **settings: object
) -> World:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "policies").mkdir(exist_ok=True)
    for name, src in files.items():
        shutil.copy(src, root / "data" / name)
    for name, text in policies.items():
        (root / "policies" / f"{name}.yaml").write_text(textwrap.dedent(text))
    lines = [
        "[server]",
        'listen = "127.0.0.1:0"',
        'state_dir = "state"',
        'data_root = "data"',
        'policy_dir = "policies"',
        "grace_period_s = 2",
    ]
    # Plaintext loopback: bearer tokens must be allowed explicitly (tests may override).
    settings = {"allow_plaintext_tokens": True, **settings}
    lines += [f"{k} = {_toml(v)}" for k, v in settings.items()]
    (root / "sandbox.toml").write_text("\n".join(lines).replace("'", '"') + "\n")
    config = load_config(root / "sandbox.toml")
    server = start_server(config)
    world = World(root, config, server)
    for name, role in [
        ("root", Role.ADMIN),
        ("sam", Role.STEWARD),
        ("ana", Role.RESEARCHER),
        ("bob", Role.RESEARCHER),
        ("chen", Role.COMPLIANCE),
    ]:
        world.add_principal(name, role)
    return world


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


@pytest.fixture
def world_factory(tmp_path: Path) -> Iterator[Callable[..., World]]:
    worlds: list[World] = []

    def factory(policies: dict[str, str], files: dict[str, Path], **settings: object) -> World:
        w = make_world(tmp_path / f"w{len(worlds)}", policies, files, **settings)
        worlds.append(w)
        return w

    yield factory
    for w in worlds:
        w.stop()


@pytest.fixture
def pums_world(world_factory: Callable[..., World]) -> World:
    """PUMS_pid (1 row per person) as 'pums' with k=10 and no rounding, registered and granted."""
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv")}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"}
    )
    world.register("pums")
    world.project("census-study", (("pums", "research"), ("pums", "demography")))
    return world
