"""``sandbox audit export | checkpoint | public-key | prove | consistency | verify --log``.

Exit codes: 0 clean, 3 tampered (with the first bad index on stderr), 2 usage errors, 1 other
errors (a malformed checkpoint file, an entry that does not exist). Real state stores, real
files, the CLI in-process (CliRunner).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import sandbox
from sandbox.audit import AuditLog, SigningKey, canonical_text, leaf_hash, verify_consistency
from sandbox.audit._checkpoint import sign_checkpoint
from sandbox.cli import main
from sandbox.state import Database
from tests.conftest import World

N = 300
ACTORS = ("ana", "bob", "chen")
PROJECTS = ("p1", "p2")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def run(*args: str) -> Result:
    env = {k: None for k in os.environ if k.startswith("SANDBOX_")}
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A config whose state store holds N entries (one a minute from START) and a checkpoint."""
    for d in ("data", "policies"):
        (tmp_path / d).mkdir()
    config = tmp_path / "sandbox.toml"
    config.write_text(
        '[server]\nstate_dir = "state"\ndata_root = "data"\npolicy_dir = "policies"\n'
    )
    db = Database(tmp_path / "state" / "state.sqlite3")
    ticks = iter(START + dt.timedelta(minutes=i) for i in range(10 * N))
    log = AuditLog(db, clock=lambda: next(ticks))
    with db.write() as conn:
        for i in range(N):
            log.append(
                conn,
                "job.denied" if i % 4 == 1 else "job.accepted",
                actor=ACTORS[i % 3],
                project=PROJECTS[i % 2],
                decision="deny" if i % 4 == 1 else "allow",
                rule_ids=["disclosure.min_cell"] if i % 4 == 1 else [],
                job_id=f"job-{i}",
                note='a|b=c\\d]e"f\nnext line',
            )
            if i == 99:
                log.checkpoint(conn)
    return config


def export_with_checkpoint(store: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    out, cp, pub = tmp_path / "log.jsonl", tmp_path / "cp.json", tmp_path / "pub.pem"
    result = run("audit", "export", "--config", str(store), "--out", str(out),
                 "--checkpoint-out", str(cp))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"exported {N} entries" in result.stderr
    result = run("audit", "public-key", "--config", str(store), "--out", str(pub))
    assert result.exit_code == 0, result.output
    return out, cp, pub


def verify(log: Path, cp: Path, *extra: str) -> Result:
    return run("audit", "verify", "--log", str(log), "--checkpoint", str(cp), *extra)


# ---- export + offline verify ---------------------------------------------------------------------
def test_export_then_verify_offline_is_clean(store: Path, tmp_path: Path) -> None:
    log, cp, pub = export_with_checkpoint(store, tmp_path)
    lines = log.read_text().splitlines()
    assert len(lines) == N
    first = json.loads(lines[0])
    assert set(first) == {"entry", "leaf_hash", "seq"} and first["seq"] == 0
    assert json.loads(cp.read_text())["size"] == N
    for extra in ((), ("--public-key", str(pub)), ("--strict", "--public-key", str(pub))):
        result = verify(log, cp, *extra)
        assert result.exit_code == 0, result.output
    result = run("--output", "json", "audit", "verify", "--log", str(log), "--checkpoint", str(cp),
                 "--public-key", str(pub))  # fmt: skip
    (report,) = json.loads(result.stdout)
    assert report["ok"] and report["verified_size"] == N and report["first_bad_index"] is None


def test_checkpoint_command_and_all_checkpoints(store: Path, tmp_path: Path) -> None:
    log, _, pub = export_with_checkpoint(store, tmp_path)
    every = tmp_path / "all.jsonl"
    assert run("audit", "checkpoint", "--config", str(store)).exit_code == 0
    result = run("audit", "checkpoint", "--config", str(store), "--all", "--out", str(every))
    assert result.exit_code == 0, result.output
    sizes = [json.loads(line)["size"] for line in every.read_text().splitlines()]
    assert sizes == [100, N]
    assert verify(log, every, "--public-key", str(pub)).exit_code == 0


def _rewrite(path: Path, edit: object) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))  # type: ignore[operator]


def _edit_actor(lines: list[str]) -> list[str]:
    doc = json.loads(lines[123])
    doc["entry"]["actor"] = "mallory"
    entry = json.dumps(doc["entry"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    lines[123] = f'{{"entry":{entry},"leaf_hash":"{doc["leaf_hash"]}","seq":123}}\n'
    return lines


TAMPERS = {
    "edited": (_edit_actor, 123),
    "deleted": (lambda ls: ls[:50] + ls[51:], 50),
    "inserted": (lambda ls: [*ls[:200], ls[17], *ls[200:]], 200),
    "reordered": (lambda ls: [*ls[:10], ls[11], ls[10], *ls[12:]], 10),
    "truncated": (lambda ls: ls[:250], 250),
}


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_tampered_export_exits_3_with_the_first_bad_index(
    store: Path, tmp_path: Path, kind: str
) -> None:
    log, cp, pub = export_with_checkpoint(store, tmp_path)
    edit, index = TAMPERS[kind]
    _rewrite(log, edit)
    result = verify(log, cp, "--public-key", str(pub))
    assert result.exit_code == 3, result.output
    assert f"FAILED at index {index}:" in result.stderr


def test_forked_history_exits_3(store: Path, tmp_path: Path) -> None:
    """The original's checkpoint against an export of a store that went on differently."""
    _, _, pub = export_with_checkpoint(store, tmp_path)
    cp = tmp_path / "all.jsonl"  # every checkpoint the server signed: sizes 100 and N
    assert (
        run("audit", "checkpoint", "--all", "--config", str(store), "--out", str(cp)).exit_code == 0
    )
    db = Database(store.parent / "state" / "state.sqlite3")
    with db.write() as conn:
        AuditLog(db).append(conn, "principal.revoked", actor="operator", principal="ana")
    other = tmp_path / "other.jsonl"
    assert run("audit", "export", "--config", str(store), "--out", str(other)).exit_code == 0
    assert verify(other, cp, "--public-key", str(pub)).exit_code == 0  # it extends: consistent
    lines = other.read_text().splitlines(keepends=True)
    doc = json.loads(lines[N - 1])
    entry = {**doc["entry"], "decision": "deny"}
    text = canonical_text(entry)
    lines[N - 1] = (
        f'{{"entry":{text},"leaf_hash":"{leaf_hash(text.encode()).hex()}","seq":{N - 1}}}\n'
    )
    other.write_text("".join(lines))
    result = verify(other, cp, "--public-key", str(pub))
    assert result.exit_code == 3, result.output
    assert "FAILED at index 100:" in result.stderr  # the last checkpoint that matched
    assert "forked" in result.stderr


def test_wrong_signing_key_exits_3(store: Path, tmp_path: Path) -> None:
    log, cp, pub = export_with_checkpoint(store, tmp_path)
    genuine = json.loads(cp.read_text())
    other = SigningKey.generate()
    forged = sign_checkpoint(other, genuine["origin"], genuine["size"],
                             bytes.fromhex(genuine["root"]), genuine["timestamp"])  # fmt: skip
    cp.write_text(forged.to_json())
    result = verify(log, cp, "--public-key", str(pub))
    assert result.exit_code == 3, result.output
    assert "wrong signing key" in result.stderr
    # A checkpoint altered after signing.
    cp.write_text(json.dumps({**genuine, "size": genuine["size"] - 1}))
    result = verify(log, cp, "--public-key", str(pub))
    assert result.exit_code == 3 and "signature" in result.stderr


def test_usage_errors_exit_2(store: Path, tmp_path: Path) -> None:
    log, cp, _ = export_with_checkpoint(store, tmp_path)
    for args in (
        ("audit", "verify", "--log", str(log)),
        ("audit", "verify", "--checkpoint", str(cp)),
        ("audit", "verify", "--log", str(log), "--checkpoint", str(cp), "--config", str(store)),
        ("audit", "verify", "--log", str(log), "--checkpoint", str(cp), "--proof", str(cp)),
        ("audit", "verify", "--log", str(tmp_path / "missing.jsonl"), "--checkpoint", str(cp)),
        ("audit", "export", "--format", "xml", "--config", str(store)),
        ("audit", "export", "--since", "yesterday-ish", "--config", str(store)),
        ("audit", "export", "--config", str(store), "--project", "p1", "--checkpoint-out",
         str(tmp_path / "x.json")),
        ("audit", "export", "--format", "cef", "--config", str(store), "--checkpoint-out",
         str(tmp_path / "x.json")),
        ("audit", "prove", "5"),
        ("audit", "prove", "-1", "--config", str(store)),
        ("audit", "public-key"),
        ("audit", "checkpoint"),
        ("audit", "consistency", "5"),
    ):  # fmt: skip
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)


def test_malformed_inputs_exit_1(store: Path, tmp_path: Path) -> None:
    log, cp, pub = export_with_checkpoint(store, tmp_path)
    cp.write_text("{not json")
    result = verify(log, cp)
    assert result.exit_code == 1 and "CHECKPOINT_INVALID" in result.stderr
    cp.write_text(json.dumps({"size": 3}))
    assert verify(log, cp).exit_code == 1
    pub.write_text("not a key")
    cp2 = tmp_path / "cp2.json"
    run("audit", "checkpoint", "--config", str(store), "--out", str(cp2))
    assert verify(log, cp2, "--public-key", str(pub)).exit_code == 1
    result = run("audit", "prove", str(N + 5), "--config", str(store))
    assert result.exit_code == 1 and "no entry" in result.stderr


# ---- prove, consistency, public-key --------------------------------------------------------------
def test_prove_prints_a_proof_that_verifies_offline(store: Path, tmp_path: Path) -> None:
    _, _, pub = export_with_checkpoint(store, tmp_path)
    proof = tmp_path / "proof.json"
    result = run("audit", "prove", "42", "--config", str(store), "--out", str(proof))
    assert result.exit_code == 0, result.output
    doc = json.loads(proof.read_text())
    assert doc["seq"] == 42 and doc["entry"]["seq"] == 42 and doc["tree_size"] == N
    assert doc["checkpoint"]["size"] == N and len(doc["proof"]) == 9  # ceil(log2(300))
    result = run("audit", "verify", "--proof", str(proof), "--public-key", str(pub))
    assert result.exit_code == 0, result.output
    # Through stdout too, and against a checkpoint signed for it when none covers the entry.
    result = run("audit", "prove", "0", "--config", str(store))
    assert result.exit_code == 0 and json.loads(result.stdout)["seq"] == 0
    for change in (
        {"entry": {**doc["entry"], "actor": "mallory"}},
        {"seq": 43},
        {"proof": doc["proof"][::-1]},
        {"leaf_hash": "00" * 32},
    ):
        proof.write_text(json.dumps({**doc, **change}))
        result = run("audit", "verify", "--proof", str(proof), "--public-key", str(pub))
        assert result.exit_code == 3, (change, result.output)
        assert "FAILED at index" in result.stderr


def test_consistency_between_checkpoints(store: Path) -> None:
    result = run("audit", "consistency", "100", "--config", str(store))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["first"], doc["second"]) == (100, N) and doc["checkpoint"]["size"] == N
    assert verify_consistency(
        100,
        N,
        bytes.fromhex(doc["first_root"]),
        bytes.fromhex(doc["second_root"]),
        [bytes.fromhex(p) for p in doc["proof"]],
    )
    assert run("audit", "consistency", "200", "100", "--config", str(store)).exit_code == 2


def test_public_key_is_pem_and_stable(store: Path) -> None:
    first = run("audit", "public-key", "--config", str(store))
    assert first.exit_code == 0 and first.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    assert "key id" in first.stderr
    assert run("audit", "public-key", "--config", str(store)).stdout == first.stdout


# ---- SIEM formats and filters --------------------------------------------------------------------
SYSLOG = re.compile(
    r"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) sandbox - (\S{1,32}) "
    r"\[sandbox@32473( [!-~]{1,32}=\"(?:[^\"\\\]]|\\[\"\\\]])*\")+\] (.*)$"
)


def test_siem_formats(store: Path) -> None:
    ocsf = run("audit", "export", "--format", "ocsf", "--config", str(store))
    assert ocsf.exit_code == 0
    records = [json.loads(line) for line in ocsf.stdout.splitlines()]
    assert len(records) == N
    for r in records:
        assert r["class_uid"] == 6003 and r["category_uid"] == 6
        assert r["type_uid"] == 600300 + r["activity_id"]
        assert r["actor"]["user"]["name"] in ACTORS and r["api"]["operation"]
        assert {"metadata", "severity_id", "src_endpoint", "time", "status_id"} <= set(r)
    denied = [r for r in records if r["api"]["operation"] == "job.denied"]
    assert denied and all(r["status_id"] == 2 and r["status_detail"] for r in denied)
    assert records[0]["time"] == int(START.timestamp() * 1000)

    cef = run("audit", "export", "--format", "cef", "--config", str(store)).stdout.splitlines()
    assert len(cef) == N
    for line in cef:
        assert line.startswith(f"CEF:0|Sandbox|Sandbox|{sandbox.__version__}|job.")
        assert len(re.split(r"(?<!\\)\|", line)) == 8  # 7 header fields and the extension
        assert "\n" not in line and "note" not in line  # free text never becomes a CEF key
    assert "suser=ana" in cef[0] and "externalId=0" in cef[0]

    syslog = run("audit", "export", "--format", "syslog", "--config", str(store)).stdout
    lines = syslog.splitlines()
    assert len(lines) == N
    for line in lines:
        match = SYSLOG.match(line)
        assert match, line
        assert int(match.group(1)) in (13 * 8 + 5, 13 * 8 + 6)
    assert 'note="a|b=c\\\\d\\]e\\"f next line"' in lines[0]


def test_export_filters(store: Path) -> None:
    def count(*args: str) -> int:
        result = run("audit", "export", "--config", str(store), *args)
        assert result.exit_code == 0, result.output
        return len(result.stdout.splitlines())

    assert count() == N
    assert count("--project", "p1") == N // 2
    assert count("--principal", "bob") == N // 3
    assert count("--project", "p1", "--principal", "bob") == N // 6
    assert count("--since", "2026-03-01T01:00:00") == N - 60  # one entry a minute
    assert count("--until", "2026-03-01T01:00:00Z") == 60
    assert count("--since", "2026-03-01T00:10:00+00:00", "--until", "2026-03-01T00:20") == 10
    assert count("--since", "2026-03-02") == 0
    for fmt in ("ocsf", "cef", "syslog"):
        assert count("--format", fmt, "--project", "p2") == N // 2


def test_filtered_export_does_not_verify_as_a_whole_log(store: Path, tmp_path: Path) -> None:
    _, cp, pub = export_with_checkpoint(store, tmp_path)
    part = tmp_path / "part.jsonl"
    assert run("audit", "export", "--config", str(store), "--project", "p2", "--out",
               str(part)).exit_code == 0  # fmt: skip
    result = verify(part, cp, "--public-key", str(pub))
    assert result.exit_code == 3 and "FAILED at index 0:" in result.stderr


# ---- the verify command keeps its online behaviour; export works through the server too ----------
def test_export_through_the_server_equals_the_local_export(pums_world: World) -> None:
    world = pums_world
    config = str(world.root / "sandbox.toml")
    remote = run("audit", "export", "--target", world.target, "--token", world.tokens["chen"])
    local = run("audit", "export", "--config", config)
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output
    assert remote.stdout == local.stdout and remote.stdout.count("\n") >= 5
    denied = run("audit", "export", "--target", world.target, "--token", world.tokens["ana"])
    assert denied.exit_code == 1 and "PERMISSION_DENIED" in denied.stderr
    online = run("audit", "verify", "--target", world.target, "--token", world.tokens["chen"])
    assert online.exit_code == 0, online.output
    assert run("audit", "verify", "--config", config).exit_code == 0
