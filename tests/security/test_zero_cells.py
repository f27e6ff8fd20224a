"""Item 3 of the disclosure layer: the policy says whether an empty cell is disclosive."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandbox import CellStatus, Query
from tests.conftest import PUMS_DIR, World, pums_policy
from tests.security._support import pums_frame


def _world(world_factory: Callable[..., World], zeros: str | None) -> World:
    # `married` declares a key 7 that no one has: its cells are empty (zero persons).
    policy = pums_policy("pums", "pums.csv").replace(
        "married: {role: dimension, values: [0, 1]}",
        "married: {role: dimension, values: [0, 1, 7]}",
    )
    if zeros is not None:
        policy = policy.replace(
            "rounding_base: 1}", f"rounding_base: 1, zeros_disclosive: {zeros}}}"
        )
    world = world_factory({"pums": policy}, {"pums.csv": PUMS_DIR / "PUMS_pid.csv"})
    world.register("pums")
    world.project("census-study", (("pums", "research"),))
    return world


@pytest.mark.parametrize("zeros", [None, "true", "false"])
def test_empty_cells_follow_the_policy(
    world_factory: Callable[..., World], zeros: str | None
) -> None:
    world = _world(world_factory, zeros)
    query = Query("pums").group_by("married").count().sum("income").mean("income")
    result = world.client("ana").run(query, project="census-study", purpose="research")
    rows = {row.keys[0]: row.cells for row in result.table.rows}
    assert set(rows) == {0, 1, 7}
    truth = pums_frame().groupby("married").size()
    for key in (0, 1):  # populated cells are released either way
        assert rows[key][0].value == truth[key]
    count, total, mean = rows[7]
    if zeros == "false":  # a structural zero is released as such
        assert (count.value, count.status) == (0, CellStatus.RELEASED)
        assert (total.value, total.status) == (0, CellStatus.RELEASED)
        assert mean.value is None and mean.rule == "disclosure.zeros_not_disclosive"
    else:  # default and explicit true: suppressed like any cell under k
        assert all(
            c.status == CellStatus.SUPPRESSED and c.value is None for c in (count, total, mean)
        )
    assert result.table.settings["zeros_disclosive"] == (0 if zeros == "false" else 1)
