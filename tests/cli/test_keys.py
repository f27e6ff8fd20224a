"""``sandbox keys`` (researcher key pairs) and the principal commands for certificates."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sandbox import Client, Query
from sandbox.audit import AuditLog
from sandbox.cli import main
from sandbox.crypto import KeyPassphraseInvalid, fingerprint
from sandbox.state import Database
from tests.conftest import World

PASSPHRASE = "correct horse battery staple"


def run(*args: str, input: str | None = None) -> Result:
    env = {k: None for k in os.environ if k.startswith("SANDBOX_")}
    return CliRunner(env=env).invoke(main, list(args), input=input, catch_exceptions=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """One key pair made with a passphrase file (key generation takes a moment)."""
    root = tmp_path_factory.mktemp("keys")
    secret = root / "passphrase.txt"
    secret.write_text(PASSPHRASE + "\n")
    out = root / "mykeys"
    return out, run("keys", "new", "--out", str(out), "--passphrase-file", str(secret))


def test_keys_new_writes_a_protected_private_key_and_a_public_key(
    made: tuple[Path, Result],
) -> None:
    out, result = made
    assert result.exit_code == 0, result.output
    private, public = out / "private_key.pem", out / "public_key.pem"
    assert mode(private) == 0o600
    assert mode(public) == 0o644
    assert mode(out) == 0o700  # created by the command
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert PASSPHRASE.encode() not in private.read_bytes()
    # The printed fingerprint is the public key's; the private key loads with the passphrase.
    assert f"fingerprint: {fingerprint(public.read_bytes())}" in result.output
    key = Client.load_private_key(private, PASSPHRASE)
    assert key.has_private() and key.size_in_bits() == 3072
    assert key.public_key().export_key(format="PEM") == public.read_bytes()


def test_a_wrong_passphrase_does_not_load_the_key(made: tuple[Path, Result]) -> None:
    out, _ = made
    with pytest.raises(KeyPassphraseInvalid):
        Client.load_private_key(out / "private_key.pem", PASSPHRASE + "!")
    with pytest.raises(KeyPassphraseInvalid):
        Client.load_private_key(str(out / "private_key.pem"), b"other")


def test_keys_new_refuses_to_overwrite(made: tuple[Path, Result], tmp_path: Path) -> None:
    out, _ = made
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    secret = tmp_path / "p.txt"
    secret.write_text("another passphrase")
    again = run("keys", "new", "--out", str(out), "--passphrase-file", str(secret))
    assert again.exit_code == 1
    assert "already exists" in again.stderr and "not overwritten" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # Either file alone blocks it too, before any prompt.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "public_key.pem").write_text("keep me")
    blocked = run("keys", "new", "--out", str(lone))
    assert blocked.exit_code == 1 and "Passphrase" not in blocked.output
    assert (lone / "public_key.pem").read_text() == "keep me"
    assert not (lone / "private_key.pem").exists()


def test_keys_new_prompts_for_the_passphrase_twice(tmp_path: Path) -> None:
    out = tmp_path / "k"
    # A mismatch asks again; then the two entries agree.
    result = run("keys", "new", "--out", str(out), input="one\ntwo\npass\npass\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("Passphrase for the private key") == 2
    assert Client.load_private_key(out / "private_key.pem", "pass").has_private()


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "new"),  # --out is required
        ("keys", "new", "--out", "x", "--bits", "2048"),  # below the minimum
        ("keys", "new", "--out", "x", "--bits", "16384"),  # above the maximum
        ("keys", "new", "--out", "x", "--passphrase-file", "/no/such/file"),
        ("keys", "register"),  # the public key file is required
        ("keys", "register", "/no/such/public_key.pem"),
        ("principals", "add", "x", "--role", "researcher", "--cert-subject", "no equals sign"),
    ],
)
def test_usage_errors_exit_2(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "x").exists()


def test_an_empty_passphrase_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    result = run("keys", "new", "--out", str(tmp_path / "k"), "--passphrase-file", str(empty))
    assert result.exit_code == 2
    assert not (tmp_path / "k" / "private_key.pem").exists()


def test_keys_register_and_show_against_a_running_server(
    pums_world: World, made: tuple[Path, Result]
) -> None:
    out, _ = made
    public = out / "public_key.pem"
    target = ["--target", pums_world.target]
    ana = ["--token", pums_world.tokens["ana"]]
    shown = run("keys", "show", *target, *ana)
    assert shown.exit_code == 0 and "none registered" in shown.output
    registered = run("--output", "json", "keys", "register", str(public), *target, *ana)
    assert registered.exit_code == 0, registered.output
    assert fingerprint(public.read_bytes()) in registered.output
    shown = run("keys", "show", *target, *ana)
    assert fingerprint(public.read_bytes()) in shown.output
    # Only researchers hold keys; a bad key file is refused by the server.
    steward = run("keys", "register", str(public), *target, "--token", pums_world.tokens["sam"])
    assert steward.exit_code == 1 and "PERMISSION_DENIED" in steward.stderr
    bad = out.parent / "bad.pem"
    bad.write_text("not a key")
    refused = run("keys", "register", str(bad), *target, *ana)
    assert refused.exit_code == 1 and "KEY_INVALID" in refused.stderr


def test_principals_add_with_a_certificate_subject(tmp_path: Path) -> None:
    for d in ("data", "policies"):
        (tmp_path / d).mkdir()
    config = tmp_path / "sandbox.toml"
    config.write_text(
        '[server]\nstate_dir = "state"\ndata_root = "data"\npolicy_dir = "policies"\n'
    )
    added = run(
        "principals", "add", "dora", "--role", "researcher", "--cert-subject",
        "CN=dora,O=Uni", "--config", str(config),
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    db = Database(tmp_path / "state" / "state.sqlite3")
    (stored,) = db.conn.execute(
        "SELECT cert_subject FROM principals WHERE name = 'dora'"
    ).fetchone()
    assert stored == "CN=dora,O=Uni"
    entry = AuditLog(db).entries()[-1].entry
    assert entry["event"] == "principal.added" and entry["cert_subject"] == "CN=dora,O=Uni"
    # The subject is unique: a second principal cannot take it.
    taken = run(
        "principals", "add", "eve", "--role", "researcher", "--cert-subject", "CN=dora,O=Uni",
        "--config", str(config),
    )  # fmt: skip
    assert taken.exit_code == 1 and "already mapped" in taken.stderr
    assert db.conn.execute("SELECT count(*) FROM principals WHERE name = 'eve'").fetchone() == (0,)
    remapped = run("principals", "map-cert", "dora", "CN=dora,O=Other", "--config", str(config))
    assert remapped.exit_code == 0, remapped.output
    (stored,) = db.conn.execute(
        "SELECT cert_subject FROM principals WHERE name = 'dora'"
    ).fetchone()
    assert stored == "CN=dora,O=Other"


def test_keys_rotate_reseals_stored_results_while_the_server_runs(pums_world: World) -> None:
    ana = pums_world.client("ana")
    first = ana.run(
        Query("pums").group_by("sex").count("n"), project="census-study", purpose="research"
    )
    config = pums_world.root / "sandbox.toml"
    rotated = run("--output", "json", "keys", "rotate", "--config", str(config))
    assert rotated.exit_code == 0, rotated.output
    (row,) = json.loads(rotated.stdout)
    assert row["results_resealed"] == 1 and row["previous_key_id"] != row["active_key_id"]
    again = ana.job(first.job_id).result(timeout=10)
    assert again.to_dataframe().equals(first.to_dataframe())
    assert pums_world.client("chen").audit_verify().ok
