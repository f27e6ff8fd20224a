"""Federation over real gRPC on loopback: three node servers, each with its own third of the
PUMS persons, policy and log, and a coordinator server the researcher talks to.

The federated answer equals DuckDB on the union of the nodes' files (before rounding), cells
under k in the combined table are suppressed, each node's log holds the digest the coordinator
logged for it, and a node that is down, too few nodes or a node that refuses fail the job
cleanly or let it proceed as the dataset's federation policy says.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from sandbox import CellStatus, Role
from sandbox._errors import (
    InvalidJobSpec,
    JobFailed,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    TooFewParties,
)
from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, JobSpec
from sandbox.audit import AuditLog, Receipt, load_public_key, receipt_problem
from sandbox.disclosure._threshold import round_to_base
from sandbox.federation import FederatedResult, run_federated
from sandbox.server._federation import coordinator_of
from tests.conftest import PUMS_DIR, World, make_world, pums_policy

NODES = ("north", "south", "east")
GHOSTS = ("ghost", "ghost2")
PROJECT = "fed-study"


def dead_target() -> str:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def split_pums(root: Path) -> list[Path]:
    """PUMS_pid in three disjoint parts by person (pid mod 3)."""
    frame = pd.read_csv(PUMS_DIR / "PUMS_pid.csv")
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(3):
        path = root / f"part{i}.csv"
        frame[frame["pid"] % 3 == i].to_csv(path, index=False)
        paths.append(path)
    return paths


def union_sql(paths: list[Path]) -> str:
    files = ", ".join(f"'{p}'" for p in paths)
    return f"read_csv([{files}])"


@dataclass(frozen=True)
class FedDataset:
    """A federated dataset at the coordinator: its nodes and federation policy."""

    id: str
    nodes: tuple[str, ...] = NODES
    k: int = 1
    base: int = 1
    on_node_failure: str = "fail"
    min_nodes: int = 2
    persons: str = "disjoint"


DATASETS = (
    FedDataset("pums"),
    FedDataset("pums_k", k=80, base=10),
    FedDataset("pums_fail", nodes=("north", "south", "ghost")),
    FedDataset("pums_proceed", nodes=("north", "south", "ghost"), on_node_failure="proceed"),
    FedDataset("pums_few", nodes=("north", "ghost", "ghost2"), on_node_failure="proceed"),
    FedDataset("pums_overlap", persons="overlapping", k=100),
)


@dataclass
class Federation:
    root: Path
    parts: list[Path]
    nodes: dict[str, World]
    coordinator: World
    extra_nodes: dict[str, str] = field(default_factory=dict)

    def researcher(self, **kwargs: Any) -> Any:
        return self.coordinator.client("ana", **kwargs)

    def run(self, spec: JobSpec, **kwargs: Any) -> FederatedResult:
        return run_federated(self.researcher(), spec, timeout=60, **kwargs)

    def audit(self, world: World) -> list[dict[str, Any]]:
        return [r.entry for r in world.client("chen").audit_entries(limit=100_000)]


def node_federation_file(root: Path, coordinators: tuple[str, ...] = ("coordinator",)) -> Path:
    path = root / "node-federation.toml"
    names = ", ".join(f'"{c}"' for c in coordinators)
    path.write_text(f"[federation]\ncoordinators = [{names}]\n")
    return path


def coordinator_file(
    root: Path,
    targets: dict[str, str],
    tokens: dict[str, str],
    datasets: tuple[FedDataset, ...],
    *,
    timeout_s: float = 20,
) -> Path:
    """The coordinator's federation config, and one policy file per federated dataset."""
    lines = ["[federation]", f"timeout_s = {timeout_s}", ""]
    mapping = ", ".join(f'{d.id} = "pums"' for d in datasets)
    for name, target in targets.items():
        lines += [
            "[[federation.nodes]]",
            f'name = "{name}"',
            f'target = "{target}"',
            'project = "federation"',
            f'token = "{tokens.get(name, "none")}"',
            f"datasets = {{ {mapping} }}",
            "",
        ]
    for d in datasets:
        policy = root / f"{d.id}.yaml"
        text = pums_policy(d.id, "not-read.csv", k=d.k, base=d.base, age_bins=True)
        # The coordinator's policy also allows a variance: federation itself must refuse it.
        policy.write_text(
            text.replace("aggregates: [sum, mean]", "aggregates: [sum, mean, variance]")
        )
        nodes = ", ".join(f'"{n}"' for n in d.nodes)
        lines += [
            "[[federation.datasets]]",
            f'id = "{d.id}"',
            f'policy = "{policy}"',
            f"nodes = [{nodes}]",
            f"min_nodes = {d.min_nodes}",
            f'on_node_failure = "{d.on_node_failure}"',
            f'persons = "{d.persons}"',
            "",
        ]
    path = root / "coordinator-federation.toml"
    path.write_text("\n".join(lines))
    return path


def start_node(root: Path, part: Path, *, grant_demography: bool = True) -> World:
    """A node server with its third of PUMS as 'pums' (k = 10 locally: never used for
    partials) and the principal 'coordinator' in its project 'federation'."""
    root.mkdir(parents=True, exist_ok=True)
    world = make_world(
        root,
        {"pums": pums_policy("pums", "pums.csv", age_bins=True)},
        {"pums.csv": part},
        federation_config=str(node_federation_file(root)),
    )
    world.register("pums")
    world.add_principal("coordinator", Role.RESEARCHER)
    grants = [("pums", "research")] + ([("pums", "demography")] if grant_demography else [])
    world.project("federation", tuple(grants), members=("coordinator",))
    return world


def start_coordinator(
    root: Path,
    targets: dict[str, str],
    tokens: dict[str, str],
    datasets: tuple[FedDataset, ...] = DATASETS,
    **kwargs: Any,
) -> World:
    root.mkdir(parents=True, exist_ok=True)
    config = coordinator_file(root, targets, tokens, datasets, **kwargs)
    world = make_world(root / "server", {}, {}, federation_config=str(config))
    grants = tuple((d.id, p) for d in datasets for p in ("research", "demography"))
    world.project(PROJECT, grants, members=("ana",))
    return world


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federation")
    parts = split_pums(root / "parts")
    nodes: dict[str, World] = {}
    coordinator = None
    try:
        for i, name in enumerate(NODES):
            # east does not grant 'demography' to the coordinator: its policy refuses that.
            nodes[name] = start_node(root / name, parts[i], grant_demography=name != "east")
        targets = {name: w.target for name, w in nodes.items()}
        targets |= {g: dead_target() for g in GHOSTS}
        tokens = {name: w.tokens["coordinator"] for name, w in nodes.items()}
        coordinator = start_coordinator(root / "coordinator", targets, tokens)
        yield Federation(root, parts, nodes, coordinator)
    finally:
        for w in [*nodes.values(), *([coordinator] if coordinator else [])]:
            w.stop()


def spec(
    dataset: str = "pums",
    *,
    group_by: tuple[str, ...] = ("sex", "age"),
    aggregates: tuple[Aggregate, ...] | None = None,
    filters: tuple[Filter, ...] = (),
    purpose: str = "research",
) -> JobSpec:
    return JobSpec(
        dataset=dataset,
        project=PROJECT,
        purpose=purpose,
        aggregates=aggregates
        or (
            Aggregate(AggFunc.COUNT, alias="n"),
            Aggregate(AggFunc.COUNT_DISTINCT, alias="persons"),
            Aggregate(AggFunc.SUM, "income", alias="total"),
            Aggregate(AggFunc.MEAN, "income", alias="mean"),
        ),
        group_by=group_by,
        filters=filters,
    )


AGE_BIN = (
    "CASE WHEN age < 18 THEN '[0, 18)' WHEN age < 35 THEN '[18, 35)' WHEN age < 50 "
    "THEN '[35, 50)' WHEN age < 65 THEN '[50, 65)' ELSE '[65, 101)' END"
)


def union_frame(fed: Federation, where: str = "") -> pd.DataFrame:
    return duckdb.sql(
        f"SELECT sex, {AGE_BIN} AS age, count(*) AS n, count(DISTINCT pid) AS persons, "
        f"sum(income) AS total, avg(income) AS mean FROM {union_sql(fed.parts)} {where} "
        "GROUP BY ALL"
    ).df()


def by_key(frame: pd.DataFrame) -> dict[tuple[int, str], dict[str, float]]:
    return {
        (int(r["sex"]), str(r["age"])): {c: float(r[c]) for c in ("n", "persons", "total", "mean")}
        for _, r in frame.iterrows()
    }


# ---- the answer ---------------------------------------------------------------------------
def test_federated_answer_equals_union_of_the_nodes_data(federation: Federation) -> None:
    result = federation.run(spec())
    assert isinstance(result, FederatedResult)
    assert set(result.parties) == set(NODES) and result.missing == ()
    got = result.to_dataframe()
    expected = by_key(union_frame(federation))
    # Every declared key is a row: 2 sexes x 5 age bins, the empty [0, 18) bins suppressed.
    assert len(got) == 10
    for _, row in got.iterrows():
        key = (int(row["sex"]), str(row["age"]))
        if key not in expected:
            assert pd.isna(row["n"]) and key[1] == "[0, 18)"
            continue
        want = expected[key]
        assert row["n"] == want["n"] and row["persons"] == want["persons"]
        assert row["total"] == pytest.approx(want["total"], abs=0.01)
        assert row["mean"] == pytest.approx(want["mean"], rel=1e-9)
    settings = result.table.settings
    assert settings["federation_nodes"] == 3 and settings["federation_nodes_missing"] == 0


def test_federated_total_without_group_by_and_with_a_filter(federation: Federation) -> None:
    flt = Filter("married", FilterOp.EQ, (1,))
    result = federation.run(spec(group_by=(), filters=(flt,)))
    got = result.to_dataframe()
    want = duckdb.sql(
        f"SELECT count(*) AS n, sum(income) AS total, avg(income) AS mean "
        f"FROM {union_sql(federation.parts)} WHERE married = 1"
    ).df()
    assert len(got) == 1
    assert got["n"][0] == float(want["n"][0])
    assert got["total"][0] == pytest.approx(float(want["total"][0]), abs=0.01)
    assert got["mean"][0] == pytest.approx(float(want["mean"][0]), rel=1e-9)


def test_cells_under_k_in_the_combined_table_are_suppressed(federation: Federation) -> None:
    # k = 80 on the combined persons: each node alone has fewer than 80 in every cell, yet
    # the combined cells of 84 and more persons are released (rounded to base 10).
    result = federation.run(spec("pums_k"))
    expected = by_key(union_frame(federation))
    released = suppressed = 0
    for row in result.table.rows:
        key = (int(row.keys[0]), str(row.keys[1]))  # type: ignore[arg-type]
        persons = expected.get(key, {}).get("persons", 0)
        for cell, name in zip(row.cells, result.table.value_columns, strict=True):
            if persons < 80:
                assert cell.status == CellStatus.SUPPRESSED and cell.value is None
                suppressed += 1
            else:
                released += 1
                if name in ("n", "persons", "total"):
                    assert cell.status == CellStatus.ROUNDED
                    assert cell.value == round_to_base(expected[key][name], 10)
    assert suppressed == 3 * 4 and released == 7 * 4  # [0,18) twice and (sex 0, 65+): 76


def test_each_node_logs_the_digest_the_coordinator_logged(federation: Federation) -> None:
    result = federation.run(spec(group_by=("married",)))
    entries = federation.audit(federation.coordinator)
    released = [
        e for e in entries if e["event"] == "federation.released" and e["job_id"] == result.job_id
    ]
    assert len(released) == 1
    # The federated result carries the receipt of exactly that entry, valid offline.
    assert result.receipt is not None
    receipt = Receipt.from_dict(result.receipt)
    coordinator_log = AuditLog(federation.coordinator.db)
    trusted = load_public_key(coordinator_log.public_key_pem())
    assert receipt_problem(receipt, trusted, released[0]) == ""
    logged = {p["party"]: p for p in released[0]["parties"]}
    assert set(logged) == set(NODES)
    text = json.dumps(released[0])
    assert "income" in text  # the spec is logged...
    for name, world in federation.nodes.items():
        node_entries = federation.audit(world)
        partial = [
            e
            for e in node_entries
            if e["event"] == "job.partial" and e["job_id"] == logged[name]["node_job_id"]
        ]
        assert len(partial) == 1
        assert partial[0]["result_digest"] == logged[name]["result_digest"]
        link = [
            e
            for e in node_entries
            if e["event"] == "federation.partial" and e["federated_job_id"] == result.job_id
        ]
        assert len(link) == 1 and link[0]["result_digest"] == logged[name]["result_digest"]
        assert link[0]["on_behalf_of"] == "ana" and link[0]["party"] == name
        assert link[0]["key_fingerprint"] == released[0]["key_fingerprint"]
    # ...but no value: the released table's numbers are not in the coordinator's log entry.
    for row in result.table.rows:
        for cell in row.cells:
            if cell.value is not None and cell.value > 1000:
                assert str(int(cell.value)) not in text


def test_sealed_to_the_researchers_registered_key(federation: Federation, tmp_path: Path) -> None:
    from Crypto.PublicKey import RSA

    key = RSA.generate(3072)
    bob_token = federation.coordinator.add_principal("bob2", Role.RESEARCHER)
    coord = federation.coordinator
    coord.project("fed-bob", (("pums", "research"),), members=("bob2",))
    client = coord.client("bob2", private_key=key)
    client.register_public_key()
    job = JobSpec(
        dataset="pums",
        project="fed-bob",
        purpose="research",
        aggregates=(Aggregate(AggFunc.COUNT, alias="n"),),
        group_by=("sex",),
    )
    result = run_federated(client, job, timeout=60)
    assert result.sealed and bob_token
    total = duckdb.sql(f"SELECT count(*) FROM {union_sql(federation.parts)}").fetchall()[0][0]
    assert sum(r.cells[0].value or 0 for r in result.table.rows) == total


# ---- refusals -----------------------------------------------------------------------------
def test_group_by_without_a_public_key_set_is_refused(federation: Federation) -> None:
    with pytest.raises(InvalidJobSpec, match="no declared key set"):
        federation.run(spec(group_by=("race",)))


def test_aggregates_that_do_not_add_up_are_refused(federation: Federation) -> None:
    variance = (Aggregate(AggFunc.VARIANCE, "income"),)
    with pytest.raises(InvalidJobSpec, match="not a sum of per-node parts") as info:
        federation.run(spec(aggregates=variance))
    assert "federation.aggregate" in info.value.rule_ids


def test_distinct_persons_over_overlapping_nodes_are_refused(federation: Federation) -> None:
    with pytest.raises(InvalidJobSpec, match="distinct"):
        federation.run(spec("pums_overlap"))
    # Counts and sums still add up; thresholds use ceil(sum of persons / nodes) >= 100:
    counts = (Aggregate(AggFunc.COUNT, alias="n"),)
    result = federation.run(spec("pums_overlap", group_by=("sex",), aggregates=counts))
    released = [r for r in result.table.rows if r.cells[0].status != CellStatus.SUPPRESSED]
    assert len(released) == 2  # about 500 per sex: 167 per node on average, >= 100


def test_unknown_federated_dataset_is_not_found(federation: Federation) -> None:
    with pytest.raises(NotFound):
        federation.run(spec("nope"))


def test_a_node_whose_policy_refuses_fails_the_job_cleanly(federation: Federation) -> None:
    # 'demography' is granted at the coordinator and on north and south, not on east.
    counts = (Aggregate(AggFunc.COUNT, alias="n"),)
    with pytest.raises(PolicyDenied, match="node 'east' refused") as info:
        federation.run(spec(aggregates=counts, purpose="demography"))
    job_id = info.value.job_id
    entries = federation.audit(federation.coordinator)
    assert not [e for e in entries if e["event"] == "federation.released" and e["job_id"] == job_id]
    failed = [e for e in entries if e["event"] == "federation.failed" and e["job_id"] == job_id]
    assert len(failed) == 1 and "federation.node_refused" in failed[0]["rule_ids"]
    east = federation.audit(federation.nodes["east"])
    assert any(
        e["event"] == "job.denied" and "project.purpose_not_granted" in e["rule_ids"] for e in east
    )


# ---- nodes down ---------------------------------------------------------------------------
def test_a_node_down_fails_the_job_under_fail(federation: Federation) -> None:
    with pytest.raises(JobFailed, match="node 'ghost'") as info:
        federation.run(spec("pums_fail"))
    entries = federation.audit(federation.coordinator)
    job = [e for e in entries if e.get("job_id") == info.value.job_id]
    assert [e["event"] for e in job] == ["federation.accepted", "federation.failed"]
    assert job[1]["missing"] == [{"party": "ghost", "reason": "UNAVAILABLE"}]
    assert {p["party"] for p in job[1]["parties"]} == {"north", "south"}


def test_a_node_down_is_skipped_under_proceed_with_enough_nodes(federation: Federation) -> None:
    result = federation.run(spec("pums_proceed", group_by=("sex",)))
    assert set(result.parties) == {"north", "south"} and result.missing == ("ghost",)
    assert result.table.settings["federation_nodes_missing"] == 1
    want = duckdb.sql(
        f"SELECT sex, count(*) AS n FROM {union_sql(federation.parts[:2])} GROUP BY sex"
    ).df()
    got = {int(r.keys[0]): r.cells[0].value for r in result.table.rows}  # type: ignore[arg-type]
    assert got == {int(s): float(n) for s, n in zip(want["sex"], want["n"], strict=True)}
    entries = federation.audit(federation.coordinator)
    released = [e for e in entries if e.get("job_id") == result.job_id][-1]
    assert released["event"] == "federation.released"
    assert released["missing"] == [{"party": "ghost", "reason": "UNAVAILABLE"}]


def test_fewer_than_min_nodes_is_refused(federation: Federation) -> None:
    with pytest.raises(TooFewParties, match="needs at least 2"):
        federation.run(spec("pums_few"))


def test_only_configured_coordinators_get_partials(federation: Federation) -> None:
    # ana is a researcher on the coordinator only; on a node, a researcher who is not the
    # configured coordinator is refused before anything runs (see tests/security too).
    from sandbox.api.v1 import federation_pb2, federation_pb2_grpc

    north = federation.nodes["north"]
    client = north.client("ana")
    stub = federation_pb2_grpc.FederationNodeServiceStub(client._channel)
    with pytest.raises(PermissionDenied, match="not a federation coordinator"):
        client._call(stub.ComputePartials, federation_pb2.PartialsRequest())


def test_a_slow_node_times_out(tmp_path: Path, federation: Federation) -> None:
    """A node slower than the deadline fails the job under 'fail' and is skipped under
    'proceed'; the coordinator's timings name the slowest node's wait."""
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from sandbox.api.v1 import federation_pb2_grpc

    class Slow(federation_pb2_grpc.FederationNodeServiceServicer):  # type: ignore[misc]
        def ComputePartials(self, request: Any, context: Any) -> Any:
            _time.sleep(4)
            context.abort(grpc.StatusCode.UNAVAILABLE, "too late")

    server = grpc.server(ThreadPoolExecutor(4))
    federation_pb2_grpc.add_FederationNodeServiceServicer_to_server(Slow(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        targets = {n: w.target for n, w in federation.nodes.items()}
        targets["slow"] = f"127.0.0.1:{port}"
        tokens = {n: w.tokens["coordinator"] for n, w in federation.nodes.items()}
        datasets = (
            FedDataset("pums", nodes=("north", "south", "slow")),
            FedDataset("pums_proceed", nodes=("north", "south", "slow"), on_node_failure="proceed"),
        )
        coord = start_coordinator(tmp_path, targets, tokens, datasets, timeout_s=1.5)
        try:
            client = coord.client("ana")
            with pytest.raises(JobFailed, match=r"node 'slow' \(timeout\)"):
                run_federated(client, spec(group_by=("sex",)), timeout=30)
            result = run_federated(client, spec("pums_proceed", group_by=("sex",)), timeout=30)
            assert result.missing == ("slow",)
            coordinator = coordinator_of(coord.server.app)
            assert coordinator is not None
            assert 1.4 < coordinator.last_timings["slowest_node"] < 3.5
        finally:
            coord.stop()
    finally:
        server.stop(0)


def test_the_combined_query_set_check_refuses_a_small_filter(federation: Federation) -> None:
    from sandbox._errors import DisclosureControl

    few = Filter("age", FilterOp.GE, (85,))  # a handful of persons in all three nodes
    with pytest.raises(DisclosureControl) as info:
        federation.run(spec("pums_k", group_by=("sex",), filters=(few,)))
    assert info.value.rule_ids == ("disclosure.query_set",)


def test_the_differencing_guard_applies_to_combined_releases(federation: Federation) -> None:
    # age < 60 then age < 61, by sex: each cell of the second differs from the first by the
    # persons aged 60 (fewer than k = 80), so it is suppressed as a difference.
    counts = (Aggregate(AggFunc.COUNT, alias="n"),)
    first = federation.run(
        spec(
            "pums_k",
            group_by=("sex",),
            aggregates=counts,
            filters=(Filter("age", FilterOp.LT, (60,)),),
        )
    )
    assert all(r.cells[0].status == CellStatus.ROUNDED for r in first.table.rows)
    second = federation.run(
        spec(
            "pums_k",
            group_by=("sex",),
            aggregates=counts,
            filters=(Filter("age", FilterOp.LT, (61,)),),
        )
    )
    rules = {r.cells[0].rule for r in second.table.rows}
    assert rules == {"disclosure.differencing"}
