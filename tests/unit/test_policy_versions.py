"""Versioned policies through a real server: a job, its result and its log entries name the
version label (dataset, version, digest) of the policy it ran under."""

from __future__ import annotations

import pytest

from sandbox import DisclosureControl, PolicyDenied
from sandbox.policy import load_policy
from tests.conftest import World


def label_of(world: World) -> str:
    return load_policy(world.root / "policies" / "pums.yaml").version_label


def entries_of(world: World, job_id: str) -> list[dict[str, object]]:
    return [
        r.entry for r in world.client("chen").audit_entries() if r.entry.get("job_id") == job_id
    ]


def test_an_accepted_job_names_its_policy_version_everywhere(pums_world: World) -> None:
    label = label_of(pums_world)
    assert label.startswith("pums@v1:")
    ana = pums_world.client("ana")
    job = ana.submit(
        ana.query("pums").group_by("sex").count(), project="census-study", purpose="research"
    )
    result = job.result(timeout=60)
    assert job.info.policy_version == label
    assert ana.job(result.job_id).info.policy_version == label  # the result's job record
    assert pums_world.client("sam").describe("pums").policy_version == label
    entries = entries_of(pums_world, job.job_id)
    assert [e["event"] for e in entries] == ["job.accepted", "job.released"]
    assert all(e.get("policy_version") == label for e in entries), entries


def test_the_released_table_names_its_policy_version(pums_world: World) -> None:
    ana = pums_world.client("ana")
    result = ana.run(
        ana.query("pums").group_by("sex").count(), project="census-study", purpose="research"
    )
    assert result.table.to_json().get("policy_version") == label_of(pums_world)


def test_a_refused_job_names_the_policy_version_that_refused_it(pums_world: World) -> None:
    ana = pums_world.client("ana")
    query = ana.query("pums").group_by("pid").count()
    with pytest.raises(PolicyDenied) as info:
        ana.submit(query, project="census-study", purpose="research")
    job_id = info.value.job_id
    assert job_id
    entries = entries_of(pums_world, job_id)
    assert [e["event"] for e in entries] == ["job.denied"]
    assert ana.job(job_id).info.policy_version == label_of(pums_world)
    assert entries[0].get("policy_version") == label_of(pums_world)


def test_every_entry_of_a_job_refused_after_acceptance_names_its_version(
    pums_world: World,
) -> None:
    ana = pums_world.client("ana")
    # Too few persons aged 90 or over: refused by disclosure control after the job ran.
    job = ana.submit(
        ana.query("pums").where("age", ">=", 90).count(), project="census-study", purpose="research"
    )
    with pytest.raises(DisclosureControl):
        job.result(timeout=60)
    label = label_of(pums_world)
    assert ana.job(job.job_id).info.policy_version == label
    entries = entries_of(pums_world, job.job_id)
    assert [e["event"] for e in entries] == ["job.accepted", "job.denied"]
    assert all(e.get("policy_version") == label for e in entries), entries
