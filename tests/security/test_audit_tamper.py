"""Offline verification of an exported 10,000-entry log: every tamper class, at random positions.

The log is real (a SQLite state store written through ``AuditLog.append``, checkpoints signed
every 500 entries with the server's Ed25519 key), exported as JSON Lines exactly as
``sandbox audit export`` writes it. Each test alters the export the way an insider with the
file would, and the verifier must fail and name the first index that cannot be trusted:

* a change it can see locally (a leaf hash, a seq) is named exactly;
* a change whose hashes were all redone is caught only by a signed root, and named by the size
  of the last checkpoint that still matched (within 500 entries before the change).

Clean exports must never raise an alarm, whatever subset of checkpoints is given.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.audit import AuditLog, Checkpoint, SigningKey, canonical_text, load_public_key
from sandbox.audit._checkpoint import sign_checkpoint
from sandbox.audit._export import export
from sandbox.audit._merkle import CompactRange
from sandbox.audit._verify_offline import OfflineReport, verify_export
from sandbox.state import Database

N = 10_000
EVERY = 500
SEEDS = range(6)
ACTORS = ("ana", "bob", "chen", "sam", "Zoë")
PROJECTS = ("health-equity", "mobility", "tax-study")


def step_clock(start: dt.datetime) -> Callable[[], dt.datetime]:
    moments = iter(start + dt.timedelta(seconds=i) for i in range(10**9))
    return lambda: next(moments)


def entry_fields(i: int) -> tuple[str, dict[str, Any]]:
    """A varied, realistic entry (what was asked and decided; never data values)."""
    actor, project = ACTORS[i % len(ACTORS)], PROJECTS[i % len(PROJECTS)]
    job = f"job-{i:06d}"
    kind = i % 6
    if kind == 0:
        return "job.accepted", {
            "actor": actor,
            "project": project,
            "dataset": "residents",
            "purpose": "research",
            "decision": "allow",
            "rule_ids": [],
            "job_id": job,
            "spec_digest": f"{i:064x}",
            "reserved": {"jobs": 1, "rows": 1000 + i},
        }
    if kind == 1:
        return "job.denied", {
            "actor": actor,
            "project": project,
            "dataset": "residents",
            "purpose": "research",
            "decision": "deny",
            "job_id": job,
            "rule_ids": ["disclosure.min_cell", f"rule.{i % 7}"],
        }
    if kind == 2:
        return "job.released", {
            "actor": actor,
            "project": project,
            "job_id": job,
            "charged": {"jobs": 1, "rows": 1000 + i},
            "result_digest": hashlib.sha256(job.encode()).hexdigest(),
        }
    if kind == 3:
        return "project.created", {
            "actor": "sam",
            "project": f"{project}-{i}",
            "members": sorted([actor, "ana"]),
            "grants": [["residents", "research"]],
            "quota": {"jobs_per_day": None, "rows_total": i},
        }
    if kind == 4:
        return "principal.added", {
            "actor": "operator",
            "principal": f"user{i}",
            "role": "researcher",
        }
    return "job.previewed", {
        "actor": actor,
        "project": project,
        "dataset": "residents",
        "purpose": "research",
        "decision": "allow",
        "rule_ids": [],
    }


@dataclass(frozen=True)
class Exported:
    lines: list[bytes]
    checkpoints: list[Checkpoint]
    key: bytes
    signing_key_file: Path
    db_path: Path


def export_lines(log: AuditLog, upto: int | None = None) -> list[bytes]:
    out = io.StringIO()
    export(log.scan(upto), "jsonl", out)
    return [line.encode() for line in out.getvalue().splitlines(keepends=True)]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("audit10k")
    db = Database(root / "state" / "state.sqlite3")
    log = AuditLog(db, clock=step_clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    with db.write() as conn:
        for i in range(N):
            _append(log, conn, i)
            if (i + 1) % EVERY == 0:
                log.checkpoint(conn)
    assert log.verify().ok
    checkpoints = log.checkpoints()
    assert [cp.size for cp in checkpoints] == list(range(EVERY, N + 1, EVERY))
    key = load_public_key(log.public_key_pem())
    return Exported(export_lines(log), checkpoints, key, log.signing_key_file, db.path)


def _append(log: AuditLog, conn: sqlite3.Connection, i: int) -> int:
    event, fields = entry_fields(i)
    return log.append(conn, event, **fields)


def verify(lines: list[bytes], ex: Exported, **kw: Any) -> OfflineReport:
    checkpoints = kw.pop("checkpoints", ex.checkpoints)
    key = kw.pop("key", ex.key)
    return verify_export(iter(lines), checkpoints, key, **kw)


def parse(line: bytes) -> tuple[dict[str, Any], str, int]:
    doc = json.loads(line)
    return doc["entry"], doc["leaf_hash"], doc["seq"]


def make_line(entry: dict[str, Any], seq: int, leaf: str | None = None) -> bytes:
    text = canonical_text(entry)
    if leaf is None:
        leaf = hashlib.sha256(b"\x00" + text.encode()).hexdigest()
    return f'{{"entry":{text},"leaf_hash":"{leaf}","seq":{seq}}}\n'.encode()


def window(i: int) -> int:
    """The last checkpoint size at or before index ``i``: where a redone-hash change shows."""
    return (i // EVERY) * EVERY


def positions(seed: int, k: int = 1, lo: int = 0, hi: int = N - 1) -> list[int]:
    return sorted(random.Random(f"{seed}-{k}-{lo}-{hi}").sample(range(lo, hi + 1), k))


def assert_bad(report: OfflineReport, index: int | None, *words: str) -> None:
    assert not report.ok, report
    assert report.first_bad_index == index, report
    assert report.problem
    for word in words:
        assert word in report.problem, report


# ---- clean logs never raise an alarm -------------------------------------------------------------
def test_clean_export_verifies(big: Exported) -> None:
    report = verify(big.lines, big)
    assert report.ok and report.first_bad_index is None and not report.problem, report
    assert report.entries == report.verified_size == report.checkpoint_size == N
    assert report.root == big.checkpoints[-1].root


@pytest.mark.parametrize("seed", SEEDS)
def test_clean_export_never_alarms_with_any_checkpoints(big: Exported, seed: int) -> None:
    rng = random.Random(seed)
    subset = rng.sample(big.checkpoints, rng.randint(1, len(big.checkpoints)))
    assert verify(big.lines, big, checkpoints=subset).ok
    # A prefix of the log against the checkpoints it reaches; the rest are unverified, not bad.
    cut = rng.randint(1, N)
    reached = [cp for cp in big.checkpoints if cp.size <= cut] or [big.checkpoints[0]]
    report = verify(big.lines[:cut], big, checkpoints=reached)
    assert report.ok == (cut >= reached[-1].size), report
    if report.ok and cut > reached[-1].size:
        assert any("not verified" in note for note in report.notes)
        strict = verify(big.lines[:cut], big, checkpoints=reached, strict=True)
        assert_bad(strict, reached[-1].size, "after the last checkpoint")


def test_clean_export_verifies_without_a_pinned_key_but_says_so(big: Exported) -> None:
    report = verify(big.lines, big, key=None)
    assert report.ok
    assert any("--public-key" in note for note in report.notes)


def test_windows_line_endings_are_clean(big: Exported) -> None:
    assert verify([line.rstrip(b"\n") + b"\r\n" for line in big.lines], big).ok


# ---- edited --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_edited_entry_is_named_exactly(big: Exported, seed: int) -> None:
    (i,) = positions(seed)
    entry, leaf, seq = parse(big.lines[i])
    field = random.Random(seed).choice(["actor", "event", "time"])
    forged = {**entry, field: "mallory" if field == "actor" else entry[field] + "x"}
    lines = list(big.lines)
    lines[i] = make_line(forged, seq, leaf)  # the stored leaf hash kept
    assert_bad(verify(lines, big), i, "altered")


@pytest.mark.parametrize("seed", SEEDS)
def test_edited_byte_is_named_exactly(big: Exported, seed: int) -> None:
    """One byte of the entry flipped in place (not even valid JSON any more, perhaps)."""
    (i,) = positions(seed)
    line = bytearray(big.lines[i])
    end = line.rfind(b',"leaf_hash":"')
    k = random.Random(seed).randrange(len(b'{"entry":') + 1, end - 1)
    line[k] ^= 0x01
    lines = list(big.lines)
    lines[i] = bytes(line)
    assert not verify(lines, big).ok
    assert verify(lines, big).first_bad_index == i


@pytest.mark.parametrize("seed", SEEDS)
def test_edited_entry_with_recomputed_leaf_hash_is_caught_by_the_signed_root(
    big: Exported, seed: int
) -> None:
    (i,) = positions(seed)
    entry, _, seq = parse(big.lines[i])
    lines = list(big.lines)
    lines[i] = make_line({**entry, "actor": "mallory", "decision": "allow", "rule_ids": []}, seq)
    assert lines[i] != big.lines[i]
    report = verify(lines, big)
    assert_bad(report, window(i), "signed checkpoint")
    assert window(i) <= i < window(i) + EVERY


# ---- deleted -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_deleted_entry_is_named_exactly(big: Exported, seed: int) -> None:
    (i,) = positions(seed, hi=N - 2)
    lines = big.lines[:i] + big.lines[i + 1 :]
    assert_bad(verify(lines, big), i, "missing")


@pytest.mark.parametrize("seed", SEEDS)
def test_deleted_run_of_entries_is_named_exactly(big: Exported, seed: int) -> None:
    i, j = positions(seed, 2, hi=N - 2)
    assert_bad(verify(big.lines[:i] + big.lines[j + 1 :], big), i, "missing")


@pytest.mark.parametrize("seed", SEEDS)
def test_deleted_entry_with_everything_after_renumbered_is_caught(big: Exported, seed: int) -> None:
    """Delete entry i, then rewrite every later entry's seq and hashes: locally consistent."""
    (i,) = positions(seed, hi=N - 2)
    lines = big.lines[:i]
    for line in big.lines[i + 1 :]:
        entry, _, _ = parse(line)
        lines.append(make_line({**entry, "seq": len(lines)}, len(lines)))
    assert_bad(verify(lines, big), window(i))


# ---- inserted ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_inserted_forged_entry_is_named_exactly(big: Exported, seed: int) -> None:
    """A new entry with the next seq and a correct leaf hash, slipped in at position p."""
    (p,) = positions(seed, lo=1)
    entry, _, _ = parse(big.lines[p - 1])
    forged = make_line({**entry, "seq": p, "actor": "mallory"}, p)
    lines = [*big.lines[:p], forged, *big.lines[p:]]
    assert_bad(verify(lines, big), p, "inserted")


@pytest.mark.parametrize("seed", SEEDS)
def test_inserted_copy_of_another_entry_is_named_exactly(big: Exported, seed: int) -> None:
    k, p = positions(seed, 2)
    for where, copied in ((p, k), (k, p)):  # an older entry replayed later, and the reverse
        lines = [*big.lines[:where], big.lines[copied], *big.lines[where:]]
        report = verify(lines, big)
        assert_bad(report, where)


def test_inserted_duplicate_next_to_itself_is_named_exactly(big: Exported) -> None:
    for i in positions(99, 5):
        lines = [*big.lines[: i + 1], big.lines[i], *big.lines[i + 1 :]]
        assert_bad(verify(lines, big), i + 1, "again")


@pytest.mark.parametrize("seed", SEEDS)
def test_inserted_entry_with_everything_after_renumbered_is_caught(
    big: Exported, seed: int
) -> None:
    (p,) = positions(seed, lo=1)
    entry, _, _ = parse(big.lines[p])
    lines = [*big.lines[:p], make_line({**entry, "seq": p, "actor": "mallory"}, p)]
    for line in big.lines[p:]:
        old, _, _ = parse(line)
        lines.append(make_line({**old, "seq": len(lines)}, len(lines)))
    assert_bad(verify(lines, big), window(p))


# ---- reordered -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_swapped_entries_are_named_exactly(big: Exported, seed: int) -> None:
    i, j = positions(seed, 2)
    lines = list(big.lines)
    lines[i], lines[j] = lines[j], lines[i]
    assert_bad(verify(lines, big), i)


@pytest.mark.parametrize("seed", SEEDS)
def test_swapped_neighbours_with_line_seqs_rewritten_are_named_exactly(
    big: Exported, seed: int
) -> None:
    """The lines' seq and leaf hash rewritten to fit; the entries' own seq gives it away."""
    (i,) = positions(seed, hi=N - 2)
    lines = list(big.lines)
    a, leaf_a, _ = parse(lines[i])
    b, leaf_b, _ = parse(lines[i + 1])
    lines[i], lines[i + 1] = make_line(b, i, leaf_b), make_line(a, i + 1, leaf_a)
    assert_bad(verify(lines, big), i, "seq")


@pytest.mark.parametrize("seed", SEEDS)
def test_moved_entry_is_named_exactly(big: Exported, seed: int) -> None:
    i, j = positions(seed, 2)
    for src, dst in ((i, j), (j, i)):
        lines = list(big.lines)
        lines.insert(dst, lines.pop(src))
        assert_bad(verify(lines, big), min(src, dst))


# ---- truncated -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_truncated_tail_is_named_exactly(big: Exported, seed: int) -> None:
    (cut,) = positions(seed, lo=0, hi=N - 1)
    assert_bad(verify(big.lines[:cut], big), cut, "truncated")


def test_truncated_to_a_checkpoint_boundary_is_still_caught(big: Exported) -> None:
    for cut in (0, EVERY, N - EVERY):
        assert_bad(verify(big.lines[:cut], big), cut, "truncated")


# ---- forked --------------------------------------------------------------------------------------
def forked_lines(big: Exported, p: int, extra: int = 0) -> list[bytes]:
    """Another history: the same first p entries, then different (self-consistent) ones."""
    lines = big.lines[:p]
    for i in range(p, N + extra):
        event, fields = entry_fields(i + 7)
        entry = {
            "seq": i,
            "time": f"2027-01-01T00:00:{i % 60:02d}.000000+00:00",
            "event": event,
            **fields,
        }
        lines.append(make_line(entry, i))
    return lines


@pytest.mark.parametrize("seed", SEEDS)
def test_forked_history_is_caught_at_the_first_differing_checkpoint(
    big: Exported, seed: int
) -> None:
    (p,) = positions(seed, hi=N - 2)
    for extra in (0, 123):
        report = verify(forked_lines(big, p, extra), big)
        assert_bad(report, window(p), "forked")


def test_split_view_two_signed_heads_of_one_size(big: Exported) -> None:
    """The server signed two different histories: both checkpoints together are refused,
    whichever export comes with them."""
    p = 4321
    fork = forked_lines(big, p)
    key = SigningKey.load_or_create(big.signing_key_file)
    rng = CompactRange()
    for line in fork:
        rng.push(bytes.fromhex(parse(line)[1]))
    head = big.checkpoints[-1]
    theirs = sign_checkpoint(key, head.origin, N, rng.root(), "2027-01-02T00:00:00.000000+00:00")
    assert verify(fork, big, checkpoints=[theirs]).ok  # each history alone is consistent
    for lines in (big.lines, fork):
        report = verify(lines, big, checkpoints=[*big.checkpoints, theirs])
        assert not report.ok
        assert any("split view" in note for note in report.notes)


# ---- wrong signing key ---------------------------------------------------------------------------
def test_checkpoint_signed_by_another_key_is_refused(big: Exported) -> None:
    other = SigningKey.generate()
    forged = [
        sign_checkpoint(other, cp.origin, cp.size, bytes.fromhex(cp.root), cp.timestamp)
        for cp in big.checkpoints
    ]
    report = verify(big.lines, big, checkpoints=forged)
    assert_bad(report, None, "wrong signing key")
    # Even a rewritten log re-signed by the attacker fails against the pinned key.
    fork = forked_lines(big, 10)
    rng = CompactRange()
    for line in fork:
        rng.push(bytes.fromhex(parse(line)[1]))
    theirs = sign_checkpoint(other, forged[-1].origin, N, rng.root(), forged[-1].timestamp)
    assert_bad(verify(fork, big, checkpoints=[theirs]), None, "wrong signing key")
    # Unpinned, the key the file carries is all there is: pin it (the report says so).
    unpinned = verify(fork, big, checkpoints=[theirs], key=None)
    assert unpinned.ok and any("--public-key" in n for n in unpinned.notes)


def test_checkpoint_with_the_carried_key_swapped_is_refused_unless_pinned(big: Exported) -> None:
    """The key a checkpoint carries is a convenience: pinned, it is ignored (the signature is
    checked with the trusted key); unpinned, a swapped one no longer matches the signed id."""
    other = SigningKey.generate()
    swapped = dataclasses.replace(
        big.checkpoints[-1], public_key=base64.b64encode(other.public_raw).decode()
    )
    assert verify(big.lines, big, checkpoints=[swapped], key=big.key).ok
    assert_bad(verify(big.lines, big, checkpoints=[swapped], key=None), None, "wrong signing key")


@pytest.mark.parametrize("field", ["size", "root", "timestamp", "origin", "signature"])
def test_altered_checkpoint_is_refused(big: Exported, field: str) -> None:
    cp = big.checkpoints[3]
    value: Any = {
        "size": cp.size + 1,
        "root": big.checkpoints[4].root,
        "timestamp": "2030-01-01T00:00:00.000000+00:00",
        "origin": "sandbox-audit/elsewhere",
        "signature": big.checkpoints[4].signature,
    }[field]
    altered = dataclasses.replace(cp, **{field: value})
    assert_bad(verify(big.lines, big, checkpoints=[altered]), None, "signature")


# ---- the same attacks on the state store, caught online by the stored checkpoints ----------------
def _copy(db_path: Path, to: Path) -> Database:
    to.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(db_path), sqlite3.connect(to)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return Database(to)


def test_full_rewrite_in_the_store_is_caught_by_a_stored_checkpoint(
    big: Exported, tmp_path: Path
) -> None:
    """Entry, leaf hash, every later tree head and the frontier rewritten consistently: only
    the signed checkpoints disagree."""
    db = _copy(big.db_path, tmp_path / "state" / "state.sqlite3")
    i = 6_789
    rows = db.conn.execute("SELECT seq, entry FROM audit ORDER BY seq").fetchall()
    texts = [t for _, t in rows]
    texts[i] = canonical_text({**json.loads(texts[i]), "actor": "mallory"})
    rng = CompactRange()
    with db.write() as conn:
        for seq, text in enumerate(texts):
            leaf = hashlib.sha256(b"\x00" + text.encode()).digest()
            rng.push(leaf)
            if seq >= i:
                conn.execute(
                    "UPDATE audit SET entry = ?, leaf_hash = ?, root = ? WHERE seq = ?",
                    (text, leaf.hex(), rng.root().hex(), seq),
                )
        conn.execute(
            "UPDATE audit_frontier SET frontier = ? WHERE id = 1",
            (json.dumps([h.hex() for h in rng.hashes]),),
        )
    report = AuditLog(db).verify()
    assert not report.ok
    assert report.first_bad_seq == window(i)
    assert "checkpoint" in report.problem


def test_fork_of_the_store_is_caught_offline(big: Exported, tmp_path: Path) -> None:
    """A copy of the store taken at entry p and continued differently (same signing key):
    its export fails against the original's checkpoints; its own checkpoints verify it."""
    base = tmp_path / "fork"
    db = _copy(big.db_path, base / "state.sqlite3")
    key_file = base / "audit_signing.key"
    key_file.write_bytes(big.signing_key_file.read_bytes())
    key_file.chmod(0o600)
    p = 7_654
    with db.write() as conn:  # roll the copy back to p entries, as if it had been taken then
        conn.execute("DELETE FROM audit WHERE seq >= ?", (p,))
        conn.execute("DELETE FROM audit_checkpoints WHERE size > ?", (p,))
        conn.execute("DELETE FROM audit_nodes")
        rng = CompactRange()
        for (leaf,) in conn.execute("SELECT leaf_hash FROM audit ORDER BY seq"):
            rng.push(bytes.fromhex(leaf))
        conn.execute(
            "UPDATE audit_frontier SET size = ?, frontier = ? WHERE id = 1",
            (p, json.dumps([h.hex() for h in rng.hashes])),
        )
    fork = AuditLog(db, clock=step_clock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)))
    with db.write() as conn:  # its subtree table is empty: rebuilt when a proof needs it
        for i in range(p, N):
            _append(fork, conn, i + 1)
            if (i + 1) % EVERY == 0:
                fork.checkpoint(conn)
    fork.checkpoint()
    assert fork.verify().ok
    lines = export_lines(fork)
    assert verify(lines, big, checkpoints=fork.checkpoints()).ok
    assert_bad(verify(lines, big), window(p), "forked")
    # The fork still proves consistency with every original checkpoint up to p.
    for cp in big.checkpoints:
        if cp.size <= p:
            assert fork.root_at(cp.size).hex() == cp.root
