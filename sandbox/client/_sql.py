"""A small SQL subset, parsed on the client with sqlglot, turned into a :class:`JobSpec`.

The SQL never reaches the server: it is parsed here into the structured job IR and only the
IR is submitted. See ``docs/sql.md`` for the supported subset. Everything outside it is
refused with :class:`~sandbox._errors.InvalidJobSpec`; messages name the construct (and at
most column names), never a literal value or the SQL text.

The parser walks sqlglot's AST with an allow-list: every clause, node type and node argument
not explicitly understood is rejected.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import replace
from fractions import Fraction

import sqlglot
import sqlglot.errors
from sqlglot import exp

from sandbox._errors import InvalidJobSpec
from sandbox._model import AggFunc, Aggregate, FilterOp, JobSpec, Scalar, quantile_problem
from sandbox.client._query import Query

__all__ = ["sql_to_query", "sql_to_spec"]

_DIALECT = "duckdb"

_SUPPORTED_AGGS = (
    "COUNT(*), COUNT(DISTINCT <person key>), COUNT_PERSONS(), SUM(col), AVG(col) / MEAN(col), "
    "VARIANCE(col) / VAR_SAMP(col), STDDEV(col) / STDDEV_SAMP(col), MEDIAN(col), "
    "QUANTILE_CONT(col, q) / QUANTILE_DISC(col, q) / QUANTILE(col, q), "
    "PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)"
)

# Select-level arguments (sqlglot >= 26 spells some with a trailing underscore).
_SELECT_ALLOWED = frozenset({"expressions", "from", "from_", "where", "group"})
_CLAUSE_NAMES: dict[str, str] = {
    "with": "WITH (common table expressions)",
    "with_": "WITH (common table expressions)",
    "kind": "SELECT AS STRUCT/VALUE",
    "hint": "query hints",
    "distinct": "SELECT DISTINCT",
    "into": "SELECT INTO",
    "operation_modifiers": "SELECT modifiers",
    "exclude": "SELECT * EXCLUDE",
    "match": "MATCH_RECOGNIZE",
    "laterals": "LATERAL",
    "joins": "JOIN (or several tables in FROM)",
    "connect": "CONNECT BY",
    "pivots": "PIVOT/UNPIVOT",
    "prewhere": "PREWHERE",
    "having": "HAVING",
    "qualify": "QUALIFY",
    "windows": "WINDOW",
    "distribute": "DISTRIBUTE BY",
    "sort": "SORT BY",
    "cluster": "CLUSTER BY",
    "order": "ORDER BY",
    "limit": "LIMIT",
    "offset": "OFFSET",
    "locks": "FOR UPDATE/SHARE",
    "sample": "TABLESAMPLE / USING SAMPLE",
    "settings": "SETTINGS",
    "format": "FORMAT",
    "options": "OPTIONS",
    "for": "FOR",
    "for_": "FOR",
}

_TABLE_ARG_NAMES: dict[str, str] = {
    "alias": "table aliases",
    "db": "schema- or catalog-qualified table names",
    "catalog": "schema- or catalog-qualified table names",
    "joins": "JOIN",
    "laterals": "LATERAL",
    "pivots": "PIVOT/UNPIVOT",
    "sample": "TABLESAMPLE / USING SAMPLE",
    "version": "time travel (AT/VERSION)",
    "when": "time travel (AT/VERSION)",
    "system_time": "time travel (FOR SYSTEM_TIME)",
    "hints": "table hints",
}

_GROUP_ARG_NAMES: dict[str, str] = {
    "all": "GROUP BY ALL",
    "grouping_sets": "GROUPING SETS",
    "cube": "CUBE",
    "rollup": "ROLLUP",
    "totals": "WITH TOTALS",
}

_DATASET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INT_RE = re.compile(r"[0-9]+")
_FLOAT_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_COMPARISONS: dict[type[exp.Expression], FilterOp] = {
    exp.EQ: FilterOp.EQ,
    exp.NEQ: FilterOp.NE,
    exp.LT: FilterOp.LT,
    exp.LTE: FilterOp.LE,
    exp.GT: FilterOp.GT,
    exp.GTE: FilterOp.GE,
}

_FLIPPED: dict[FilterOp, FilterOp] = {
    FilterOp.EQ: FilterOp.EQ,
    FilterOp.NE: FilterOp.NE,
    FilterOp.LT: FilterOp.GT,
    FilterOp.LE: FilterOp.GE,
    FilterOp.GT: FilterOp.LT,
    FilterOp.GE: FilterOp.LE,
}

_ARITHMETIC = (
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.IntDiv,
    exp.Mod,
    exp.Pow,
    exp.DPipe,
    exp.BitwiseAnd,
    exp.BitwiseOr,
    exp.BitwiseXor,
    exp.BitwiseNot,
    exp.BitwiseLeftShift,
    exp.BitwiseRightShift,
)


def sql_to_spec(sql: str, *, project: str, purpose: str, person_key: str = "") -> JobSpec:
    """Parse one SELECT of the supported subset into a :class:`JobSpec`.

    ``person_key``, when given (e.g. from ``DatasetInfo.person_key``), makes
    ``COUNT(DISTINCT col)`` accept only that column; otherwise any single bare column is
    accepted and read as "distinct persons" (the column name is not transmitted).
    """
    return sql_to_query(sql, person_key=person_key).to_spec(project=project, purpose=purpose)


def sql_to_query(sql: str, *, person_key: str = "") -> Query:
    """Parse one SELECT of the supported subset into a :class:`Query`."""
    if not isinstance(sql, str):
        raise InvalidJobSpec("SQL must be a string")
    return _translate(sql, person_key)


@functools.lru_cache(maxsize=256)
def _translate(sql: str, person_key: str) -> Query:
    # Queries are immutable, so a notebook re-running a cell parses its SQL once.
    return _Translator(person_key).select(_parse_one(sql))


# --------------------------------------------------------------------------- parsing


def _parse_one(sql: str) -> exp.Select:
    if not isinstance(sql, str):
        raise InvalidJobSpec("SQL must be a string")
    try:
        parsed = sqlglot.parse(sql, read=_DIALECT)
    except sqlglot.errors.ParseError as e:
        # Never include the SQL text or sqlglot's message (it quotes the offending tokens).
        raise InvalidJobSpec(f"SQL could not be parsed{_position(e)}") from None
    except sqlglot.errors.SqlglotError:
        raise InvalidJobSpec("SQL could not be tokenized (check quotes and brackets)") from None
    except RecursionError:
        raise InvalidJobSpec("SQL is nested too deeply") from None
    statements = [s for s in parsed if s is not None]
    if not statements:
        raise InvalidJobSpec("empty SQL: expected one SELECT statement")
    if len(statements) > 1:
        raise InvalidJobSpec(
            f"multiple statements are not supported ({len(statements)} found); "
            "send exactly one SELECT"
        )
    stmt = statements[0]
    if isinstance(stmt, exp.Select):
        return stmt
    if isinstance(stmt, exp.SetOperation):
        raise InvalidJobSpec("set operations (UNION / INTERSECT / EXCEPT) are not supported")
    if isinstance(stmt, exp.Subquery):
        raise InvalidJobSpec("a parenthesised query is not supported; write a plain SELECT")
    raise InvalidJobSpec(f"only SELECT statements are supported, not {stmt.key.upper()} statements")


def _position(error: sqlglot.errors.ParseError) -> str:
    for err in error.errors:
        line, col = err.get("line"), err.get("col")
        if isinstance(line, int) and isinstance(col, int):
            return f" (near line {line}, column {col})"
    return ""


def _is_set(value: object) -> bool:
    return value is not None and value is not False and value != []


def _unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _ident(node: object) -> str:
    """Unquoted identifiers are case-folded to lower case; quoted ones are kept as is."""
    if not isinstance(node, exp.Identifier):
        raise InvalidJobSpec("expected a plain identifier")
    name = str(node.this)
    return name if node.args.get("quoted") else name.lower()


def _describe(node: exp.Expression) -> str:
    """A human name for a construct (never its literal contents)."""
    node = _unparen(node)
    if isinstance(node, exp.Subquery | exp.Select | exp.SetOperation | exp.Exists):
        return "subqueries"
    if isinstance(node, exp.Window):
        return "window functions (OVER)"
    if isinstance(node, exp.Filter):
        return "aggregate FILTER clauses"
    if isinstance(node, exp.Star):
        return "*"
    if isinstance(node, exp.Column):
        return "column references"
    if isinstance(node, exp.Literal | exp.Boolean):
        return "literals"
    if isinstance(node, exp.Null):
        return "NULL"
    if isinstance(node, exp.Placeholder | exp.Parameter):
        return "query parameters"
    if isinstance(node, exp.Cast | exp.TryCast):
        return "CAST / typed literals"
    if isinstance(node, exp.Case | exp.If):
        return "CASE"
    if isinstance(node, exp.Interval):
        return "INTERVAL"
    if isinstance(node, _ARITHMETIC):
        return "arithmetic"
    if isinstance(node, exp.Neg):
        return "unary minus on anything but a numeric literal"
    if isinstance(node, exp.Not):
        return "NOT"
    if isinstance(node, exp.Or):
        return "OR"
    if isinstance(node, exp.Xor):
        return "XOR"
    if isinstance(node, exp.Is):
        return "IS [NOT] NULL / IS [NOT] TRUE"
    if isinstance(node, exp.Like):
        return "LIKE"
    if isinstance(node, exp.ILike):
        return "ILIKE"
    if isinstance(node, exp.Tuple):
        return "row values / tuples"
    if isinstance(node, exp.Anonymous):
        return f"function {str(node.this).upper()}"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name()}"
    return node.key.upper()


# --------------------------------------------------------------------------- translation


class _Translator:
    def __init__(self, person_key: str) -> None:
        if not isinstance(person_key, str):
            raise InvalidJobSpec("person_key must be a string")
        self._person_key = person_key

    def select(self, select: exp.Select) -> Query:
        for key, value in select.args.items():
            if key not in _SELECT_ALLOWED and _is_set(value):
                name = _CLAUSE_NAMES.get(key, key.upper())
                raise InvalidJobSpec(f"{name} is not supported")
        query = Query(self._dataset(select))

        group_cols, aggregates = self._select_list(select.expressions)
        by, margins = self._group_by(select.args.get("group"))
        for col in group_cols:
            if col not in by:
                raise InvalidJobSpec(
                    f"column {col!r} is selected but not in GROUP BY; only group-by "
                    "columns and aggregates may be selected"
                )
        for col in by:
            if col not in group_cols:
                raise InvalidJobSpec(f"GROUP BY column {col!r} must also appear in SELECT")
        if not aggregates:
            raise InvalidJobSpec(f"SELECT needs at least one aggregate: {_SUPPORTED_AGGS}")

        where = select.args.get("where")
        if where is not None:
            for pred in _conjuncts(where.this):
                query = self._predicate(query, pred)
        query = query.group_by(*by)
        if margins:
            query = query.margins()
        return replace(query, aggregates=(*query.aggregates, *aggregates))

    # ---- FROM

    def _dataset(self, select: exp.Select) -> str:
        from_ = select.args.get("from_") or select.args.get("from")
        if from_ is None:
            raise InvalidJobSpec("a FROM clause naming the dataset is required")
        table = from_.this
        if isinstance(table, exp.Subquery | exp.Select):
            raise InvalidJobSpec("subqueries in FROM are not supported")
        if isinstance(table, exp.Values):
            raise InvalidJobSpec("VALUES in FROM is not supported")
        if not isinstance(table, exp.Table):
            raise InvalidJobSpec("FROM must name a single dataset")
        if not isinstance(table.this, exp.Identifier):
            raise InvalidJobSpec("table functions in FROM are not supported")
        for key, value in table.args.items():
            if key != "this" and _is_set(value):
                name = _TABLE_ARG_NAMES.get(key, f"table modifier {key.upper()}")
                raise InvalidJobSpec(f"FROM does not support {name}")
        dataset = _ident(table.this)
        if not _DATASET_RE.fullmatch(dataset):
            raise InvalidJobSpec(
                "FROM must name a dataset id (letters, digits, '_' and '-'), not a file or path"
            )
        return dataset

    # ---- SELECT list

    def _select_list(self, items: list[exp.Expression]) -> tuple[list[str], list[Aggregate]]:
        group_cols: list[str] = []
        aggregates: list[Aggregate] = []
        for item in items:
            alias = ""
            inner = item
            if isinstance(item, exp.Alias):
                alias = _ident(item.args.get("alias"))
                inner = item.this
            if isinstance(inner, exp.Column):
                col = _column(inner, "SELECT")
                if alias and alias != col:
                    raise InvalidJobSpec(f"aliases on group-by column {col!r} are not supported")
                if col in group_cols:
                    raise InvalidJobSpec(f"column {col!r} is selected more than once")
                group_cols.append(col)
            else:
                aggregates.append(self._aggregate(inner, alias))
        return group_cols, aggregates

    def _aggregate(self, node: exp.Expression, alias: str) -> Aggregate:
        if isinstance(node, exp.Star):
            raise InvalidJobSpec(
                "SELECT * is not supported; list the group-by columns and aggregates"
            )
        if isinstance(node, exp.Window):
            raise InvalidJobSpec("window functions (OVER) are not supported")
        if isinstance(node, exp.Filter):
            raise InvalidJobSpec("aggregate FILTER clauses are not supported; use WHERE")
        if isinstance(node, exp.Count):
            return self._count(node, alias)
        if isinstance(node, exp.Sum):
            return Aggregate(AggFunc.SUM, _measure(node, "SUM"), alias)
        if isinstance(node, exp.Avg):
            return Aggregate(AggFunc.MEAN, _measure(node, "AVG"), alias)
        if isinstance(node, exp.Variance):  # VARIANCE and VAR_SAMP
            return Aggregate(AggFunc.VARIANCE, _measure(node, "VARIANCE"), alias)
        if isinstance(node, exp.Stddev | exp.StddevSamp):
            return Aggregate(AggFunc.STDDEV, _measure(node, "STDDEV"), alias)
        if isinstance(node, exp.Median):
            return Aggregate(AggFunc.MEDIAN, _measure(node, "MEDIAN"), alias)
        if isinstance(node, exp.PercentileCont | exp.PercentileDisc | exp.Quantile):
            return _quantile(node, alias)
        if isinstance(node, exp.WithinGroup):
            return _within_group(node, alias)
        if isinstance(node, exp.Anonymous):
            fname = str(node.this).upper()
            if fname == "MEAN":
                return Aggregate(AggFunc.MEAN, _measure(node, "MEAN"), alias)
            if fname == "COUNT_PERSONS":
                if node.expressions:
                    raise InvalidJobSpec("COUNT_PERSONS() takes no arguments")
                return Aggregate(AggFunc.COUNT_DISTINCT, "", alias)
        if isinstance(node, exp.Func):
            raise InvalidJobSpec(
                f"{_describe(node)} is not supported in the select list; "
                f"supported aggregates: {_SUPPORTED_AGGS}"
            )
        raise InvalidJobSpec(
            f"the select list does not support {_describe(node)}; select group-by "
            f"columns and aggregates ({_SUPPORTED_AGGS}) only"
        )

    def _count(self, node: exp.Count, alias: str) -> Aggregate:
        arg = node.this
        if node.expressions:
            raise InvalidJobSpec("COUNT with several arguments is not supported")
        if arg is None:
            raise InvalidJobSpec("COUNT() needs an argument; write COUNT(*)")
        if isinstance(arg, exp.Star):
            return Aggregate(AggFunc.COUNT, "", alias)
        if isinstance(arg, exp.Distinct):
            cols = arg.expressions
            if _is_set(arg.args.get("on")) or len(cols) != 1 or not isinstance(cols[0], exp.Column):
                raise InvalidJobSpec(
                    "COUNT(DISTINCT ...) takes exactly one bare column (the person key)"
                )
            col = _column(cols[0], "COUNT(DISTINCT ...)")
            if self._person_key and col != self._person_key:
                raise InvalidJobSpec(
                    f"COUNT(DISTINCT ...) is only supported on the person key column "
                    f"{self._person_key!r}, not {col!r}"
                )
            return Aggregate(AggFunc.COUNT_DISTINCT, "", alias)
        if isinstance(arg, exp.Column):
            raise InvalidJobSpec(
                "COUNT(column) is not supported; use COUNT(*) or COUNT(DISTINCT <person key>)"
            )
        raise InvalidJobSpec(f"COUNT does not support {_describe(arg)} as its argument")

    # ---- GROUP BY

    def _group_by(self, group: exp.Expression | None) -> tuple[list[str], bool]:
        """The group-by columns, and whether margins were asked for (``GROUP BY CUBE (...)``)."""
        if group is None:
            return [], False
        for key, value in group.args.items():
            if key != "expressions" and _is_set(value):
                raise InvalidJobSpec(f"{_GROUP_ARG_NAMES.get(key, key.upper())} is not supported")
        nodes = list(group.expressions)
        margins = len(nodes) == 1 and isinstance(nodes[0], exp.Cube)
        if margins:
            nodes = list(nodes[0].expressions)
        cols: list[str] = []
        for node in nodes:
            if isinstance(node, exp.Literal):
                raise InvalidJobSpec(
                    "GROUP BY positions are not supported; name the column instead"
                )
            if isinstance(node, exp.Rollup):
                raise InvalidJobSpec("ROLLUP is not supported")
            if isinstance(node, exp.Cube):
                raise InvalidJobSpec(
                    "CUBE is supported only as the whole GROUP BY: GROUP BY CUBE (a, b)"
                )
            if isinstance(node, exp.GroupingSets):
                raise InvalidJobSpec("GROUPING SETS is not supported")
            if not isinstance(node, exp.Column):
                raise InvalidJobSpec(f"GROUP BY does not support {_describe(node)}")
            col = _column(node, "GROUP BY")
            if col in cols:
                raise InvalidJobSpec(f"column {col!r} appears more than once in GROUP BY")
            cols.append(col)
        if margins and not cols:
            raise InvalidJobSpec("CUBE needs at least one column")
        return cols, margins

    # ---- WHERE

    def _predicate(self, query: Query, node: exp.Expression) -> Query:
        if isinstance(node, exp.Or):
            raise InvalidJobSpec(
                "OR is not supported in WHERE; combine predicates with AND only "
                "(use IN for alternatives on one column)"
            )
        if isinstance(node, exp.Not):
            raise InvalidJobSpec(
                "NOT is not supported in WHERE (NOT IN, NOT BETWEEN, IS NOT NULL included); "
                "use != or positive predicates"
            )
        op = _COMPARISONS.get(type(node))
        if op is not None:
            return self._comparison(query, node, op)
        if isinstance(node, exp.In):
            return self._in(query, node)
        if isinstance(node, exp.Between):
            return self._between(query, node)
        if isinstance(node, exp.Column):
            raise InvalidJobSpec("a bare column is not a predicate; write e.g. column = TRUE")
        if isinstance(node, exp.Literal | exp.Boolean | exp.Null):
            raise InvalidJobSpec("constant predicates are not supported in WHERE")
        raise InvalidJobSpec(f"WHERE does not support {_describe(node)}")

    def _comparison(self, query: Query, node: exp.Expression, op: FilterOp) -> Query:
        left = _unparen(node.this)
        right = _unparen(node.args["expression"])
        if isinstance(left, exp.Column) and isinstance(right, exp.Column):
            raise InvalidJobSpec(
                "column-to-column comparisons are not supported (note: double quotes "
                "denote identifiers; write string literals in single quotes)"
            )
        if isinstance(left, exp.Column):
            col, value_node = _column(left, "WHERE"), right
        elif isinstance(right, exp.Column):
            col, value_node, op = _column(right, "WHERE"), left, _FLIPPED[op]
        else:
            left_lit, right_lit = _is_literal(left), _is_literal(right)
            if left_lit and right_lit:
                raise InvalidJobSpec("comparisons between two literals are not supported")
            offending = right if left_lit else left
            raise InvalidJobSpec(
                f"WHERE does not support {_describe(offending)}; each predicate "
                "compares a bare column with a literal"
            )
        return query.where(col, op, _literal(value_node, col))

    def _in(self, query: Query, node: exp.In) -> Query:
        for key, value in node.args.items():
            if key in ("this", "expressions", "is_global"):
                continue
            if _is_set(value):
                what = "subqueries" if key == "query" else key.upper()
                raise InvalidJobSpec(f"IN does not support {what}")
        target = _unparen(node.this)
        if not isinstance(target, exp.Column):
            raise InvalidJobSpec(
                f"IN does not support {_describe(target)} on its left; use a bare column"
            )
        col = _column(target, "WHERE")
        values = [_literal(v, col) for v in node.expressions]
        return query.where(col, FilterOp.IN, values)

    def _between(self, query: Query, node: exp.Between) -> Query:
        if _is_set(node.args.get("symmetric")):
            raise InvalidJobSpec("BETWEEN SYMMETRIC is not supported")
        target = _unparen(node.this)
        if not isinstance(target, exp.Column):
            raise InvalidJobSpec(
                f"BETWEEN does not support {_describe(target)} on its left; use a bare column"
            )
        col = _column(target, "WHERE")
        low = _literal(node.args["low"], col)
        high = _literal(node.args["high"], col)
        return query.where(col, FilterOp.BETWEEN, (low, high))


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    node = _unparen(node)
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.args["expression"])]
    return [node]


def _column(node: exp.Expression, where: str) -> str:
    if not isinstance(node, exp.Column):
        raise InvalidJobSpec(f"{where} does not support {_describe(node)}")
    if isinstance(node.this, exp.Star):
        raise InvalidJobSpec("SELECT * is not supported; list the group-by columns and aggregates")
    for key, value in node.args.items():
        if key != "this" and _is_set(value):
            raise InvalidJobSpec(
                f"qualified column names (table.column) are not supported in {where}"
            )
    return _ident(node.this)


def _measure(node: exp.Func, fname: str) -> str:
    """The single bare column argument of SUM / AVG / MEAN."""
    args: list[exp.Expression]
    if isinstance(node, exp.Anonymous):
        args = list(node.expressions)
    else:
        for key, value in node.args.items():
            if key != "this" and _is_set(value):
                raise InvalidJobSpec(f"{fname} does not support {key.upper()}")
        args = [node.this] if isinstance(node.this, exp.Expression) else []
    if len(args) != 1:
        raise InvalidJobSpec(f"{fname} takes exactly one column")
    arg = args[0]
    if isinstance(arg, exp.Distinct):
        raise InvalidJobSpec(f"DISTINCT inside {fname} is not supported")
    if not isinstance(arg, exp.Column):
        raise InvalidJobSpec(f"{fname} does not support {_describe(arg)}; use a bare column")
    return _column(arg, fname)


def _quantile(node: exp.Func, alias: str) -> Aggregate:
    """``QUANTILE_CONT(col, q)``, ``QUANTILE_DISC(col, q)`` or ``QUANTILE(col, q)``."""
    fname = {"PERCENTILE_CONT": "QUANTILE_CONT", "PERCENTILE_DISC": "QUANTILE_DISC"}.get(
        node.sql_name(), node.sql_name()
    )
    level_arg = "quantile" if isinstance(node, exp.Quantile) else "expression"
    for key, value in node.args.items():
        if key not in ("this", level_arg) and _is_set(value):
            raise InvalidJobSpec(f"{fname} does not support {key.upper()}")
    column, level = node.this, node.args.get(level_arg)
    if not isinstance(column, exp.Column) or level is None:
        raise InvalidJobSpec(f"{fname} takes a bare column and a level, e.g. {fname}(col, 0.9)")
    return _quantile_of(_column(column, fname), level, fname, alias)


def _within_group(node: exp.WithinGroup, alias: str) -> Aggregate:
    """``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)`` (and ``PERCENTILE_DISC``)."""
    func, order = node.this, node.args.get("expression")
    if not isinstance(func, exp.PercentileCont | exp.PercentileDisc):
        raise InvalidJobSpec(
            f"WITHIN GROUP is supported only with PERCENTILE_CONT or PERCENTILE_DISC, not "
            f"{_describe(func)}"
        )
    fname = func.sql_name()
    if _is_set(func.args.get("expression")) or not isinstance(order, exp.Order):
        raise InvalidJobSpec(f"write {fname}(q) WITHIN GROUP (ORDER BY col)")
    items = list(order.expressions)
    for key, value in order.args.items():
        if key != "expressions" and _is_set(value):
            raise InvalidJobSpec(f"{fname} WITHIN GROUP supports ORDER BY one column only")
    if len(items) != 1 or not isinstance(items[0], exp.Ordered):
        raise InvalidJobSpec(f"{fname} WITHIN GROUP needs ORDER BY exactly one column")
    ordered = items[0]
    if ordered.args.get("desc"):
        raise InvalidJobSpec(f"{fname} WITHIN GROUP (ORDER BY ... DESC) is not supported")
    column = ordered.this
    if not isinstance(column, exp.Column):
        raise InvalidJobSpec(f"{fname} WITHIN GROUP needs ORDER BY a bare column")
    return _quantile_of(_column(column, fname), func.this, fname, alias)


def _quantile_of(column: str, level: exp.Expression, fname: str, alias: str) -> Aggregate:
    """A quantile aggregate; the level must be a numeric literal strictly between 0 and 1."""
    level = _unparen(level)
    if not isinstance(level, exp.Literal) or level.is_string:
        raise InvalidJobSpec(f"the level of {fname} must be a numeric literal such as 0.9")
    text = str(level.this)
    if not _FLOAT_RE.fullmatch(text):
        raise InvalidJobSpec(f"the level of {fname} must be a plain decimal such as 0.9")
    agg = Aggregate(AggFunc.QUANTILE, column, alias, Fraction(text))
    problem = quantile_problem(agg)
    if problem:
        raise InvalidJobSpec(f"{fname}: {problem}")
    return agg


def _is_literal(node: exp.Expression) -> bool:
    node = _unparen(node)
    if isinstance(node, exp.Neg):
        node = _unparen(node.this)
    return isinstance(node, exp.Literal | exp.Boolean)


def _literal(node: exp.Expression, column: str) -> Scalar:
    """Convert a literal node; messages name the column, never the value."""
    node = _unparen(node)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        return _number(str(node.this), column)
    if isinstance(node, exp.Neg):
        inner = _unparen(node.this)
        if isinstance(inner, exp.Literal) and not inner.is_string:
            return -_number(str(inner.this), column)
        raise InvalidJobSpec(
            f"filter on column {column!r}: unary minus is only supported on numeric literals"
        )
    if isinstance(node, exp.Null):
        raise InvalidJobSpec(
            f"filter on column {column!r}: NULL comparisons are not supported "
            "(IS NULL is not supported either)"
        )
    if isinstance(node, exp.Column):
        raise InvalidJobSpec(
            f"filter on column {column!r}: column-to-column comparisons are not supported "
            "(note: double quotes denote identifiers; write string literals in single quotes)"
        )
    raise InvalidJobSpec(
        f"filter on column {column!r}: values must be literals, not {_describe(node)}"
    )


def _number(text: str, column: str) -> int | float:
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise InvalidJobSpec(f"filter on column {column!r}: number out of range")
        return value
    raise InvalidJobSpec(f"filter on column {column!r}: unsupported numeric literal format")
