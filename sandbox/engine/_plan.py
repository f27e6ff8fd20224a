"""JobSpec → parameterised SQL. Identifiers come from the catalogue (quoted); values are bound.

No string from a request is ever placed in the SQL text: column names are checked against the
catalogue's schema and quoted, every value is a ``?`` parameter.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from dataclasses import dataclass
from typing import Any

from sandbox._errors import InvalidJobSpec
from sandbox._model import FLOAT_TYPES, INTEGER_TYPES, AggFunc, Filter, FilterOp, JobSpec, Scalar
from sandbox.engine._columnar import (
    COLUMN_TYPES,
    INTEGER,
    MAX_ROWS,
    ColumnarPlan,
    ColumnFilter,
    ColumnKey,
    ColumnMeasure,
    ColumnValue,
)
from sandbox.engine._quantile import QuantileGrid, histogram_sql, quantile_grids
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


RECORD_KEY_BITS = 48
"""Width of a record key, and of a cell key (their sum modulo ``2**RECORD_KEY_BITS``)."""


class RecordKeySlot(enum.Enum):
    """Placeholders in ``Plan.params`` that ``Engine.run`` fills with the HMAC pads of the
    server's record-key secret, so that no plan ever holds the secret."""

    OUTER = "outer"
    INNER = "inner"


class SourceSlot(enum.Enum):
    """The placeholder in ``Plan.params`` for the source file's path, which ``Engine.run``
    fills in, or drops when it reads the engine's in-memory copy of the registered file."""

    FILE = "file"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class KeySpace:
    """The public set of keys of one group-by column, when the policy declares one."""

    column: str
    labels: tuple[Scalar, ...] | None
    binned: bool = False
    """The engine returns the bin's index; ``labels[index]`` is the key."""


@dataclass(frozen=True)
class Source:
    """The registered file a plan reads: ``reader`` is its text in ``Plan.sql`` (one bound
    ``SourceSlot.FILE`` parameter per occurrence); ``version`` its registered fingerprint."""

    path: str
    reader: str
    version: str
    rows: int
    cacheable: bool = True
    """Whether an in-memory copy serves this plan well: not when it groups a file of more than
    ``_TEXT_GROUPS_CACHE_ROWS`` rows by text, which DuckDB then groups faster from Parquet's
    dictionary encoding than from an uncompressed copy."""


_TEXT_GROUPS_CACHE_ROWS = 100_000
"""Measured (group by a text column, 2 threads): the copy is twice as fast at 10 k rows, even at
about 100 k, and 1.5 times slower at 1 M."""


@dataclass(frozen=True)
class Plan:
    sql: str
    params: tuple[object, ...]
    key_spaces: tuple[KeySpace, ...]
    value_names: tuple[str, ...]
    with_total: bool
    """A row with GROUPING id > 0 holds the persons of the whole query set."""
    has_filters: bool
    margins: bool = False
    """Rows carry a trailing GROUPING id: bit ``n-1-i`` set = key ``i`` is a margin (TOTAL)."""
    contribution_top: int = 0
    """How many of the largest per-person contributions a magnitude cell reports (0: none)."""
    contribution_measures: tuple[str, ...] = ()
    """Measures whose per-person contributions are reported, in result-column order."""
    contribution_of: tuple[int, ...] = ()
    """Per aggregate: its index in ``contribution_measures``, or -1 (empty: none reported)."""
    cell_keys: bool = False
    """Rows carry each cell's key (cell-key mode) before any GROUPING id."""
    source: Source | None = None
    bounded_rows: bool = False
    """DP contribution bounding: rows end with each cell's capped count of rows."""
    quantile_grids: tuple[QuantileGrid | None, ...] = ()
    """Per aggregate, the grid of a median or quantile, whose value column is then a
    histogram of interval indexes (empty: the job has none)."""
    columnar: ColumnarPlan | None = None
    """The same query for the columnar engine, when it can answer it (see ``_columnar``)."""


def _bin_index(col: str, sql_type: str, edges: tuple[float, ...], params: list[object]) -> str:
    """The index of the bin ``[edges[i], edges[i+1])`` holding ``col`` (null outside all bins).

    An integer key, found by integer division when an integer column has equal-width integer
    bins (exact), else by a binary search of nested CASEs on the bound edges (about log2(bins)
    comparisons a row). Both are several times cheaper than one string-valued arm per bin.
    """
    widths = {b - a for a, b in itertools.pairwise(edges)}
    whole = all(float(e).is_integer() for e in edges)
    if len(widths) == 1 and whole and sql_type.upper().startswith(INTEGER_TYPES):
        params += [int(edges[0]), int(edges[-1]), int(edges[0]), int(widths.pop())]
        return f"CASE WHEN {col} >= ? AND {col} < ? THEN ({col} - ?) // ? END"
    params += [edges[0], edges[-1]]

    def search(lo: int, hi: int) -> str:
        if hi - lo == 1:
            return str(lo)
        mid = (lo + hi) // 2
        params.append(edges[mid])
        below = search(lo, mid)
        return f"CASE WHEN {col} < ? THEN {below} ELSE {search(mid, hi)} END"

    return f"CASE WHEN {col} >= ? AND {col} < ? THEN {search(0, len(edges) - 1)} END"


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

    Skipped when the registered file's values already lie within the bounds (a no-op then). A
    missing value stays missing (``greatest``/``least`` would skip it and return a bound).
    """
    bounds = _clamp_bounds(column, policy, record)
    col = quote_ident(column)
    if bounds is None:
        return col
    lo, hi = bounds
    params += [lo, lo, hi, hi]
    return f"(CASE WHEN {col} < ? THEN ? WHEN {col} > ? THEN ? ELSE {col} END)"


def _clamp_bounds(column: str, policy: Policy, record: DatasetRecord) -> tuple[Any, Any] | None:
    """The bounds a measure is clamped to, or None when it is not (no bounds, or the registered
    file's values already lie within them)."""
    col_policy = policy.column(column)
    if col_policy is None or col_policy.bounds is None:
        return None
    seen = record.measure_ranges.get(column)
    lo, hi = col_policy.bounds
    if seen is not None and lo <= seen[0] and seen[1] <= hi:
        return None
    return lo, hi


def _top_sql(size: str, top: int, params: list[object], i: int) -> str:
    """The ``top`` largest contributions of a cell as column ``t{i}``: a plain maximum for one
    (much cheaper than DuckDB's top-n list aggregate), else a list of the largest."""
    if top == 1:
        return f"max({size}) AS t{i}"
    params.append(top)
    return f"max({size}, ?) AS t{i}"


def _magnitude(expr: str, column: str, policy: Policy) -> str:
    """The absolute value of a (clamped) measure expression, for the dominance rules.

    Values lie within the declared bounds (clamped, or seen within them at registration), so
    with a lower bound of at least 0 the expression is its own absolute value.
    """
    return expr if _nonnegative(column, policy) else f"abs({expr})"


def _nonnegative(column: str, policy: Policy) -> bool:
    """Whether the measure's declared lower bound is at least 0."""
    col_policy = policy.column(column)
    return col_policy is not None and col_policy.bounds is not None and col_policy.bounds[0] >= 0


_MAGNITUDE = (AggFunc.SUM, AggFunc.MEAN)
_SPREAD = (AggFunc.VARIANCE, AggFunc.STDDEV)
_SQL_AGGREGATES = {
    AggFunc.SUM: "sum",
    AggFunc.MEAN: "avg",
    AggFunc.VARIANCE: "var_samp",
    AggFunc.STDDEV: "stddev_samp",
}


def contribution_top(spec: JobSpec, policy: Policy) -> int:
    """How many of the largest contributors the policy's dominance rules need (0: none apply).

    The (n, k) rule needs ``n``, the p% rule the two largest. Only sums and means are checked,
    and not in differential privacy mode, where the noise already hides any one person, nor in
    cell-key mode, which releases counts only.
    """
    rules = policy.disclosure
    if (
        rules.noise.enabled
        or rules.noise.cell_key
        or not any(a.function in _MAGNITUDE for a in spec.aggregates)
    ):
        return 0
    top = rules.dominance.n if rules.dominance is not None else 0
    if rules.p_percent is not None:
        top = max(top, 2)
    return top


@dataclass(frozen=True)
class _Parts:
    """The pieces of a query that do not depend on how the cells are aggregated."""

    keys: list[str]
    key_params: list[object]
    key_names: list[str]
    reader: str
    source: object
    where: str
    cond_params: list[object]


def plan(spec: JobSpec, record: DatasetRecord, policy: Policy, *, screen: bool = True) -> Plan:
    """Build the query for an already-authorised spec.

    With ``screen`` (the default), a cell's contributions report only the largest one when the
    dominance rules need more: enough to clear most cells (see ``disclosure.screen_passes``) at
    the cost of a plain maximum. Disclosure asks for the ``screen=False`` plan when some cell
    needs the exact largest contributions.
    """
    types = record.column_types
    for name in (
        *spec.group_by,
        *(f.column for f in spec.filters),
        *(a.column for a in spec.aggregates if a.column),
    ):
        if name not in types:
            raise InvalidJobSpec(f"column '{name}' is not in the dataset")
    grids = quantile_grids(spec, policy, types, record.persons_unique)
    keys: list[str] = []
    key_params: list[object] = []
    spaces: list[KeySpace] = []
    for i, name in enumerate(spec.group_by):
        col_policy = policy.column(name)
        col = quote_ident(name)
        if col_policy is not None and col_policy.bins:
            index = _bin_index(col, types[name], col_policy.bins, key_params)
            keys.append(f"{index} AS k{i}")
            spaces.append(KeySpace(name, bin_labels(col_policy.bins), binned=True))
        else:
            keys.append(f"{col} AS k{i}")
            values = col_policy.values if col_policy is not None and col_policy.values else None
            spaces.append(KeySpace(name, tuple(values) if values else None))
    conds: list[str] = []
    cond_params: list[object] = []
    bound: list[ColumnFilter] = []
    for f in spec.filters:
        text, vals = _condition(f, types[f.column])
        conds.append(text)
        cond_params += vals
        bound.append(ColumnFilter(f.column, f.op, tuple(vals)))
    reader = "read_parquet(?)" if record.file_format == "parquet" else "read_csv(?, header = true)"
    parts = _Parts(
        keys=keys,
        key_params=key_params,
        key_names=[f"k{i}" for i in range(len(keys))],
        reader=reader,
        source=SourceSlot.FILE,
        where=" WHERE " + " AND ".join(conds) if conds else "",
        cond_params=cond_params,
    )
    top = contribution_top(spec, policy)
    if screen:
        top = min(top, 1)
    measures = tuple(dict.fromkeys(a.column for a in spec.aggregates if a.function in _MAGNITUDE))
    if not top:
        measures = ()
    # The query-set size is the sum of the cells when each person has one row (so lies in one
    # cell); otherwise a grand-total grouping set counts distinct persons over the whole set.
    with_total = bool(spec.filters) and bool(keys) and not record.persons_unique
    margins = spec.margins and bool(keys)
    if margins and not record.persons_unique:
        # Distinct persons do not add up over cells when a person has several rows.
        raise InvalidJobSpec("margins need a dataset with one row per person")
    bounds = policy.disclosure.noise.contribution_bounds
    bounded = policy.disclosure.noise.enabled and not record.persons_unique and not margins
    if bounded and bounds is not None:
        from sandbox.engine._bounding import bounded_query  # it builds on this module

        sql, params = bounded_query(spec, record, policy, parts, bounds)
        with_total = False  # DP mode reads no query-set size
    elif measures and not record.persons_unique:
        sql, params = _per_person_query(spec, record, policy, parts, measures, top, with_total)
    else:
        sql, params = _row_query(
            spec, record, policy, parts, measures, top, with_total, margins, grids
        )
    return Plan(
        sql=sql,
        params=tuple(params),
        key_spaces=tuple(spaces),
        value_names=tuple(agg.name for agg in spec.aggregates),
        with_total=with_total,
        margins=margins,
        has_filters=bool(spec.filters),
        contribution_top=top if measures else 0,
        contribution_measures=measures,
        cell_keys=policy.disclosure.noise.cell_key,
        source=Source(
            record.source,
            reader,
            record.file_fingerprint,
            record.row_count,
            cacheable=record.row_count <= _TEXT_GROUPS_CACHE_ROWS
            or not any(
                types[c].upper().startswith(("VARCHAR", "TEXT", "STRING"))
                for c, space in zip(spec.group_by, spaces, strict=True)
                if not space.binned
            ),
        ),
        bounded_rows=bounded and bounds is not None,
        quantile_grids=grids,
        columnar=(
            None
            if margins or grids or policy.disclosure.noise.cell_key or bounded or top > 1
            else _columnar_plan(spec, record, policy, tuple(bound), measures)
        ),
        contribution_of=(
            tuple(
                measures.index(a.column) if a.function in _MAGNITUDE else -1
                for a in spec.aggregates
            )
            if measures
            else ()
        ),
    )


def _row_query(
    spec: JobSpec,
    record: DatasetRecord,
    policy: Policy,
    parts: _Parts,
    measures: tuple[str, ...],
    top: int,
    with_total: bool,
    margins: bool = False,
    grids: tuple[QuantileGrid | None, ...] = (),
) -> tuple[str, list[object]]:
    """One aggregation over the rows; a row is a person when the dataset has one per person.

    With ``margins``, a CUBE over the keys adds every margin and the grand total.
    """
    assert not measures or record.persons_unique, "contributions need one row per person here"
    select_params = list(parts.key_params)
    pk = quote_ident(policy.person_key)
    persons = "count(*)" if record.persons_unique else f"count(DISTINCT {pk})"
    # Differential privacy adds integer noise, so sums (and the sums behind means) are taken
    # over values clamped to the policy bounds and rounded to integers, one row per person.
    noised = policy.disclosure.noise.enabled
    aggs: list[str] = [f"{persons} AS persons"]
    for j, agg in enumerate(spec.aggregates):
        if agg.function == AggFunc.COUNT:
            expr = "count(*)"
        elif agg.function == AggFunc.COUNT_DISTINCT:
            expr = persons
        elif grids and (grid := grids[j]) is not None:  # a median or quantile
            clamped = _clamped(agg.column, policy, record, select_params)
            expr = histogram_sql(clamped, grid, select_params)
        elif noised:
            clamped = _clamped(agg.column, policy, record, select_params)
            expr = f"CAST(sum(CAST(round({clamped}) AS BIGINT)) AS BIGINT)"
        elif (
            agg.function == AggFunc.MEAN
            and agg.column in measures
            and _nonnegative(agg.column, policy)
        ):
            # The dominance rules sum this same expression below: DuckDB computes that sum
            # once for both, where avg() would be a second aggregate over every row. (Clamping
            # keeps a missing value missing, so the count is of the column's values.)
            total = _clamped(agg.column, policy, record, select_params)
            expr = f"sum({total}) / count({quote_ident(agg.column)})"
        else:
            func = _SQL_AGGREGATES[agg.function]
            expr = f"{func}({_clamped(agg.column, policy, record, select_params)})"
        aggs.append(f"{expr} AS v{j}")
    # One row per person: each row's (clamped) value is a person's whole contribution.
    for i, column in enumerate(measures):
        size = _magnitude(_clamped(column, policy, record, select_params), column, policy)
        aggs.append(f"sum({size}) AS a{i}")
        size = _magnitude(_clamped(column, policy, record, select_params), column, policy)
        aggs.append(_top_sql(size, top, select_params, i))
    if policy.disclosure.noise.cell_key:
        aggs.append(f"{_cell_key_sql(pk, record.persons_unique)} AS ck")
        select_params += [RecordKeySlot.OUTER, RecordKeySlot.INNER]
    select = ", ".join([*parts.keys, *aggs])
    if with_total or margins:
        select += f", grouping({', '.join(parts.key_names)}) AS g"
    sql = f"SELECT {select} FROM {parts.reader}{parts.where}"  # noqa: S608 - quoted identifiers
    if margins:
        sql += f" GROUP BY CUBE ({', '.join(parts.key_names)})"
    elif with_total:
        sql += f" GROUP BY GROUPING SETS (({', '.join(parts.key_names)}), ())"
    elif parts.keys:
        sql += f" GROUP BY {', '.join(parts.key_names)}"
    return sql, [*select_params, parts.source, *parts.cond_params]


def _cell_key_sql(pk: str, persons_unique: bool) -> str:
    """A cell's key: its distinct persons' record keys summed modulo ``2**RECORD_KEY_BITS``.

    A record key is the first bits of HMAC-SHA256(secret, person key as text); the two pads
    (``RecordKeySlot.OUTER`` then ``INNER``) are bound parameters, never SQL text.
    """
    message = f"encode(CAST({pk} AS VARCHAR))"
    mac = f"sha256(CAST(? AS BLOB) || from_hex(sha256(CAST(? AS BLOB) || {message})))"
    record = f"CAST(('0x' || substr({mac}, 1, {RECORD_KEY_BITS // 4})) AS BIGINT)"
    distinct = "" if persons_unique else "DISTINCT "
    return f"CAST(sum({distinct}{record}) % {1 << RECORD_KEY_BITS} AS BIGINT)"


def _per_person_query(
    spec: JobSpec,
    record: DatasetRecord,
    policy: Policy,
    parts: _Parts,
    measures: tuple[str, ...],
    top: int,
    with_total: bool,
) -> tuple[str, list[object]]:
    """Two aggregations for a dataset with several rows per person: per (cell, person), then
    per cell, so that each person's contribution to a sum is their rows' total.

    Every released number is the same as ``_row_query``'s: sums of the per-person sums, means
    as their total over the count of values, counts as the sum of per-person row counts, and
    variances from the per-person sums of values and of squares.
    """
    inner_params = list(parts.key_params)
    pk = quote_ident(policy.person_key)
    inner = [*parts.keys, f"{pk} AS _p", "count(*) AS _c"]
    averaged = {a.column for a in spec.aggregates if a.function == AggFunc.MEAN}
    for i, column in enumerate(measures):
        clamped = _clamped(column, policy, record, inner_params)
        inner.append(f"sum({clamped}) AS _s{i}")
        if column in averaged:
            inner.append(f"count({_clamped(column, policy, record, inner_params)}) AS _n{i}")
    for j, agg in enumerate(spec.aggregates):
        if agg.function in _SPREAD:
            x = _clamped(agg.column, policy, record, inner_params)
            inner.append(f"sum({x}) AS _vs{j}")
            inner.append(
                f"sum(({x}) * ({_clamped(agg.column, policy, record, inner_params)})) AS _vq{j}"
            )
            inner.append(f"count({_clamped(agg.column, policy, record, inner_params)}) AS _vn{j}")
    per_person = (
        f"SELECT {', '.join(inner)} FROM {parts.reader}{parts.where} "  # noqa: S608
        f"GROUP BY {', '.join([*parts.key_names, pk])}"
    )
    inner_params += [parts.source, *parts.cond_params]
    outer: list[str] = ["count(_p) AS persons"]
    outer_params: list[object] = []
    for j, agg in enumerate(spec.aggregates):
        if agg.function == AggFunc.COUNT:
            expr = "coalesce(sum(_c), 0)"
        elif agg.function == AggFunc.COUNT_DISTINCT:
            expr = "count(_p)"
        elif agg.function == AggFunc.SUM:
            expr = f"sum(_s{measures.index(agg.column)})"
        elif agg.function in _SPREAD:
            expr = (
                f"(sum(_vq{j}) - sum(_vs{j}) * sum(_vs{j}) / sum(_vn{j}))"
                f" / nullif(sum(_vn{j}) - 1, 0)"
            )
            if agg.function == AggFunc.STDDEV:
                expr = f"sqrt(greatest({expr}, 0))"
        else:
            i = measures.index(agg.column)
            expr = f"sum(_s{i}) / nullif(sum(_n{i}), 0)"
        outer.append(f"{expr} AS v{j}")
    for i in range(len(measures)):
        size = _magnitude(f"_s{i}", measures[i], policy)
        outer += [f"sum({size}) AS a{i}", _top_sql(size, top, outer_params, i)]
    select = ", ".join([*parts.key_names, *outer])
    group = f" GROUP BY {', '.join(parts.key_names)}" if parts.keys else ""
    if not with_total:
        sql = f"SELECT {select} FROM ({per_person}){group}"  # noqa: S608
        return sql, [*outer_params, *inner_params]
    # The distinct persons of the whole query set, as a row of its own (g = 1). A UNION over
    # the materialised per-person rows costs far less than a DISTINCT count per grouping set.
    total = ", ".join(
        ["NULL"] * len(parts.keys) + ["count(DISTINCT _p)"] + ["NULL"] * (len(outer) - 1)
    )
    sql = (
        f"WITH per_person AS MATERIALIZED ({per_person}) "  # noqa: S608
        f"SELECT {select}, 0 AS g FROM per_person{group} "
        f"UNION ALL SELECT {total}, 1 FROM per_person"
    )
    return sql, [*inner_params, *outer_params]


def _columnar_plan(
    spec: JobSpec,
    record: DatasetRecord,
    policy: Policy,
    filters: tuple[ColumnFilter, ...],
    measures: tuple[str, ...],
) -> ColumnarPlan | None:
    """The plan's ``_row_query`` for the columnar engine, or None when it cannot answer it
    exactly: it needs one row per person, a small file, columns of the types it reads, and
    integer measures (summed without noise, clamped to integer bounds)."""
    types = {name: t.upper() for name, t in record.column_types.items()}
    if not record.persons_unique or record.row_count > MAX_ROWS:
        return None
    used = [*spec.group_by, *(f.column for f in filters)]
    if any(types[name] not in COLUMN_TYPES for name in used):
        return None
    if any(
        (type(v) is int and abs(v) >= 1 << 53) or type(v) not in (int, float, str, bool)
        for f in filters
        for v in f.values
    ):
        return None

    def measure(column: str, absolute: bool = False) -> ColumnMeasure | None:
        clamp = _clamp_bounds(column, policy, record)
        if types[column] not in INTEGER:
            return None
        if clamp is None:
            return ColumnMeasure(column, None, absolute)
        if not all(type(b) in (int, float) and float(b).is_integer() for b in clamp):
            return None  # sums of integers only are exact whatever their order
        floating = any(type(b) is float for b in clamp)
        return ColumnMeasure(column, (int(clamp[0]), int(clamp[1])), absolute, floating)

    values: list[ColumnValue] = []
    for agg in spec.aggregates:
        if agg.function in (AggFunc.COUNT, AggFunc.COUNT_DISTINCT):
            values.append(ColumnValue(agg.function))
        elif agg.function in _MAGNITUDE and not policy.disclosure.noise.enabled:
            if (taken := measure(agg.column)) is None:
                return None
            values.append(ColumnValue(agg.function, taken))
        else:
            return None
    contributions = [measure(c, not _nonnegative(c, policy)) for c in measures]
    if any(c is None for c in contributions):
        return None
    keys = []
    for name in spec.group_by:
        col_policy = policy.column(name)
        keys.append(ColumnKey(name, col_policy.bins if col_policy is not None else ()))
    return ColumnarPlan(
        filters, tuple(keys), tuple(values), tuple(c for c in contributions if c is not None)
    )
