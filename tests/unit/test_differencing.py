"""The differencing guard's regions, containment and offending-cell rule (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, JobSpec
from sandbox.disclosure import (
    ReleasedCell,
    ReleasedCells,
    job_regions,
    offending,
    released_cell,
)
from sandbox.disclosure._differencing import (
    Missing,
    Range,
    ValueSet,
    contains,
    equal,
    region_from_json,
    region_json,
)
from sandbox.policy import Policy, load_policy
from tests.conftest import pums_policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "pums.yaml"
    path.write_text(pums_policy("pums", "pums.csv", age_bins=True))
    return load_policy(path)


def _spec(*filters: Filter, group_by: tuple[str, ...] = ()) -> JobSpec:
    return JobSpec(
        dataset="pums",
        project="p",
        purpose="research",
        filters=filters,
        group_by=group_by,
        aggregates=(Aggregate(AggFunc.COUNT),),
    )


def test_value_sets_nest_by_subset() -> None:
    small = {"educ": ValueSet(frozenset({1}))}
    big = {"educ": ValueSet(frozenset({1, 2}))}
    assert contains(big, small) and not contains(small, big)
    assert not equal(big, small) and equal(small, dict(small))


def test_an_unconstrained_region_contains_every_constrained_one() -> None:
    everyone: dict[str, ValueSet] = {}
    some = {"sex": ValueSet(frozenset({0}))}
    assert contains(everyone, some) and not contains(some, everyone)


def test_range_ends_and_inclusivity() -> None:
    ge60 = Range(lo=60)
    gt60 = Range(lo=60, lo_inclusive=False)
    b60_90 = Range(lo=60, hi=90)
    assert contains({"age": ge60}, {"age": gt60})
    assert not contains({"age": gt60}, {"age": ge60})
    assert contains({"age": ge60}, {"age": b60_90})
    assert not contains({"age": b60_90}, {"age": ge60})  # unbounded above is not inside


def test_exclusions_must_be_kept_by_the_inner_range() -> None:
    outer = {"age": Range(lo=60, excluded=frozenset({70}))}
    assert not contains(outer, {"age": Range(lo=60)})  # inner holds 70, outer does not
    assert contains(outer, {"age": Range(lo=60, excluded=frozenset({70, 80}))})
    assert contains(outer, {"age": Range(lo=71)})  # 70 lies outside the inner range anyway


def test_value_set_inside_a_range_and_not_the_other_way() -> None:
    assert contains({"age": Range(lo=60, hi=70)}, {"age": ValueSet(frozenset({60, 65}))})
    assert not contains({"age": Range(lo=60, hi=70)}, {"age": ValueSet(frozenset({59, 65}))})
    # Deciding a range inside a finite set is not attempted: conservative "no".
    assert not contains({"age": ValueSet(frozenset({60, 61}))}, {"age": Range(lo=60, hi=61)})


def test_missing_keys_and_incomparable_types() -> None:
    assert contains({"educ": Missing()}, {"educ": Missing()})
    assert not contains({"educ": ValueSet(frozenset({1}))}, {"educ": Missing()})
    assert not contains({"educ": Range(lo=1)}, {"educ": ValueSet(frozenset({"x"}))})


def test_regions_of_a_job_intersect_filters_with_each_rows_keys(policy: Policy) -> None:
    spec = _spec(
        Filter("age", FilterOp.GE, (40,)),
        Filter("educ", FilterOp.NE, (9,)),
        group_by=("age", "sex"),
    )
    regions = job_regions(spec, policy, [("[35, 50)", 0), ("[65, 101)", 1), (None, 0)])
    assert regions[0] == {
        "age": Range(lo=40, hi=50, hi_inclusive=False),
        "educ": Range(excluded=frozenset({9})),
        "sex": ValueSet(frozenset({0})),
    }
    assert regions[1]["age"] == Range(lo=65, hi=101, hi_inclusive=False)
    assert regions[2]["age"] == Missing()


def test_region_text_round_trips_and_is_canonical() -> None:
    region = {
        "sex": ValueSet(frozenset({1, 0})),
        "age": Range(lo=18, hi=64, excluded=frozenset({30, 20})),
        "educ": Missing(),
    }
    text = region_json(region)
    assert region_from_json(text) == region
    assert text == region_json(dict(reversed(list(region.items()))))
    assert released_cell(text, 12, "v1") == ReleasedCell(region, 12, "v1")


def _cell(region: dict[str, object], persons: int, version: str = "v1") -> ReleasedCell:
    return ReleasedCell(region, persons, version)  # type: ignore[arg-type]


def test_nested_cells_differing_by_fewer_than_k_persons_offend() -> None:
    big = {"age": Range(lo=60)}
    small = {"age": Range(lo=60), "educ": Range(excluded=frozenset({2}))}
    prior = [_cell(big, 209)]
    for persons, bad in ((207, True), (208, True), (209, False), (199, False), (190, False)):
        got = offending([(small, persons)], prior, data_version="v1", min_persons=10)
        assert (got == {0}) is bad, persons
    # The same in the other order: the smaller cell released first.
    got = offending([(big, 209)], [_cell(small, 207)], data_version="v1", min_persons=10)
    assert got == {0}


def test_overlapping_but_not_nested_cells_are_not_compared() -> None:
    a = {"age": Range(lo=60)}
    b = {"sex": ValueSet(frozenset({1}))}
    assert offending([(b, 205)], [_cell(a, 209)], data_version="v1", min_persons=10) == set()


def test_the_same_region_again_is_fine_unless_the_data_changed_by_under_k() -> None:
    a = {"sex": ValueSet(frozenset({1}))}
    prior = [_cell(a, 514, "v1")]
    assert offending([(a, 514)], prior, data_version="v1", min_persons=10) == set()
    assert offending([(a, 515)], prior, data_version="v2", min_persons=10) == {0}
    assert offending([(a, 514)], prior, data_version="v2", min_persons=10) == set()
    assert offending([(a, 530)], prior, data_version="v2", min_persons=10) == set()
    # Nested regions from different versions cannot be subtracted exactly: not compared.
    nested = {"sex": ValueSet(frozenset({1})), "age": Range(lo=18)}
    assert offending([(nested, 513)], prior, data_version="v2", min_persons=10) == set()


# ---- the indexed register finds exactly what comparing every pair finds ---------------------
def _all_pairs(
    new: list[tuple[dict[str, object], int]], prior: list[ReleasedCell], version: str, k: int
) -> set[int]:
    """The rule with no index: every new cell against every earlier one."""
    bad = set()
    for i, (region, persons) in enumerate(new):
        for old in prior:
            if old.data_version == version:
                nested = contains(old.region, region) or contains(region, old.region)
                if not nested or equal(old.region, region):
                    continue
            elif not equal(old.region, region):
                continue
            if 0 < abs(old.persons - persons) < k:
                bad.add(i)
                break
    return bad


_values = st.one_of(st.integers(-3, 12), st.sampled_from(["a", "b", "7", "15", "1", "3"]))
_constraints = st.one_of(
    st.frozensets(_values, min_size=0, max_size=3).map(ValueSet),
    st.builds(
        Range,
        lo=st.one_of(st.none(), st.integers(-3, 12), st.sampled_from(["1", "15", "3"])),
        lo_inclusive=st.booleans(),
        hi=st.one_of(st.none(), st.integers(-3, 12), st.sampled_from(["1", "15", "3"])),
        hi_inclusive=st.booleans(),
        excluded=st.frozensets(st.integers(-3, 12), max_size=2),
    ),
    st.just(Missing()),
)
_regions = st.dictionaries(st.sampled_from(["age", "sex", "race"]), _constraints, max_size=3)


@example(  # an empty range is nested in another by the bounds test, yet overlaps nothing
    new=[({"age": Range(lo=1, lo_inclusive=False, hi=0, hi_inclusive=False)}, 0)],
    prior=[({"age": Range(lo=None, lo_inclusive=False, hi=0, hi_inclusive=False)}, 1, "v1")],
)
@example(  # text bounds compare as text: "15" lies between "1" and "3"
    new=[({"race": Range(lo="15", hi="15")}, 0)],
    prior=[({"race": Range(lo="1", hi="3")}, 5, "v1")],
)
@settings(max_examples=1000, deadline=None)
@given(
    new=st.lists(st.tuples(_regions, st.integers(0, 40)), max_size=6),
    prior=st.lists(
        st.tuples(_regions, st.integers(0, 40), st.sampled_from(["v1", "v2"])), max_size=12
    ),
)
def test_the_indexed_guard_equals_the_all_pairs_rule(
    new: list[tuple[dict[str, object], int]], prior: list[tuple[dict[str, object], int, str]]
) -> None:
    cells = [ReleasedCell(r, n, v) for r, n, v in prior]
    got = offending(new, cells, data_version="v1", min_persons=10)  # type: ignore[arg-type]
    assert got == _all_pairs(new, cells, "v1", 10)


@example(  # the group's arrays, made when it held the first cell only, must be rebuilt
    new=[({"age": Range(lo=50, hi=60)}, 100)],
    prior=[({"age": Range(lo=0, hi=10)}, 100, "v1"), ({"age": Range(lo=40, hi=70)}, 105, "v1")],
)
@settings(max_examples=300, deadline=None)
@given(
    new=st.lists(st.tuples(_regions, st.integers(0, 40)), min_size=1, max_size=4),
    prior=st.lists(
        st.tuples(_regions, st.integers(0, 40), st.sampled_from(["v1", "v2"])), max_size=10
    ),
)
def test_a_register_index_grown_between_queries_equals_the_all_pairs_rule(
    new: list[tuple[dict[str, object], int]], prior: list[tuple[dict[str, object], int, str]]
) -> None:
    """The register keeps one index per dataset and adds to it: each query after an add must
    see the cell added (a group's arrays are rebuilt once it has grown)."""
    index = ReleasedCells()
    cells: list[ReleasedCell] = []
    for region, persons, version in prior:
        cell = ReleasedCell(region, persons, version)  # type: ignore[arg-type]
        index.add(cell)
        cells.append(cell)
        got = offending(new, index, data_version="v1", min_persons=10)  # type: ignore[arg-type]
        assert got == _all_pairs(new, cells, "v1", 10)
    assert len(index) == len(cells) and {id(c) for c in index} == {id(c) for c in cells}
