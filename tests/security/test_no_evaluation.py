"""Invariant 3: no user-supplied string is ever evaluated.

Statically, the server code has no ``eval``/``exec``/``compile``/``__import__`` and no
``DataFrame.query``/``.eval``/``pd.eval``. Dynamically, SQL in filter values is a literal,
SQL in column names is an unknown column, and path tricks in dataset ids are "not found".
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sandbox import DisclosureControl, NotFound, PolicyDenied, Query
from tests.conftest import REPO, World
from tests.security._support import add_project, csv_world, pums_frame

SANDBOX = REPO / "sandbox"
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRS = {"query", "eval"}
CLIENT_FACTORIES = {"Client", "client", "_client"}
"""Callables returning a ``sandbox.Client``, whose ``.query(dataset)`` is the safe builder."""


def _is_client_call(node: ast.AST | None) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    return name in CLIENT_FACTORIES


def _is_client_annotation(node: ast.AST | None) -> bool:
    return node is not None and ast.unparse(node).strip("'\"").split(".")[-1] == "Client"


def _client_names(tree: ast.AST) -> set[str]:
    """Names bound to a sandbox ``Client`` (whose ``query`` builds a JobSpec, evaluates nothing)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.withitem) and _is_client_call(node.context_expr):
            if isinstance(node.optional_vars, ast.Name):
                names.add(node.optional_vars.id)
        elif isinstance(node, ast.Assign) and _is_client_call(node.value):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if _is_client_annotation(node.annotation):
                names.add(node.target.id)
        elif isinstance(node, ast.arg) and _is_client_annotation(node.annotation):
            names.add(node.arg)
    return names


def _offences(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    clients = _client_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{path.relative_to(root)}:{node.lineno}"
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_NAMES:
            found.append(f"{where}: {func.id}(...)")
        elif isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_ATTRS:
            receiver = func.value
            on_client = (
                isinstance(receiver, ast.Name) and receiver.id in clients
            ) or _is_client_call(receiver)
            if func.attr == "query" and on_client:
                continue  # Client.query(dataset): the structured query builder
            found.append(f"{where}: {ast.unparse(func)}(...)")
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in {"builtins", "importlib"}
            and func.attr in FORBIDDEN_NAMES | {"import_module"}
        ):
            found.append(f"{where}: {ast.unparse(func)}(...)")
    return found


def _server_sources() -> list[Path]:
    files = [p for p in SANDBOX.rglob("*.py") if "api" not in p.relative_to(SANDBOX).parts[:1]]
    assert len(files) > 20  # the scan really covers the package
    return sorted(files)


def test_no_dynamic_evaluation_in_sandbox_sources() -> None:
    offences = [o for path in _server_sources() for o in _offences(path)]
    assert offences == []


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pandas as pd\n"
        "def f(df, s, c: Client):\n"
        "    eval(s); exec(s); compile(s, 'x', 'exec'); __import__(s)\n"
        "    df.query(s); df.eval(s); pd.eval(s)\n"
        "    c.query('residents')\n"
        "    builtins.eval(s); importlib.import_module(s)\n"
    )
    found = _offences(bad, tmp_path)
    assert len(found) == 9, found
    assert not any("c.query" in f for f in found)


# ---- dynamic --------------------------------------------------------------------------------
INJECTIONS = ("x' OR 1=1 --", "'; DROP TABLE jobs; --", '" OR ""="', "north') OR ('1'='1")


@pytest.fixture
def world(world_factory: Callable[..., World], tmp_path: Path) -> World:
    frame = pums_frame()
    frame["region"] = np.resize(["north", "south", "east", "west"], len(frame))
    w = csv_world(
        world_factory,
        tmp_path,
        {
            "geo": (
                frame,
                "dataset: geo\nversion: 1\ntitle: geo\nsteward: t\nsource: geo.csv\n"
                "person_key: pid\npopulation: geo-persons\ncolumns:\n"
                "  pid: {role: identifier}\n  region: {role: dimension}\n"
                "  sex: {role: dimension}\n  age: {role: dimension}\n"
                "purposes:\n  research: {columns: [region, sex, age]}\n",
            )
        },
    )
    add_project(w, "p", (("geo", "research"),))
    return w


def _tables(world: World) -> set[str]:
    rows = world.db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


def test_sql_in_filter_values_is_a_literal(world: World) -> None:
    ana = world.client("ana")
    tables = _tables(world)
    assert {"jobs", "ledger", "audit"} <= tables

    def run(values: list[str]) -> list[tuple[object, ...]]:
        q = Query("geo").where("region", "in", values).group_by("sex").count()
        result = ana.run(q, project="p", purpose="research")
        return [(r.keys, tuple(c.value for c in r.cells)) for r in result.table.rows]

    baseline = run(["north", "no-such-region"])
    total = ana.run(Query("geo").group_by("sex").count(), project="p", purpose="research")
    assert baseline != [(r.keys, tuple(c.value for c in r.cells)) for r in total.table.rows]
    for text in INJECTIONS:
        # Matched as a (non-matching) literal: same answer as any other unknown value.
        assert run(["north", text]) == baseline, text
        # Alone it matches nobody, so it is refused exactly like a plain unknown value.
        errors = []
        for value in (text, "no-such-region"):
            with pytest.raises(DisclosureControl) as info:
                ana.run(Query("geo").where("region", "=", value).count(), project="p",
                        purpose="research")  # fmt: skip
            errors.append((str(info.value), info.value.rule_ids))
        assert errors[0] == errors[1]
    # The state store is intact and still works.
    assert _tables(world) == tables
    assert world.db.conn.execute("SELECT count(*) FROM jobs").fetchone()[0] > 0
    assert world.client("chen").audit_verify().ok
    assert run(["north"]) == baseline


@pytest.mark.parametrize(
    "column", ['age" OR 1=1 --', "age; DROP TABLE jobs", 'region"', "*", "1", "age--"]
)
def test_sql_in_column_names_is_an_unknown_column(world: World, column: str) -> None:
    ana = world.client("ana")
    tables = _tables(world)
    for query in (
        Query("geo").group_by(column).count(),
        Query("geo").where(column, "=", 1).count(),
        Query("geo").mean(column),
    ):
        with pytest.raises(PolicyDenied) as info:
            ana.run(query, project="p", purpose="research")
        assert info.value.rule_ids == ("column.unknown",)
    assert _tables(world) == tables


@pytest.mark.parametrize(
    "dataset", ["../geo", "/etc/passwd", "geo/../geo", "..", "./geo", "geo.csv", "../../etc/passwd"]
)
def test_dataset_path_tricks_are_not_found(world: World, dataset: str) -> None:
    ana = world.client("ana")
    sam = world.client("sam")

    def errors(name: str) -> list[str]:
        out = []
        for call in (
            lambda: ana.describe(name),
            lambda: ana.run(Query(name).count(), project="p", purpose="research"),
            lambda: sam.register_dataset(name),
        ):
            with pytest.raises(NotFound) as info:
                call()
            out.append(str(info.value).replace(name, "<ds>"))
        return out

    assert errors(dataset) == errors("unknown")
