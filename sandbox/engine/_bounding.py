"""Contribution bounding for differential privacy on datasets with several rows per person.

Each person's rows are first aggregated per (person, cell): a count of rows ``c`` and, per
measure, the sum ``S`` of the values clamped to the policy bounds and rounded to integers
(each at most ``B = ceil(max |bound|)`` in magnitude). Then:

* each person keeps at most ``L`` cells (``max_groups_per_person``), the first ``L`` by a
  salted hash of the person's key and the cell's keys: an order that looks at no one else's
  data (the salt is drawn per plan, so which cells are kept cannot be steered by choosing keys);
* in each kept cell a person counts for at most ``R`` rows (``max_rows_per_person``): rows above
  ``R`` are not counted, and the sum is scaled to ``min(c, R)`` rows at the person's average,
  ``round(S * min(c, R) / c)``, so the sum and the count of rows describe the same rows and a
  mean stays unbiased by the cap. A contribution is then at most ``R * B`` in magnitude (and is
  clamped to ``[-R * B, R * B]`` besides).

Per cell the query returns the number of persons, the capped row count and the bounded sums.
Adding or removing one person changes the persons counts by at most ``L`` in total (L1), the row
counts by at most ``L * R`` and each sum by at most ``L * R * B``: the sensitivities the noise is
calibrated to. Identifiers are quoted; every value (bounds, L, R, salt) is a bound parameter.
"""

from __future__ import annotations

import math
import secrets

from sandbox._model import AggFunc, JobSpec
from sandbox.engine._plan import _clamped, _Parts, quote_ident
from sandbox.policy import Policy
from sandbox.state import DatasetRecord

_SUMMED = (AggFunc.SUM, AggFunc.MEAN)


def bounded_query(
    spec: JobSpec, record: DatasetRecord, policy: Policy, parts: _Parts, bounds: tuple[int, int]
) -> tuple[str, list[object]]:
    """The bounded per-cell aggregation; rows are ``keys, persons, values..., rows``."""
    groups, rows_cap = bounds
    pk = quote_ident(policy.person_key)
    measures = list(dict.fromkeys(a.column for a in spec.aggregates if a.function in _SUMMED))
    inner_params = list(parts.key_params)
    inner = [*parts.keys, f"{pk} AS _p", "count(*) AS _c"]
    for i, column in enumerate(measures):
        clamped = _clamped(column, policy, record, inner_params)
        inner.append(f"CAST(sum(CAST(round({clamped}) AS BIGINT)) AS HUGEINT) AS _s{i}")
    inner_params += [parts.source, *parts.cond_params]
    per_person = (
        f"SELECT {', '.join(inner)} FROM {parts.reader}{parts.where} "  # noqa: S608
        f"GROUP BY {', '.join([*parts.key_names, pk])}"
    )
    # Keep the first L cells of each person by a salted hash of (person, cell keys).
    order = ", ".join(["_p", *parts.key_names])
    ranked = (
        "SELECT *, row_number() OVER "  # noqa: S608 - quoted identifiers, bound values
        f"(PARTITION BY _p ORDER BY hash(CAST(? AS VARCHAR), {order})) AS _r FROM cells"
    )
    kept_cols = ["*", "least(_c, ?) AS _m"]
    kept_params: list[object] = [rows_cap]
    for i, column in enumerate(measures):
        col = policy.column(column)
        assert col is not None and col.bounds is not None, "noise_terms checks measure bounds"
        cap = rows_cap * max(1, math.ceil(max(abs(b) for b in col.bounds)))
        # round(S * m / c) half away from zero, in exact integers, then clamped to [-cap, cap].
        scaled = (
            f"sign(coalesce(_s{i}, 0)) * "
            f"((2 * abs(coalesce(_s{i}, 0)) * least(_c, ?) + _c) // (2 * _c))"
        )
        kept_cols.append(f"greatest(least({scaled}, ?), ?) AS _t{i}")
        kept_params += [rows_cap, cap, -cap]
    kept = f"SELECT {', '.join(kept_cols)} FROM ({ranked}) WHERE _r <= ?"  # noqa: S608
    kept_params += [secrets.token_hex(16), groups]  # the salt (in ``ranked``), then L
    outer = ["count(*) AS persons"]
    for j, agg in enumerate(spec.aggregates):
        if agg.function == AggFunc.COUNT:
            expr = "CAST(coalesce(sum(_m), 0) AS BIGINT)"
        elif agg.function in _SUMMED:
            expr = f"CAST(coalesce(sum(_t{measures.index(agg.column)}), 0) AS BIGINT)"
        else:  # COUNT_DISTINCT (noise_terms refuses the others under DP)
            expr = "count(*)"
        outer.append(f"{expr} AS v{j}")
    outer.append("CAST(coalesce(sum(_m), 0) AS BIGINT) AS _rows")
    group = f" GROUP BY {', '.join(parts.key_names)}" if parts.keys else ""
    sql = (
        f"WITH cells AS ({per_person}), kept AS ({kept}) "  # noqa: S608
        f"SELECT {', '.join([*parts.key_names, *outer])} FROM kept{group}"
    )
    return sql, [*inner_params, *kept_params]
