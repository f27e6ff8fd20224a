"""Every released result carries a receipt that proves, offline, its release is in the log.

The receipt names the audit entry that records the release, a checkpoint signed with the
server's Ed25519 key, and the inclusion proof of the entry in that checkpoint's tree.
"""

from __future__ import annotations

import pytest

from sandbox import PolicyDenied, Query
from sandbox.audit import AuditLog, Receipt, SigningKey, load_public_key, receipt_problem
from tests.conftest import World

COUNT = Query("pums").group_by("sex").count("n")


def test_a_released_result_carries_a_receipt_that_verifies_offline(pums_world: World) -> None:
    ana = pums_world.client("ana")
    results = [ana.run(COUNT, project="census-study", purpose="research") for _ in range(3)]
    trusted = load_public_key(AuditLog(pums_world.db).public_key_pem())
    entries = {r.seq: r.entry for r in pums_world.client("chen").audit_entries()}
    for result in results:
        assert result.receipt is not None
        receipt = Receipt.from_dict(result.receipt)
        entry = entries[receipt.seq]
        assert entry["event"] == "job.released" and entry["job_id"] == result.job_id
        assert entry["result_digest"] == result.digest
        assert receipt_problem(receipt, trusted, entry) == ""
        # The server made it with the release; the stored log gives exactly the same one.
        assert AuditLog(pums_world.db).receipt(receipt.seq).to_dict() == result.receipt
        # Fetched again later, the receipt still proves the same entry.
        again = ana.job(result.job_id).result(timeout=10)
        assert again.receipt == result.receipt
        # Another entry, or another key, does not verify.
        other = entries[receipt.seq - 1]
        assert receipt_problem(receipt, trusted, other) != ""
    stranger = load_public_key(SigningKey.generate().public_pem())
    first = results[0].receipt
    assert first is not None
    assert receipt_problem(Receipt.from_dict(first), stranger) != ""


def test_stopping_the_server_signs_a_checkpoint_of_the_whole_log(pums_world: World) -> None:
    ana = pums_world.client("ana")
    ana.run(COUNT, project="census-study", purpose="research")  # its receipt signs one
    with pytest.raises(PolicyDenied):  # an entry after it, which no receipt covered
        ana.run(Query("pums").group_by("pid").count(), project="census-study", purpose="research")
    log = AuditLog(pums_world.db)
    trusted = load_public_key(log.public_key_pem())
    before = max(cp.size for cp in log.checkpoints())
    assert before < log.size()
    pums_world.stop()
    size = log.size()
    latest = max(log.checkpoints(), key=lambda cp: cp.size)
    assert latest.size == size  # covers every entry, the last ones included
    assert latest.problem(trusted) == ""
