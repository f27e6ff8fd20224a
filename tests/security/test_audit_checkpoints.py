"""Signed checkpoints, receipts, the checkpoint timer, and the append-only log (real stores).

Checkpoints are Ed25519 signatures by the server's key (a 0600 file in the state directory)
over the log's origin, size, root and time; a receipt is a checkpoint covering an entry plus
the entry's inclusion proof. Nothing in the log's API edits or deletes an entry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from sandbox._errors import CheckpointInvalid, KeyFileInsecure, KeyFileInvalid, NotFound
from sandbox.audit import (
    AuditLog,
    Checkpoint,
    Checkpointer,
    Receipt,
    SigningKey,
    consistency_proof_of,
    inclusion_proof_of,
    load_public_key,
    read_checkpoints,
    receipt_problem,
    verify_consistency,
    verify_inclusion,
)
from sandbox.audit._checkpoint import verify_signature
from sandbox.state import Database


def new_log(tmp_path: Path) -> AuditLog:
    return AuditLog(Database(tmp_path / "state" / "state.sqlite3"))


def fill(log: AuditLog, n: int, start: int = 0) -> None:
    with log._db.write() as conn:
        for i in range(start, start + n):
            log.append(conn, "job.accepted", actor="ana", project="p", job_id=f"job-{i}")


# ---- the signing key -----------------------------------------------------------------------------
def test_signing_key_is_created_0600_once_and_reused(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    key_file = tmp_path / "state" / "audit_signing.key"
    assert not key_file.exists()
    pem = log.public_key_pem()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    assert new_log(tmp_path).public_key_pem() == pem  # the same key on the next start
    raw = load_public_key(pem)
    assert len(raw) == 32 and load_public_key(raw.hex()) == raw
    assert not list(key_file.parent.glob(".audit_signing.key.*"))  # no temporary left behind


def test_signing_key_file_must_be_private_and_valid(tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "audit_signing.key"
    new_log(tmp_path).public_key_pem()
    key_file.chmod(0o640)
    with pytest.raises(KeyFileInsecure):
        new_log(tmp_path).checkpoint()
    key_file.write_text("not a key")
    key_file.chmod(0o600)
    with pytest.raises(KeyFileInvalid):
        new_log(tmp_path).checkpoint()


def test_a_key_file_another_ed25519_library_wrote_signs_the_same(tmp_path: Path) -> None:
    """Key files written by earlier versions (pycryptodome's PKCS#8) load, sign exactly what
    that library signs (Ed25519 is deterministic), and each library verifies the other."""
    key = ECC.generate(curve="Ed25519")
    path = tmp_path / "audit_signing.key"
    path.write_text(key.export_key(format="PEM"))
    path.chmod(0o600)
    loaded = SigningKey.load_or_create(path)
    message = b"sandbox-audit-checkpoint/v1\n{}"
    theirs = eddsa.new(key, "rfc8032").sign(message)
    assert loaded.sign(message) == theirs
    assert loaded.public_raw == key.public_key().export_key(format="raw")
    assert load_public_key(loaded.public_pem()) == loaded.public_raw
    assert load_public_key(key.public_key().export_key(format="PEM")) == loaded.public_raw
    eddsa.new(ECC.import_key(loaded.public_pem()), "rfc8032").verify(message, theirs)
    assert verify_signature(loaded.public_raw, message, theirs)
    assert not verify_signature(loaded.public_raw, message + b" ", theirs)
    with pytest.raises(CheckpointInvalid):  # another curve's public key is refused
        load_public_key(ECC.generate(curve="P-256").public_key().export_key(format="PEM"))
    path.write_text(ECC.generate(curve="P-256").export_key(format="PEM"))
    with pytest.raises(KeyFileInvalid):  # a private key of another curve too
        SigningKey.load_or_create(path)


def test_concurrent_first_use_creates_one_key(tmp_path: Path) -> None:
    path = tmp_path / "k" / "audit_signing.key"
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(SigningKey.load_or_create(path).key_id))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys) == 8


# ---- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_signs_the_current_head_once(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    fill(log, 10)
    first = log.checkpoint()
    size, root = log.head()
    assert (first.size, first.root) == (size, root.hex()) == (10, log.root_at(10).hex())
    assert first.problem() == "" and first.problem(load_public_key(log.public_key_pem())) == ""
    assert first.origin.startswith("sandbox-audit/") and first.origin == log.origin()
    assert log.checkpoint() == first  # nothing new: not signed again
    fill(log, 5, start=10)
    second = log.checkpoint()
    assert second.size == 15 and second != first
    assert log.checkpoints() == [first, second] and log.latest_checkpoint() == second
    # The JSON round-trips, and consecutive checkpoints are consistent.
    assert Checkpoint.from_json(second.to_json()) == second
    assert read_checkpoints(first.to_json() + "\n" + second.to_json()) == [first, second]
    assert read_checkpoints(json.dumps([first.to_dict()])) == [first]
    proof = log.consistency_proof(10, 15)
    assert verify_consistency(10, 15, bytes.fromhex(first.root), bytes.fromhex(second.root), proof)


def test_a_checkpoint_binds_size_and_root(tmp_path: Path) -> None:
    """A root cannot be presented as the head of a tree of another size: the signature covers
    both (the proof verifiers alone cannot tell a size from a neighbouring one's shape)."""
    log = new_log(tmp_path)
    fill(log, 3)
    cp = log.checkpoint()
    pinned = load_public_key(log.public_key_pem())
    for change in ({"size": 4}, {"size": 2}, {"root": log.root_at(2).hex()}):
        forged = dataclasses.replace(cp, **change)
        assert "signature" in forged.problem(pinned)
        assert "signature" in forged.problem()
    assert "wrong signing key" in cp.problem(SigningKey.generate().public_raw)


def test_checkpoints_of_an_empty_log(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    cp = log.checkpoint()
    assert cp.size == 0 and cp.root == log.root_at(0).hex() and cp.problem() == ""
    assert Checkpointer(log).tick() is None and Checkpointer(log).checkpoint() is None


def test_online_verify_checks_stored_checkpoints(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    fill(log, 40)
    log.checkpoint()
    fill(log, 10, start=40)
    assert log.verify().ok
    conn = log._db.conn
    (text,) = conn.execute("SELECT checkpoint FROM audit_checkpoints").fetchone()
    doc = json.loads(text)
    conn.execute(
        "UPDATE audit_checkpoints SET checkpoint = ?",
        (json.dumps({**doc, "timestamp": "2001-01-01T00:00:00.000000+00:00"}),),
    )
    report = log.verify()
    assert not report.ok and "signature" in report.problem
    beyond = text.replace('"size":40', '"size":60')
    conn.execute("UPDATE audit_checkpoints SET checkpoint = ?, size = 60", (beyond,))
    report = log.verify()
    assert not report.ok and "truncated" in report.problem


# ---- receipts ------------------------------------------------------------------------------------
def test_receipt_uses_the_first_covering_checkpoint_or_signs_one(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    fill(log, 20)
    first = log.checkpoint()
    fill(log, 20, start=20)
    second = log.checkpoint()
    fill(log, 3, start=40)
    pinned = load_public_key(log.public_key_pem())
    leaves = [bytes.fromhex(leaf) for _, _, leaf in log.scan()]
    for seq, expected in ((0, first), (19, first), (20, second), (39, second)):
        receipt = log.receipt(seq)
        assert receipt.checkpoint == expected
        assert receipt.leaf_hash == leaves[seq].hex()
        assert [bytes.fromhex(p) for p in receipt.proof] == inclusion_proof_of(
            leaves[: expected.size], seq
        )
        assert receipt_problem(receipt, pinned, log.entry(seq).entry) == ""
        assert Receipt.from_dict(json.loads(receipt.to_json())) == receipt
    fresh = log.receipt(41)  # no checkpoint covers it yet: one is signed
    assert fresh.checkpoint.size == 43 and log.latest_checkpoint() == fresh.checkpoint
    assert receipt_problem(fresh, pinned) == ""
    with pytest.raises(NotFound):
        log.receipt(43)


def test_receipt_inside_the_write_transaction(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    fill(log, 5)
    with log._db.write() as conn:
        seq = log.append(conn, "job.released", actor="ana", job_id="job-x")
        receipt = log.receipt(seq, conn)
    assert receipt.seq == 5 and receipt.checkpoint.size == 6
    assert receipt_problem(receipt, None, log.entry(5).entry) == ""


def test_a_receipt_made_with_the_append_is_the_one_the_log_gives_later(tmp_path: Path) -> None:
    """``append_with_receipt`` takes the proof from the frontier in hand, not from lookups:
    at every size (past each power of two, from two log objects, one cache-cold) the receipt
    must verify and equal what ``receipt(seq)`` computes afterwards from the stored tree."""
    log, other = new_log(tmp_path), new_log(tmp_path)
    pinned = load_public_key(log.public_key_pem())
    made = []
    for i in range(70):
        writer = other if i % 11 == 5 else log  # the other's frontier cache is stale then
        if i % 7 == 3:
            fill(log, 1, start=1000 + i)  # plain appends between receipts
        with writer._db.write() as conn:
            receipt = writer.append_with_receipt(conn, "job.released", actor="ana", job_id=f"r{i}")
        assert receipt.checkpoint.size == receipt.seq + 1
        assert receipt_problem(receipt, pinned, log.entry(receipt.seq).entry) == ""
        made.append(receipt)
    leaves = [bytes.fromhex(leaf) for _, _, leaf in log.scan()]
    for receipt in made:
        assert log.receipt(receipt.seq) == receipt
        proof = inclusion_proof_of(leaves[: receipt.seq + 1], receipt.seq)
        assert [bytes.fromhex(p) for p in receipt.proof] == proof
    assert log.verify().ok


def test_a_wrong_receipt_is_refused(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    fill(log, 13)
    receipt = log.receipt(6)
    entry = log.entry(6).entry
    pinned = load_public_key(log.public_key_pem())
    wrong = [
        dataclasses.replace(receipt, seq=7),
        dataclasses.replace(receipt, seq=5),
        dataclasses.replace(receipt, proof=receipt.proof[:-1]),
        dataclasses.replace(receipt, proof=(*receipt.proof, receipt.proof[0])),
        dataclasses.replace(
            receipt, proof=(receipt.proof[1], receipt.proof[0], *receipt.proof[2:])
        ),
        dataclasses.replace(receipt, leaf_hash=log.receipt(7).leaf_hash),
        dataclasses.replace(receipt, checkpoint=dataclasses.replace(receipt.checkpoint, size=14)),
    ]
    for bad in wrong:
        assert receipt_problem(bad, pinned), bad
    assert receipt_problem(receipt, SigningKey.generate().public_raw)
    assert "altered" in receipt_problem(receipt, pinned, {**entry, "actor": "mallory"})
    assert receipt_problem(receipt, pinned, entry) == ""


# ---- the timer -----------------------------------------------------------------------------------
def test_checkpointer_signs_every_n_entries(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    timer = Checkpointer(log, every_entries=10, every_seconds=3600)
    assert timer.tick() is None  # empty log
    fill(log, 1)
    assert timer.tick() is not None  # the first entry ever: nothing covers it
    fill(log, 8, start=1)
    assert timer.tick() is None  # 8 new < 10
    fill(log, 2, start=9)
    cp = timer.tick()
    assert cp is not None and cp.size == 11
    assert timer.tick() is None


def test_checkpointer_signs_after_t_seconds_if_the_log_grew(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    timer = Checkpointer(log, every_entries=1000, every_seconds=30)
    fill(log, 3)
    cp = log.checkpoint()
    signed = dt.datetime.fromisoformat(cp.timestamp)
    assert not timer.due(signed + dt.timedelta(seconds=31))  # nothing new since
    fill(log, 1, start=3)
    assert not timer.due(signed + dt.timedelta(seconds=29))
    assert timer.due(signed + dt.timedelta(seconds=30))


def test_checkpointer_thread_ticks_and_signs_at_stop(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    timer = Checkpointer(log, every_entries=5, every_seconds=3600)
    timer.start(interval=0.02)
    fill(log, 7)
    deadline = time.monotonic() + 10
    while log.latest_checkpoint() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.latest_checkpoint() is not None
    fill(log, 2, start=7)
    final = timer.stop()
    assert final is not None and final.size == 9 == log.size()
    assert timer.stop() == final  # idempotent: the same head is not signed twice


def test_checkpointers_in_two_processes_sign_once(tmp_path: Path) -> None:
    """Two server processes (two stores on one file) ticking together sign one checkpoint."""
    a = new_log(tmp_path)
    b = new_log(tmp_path)
    fill(a, 10)
    timers = [Checkpointer(log, every_entries=10) for log in (a, b)]
    barrier = threading.Barrier(2)

    def run(timer: Checkpointer) -> None:
        barrier.wait()
        timer.tick()

    threads = [threading.Thread(target=run, args=(t,)) for t in timers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(a.checkpoints()) == 1


# ---- appends -------------------------------------------------------------------------------------
def test_append_after_a_rollback_and_from_two_log_objects(tmp_path: Path) -> None:
    a = new_log(tmp_path)
    b = AuditLog(a._db)
    fill(a, 3)
    with pytest.raises(RuntimeError), a._db.write() as conn:
        a.append(conn, "will.vanish", actor="x")
        raise RuntimeError
    fill(b, 1, start=3)  # another object appends in between
    fill(a, 2, start=4)  # a's cached frontier is stale: it must notice
    with pytest.raises(RuntimeError), a._db.write() as conn:
        a.append(conn, "will.vanish", actor="x")
        raise RuntimeError
    fill(a, 1, start=6)
    report = a.verify()
    assert report.ok and report.size == 7
    assert [r.entry["seq"] for r in a.entries()] == list(range(7))
    assert all(r.entry["event"] != "will.vanish" for r in a.entries())


def test_append_refuses_fields_the_log_sets(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    with log._db.write() as conn:
        for field in ("seq", "time"):
            with pytest.raises(ValueError):
                log.append(conn, "x.y", actor="a", **{field: 1})
        with pytest.raises(TypeError):
            log.append(conn, "x.y", actor="a", value=1.5)
    assert log.size() == 0


def test_entry_times_are_utc_iso_microseconds(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    fill(log, 3)
    for record in log.entries():
        when = dt.datetime.fromisoformat(record.entry["time"])
        assert when.utcoffset() == dt.timedelta(0)
        assert record.entry["time"] == when.isoformat(timespec="microseconds")
        assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60


def test_proofs_of_a_log_written_before_the_subtree_table(tmp_path: Path) -> None:
    """Logs from before the subtree table (or with it damaged) get it rebuilt on first use."""
    log = new_log(tmp_path)
    fill(log, 77)
    leaves = [bytes.fromhex(leaf) for _, _, leaf in log.scan()]
    log._db.conn.execute("DELETE FROM audit_nodes")
    fresh = AuditLog(log._db)
    assert fresh.inclusion_proof(33) == inclusion_proof_of(leaves, 33)
    assert fresh.consistency_proof(20) == consistency_proof_of(leaves, 20)
    size, root = fresh.head()
    assert verify_inclusion(33, size, leaves[33], fresh.inclusion_proof(33), root)
    with pytest.raises(NotFound):
        fresh.inclusion_proof(77)
    with pytest.raises(NotFound):
        fresh.inclusion_proof(3, 78)


# ---- compliance is read-only ---------------------------------------------------------------------
def test_the_log_api_has_no_way_to_edit_or_delete() -> None:
    public = {name for name in dir(AuditLog) if not name.startswith("_")}
    mutating = {"append", "checkpoint", "receipt"}  # receipt may sign a checkpoint
    words = ("delete", "remove", "edit", "update", "truncate", "rewrite", "set", "replace")
    assert not [n for n in public - mutating if any(w in n for w in words)], public
    assert "append" in public and "verify" in public


def test_key_file_never_readable_by_others_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        new_log(tmp_path).public_key_pem()
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "state" / "audit_signing.key").stat().st_mode)
    assert mode == 0o600
