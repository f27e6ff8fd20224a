"""The immutable fluent Query builder."""

from __future__ import annotations

import dataclasses
import enum
import math

import pytest

from sandbox._errors import InvalidJobSpec
from sandbox._model import AggFunc, Aggregate, Filter, FilterOp, JobSpec
from sandbox.client._query import Query, make_filter, parse_op

SECRET = "zz_secret_987"
P = {"project": "p-001", "purpose": "planning"}


# --------------------------------------------------------------------------- immutability


def test_methods_return_new_queries_and_leave_the_original_unchanged() -> None:
    q0 = Query("residents")
    q1 = q0.where("age", ">=", 60)
    q2 = q1.group_by("district")
    q3 = q2.count()
    q4 = q3.mean("monthly_income")
    assert q0 == Query("residents")
    assert q1.filters == (Filter("age", FilterOp.GE, (60,)),)
    assert q1.group_by_columns == () and q1.aggregates == ()
    assert q2.group_by_columns == ("district",) and q2.aggregates == ()
    assert q3.aggregates == (Aggregate(AggFunc.COUNT),)
    assert len(q4.aggregates) == 2
    assert len({id(q) for q in (q0, q1, q2, q3, q4)}) == 5


def test_query_is_frozen() -> None:
    q = Query("residents")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.dataset = "other"  # type: ignore[misc]


def test_branching_from_a_shared_base_does_not_interfere() -> None:
    base = Query("residents").where("age", ">=", 18)
    a = base.where("sex", "=", "F").count()
    b = base.where("sex", "=", "M").count()
    assert base.filters == (Filter("age", FilterOp.GE, (18,)),)
    assert a.filters[1].values == ("F",)
    assert b.filters[1].values == ("M",)


# --------------------------------------------------------------------------- methods


def test_full_example_to_spec() -> None:
    spec = (
        Query("residents")
        .where("age", ">=", 60)
        .group_by("district")
        .count()
        .mean("monthly_income")
        .to_spec(**P)
    )
    assert spec == JobSpec(
        dataset="residents",
        project="p-001",
        purpose="planning",
        group_by=("district",),
        aggregates=(Aggregate(AggFunc.COUNT), Aggregate(AggFunc.MEAN, "monthly_income")),
        filters=(Filter("age", FilterOp.GE, (60,)),),
    )


@pytest.mark.parametrize(
    ("spelling", "op"),
    [
        ("=", FilterOp.EQ),
        ("==", FilterOp.EQ),
        ("!=", FilterOp.NE),
        ("<>", FilterOp.NE),
        ("<", FilterOp.LT),
        ("<=", FilterOp.LE),
        (">", FilterOp.GT),
        (">=", FilterOp.GE),
        ("in", FilterOp.IN),
        ("IN", FilterOp.IN),
        ("between", FilterOp.BETWEEN),
        ("BeTwEeN", FilterOp.BETWEEN),
        (" >= ", FilterOp.GE),
        (FilterOp.LE, FilterOp.LE),
    ],
)
def test_parse_op(spelling: str | FilterOp, op: FilterOp) -> None:
    assert parse_op(spelling) is op


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_where_scalar_operators(op: str) -> None:
    q = Query("d").where("age", op, 42)
    assert q.filters == (Filter("age", parse_op(op), (42,)),)


def test_where_value_types() -> None:
    q = (
        Query("d")
        .where("a", "=", 1)
        .where("b", "=", 1.5)
        .where("c", "=", "x")
        .where("d", "=", True)
        .where("e", "<", -3)
    )
    assert [f.values for f in q.filters] == [(1,), (1.5,), ("x",), (True,), (-3,)]


def test_where_in_and_between() -> None:
    q = Query("d").where("district", "in", ["north", "south"]).where("age", "between", (18, 65))
    assert q.filters == (
        Filter("district", FilterOp.IN, ("north", "south")),
        Filter("age", FilterOp.BETWEEN, (18, 65)),
    )
    # tuples, lists and mixed int/float numbers are fine
    q2 = Query("d").where("x", "in", (1, 2.5)).where("y", "between", [0.5, 2])
    assert q2.filters[0].values == (1, 2.5)
    assert q2.filters[1].values == (0.5, 2)
    # boolean IN and string BETWEEN
    q3 = Query("d").where("flag", "in", [True]).where("s", "between", ("a", "m"))
    assert q3.filters[0].values == (True,)
    assert q3.filters[1].values == ("a", "m")


def test_values_are_normalised_to_builtin_types() -> None:
    class Code(enum.IntEnum):
        A = 3

    class MyStr(str):
        pass

    q = Query("d").where("a", "=", Code.A).where("b", "in", [MyStr("x")])
    assert type(q.filters[0].values[0]) is int
    assert type(q.filters[1].values[0]) is str


def test_group_by_appends() -> None:
    q = Query("d").group_by("a").group_by("b", "c")
    assert q.group_by_columns == ("a", "b", "c")
    assert Query("d").group_by() == Query("d")


def test_aggregate_methods_and_aliases() -> None:
    q = (
        Query("d")
        .count()
        .count_persons(alias="persons")
        .sum("income", alias="total")
        .mean("income")
    )
    assert q.aggregates == (
        Aggregate(AggFunc.COUNT),
        Aggregate(AggFunc.COUNT_DISTINCT, "", "persons"),
        Aggregate(AggFunc.SUM, "income", "total"),
        Aggregate(AggFunc.MEAN, "income"),
    )
    assert [a.name for a in q.aggregates] == ["count", "persons", "total", "mean_income"]


def test_to_spec_digest_is_deterministic() -> None:
    def build() -> JobSpec:
        return Query("d").where("a", "in", [1, 2]).group_by("g").count().to_spec(**P)

    assert build() == build()
    assert build().digest() == build().digest()


# --------------------------------------------------------------------------- errors


def _err(fn: object, *args: object, **kwargs: object) -> str:
    assert callable(fn)
    with pytest.raises(InvalidJobSpec) as ei:
        fn(*args, **kwargs)
    text = f"{ei.value} {ei.value.message} {ei.value!r}"
    assert SECRET not in text
    return str(ei.value)


@pytest.mark.parametrize("op", ["~", "like", "is", "", "=>", "not in", SECRET, 5, None])
def test_bad_operator_is_rejected_without_echo(op: object) -> None:
    msg = _err(Query("d").where, "a", op, 1)
    assert "operator" in msg


def test_swapped_arguments_do_not_echo_the_value() -> None:
    msg = _err(Query("d").where, "a", SECRET, "=")
    assert "operator" in msg


@pytest.mark.parametrize(
    ("op", "value", "fragment"),
    [
        ("in", SECRET, "IN takes"),  # a str is not a list of values
        ("in", 5, "IN takes"),
        ("in", [], "at least one"),
        ("in", {SECRET}, "IN takes"),  # sets are unordered: not accepted
        ("between", (1,), "exactly 2"),
        ("between", (1, 2, 3), "exactly 2"),
        ("between", 5, "BETWEEN takes"),
        ("between", "ab", "BETWEEN takes"),
        ("between", (9, 1), "lower bound"),
        ("=", [1, 2], "single value"),
        ("<", (SECRET,), "single value"),
        ("=", None, "values must be"),
        ("=", b"zz_secret_987", "values must be"),
        ("=", {"k": SECRET}, "values must be"),
        ("in", [1, None], "values must be"),
        ("=", math.nan, "finite"),
        ("=", math.inf, "finite"),
        ("between", (0, math.inf), "finite"),
    ],
)
def test_bad_values_are_rejected_without_echo(op: str, value: object, fragment: str) -> None:
    msg = _err(Query("d").where, "a", op, value)
    assert fragment in msg
    assert "'a'" in msg  # names the column


@pytest.mark.parametrize(
    ("op", "value", "fragment"),
    [
        ("<", True, "boolean"),
        (">=", False, "boolean"),
        ("in", [True, 1], "one kind"),
        ("in", [1, SECRET], "one kind"),
        ("between", (True, 5), "booleans"),
        ("between", (False, True), "booleans"),
        ("between", (1, SECRET), "both be numbers"),
    ],
)
def test_bool_int_and_mixed_kind_confusion_is_rejected(
    op: str, value: object, fragment: str
) -> None:
    msg = _err(Query("d").where, "a", op, value)
    assert fragment in msg


@pytest.mark.parametrize("column", ["", "   ", " a", 5, None])
def test_bad_column_names(column: object) -> None:
    _err(Query("d").where, column, "=", 1)
    _err(Query("d").group_by, column)
    _err(Query("d").sum, column)
    _err(Query("d").mean, column)


def test_bad_dataset() -> None:
    _err(Query, "")
    _err(Query, 5)


def test_alias_must_be_a_string() -> None:
    _err(Query("d").count, 5)
    _err(Query("d").count, " x")


def test_to_spec_without_aggregates_is_rejected() -> None:
    msg = _err(Query("d").where("a", "=", 1).group_by("g").to_spec, **P)
    assert "aggregate" in msg


def test_duplicate_group_by_and_output_names_are_rejected() -> None:
    assert "GROUP BY" in _err(Query("d").group_by("a").group_by, "a")
    assert "alias" in _err(Query("d").count().count)
    assert "alias" in _err(Query("d").sum("x").sum, "x")
    assert "alias" in _err(Query("d").group_by("g").count, "g")
    # an alias resolves the clash
    q = Query("d").count().count_persons().count("n")
    assert [a.name for a in q.aggregates] == ["count", "count_distinct", "n"]


def test_make_filter_matches_where() -> None:
    f = make_filter("age", "between", [1, 2])
    assert Query("d").where("age", "between", [1, 2]).filters == (f,)
