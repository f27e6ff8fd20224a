"""Invariant 1 for mock rows: they are made from the policy, never from the data.

A dataset is registered with planted, distinctive values: a string outside a declared value
list, strings in an undeclared dimension, measures far outside (and oddly inside) the declared
bounds, an odd date, identifiers and a hidden column. None of them appears in any mock. Then
the data are replaced, and even deleted: the mocks do not change by a single value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sandbox import Query
from sandbox.mock import mock_rows
from tests.conftest import World
from tests.security._support import add_project, csv_world

POLICY = """\
dataset: planted
version: 1
title: Planted values
description: rows with distinctive values that must never leave the server
steward: census-office
source: planted.csv
person_key: person_id
population: planted-persons
columns:
  person_id: {role: identifier}
  city: {role: dimension, values: [North, South]}
  street: {role: dimension}
  born: {role: dimension}
  salary: {role: measure, bounds: [0, 1000], aggregates: [sum, mean]}
  visits: {role: measure, bounds: [0, 40], aggregates: [sum]}
  note: {role: hidden}
purposes:
  research: {description: General research, columns: [city, street, born, salary, visits]}
disclosure: {min_persons_per_cell: 5, rounding_base: 1}
"""

PLANTED_STRINGS = ("PLANTED-Zanzibar", "PLANTED-Elm Street 7", "PLANTED-SECRET-NOTE")
PLANTED_IDS = (987_654_321_012, 555_000_111)
PLANTED_SALARIES = (123_456.789, 777.777, -42.5)
PLANTED_VISITS = (9_999,)
PLANTED_DATE = dt.date(1903, 4, 5)


def planted_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "person_id": np.arange(1, rows + 1),
            "city": rng.choice(["North", "South"], rows),
            "street": [f"Street {i % 7}" for i in range(rows)],
            "born": pd.to_datetime("1960-01-01")
            + pd.to_timedelta(rng.integers(0, 20000, rows), "D"),
            "salary": rng.uniform(0, 1000, rows).round(2),
            "visits": rng.integers(0, 41, rows),
            "note": [f"note {i}" for i in range(rows)],
        }
    )
    frame["born"] = frame["born"].dt.date
    # The planted rows.
    frame.loc[0, ["person_id", "city", "salary"]] = [
        PLANTED_IDS[0],
        PLANTED_STRINGS[0],
        123_456.789,
    ]
    frame.loc[1, ["person_id", "street", "salary"]] = [PLANTED_IDS[1], PLANTED_STRINGS[1], 777.777]
    frame.loc[2, ["note", "salary", "visits", "born"]] = [
        PLANTED_STRINGS[2],
        -42.5,
        PLANTED_VISITS[0],
        PLANTED_DATE,
    ]
    return frame


@pytest.fixture
def planted(world_factory: Callable[..., World], tmp_path: Path) -> World:
    world = csv_world(world_factory, tmp_path, {"planted": (planted_frame(), POLICY)})
    add_project(world, "study", (("planted", "research"),))
    return world


def assert_nothing_planted(df: pd.DataFrame, typed: frozenset[str] = frozenset()) -> None:
    """``typed``: the literals the researcher's own filters used (those may appear)."""
    assert "note" not in df.columns  # hidden
    text = df.astype(str).to_numpy().ravel().tolist()
    for planted in PLANTED_STRINGS:
        assert not any(planted in cell for cell in text), planted
    assert not any("PLANTED" in c for c in text)
    assert not df["person_id"].isin(PLANTED_IDS).any()
    assert not df["salary"].isin(PLANTED_SALARIES).any()
    assert df["salary"].between(0, 1000).all()
    assert not df["visits"].isin(PLANTED_VISITS).any()
    assert df["visits"].between(0, 40).all()
    assert set(df["city"]) <= {"North", "South"}
    assert PLANTED_DATE not in set(df["born"])
    # Undeclared strings are synthetic labels (or the researcher's literals), not the data's.
    assert all(s.startswith("street_") for s in set(df["street"]) - typed)


def mocks(world: World) -> list[tuple[pd.DataFrame, frozenset[str]]]:
    ana = world.client("ana")
    by_salary = Query("planted").where("salary", ">", 500).where("city", "=", "North").count()
    by_street = Query("planted").where("street", "!=", "Street 1").count()
    return [
        (ana.mock("planted", 20_000, seed=11), frozenset()),
        (ana.mock("planted", 5_000, seed=12, job=by_salary), frozenset()),
        (ana.mock("planted", 5_000, seed=13, job=by_salary, matching=0.5), frozenset()),
        (ana.mock("planted", 5_000, seed=14, job=by_street, matching=0.1), frozenset({"Street 1"})),
    ]


def test_mock_rows_never_contain_planted_values(planted: World) -> None:
    for df, typed in mocks(planted):
        assert_nothing_planted(df, typed)


def test_filter_literals_are_the_only_values_taken_from_a_request(planted: World) -> None:
    """A researcher's own literal may appear (it is theirs); it is not looked up in the data."""
    ana = planted.client("ana")
    df = ana.mock("planted", 100, seed=1, job=Query("planted").where("street", "=", "Elm").count())
    assert set(df["street"]) == {"Elm"}
    # Asking for a planted value by name returns it only as the literal typed, with nothing
    # else from that row: the other columns are exactly those of any other literal.
    probe = Query("planted").where("city", "=", PLANTED_STRINGS[0]).count()
    other = Query("planted").where("city", "=", "Atlantis").count()
    a = ana.mock("planted", 200, seed=2, job=probe)
    b = ana.mock("planted", 200, seed=2, job=other)
    pd.testing.assert_frame_equal(a.drop(columns="city"), b.drop(columns="city"))


def test_mock_rows_do_not_depend_on_the_data(planted: World) -> None:
    before = mocks(planted)
    source = planted.root / "data" / "planted.csv"
    # Entirely different data, same schema; re-registered so the server knows the new file.
    planted_frame(rows=900, seed=99).assign(street="Other", city="South").to_csv(
        source, index=False
    )
    planted.register("planted")
    for (old, _), (new, _) in zip(before, mocks(planted), strict=True):
        pd.testing.assert_frame_equal(old, new)
    # And with no data file at all: mocks never open it.
    source.unlink()
    for (old, _), (new, _) in zip(before, mocks(planted), strict=True):
        pd.testing.assert_frame_equal(old, new)


def test_server_mocks_are_the_public_description_run_through_the_generator(
    planted: World,
) -> None:
    ana = planted.client("ana")
    info = ana.describe("planted")
    assert "note" not in [c.name for c in info.columns]
    served = ana.mock("planted", 3_000, seed=21)
    pd.testing.assert_frame_equal(served, mock_rows(info, 3_000, seed=21).to_pandas())
