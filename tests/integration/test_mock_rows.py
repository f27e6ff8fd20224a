"""``Client.mock`` through a real server on loopback: shape, filters, local DuckDB, errors."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import grpc
import pandas as pd
import pytest

from sandbox import Client, InvalidArgument, InvalidJobSpec, NotFound, Query, Unauthenticated
from sandbox.mock import mock_rows
from tests.conftest import PUMS_DIR, World, pums_policy

PUMS_COLUMNS = ["pid", "age", "sex", "educ", "race", "married", "income"]


@pytest.fixture
def mock_world(world_factory: Callable[..., World]) -> World:
    """PUMS with age bins; a small message limit so that mocks arrive in several chunks."""
    world = world_factory(
        {"pums": pums_policy("pums", "pums.csv", age_bins=True)},
        {"pums.csv": PUMS_DIR / "PUMS_pid.csv"},
        max_mock_rows=20_000,
        max_message_bytes=64 * 1024,
    )
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    return world


def test_mock_rows_have_the_dataset_shape_and_types(mock_world: World) -> None:
    ana = mock_world.client("ana")
    df = ana.mock("pums", 200, seed=1)
    assert isinstance(df, pd.DataFrame) and len(df) == 200
    assert list(df.columns) == PUMS_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        "pid": "int64",
        "age": "int64",
        "sex": "int64",
        "educ": "int64",
        "race": "int64",
        "married": "int64",
        "income": "float64",
    }
    assert df["pid"].is_unique
    assert set(df["sex"]) == {0, 1} and set(df["married"]) == {0, 1}
    assert df["age"].between(0, 100).all()
    assert df["income"].between(0, 500_000).all()
    assert df.attrs == {"dataset": "pums", "seed": 1, "mock": True}


def test_mocks_are_reproducible_and_equal_the_in_process_generator(mock_world: World) -> None:
    ana = mock_world.client("ana")
    first = ana.mock("pums", 20_000)  # several chunks under a 64 KiB message limit
    seed = first.attrs["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**63
    pd.testing.assert_frame_equal(first, ana.mock("pums", 20_000, seed=seed))
    info = ana.describe("pums")
    local = mock_rows(info, 20_000, seed=seed).to_pandas()
    pd.testing.assert_frame_equal(first, local)
    assert not ana.mock("pums", 50, seed=seed + 1).equals(first.head(50))


def test_mock_rows_satisfy_a_query_and_run_the_same_job_locally(mock_world: World) -> None:
    ana = mock_world.client("ana")
    query = (
        ana.query("pums")
        .where("age", ">=", 60)
        .where("sex", "=", 1)
        .where("race", "in", [1, 2])
        .group_by("race", "married")
        .count()
        .mean("income")
    )
    df = ana.mock("pums", 500, job=query, seed=7)
    assert len(df) == 500
    assert (df["age"] >= 60).all() and (df["sex"] == 1).all() and df["race"].isin([1, 2]).all()

    # The researcher develops the job on the mock with DuckDB; its output has the shape the
    # server's released result will have (key columns, then one column per aggregate).
    local = duckdb.sql(
        "SELECT race, married, count(*) AS count, avg(income) AS mean_income FROM df "
        "WHERE age >= 60 AND sex = 1 AND race IN (1, 2) GROUP BY race, married ORDER BY ALL"
    ).df()
    assert len(local) == 4 and local["count"].sum() == 500
    released = ana.run(query, project="census-study", purpose="research").to_dataframe()
    assert list(released.columns) == list(local.columns)

    # A JobSpec works the same way as the builder.
    spec = query.to_spec(project="census-study", purpose="research")
    pd.testing.assert_frame_equal(df, ana.mock("pums", 500, job=spec, seed=7))


def test_matching_share_through_the_client(mock_world: World) -> None:
    ana = mock_world.client("ana")
    query = ana.query("pums").where("age", "<", 18).count()
    df = ana.mock("pums", 1000, job=query, seed=3, matching=0.25)
    assert (df["age"] < 18).sum() == 250


def test_unknown_and_unseen_datasets_are_the_same_not_found(mock_world: World) -> None:
    ana, bob = mock_world.client("ana"), mock_world.client("bob")  # bob is in no project
    errors = []
    for client, dataset in ((ana, "nosuch"), (bob, "pums"), (bob, "nosuch")):
        with pytest.raises(NotFound) as err:
            client.mock(dataset, 10)
        errors.append(str(err.value).replace(dataset, "<ds>"))
        with pytest.raises(NotFound) as described:
            client.describe(dataset)
        assert str(described.value) == str(err.value)  # exactly what describe says
    assert len(set(errors)) == 1
    # Even with a job attached and a row count over the cap: still only NOT_FOUND.
    with pytest.raises(NotFound):
        bob.mock("pums", 10_000_000, job=Query("pums").where("age", ">", 1).count())


def test_steward_may_mock_and_anonymous_callers_may_not(mock_world: World) -> None:
    assert len(mock_world.client("sam").mock("pums", 5)) == 5
    anonymous = Client(mock_world.target)
    try:
        with pytest.raises(Unauthenticated):
            anonymous.mock("pums", 5)
    finally:
        anonymous.close()
    bad = Client(mock_world.target, token="sbx_not-a-token")
    try:
        with pytest.raises(Unauthenticated):
            bad.mock("pums", 5)
    finally:
        bad.close()


def test_limits_and_bad_jobs_are_refused(mock_world: World) -> None:
    ana = mock_world.client("ana")
    assert len(ana.mock("pums", 20_000, seed=1)) == 20_000
    with pytest.raises(InvalidArgument, match="20000"):
        ana.mock("pums", 20_001)
    with pytest.raises(InvalidArgument):
        ana.mock("pums", -1)
    with pytest.raises(InvalidArgument):
        ana.mock("pums", 10, matching=2.0)
    contradictory = Query("pums").where("age", ">", 50).where("age", "<", 40).count()
    with pytest.raises(InvalidJobSpec, match="'age'"):
        ana.mock("pums", 10, job=contradictory)
    with pytest.raises(InvalidJobSpec, match="identifier"):
        ana.mock("pums", 10, job=Query("pums").where("pid", "=", 5).count())
    with pytest.raises(InvalidJobSpec, match="another dataset"):
        ana.mock("pums", 10, job=Query("other").count())
    assert len(ana.mock("pums", 0)) == 0


def test_the_rpc_is_server_streaming(mock_world: World) -> None:
    from sandbox.api.v1 import catalog_pb2

    method = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].methods_by_name["MockRows"]
    assert method.server_streaming and not method.client_streaming
    # Raw call: chunks stay under the server's message limit.
    with grpc.insecure_channel(mock_world.target) as channel:
        call = channel.unary_stream(
            "/sandbox.api.v1.CatalogService/MockRows",
            request_serializer=catalog_pb2.MockRowsRequest.SerializeToString,
            response_deserializer=catalog_pb2.MockRowsChunk.FromString,
        )
        request = catalog_pb2.MockRowsRequest(dataset="pums", n=20_000, seed=5)
        metadata = (("authorization", f"Bearer {mock_world.tokens['ana']}"),)
        chunks = list(call(request, metadata=metadata, timeout=30))
    assert len(chunks) > 1
    assert all(c.seed == 5 and c.rows == 20_000 for c in chunks)
    assert all(c.ByteSize() < 64 * 1024 for c in chunks)
