"""JobSpec → parameterised SQL. Identifiers come from the catalogue (quoted); values are bound.

No string from a request is ever placed in the SQL text: column names are checked against the
catalogue's schema and quoted, every value is a ``?`` parameter.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

from sandbox._errors import InvalidJobSpec
from sandbox._model import FLOAT_TYPES, INTEGER_TYPES, AggFunc, Filter, FilterOp, JobSpec, Scalar
from sandbox.policy import Policy
from sandbox.state import DatasetRecord

_NUMERIC = INTEGER_TYPES + FLOAT_TYPES
_SQL_OPS = {
    FilterOp.EQ: "=",
    FilterOp.NE: "<>",
    FilterOp.LT: "<",
    FilterOp.LE: "<=",
    FilterOp.GT: ">",
    FilterOp.GE: ">=",
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class KeySpace:
    """The public set of keys of one group-by column, when the policy declares one."""

    column: str
    labels: tuple[Scalar, ...] | None


@dataclass(frozen=True)
class Plan:
    sql: str
    params: tuple[object, ...]
    key_spaces: tuple[KeySpace, ...]
    value_names: tuple[str, ...]
    with_total: bool
    """A row with GROUPING id > 0 holds the persons of the whole query set."""
    has_filters: bool


def bin_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    def fmt(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    return tuple(f"[{fmt(lo)}, {fmt(hi)})" for lo, hi in itertools.pairwise(edges))


def _kind(sql_type: str) -> str:
    t = sql_type.upper()
    if t.startswith(_NUMERIC):
        return "number"
    if t == "BOOLEAN":
        return "bool"
    if t == "DATE":
        return "date"
    if t.startswith(("VARCHAR", "TEXT", "STRING")):
        return "string"
    return "other"


def _bind(column: str, sql_type: str, value: Scalar) -> object:
    kind = _kind(sql_type)
    ok = {
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "string": isinstance(value, str),
        "date": isinstance(value, str),
    }.get(kind, False)
    if not ok:
        raise InvalidJobSpec(f"filter on column '{column}' needs a {kind} value")
    if kind == "date":
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise InvalidJobSpec(f"filter on column '{column}' needs an ISO date") from None
    return value


def _condition(f: Filter, sql_type: str) -> tuple[str, list[object]]:
    col = quote_ident(f.column)
    vals = [_bind(f.column, sql_type, v) for v in f.values]
    if f.op == FilterOp.IN:
        return f"{col} IN ({', '.join('?' for _ in vals)})", vals
    if f.op == FilterOp.BETWEEN:
        return f"{col} BETWEEN ? AND ?", vals
    return f"{col} {_SQL_OPS[f.op]} ?", vals


def _clamped(column: str, policy: Policy, record: DatasetRecord, params: list[object]) -> str:
    """The measure clamped to its declared bounds, so no one value can dominate a cell.

    Skipped when the registered file's values already lie within the bounds (a no-op then).
    """
    col_policy = policy.column(column)
    if col_policy is None or col_policy.bounds is None:
        return quote_ident(column)
    seen = record.measure_ranges.get(column)
    lo, hi = col_policy.bounds
    if seen is not None and lo <= seen[0] and seen[1] <= hi:
        return quote_ident(column)
    params += [col_policy.bounds[0], col_policy.bounds[1]]
    return f"least(greatest({quote_ident(column)}, ?), ?)"


def plan(spec: JobSpec, record: DatasetRecord, policy: Policy) -> Plan:
    """Build the query for an already-authorised spec."""
    types = record.column_types
    for name in (
        *spec.group_by,
        *(f.column for f in spec.filters),
        *(a.column for a in spec.aggregates if a.column),
    ):
        if name not in types:
            raise InvalidJobSpec(f"column '{name}' is not in the dataset")
    params: list[object] = [record.source]
    keys: list[str] = []
    key_params: list[object] = []
    spaces: list[KeySpace] = []
    for i, name in enumerate(spec.group_by):
        col_policy = policy.column(name)
        col = quote_ident(name)
        if col_policy is not None and col_policy.bins:
            labels = bin_labels(col_policy.bins)
            arms = []
            for lo, hi, label in zip(col_policy.bins, col_policy.bins[1:], labels, strict=False):
                arms.append(f"WHEN {col} >= ? AND {col} < ? THEN ?")
                key_params += [lo, hi, label]
            keys.append(f"CASE {' '.join(arms)} END AS k{i}")
            spaces.append(KeySpace(name, labels))
        else:
            keys.append(f"{col} AS k{i}")
            values = col_policy.values if col_policy is not None and col_policy.values else None
            spaces.append(KeySpace(name, tuple(values) if values else None))
    pk = quote_ident(policy.person_key)
    persons = "count(*)" if record.persons_unique else f"count(DISTINCT {pk})"
    # Differential privacy adds integer noise, so sums (and the sums behind means) are taken
    # over values clamped to the policy bounds and rounded to integers, one row per person.
    noised = policy.disclosure.noise.enabled
    aggs: list[str] = [f"{persons} AS persons"]
    names: list[str] = []
    for j, agg in enumerate(spec.aggregates):
        if agg.function == AggFunc.COUNT:
            expr = "count(*)"
        elif agg.function == AggFunc.COUNT_DISTINCT:
            expr = persons
        elif noised:
            clamped = _clamped(agg.column, policy, record, key_params)
            expr = f"CAST(sum(CAST(round({clamped}) AS BIGINT)) AS BIGINT)"
        else:
            func = "sum" if agg.function == AggFunc.SUM else "avg"
            expr = f"{func}({_clamped(agg.column, policy, record, key_params)})"
        aggs.append(f"{expr} AS v{j}")
        names.append(agg.name)
    conds: list[str] = []
    cond_params: list[object] = []
    for f in spec.filters:
        text, vals = _condition(f, types[f.column])
        conds.append(text)
        cond_params += vals
    reader = "read_parquet(?)" if record.file_format == "parquet" else "read_csv(?, header = true)"
    key_names = [f"k{i}" for i in range(len(keys))]
    # The query-set size is the sum of the cells when each person has one row (so lies in one
    # cell); otherwise a grand-total grouping set counts distinct persons over the whole set.
    with_total = bool(spec.filters) and bool(keys) and not record.persons_unique
    select = ", ".join([*keys, *aggs])
    if with_total:
        select += f", grouping({', '.join(key_names)}) AS g"
    sql = f"SELECT {select} FROM {reader}"  # noqa: S608 - identifiers quoted from catalogue
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    if with_total:
        sql += f" GROUP BY GROUPING SETS (({', '.join(key_names)}), ())"
    elif keys:
        sql += f" GROUP BY {', '.join(key_names)}"
    return Plan(
        sql=sql,
        params=tuple(key_params + params + cond_params),
        key_spaces=tuple(spaces),
        value_names=tuple(names),
        with_total=with_total,
        has_filters=bool(spec.filters),
    )
