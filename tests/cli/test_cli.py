"""The ``sandbox`` command line, in-process (CliRunner) and as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sandbox import Client, Unauthenticated
from sandbox.cli import main
from sandbox.state import Database, Principals, hash_token
from tests.conftest import REPO, World


def run(*args: str) -> Result:
    # Nothing from the caller's environment (SANDBOX_TARGET, SANDBOX_TOKEN, ...) leaks in.
    env = {k: None for k in os.environ if k.startswith("SANDBOX_")}
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


def write_config(root: Path) -> Path:
    for d in ("data", "policies"):
        (root / d).mkdir(parents=True, exist_ok=True)
    config = root / "sandbox.toml"
    config.write_text(
        '[server]\nstate_dir = "state"\ndata_root = "data"\npolicy_dir = "policies"\n'
    )
    return config


# ---- policy validate --------------------------------------------------------------------------
def test_policy_validate_accepts_the_repository_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for args in (("policy", "validate", "policies/"), ("policy", "validate")):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "ok"
        assert result.stderr == ""


def test_policy_validate_reports_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("dataset: broken\nversion: zero\ntitle: [unclosed\n")
    result = run("policy", "validate", str(bad))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith(f"{bad}:") for line in lines), lines
    assert lines[0].split(":")[1].isdigit()
    # A schema problem on a known line, alongside a good file in a directory.
    (tmp_path / "broken.yaml").write_text("dataset: broken\nversion: 0\ntitle: t\n")
    result = run("policy", "validate", str(tmp_path), str(REPO / "policies"))
    assert result.exit_code == 1
    assert f"{bad}:2:" in result.stderr
    assert "ok" not in result.stdout
    assert str(REPO / "policies") not in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("policy", "validate", "--no-such-option").exit_code == 2
    assert run("--no-such-option", "principals", "list").exit_code == 2
    assert run("no-such-command").exit_code == 2
    assert run("principals", "add", "x", "--role", "overlord").exit_code == 2
    assert run("policy", "validate", str(tmp_path / "missing.yaml")).exit_code == 2


# ---- principals -------------------------------------------------------------------------------
def test_principals_add_prints_the_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run("principals", "add", "dora", "--role", "researcher", "--config", str(config))
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("sbx_") and len(token) > 20
    assert result.output.count(token) == 1
    state = tmp_path / "state"
    stored = b"".join(p.read_bytes() for p in state.iterdir() if p.is_file())
    assert token.encode() not in stored
    assert token.removeprefix("sbx_").encode() not in stored
    assert hash_token(token).encode() in stored  # we looked in the right place
    db = Database(state / "state.sqlite3")
    try:
        assert Principals(db).authenticate(token).name == "dora"
    finally:
        db.close()
    # A second add of the same name is refused (exit 1, message on stderr, no token).
    again = run("principals", "add", "dora", "--role", "steward", "--config", str(config))
    assert again.exit_code == 1
    assert again.stdout == "" and "already exists" in again.stderr


def test_principals_revoke_and_list(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    tokens = {}
    for name, role in (("ana", "researcher"), ("sam", "steward")):
        added = run("principals", "add", name, "--role", role, "--config", str(config))
        tokens[name] = added.stdout.strip()
    revoked = run("principals", "revoke", "ana", "--config", str(config))
    assert revoked.exit_code == 0 and "ana" in revoked.stdout
    assert run("principals", "revoke", "ana", "--config", str(config)).exit_code == 1
    assert run("principals", "revoke", "nobody", "--config", str(config)).exit_code == 1

    listed = run("--output", "json", "principals", "list", "--config", str(config))
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["ana", "sam"]
    assert {r["name"]: r["role"] for r in rows} == {"ana": "researcher", "sam": "steward"}
    assert rows[0]["revoked"] and not rows[1]["revoked"]
    assert not any(t in listed.stdout for t in tokens.values())

    table = run("principals", "list", "--config", str(config))
    assert table.exit_code == 0
    header = table.stdout.splitlines()[0].split()
    assert header[:2] == ["name", "role"]

    db = Database(tmp_path / "state" / "state.sqlite3")
    try:
        with pytest.raises(Unauthenticated):
            Principals(db).authenticate(tokens["ana"])
        assert Principals(db).authenticate(tokens["sam"]).name == "sam"
    finally:
        db.close()


# ---- against a running server -----------------------------------------------------------------
def test_client_commands_against_a_running_server(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    ana.sql(
        "SELECT sex, COUNT(*) FROM pums GROUP BY sex", project="census-study", purpose="research"
    )

    def remote(token_of: str, *args: str) -> Result:
        return run(*args, "--target", world.target, "--token", world.tokens[token_of])

    datasets = remote("sam", "datasets", "list")
    assert datasets.exit_code == 0, datasets.output
    lines = datasets.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "title", "rows"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("pums ")

    jobs = remote("ana", "jobs", "list")
    assert jobs.exit_code == 0, jobs.output
    assert jobs.stdout.splitlines()[0].split()[:2] == ["job_id", "state"]
    assert "SUCCEEDED" in jobs.stdout

    audit = remote("chen", "audit", "list")
    assert audit.exit_code == 0, audit.output
    assert audit.stdout.splitlines()[0].split()[:3] == ["seq", "time", "event"]
    assert "job.released" in audit.stdout and "principal.added" in audit.stdout

    as_json = run(
        "--output",
        "json",
        "audit",
        "list",
        "--target",
        world.target,
        "--token",
        world.tokens["chen"],
    )
    entries = json.loads(as_json.stdout)
    assert [e["seq"] for e in entries] == list(range(len(entries)))

    verify = remote("chen", "audit", "verify")
    assert verify.exit_code == 0, verify.output
    assert "True" in verify.stdout
    offline = run("audit", "verify", "--config", str(world.root / "sandbox.toml"))
    assert offline.exit_code == 0, offline.output

    # A researcher may not read the audit log; a bad token is refused. Both exit 1.
    denied = remote("ana", "audit", "list")
    assert denied.exit_code == 1 and "PERMISSION_DENIED" in denied.stderr
    bad = run("datasets", "list", "--target", world.target, "--token", "sbx_wrong")
    assert bad.exit_code == 1 and "UNAUTHENTICATED" in bad.stderr

    # An operator-added principal can use the server at once.
    added = run(
        "principals",
        "add",
        "dora",
        "--role",
        "researcher",
        "--config",
        str(world.root / "sandbox.toml"),
    )
    with Client(world.target, token=added.stdout.strip()) as dora:
        assert dora.datasets() == []


# ---- the demo ---------------------------------------------------------------------------------
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sandbox.cli import main; main()",
            "demo",
            "--residents",
            "20000",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # A result table: its header names the query's columns.
    assert any("district" in line and "mean_income" in line for line in out.splitlines()), out
    for needle in (
        "Refused jobs",
        "POLICY_DENIED",
        "DISCLOSURE_CONTROL",
        "shut down cleanly",
        "verified OK",
    ):
        assert needle in out, needle
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "demo" / "state" / "state.sqlite3").is_file()
