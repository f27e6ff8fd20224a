"""Stored results are sealed at rest; key rotation keeps every stored result readable.

A stored result is AES-256-GCM under the server's data-at-rest key, bound to its job id; the
key file is the server's own (mode 0600); rotation adds a key and re-seals every result while
the server keeps serving; the engine never spills intermediate data to disk.
"""

from __future__ import annotations

import json
import stat

import pytest

from sandbox import Query, SandboxError
from sandbox._rotate import rotate_at_rest_keys
from sandbox.crypto import blob_key_id
from sandbox.engine import Engine
from sandbox.state import AtRestKeys, result_context
from tests.conftest import World

COUNT = Query("pums").group_by("sex").count("n")


def _stored(world: World, job_id: str) -> bytes:
    (blob,) = world.db.conn.execute(
        "SELECT result FROM jobs WHERE job_id = ?", (job_id,)
    ).fetchone()
    return bytes(blob)


def _rows(result: object) -> list[dict[str, object]]:
    return result.to_dataframe().to_dict("records")  # type: ignore[attr-defined, no-any-return]


def test_a_stored_result_is_sealed_and_opens_only_with_the_servers_key(pums_world: World) -> None:
    ana = pums_world.client("ana")
    result = ana.run(COUNT, project="census-study", purpose="research")
    blob = _stored(pums_world, result.job_id)
    assert blob.startswith(b"SBXR")
    assert b'"cells"' not in blob and b'"sex"' not in blob  # no JSON table in the clear
    key_file = pums_world.config.state_dir / "at_rest.keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    table = json.loads(AtRestKeys.from_file(key_file).open(blob, result_context(result.job_id)))
    released = [c["value"] for row in table["rows"] for c in row["cells"]]
    assert sorted(released) == sorted(r["n"] for r in _rows(result))


def test_a_result_moved_to_another_job_does_not_open(pums_world: World) -> None:
    ana = pums_world.client("ana")
    first = ana.run(COUNT, project="census-study", purpose="research")
    second = ana.run(Query("pums").count(), project="census-study", purpose="research")
    with pums_world.db.write() as conn:
        conn.execute(
            "UPDATE jobs SET result = ? WHERE job_id = ?",
            (_stored(pums_world, first.job_id), second.job_id),
        )
    with pytest.raises(SandboxError) as info:
        ana.job(second.job_id).result(timeout=10)
    assert info.value.reason == "SEAL_INVALID"
    assert _rows(ana.job(first.job_id).result(timeout=10)) == _rows(first)


def test_rotation_while_serving_keeps_every_result_readable(pums_world: World) -> None:
    ana = pums_world.client("ana")
    before = [ana.run(COUNT, project="census-study", purpose="research") for _ in range(3)]
    old_key = blob_key_id(_stored(pums_world, before[0].job_id))

    rotation = rotate_at_rest_keys(pums_world.config, actor="test")
    assert rotation.previous_key_id == old_key != rotation.active_key_id
    assert rotation.results_moved == 3
    for result in before:
        assert blob_key_id(_stored(pums_world, result.job_id)) == rotation.active_key_id
        assert _rows(ana.job(result.job_id).result(timeout=10)) == _rows(result)
    # The running server picked up the new key for new results.
    after = ana.run(COUNT, project="census-study", purpose="research")
    assert blob_key_id(_stored(pums_world, after.job_id)) == rotation.active_key_id
    # A second rotation moves everything again; nothing is lost on the way.
    again = rotate_at_rest_keys(pums_world.config, actor="test")
    assert again.results_moved == 4
    for result in [*before, after]:
        assert _rows(ana.job(result.job_id).result(timeout=10)) == _rows(result)
    chen = pums_world.client("chen")
    events = [r.entry for r in chen.audit_entries() if r.entry["event"] == "keys.rotated"]
    assert [e["results_moved"] for e in events] == [3, 4]
    assert chen.audit_verify().ok


def test_the_engine_never_spills_to_disk() -> None:
    engine = Engine()
    try:
        (setting,) = engine._db.execute("SELECT current_setting('temp_directory')").fetchone()
        assert setting == ""
    finally:
        engine.close()
