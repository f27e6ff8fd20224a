"""Invariant 6: every decision and release is in the tamper-evident log, in order.

The log is an RFC 6962 Merkle tree over canonical JSON entries; edits, deletions and
consistent re-hashing are detected both online (``audit_verify``) and offline (the CLI).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from sandbox import (
    DisclosureControl,
    JobState,
    PermissionDenied,
    PolicyDenied,
    Project,
    Query,
    SandboxError,
)
from sandbox.api.v1 import audit_pb2
from sandbox.cli import main as cli_main
from tests.conftest import World
from tests.security._support import (
    audit_entries,
    canonical,
    ledger_rows,
    workers_held,
)


# ---- an independent RFC 6962 reference ------------------------------------------------------
def mth(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf *data* (RFC 6962 §2.1): 0x00 leaf prefix, 0x01 node prefix."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def test_reference_mth_matches_rfc6962_test_vectors() -> None:
    """Known roots from the certificate-transparency reference tests (8 leaves)."""
    data = [
        bytes.fromhex(h)
        for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                  "606162636465666768696a6b6c6d6e6f")
    ]  # fmt: skip
    roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    assert [mth(data[:i]).hex() for i in range(1, 9)] == roots
    assert mth([]).hex() == hashlib.sha256(b"").hexdigest()


# ---- helpers --------------------------------------------------------------------------------
def _allowed(world: World) -> str:
    ana = world.client("ana")
    job = ana.submit(Query("pums").group_by("sex").count(), project="census-study",
                     purpose="research")  # fmt: skip
    job.result(timeout=30)
    return job.job_id


def _policy_denied(world: World) -> str:
    with pytest.raises(PolicyDenied) as info:
        world.client("ana").run(Query("pums").group_by("pid").count(), project="census-study",
                                purpose="research")  # fmt: skip
    return info.value.job_id


def _disclosure_denied(world: World) -> str:
    with pytest.raises(DisclosureControl) as info:
        world.client("ana").run(Query("pums").where("age", ">=", 0).count(),
                                project="census-study", purpose="research")  # fmt: skip
    return info.value.job_id


KIND = {
    "allowed": (_allowed, ["job.accepted", "job.released"]),
    "policy": (_policy_denied, ["job.denied"]),
    "disclosure": (_disclosure_denied, ["job.accepted", "job.denied"]),
}


def _run_mix(world: World, kinds: Sequence[str]) -> list[tuple[str, str]]:
    return [(kind, KIND[kind][0](world)) for kind in kinds]


def _stored(world: World) -> list[tuple[int, str, str, str]]:
    return world.db.conn.execute(
        "SELECT seq, entry, leaf_hash, root FROM audit ORDER BY seq"
    ).fetchall()


def _set_entry(world: World, seq: int, entry_text: str, leaf_hex: str | None = None) -> None:
    conn = world.db.conn
    if leaf_hex is None:
        conn.execute("UPDATE audit SET entry = ? WHERE seq = ?", (entry_text, seq))
    else:
        conn.execute(
            "UPDATE audit SET entry = ?, leaf_hash = ? WHERE seq = ?", (entry_text, leaf_hex, seq)
        )


def _seq_of(world: World, job_id: str, event: str) -> int:
    for seq, text, _, _ in _stored(world):
        entry = json.loads(text)
        if entry.get("job_id") == job_id and entry["event"] == event:
            return seq
    raise AssertionError(f"no {event} entry for {job_id}")


def _cli_verify(world: World) -> Any:
    return CliRunner().invoke(
        cli_main, ["audit", "verify", "--config", str(world.root / "sandbox.toml")]
    )


# ---- (a) order ------------------------------------------------------------------------------
def test_every_job_is_logged_in_submission_order(pums_world: World) -> None:
    kinds = ["allowed", "policy", "disclosure", "allowed", "policy", "policy", "allowed",
             "disclosure", "allowed"]  # fmt: skip
    jobs = _run_mix(pums_world, kinds)
    entries = audit_entries(pums_world)
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(len(entries)))  # dense, ordered
    ours = [e for e in entries if e.get("job_id") in {j for _, j in jobs}]
    # Entries of job i all precede those of job i+1, with the expected events.
    expected = [(job_id, event) for kind, job_id in jobs for event in KIND[kind][1]]
    assert [(e["job_id"], e["event"]) for e in ours] == expected
    for e in ours:
        assert e["event"] == "job.released" or e["decision"] in ("allow", "deny")
        assert e["actor"] == "ana" and e["dataset"] == "pums" and e["purpose"] == "research"
        assert "spec_digest" in e
    # Decisions as logged: accepted → allow, denied → deny with rule ids.
    for e in ours:
        if e["event"] == "job.accepted":
            assert e["decision"] == "allow"
        if e["event"] == "job.denied":
            assert e["decision"] == "deny" and e["rule_ids"]
        if e["event"] == "job.released":
            assert e["charged"]["jobs"] == 1 and len(e["result_digest"]) == 64


# ---- (b) tamper detection -------------------------------------------------------------------
def test_verify_ok_then_detects_an_edited_entry(pums_world: World) -> None:
    jobs = _run_mix(pums_world, ["allowed", "policy", "allowed", "disclosure", "allowed"])
    chen = pums_world.client("chen")
    clean = chen.audit_verify()
    assert clean.ok and clean.first_bad_seq is None and clean.size == len(_stored(pums_world))

    denied_job = jobs[1][1]
    seq = _seq_of(pums_world, denied_job, "job.denied")
    _, text, _, _ = _stored(pums_world)[seq]
    entry = json.loads(text)
    for field, forged in (("decision", "allow"), ("actor", "bob"), ("rule_ids", [])):
        altered = canonical({**entry, field: forged})
        assert altered != text and json.loads(altered)  # still valid canonical JSON
        _set_entry(pums_world, seq, altered)
        report = chen.audit_verify()
        assert not report.ok, field
        assert report.first_bad_seq == seq, field
        assert report.problem
        _set_entry(pums_world, seq, text)  # restore
        assert chen.audit_verify().ok


def test_edit_with_recomputed_leaf_hash_is_caught_by_stored_tree_heads(pums_world: World) -> None:
    jobs = _run_mix(pums_world, ["allowed", "policy", "allowed", "allowed"])
    chen = pums_world.client("chen")
    seq = _seq_of(pums_world, jobs[1][1], "job.denied")
    _, text, _, _ = _stored(pums_world)[seq]
    forged = canonical({**json.loads(text), "decision": "allow", "rule_ids": []})
    leaf = hashlib.sha256(b"\x00" + forged.encode()).hexdigest()
    _set_entry(pums_world, seq, forged, leaf)
    report = chen.audit_verify()
    assert not report.ok
    assert report.first_bad_seq == seq
    assert "root" in report.problem or "head" in report.problem


def test_full_rewrite_is_caught_against_a_root_the_reviewer_kept(pums_world: World) -> None:
    """Rewriting an entry, its leaf and every later tree head passes a self-check, but not a
    comparison with a root (checkpoint) a reviewer recorded earlier at the same size."""
    jobs = _run_mix(pums_world, ["allowed", "policy", "allowed"])
    chen = pums_world.client("chen")
    kept = chen.audit_verify()
    seq = _seq_of(pums_world, jobs[1][1], "job.denied")
    rows = _stored(pums_world)
    texts = [t for _, t, _, _ in rows]
    texts[seq] = canonical({**json.loads(texts[seq]), "decision": "allow"})
    conn = pums_world.db.conn
    for i in range(seq, len(rows)):
        leaf = hashlib.sha256(b"\x00" + texts[i].encode()).hexdigest()
        root = mth([t.encode() for t in texts[: i + 1]]).hex()
        conn.execute(
            "UPDATE audit SET entry = ?, leaf_hash = ?, root = ? WHERE seq = ?",
            (texts[i], leaf, root, i),
        )
    now = chen.audit_verify()
    assert now.size == kept.size
    assert now.root != kept.root


@pytest.mark.parametrize("where", ["middle", "last"])
def test_deleted_entry_is_detected(pums_world: World, where: str) -> None:
    _run_mix(pums_world, ["allowed", "policy", "allowed"])
    chen = pums_world.client("chen")
    size = chen.audit_verify().size
    seq = size // 2 if where == "middle" else size - 1
    pums_world.db.conn.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    report = chen.audit_verify()
    assert not report.ok
    assert report.first_bad_seq == seq
    assert ("gap" in report.problem) if where == "middle" else ("truncat" in report.problem)


def test_appended_forged_entry_is_detected(pums_world: World) -> None:
    """An entry inserted after the last one, with a correct leaf hash and tree head."""
    _run_mix(pums_world, ["allowed", "policy"])
    rows = _stored(pums_world)
    seq = len(rows)
    texts = [t for _, t, _, _ in rows]
    forged = canonical({**json.loads(texts[-1]), "seq": seq, "actor": "bob"})
    leaf = hashlib.sha256(b"\x00" + forged.encode()).hexdigest()
    root = mth([t.encode() for t in [*texts, forged]]).hex()
    pums_world.db.conn.execute(
        "INSERT INTO audit (seq, entry, leaf_hash, root) VALUES (?, ?, ?, ?)",
        (seq, forged, leaf, root),
    )
    report = pums_world.client("chen").audit_verify()
    assert not report.ok
    assert report.first_bad_seq == seq, report


def test_swapped_entries_are_detected(pums_world: World) -> None:
    _run_mix(pums_world, ["allowed", "policy"])
    rows = _stored(pums_world)
    a, b = len(rows) - 2, len(rows) - 1
    conn = pums_world.db.conn
    conn.execute("UPDATE audit SET entry = ?, leaf_hash = ? WHERE seq = ?", (*rows[b][1:3], a))
    conn.execute("UPDATE audit SET entry = ?, leaf_hash = ? WHERE seq = ?", (*rows[a][1:3], b))
    report = pums_world.client("chen").audit_verify()
    assert not report.ok and report.first_bad_seq == a


# ---- (c) offline CLI verification -----------------------------------------------------------
def test_cli_offline_verify_exit_codes(pums_world: World) -> None:
    jobs = _run_mix(pums_world, ["allowed", "policy", "disclosure"])
    clean = _cli_verify(pums_world)
    assert clean.exit_code == 0, clean.output
    seq = _seq_of(pums_world, jobs[2][1], "job.denied")
    _, text, _, _ = _stored(pums_world)[seq]
    _set_entry(pums_world, seq, canonical({**json.loads(text), "actor": "bob"}))
    tampered = _cli_verify(pums_world)
    assert tampered.exit_code == 3, tampered.output
    assert f"seq {seq}" in tampered.output
    # The online check agrees with the offline one.
    assert pums_world.client("chen").audit_verify().first_bad_seq == seq


# ---- (d) the Merkle root --------------------------------------------------------------------
def test_reported_root_is_the_rfc6962_root_of_all_entries(pums_world: World) -> None:
    _run_mix(pums_world, ["allowed", "policy", "disclosure", "allowed", "policy"])
    rows = _stored(pums_world)
    report = pums_world.client("chen").audit_verify()
    assert report.ok and report.size == len(rows)
    assert report.root == mth([text.encode() for _, text, _, _ in rows]).hex()
    # Each stored tree head is the root of the prefix ending at that entry.
    for seq, _, leaf, root in rows:
        assert leaf == hashlib.sha256(b"\x00" + rows[seq][1].encode()).hexdigest()
        assert root == mth([t.encode() for _, t, _, _ in rows[: seq + 1]]).hex()
    # What the reviewer reads through the API re-serialises to the very bytes that were hashed.
    served = pums_world.client("chen").audit_entries(limit=10_000)
    assert [canonical(r.entry) for r in served] == [t for _, t, _, _ in rows]
    assert [r.leaf_hash for r in served] == [leaf for _, _, leaf, _ in rows]
    assert report.root == mth([canonical(r.entry).encode() for r in served]).hex()


# ---- (e) roles and the absence of edit RPCs -------------------------------------------------
def test_only_compliance_and_admin_read_or_verify_the_log(pums_world: World) -> None:
    for name in ("ana", "bob", "sam"):
        client = pums_world.client(name)
        with pytest.raises(PermissionDenied):
            client.audit_entries()
        with pytest.raises(PermissionDenied):
            client.audit_verify()
    for name in ("chen", "root"):
        client = pums_world.client(name)
        assert client.audit_entries(limit=1)
        assert client.audit_verify().ok
    # Compliance is read-only: it can neither create projects nor submit jobs.
    chen = pums_world.client("chen")
    with pytest.raises(PermissionDenied):
        chen.create_project(Project("x", "x", ("chen",), (("pums", "research"),), dt.date.today()))
    with pytest.raises(SandboxError):
        chen.run(Query("pums").count(), project="census-study", purpose="research")


def test_no_rpc_edits_or_deletes_log_entries() -> None:
    service = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]
    assert {m.name for m in service.methods} == {"ListAuditEntries", "VerifyAuditLog"}
    from sandbox.api.v1 import catalog_pb2, jobs_pb2, projects_pb2

    for module in (audit_pb2, catalog_pb2, jobs_pb2, projects_pb2):
        for svc in module.DESCRIPTOR.services_by_name.values():
            for method in svc.methods:
                lowered = method.name.lower()
                if "audit" in lowered or "log" in lowered:
                    assert method.name in ("ListAuditEntries", "VerifyAuditLog")
                assert not any(w in lowered for w in ("delete", "edit", "truncate", "rewrite"))


# ---- (f) the ledger equals what the log shows -----------------------------------------------
def test_ledger_matches_the_log(pums_world: World) -> None:
    world = pums_world
    ana = world.client("ana")
    jobs = _run_mix(world, ["allowed", "policy", "disclosure", "allowed", "policy"])
    with workers_held(world):
        queued = ana.submit(Query("pums").count(), project="census-study", purpose="research")
        assert queued.state == JobState.QUEUED
        assert queued.cancel()
    jobs.append(("cancelled", queued.job_id))
    jobs += _run_mix(world, ["allowed"])

    entries = [
        e for e in audit_entries(world) if e.get("project") == "census-study" and "job_id" in e
    ]
    ledger = ledger_rows(world)
    terminal = ("job.released", "job.denied", "job.failed", "job.cancelled")
    by_job: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_job.setdefault(e["job_id"], []).append(e)

    for kind, job_id in jobs:
        events = [e["event"] for e in by_job[job_id]]
        ends = [e for e in by_job[job_id] if e["event"] in terminal]
        assert len(ends) == 1, (kind, events)
        if kind == "policy":  # refused at submission: never reserved
            assert job_id not in ledger and events == ["job.denied"]
            continue
        assert events[0] == "job.accepted"
        reserved = by_job[job_id][0]["reserved"]
        project, state, n_jobs, rows = ledger[job_id]
        assert (project, n_jobs) == ("census-study", reserved["jobs"])
        charged = ends[0]["charged"]
        if kind == "cancelled":
            assert state == "released" and charged == {"jobs": 0, "rows": 0}
        else:  # released, or refused after data was read: charged
            assert state == "committed" and charged == {"jobs": 1, "rows": rows}

    committed = {
        j for j, (p, s, _, _) in ledger.items() if s == "committed" and p == "census-study"
    }
    charged_in_log = {
        e["job_id"]
        for e in entries
        if e["event"] in terminal and e.get("charged", {}).get("jobs", 0) == 1
    }
    released = {e["job_id"] for e in entries if e["event"] == "job.released"}
    assert committed == charged_in_log
    assert released <= committed
    assert not any(s == "reserved" for _, s, _, _ in ledger.values())
    usage = ana.quota("census-study")
    assert usage.jobs_total == len(committed)
    assert usage.rows_total == sum(
        e.get("charged", {}).get("rows", 0) for e in entries if e["event"] in terminal
    )
