"""Domain objects: frozen dataclasses shared by client, pipeline and server.

No protobuf type appears here; ``sandbox._wire`` converts between the two.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

Scalar = int | float | str | bool
"""A typed filter value. Never a data value from the server: only what a researcher typed."""


class Role(enum.StrEnum):
    RESEARCHER = "researcher"
    STEWARD = "steward"
    COMPLIANCE = "compliance"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


@dataclass(frozen=True)
class PublicKeyInfo:
    """A principal's registered public key (results of their jobs are sealed to it)."""

    principal: str
    fingerprint: str = ""
    """SHA-256 (hex) of the key's DER SubjectPublicKeyInfo; empty when none is registered."""
    bits: int = 0
    replaced_fingerprint: str = ""
    """On registration: the fingerprint of the key this one replaced, if any."""

    @property
    def registered(self) -> bool:
        return bool(self.fingerprint)


class FilterOp(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    BETWEEN = "between"


INTEGER_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
)
"""Engine column type names (prefixes) holding integers."""
FLOAT_TYPES = ("FLOAT", "DOUBLE", "DECIMAL", "REAL", "NUMERIC")
"""Engine column type names (prefixes) holding non-integer numbers."""


class AggFunc(enum.StrEnum):
    COUNT = "count"
    COUNT_DISTINCT = "count_distinct"
    """Count of distinct persons (the dataset's person key)."""
    SUM = "sum"
    MEAN = "mean"
    VARIANCE = "variance"
    """Sample variance of the clamped measure."""
    STDDEV = "stddev"
    """Sample standard deviation of the clamped measure."""
    MEDIAN = "median"
    """The median: a point of the measure's public grid (see ``QUANTILE``)."""
    QUANTILE = "quantile"
    """The ``q``-quantile, released as the midpoint of the grid interval that holds it."""


QUANTILES = (AggFunc.MEDIAN, AggFunc.QUANTILE)
"""Functions released as a point of a public grid, never as a data value."""
MAX_QUANTILE_DENOMINATOR = 10_000
"""A quantile level is an exact fraction whose denominator is at most this (as in OpenDP)."""


class Margin(enum.Enum):
    """A group key standing for "all values of this column" (a crosstab margin or total)."""

    TOTAL = "total"

    def __repr__(self) -> str:
        return "TOTAL"


TOTAL = Margin.TOTAL
"""The margin key: a row whose key is ``TOTAL`` in a column sums over that column."""

Key = Scalar | None | Margin
"""A released group key: a value, null (missing or outside every bin) or ``TOTAL``."""


@dataclass(frozen=True)
class Filter:
    column: str
    op: FilterOp
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Aggregate:
    function: AggFunc
    column: str = ""
    """Measure column; empty for ``count`` and ``count_distinct``."""
    alias: str = ""
    q: Fraction | None = None
    """The level of a ``quantile`` (0 < q < 1, exact); None for every other function."""

    @property
    def name(self) -> str:
        """Output column name."""
        if self.alias:
            return self.alias
        if self.function in (AggFunc.COUNT, AggFunc.COUNT_DISTINCT):
            return str(self.function)
        if self.function == AggFunc.QUANTILE and self.q is not None:
            return f"quantile_{_level_name(self.q)}_{self.column}"
        return f"{self.function}_{self.column}"

    @property
    def level(self) -> Fraction | None:
        """The quantile level: 1/2 for ``median``, ``q`` for ``quantile``, else None."""
        if self.function == AggFunc.MEDIAN:
            return Fraction(1, 2)
        return self.q if self.function == AggFunc.QUANTILE else None


def quantile_problem(agg: Aggregate) -> str:
    """Why an aggregate's quantile level is invalid, or "" (the level itself is not named)."""
    if agg.function != AggFunc.QUANTILE:
        return "" if agg.q is None else f"{agg.function} takes no quantile level"
    q = agg.q
    if not isinstance(q, Fraction):
        return "quantile needs a level q, an exact fraction strictly between 0 and 1"
    if not 0 < q < 1:
        return "the quantile level q must lie strictly between 0 and 1"
    if q.denominator > MAX_QUANTILE_DENOMINATOR:
        return f"the quantile level q needs a denominator of at most {MAX_QUANTILE_DENOMINATOR}"
    return ""


def _level_name(q: Fraction) -> str:
    """``9/10`` → ``0_9``, ``1/4`` → ``0_25``; a non-decimal level ``1/3`` → ``1_3``."""
    for digits in range(1, 8):
        scaled = q * 10**digits
        if scaled.denominator == 1:
            return f"0_{scaled.numerator:0{digits}d}"
    return f"{q.numerator}_{q.denominator}"


@dataclass(frozen=True)
class JobSpec:
    """The query IR: what a researcher asks, as a structured tree."""

    dataset: str
    project: str
    purpose: str
    aggregates: tuple[Aggregate, ...]
    group_by: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    margins: bool = False
    """Add margin rows: every combination with some group-by columns set to ``TOTAL``."""

    def canonical(self) -> dict[str, Any]:
        """A JSON-able canonical form (filters sorted) used for digests and logs."""
        return dict(json.loads(self._canonical_json))

    @functools.cached_property
    def _canonical_json(self) -> str:
        return json.dumps(self._canonical_form(), sort_keys=True, separators=(",", ":"))

    def _canonical_form(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "project": self.project,
            "purpose": self.purpose,
            "group_by": list(self.group_by),
            **({"margins": True} if self.margins else {}),
            "aggregates": [
                {
                    "function": str(a.function),
                    "column": a.column,
                    "alias": a.alias,
                    **({"q": str(a.q)} if a.q is not None else {}),
                }
                for a in self.aggregates
            ],
            "filters": sorted(
                (
                    {"column": f.column, "op": str(f.op), "values": [_tagged(v) for v in f.values]}
                    for f in self.filters
                ),
                key=lambda d: json.dumps(d, sort_keys=True),
            ),
        }

    def digest(self) -> str:
        """SHA-256 of the canonical form, hex."""
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self._canonical_json.encode()).hexdigest()


def _tagged(v: Scalar) -> list[str]:
    return [type(v).__name__, repr(v)]


class JobState(enum.StrEnum):
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    """Held for human review (the policy routes it to stewards); see ``JobInfo.message``."""
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DENIED = "DENIED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DENIED, JobState.CANCELLED})


@dataclass(frozen=True)
class JobInfo:
    """What a caller may know about a job (never data values)."""

    job_id: str
    request_id: str
    principal: str
    spec: JobSpec
    state: JobState
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    reason: str = ""
    """Stable UPPER_SNAKE reason when DENIED/FAILED/CANCELLED."""
    message: str = ""
    rule_ids: tuple[str, ...] = ()
    rows_scanned: int = 0
    policy_version: str = ""
    progress: float = 0.0

    @property
    def submitter(self) -> Principal:
        """The researcher who submitted the job (only researchers submit)."""
        return Principal(self.principal, Role.RESEARCHER)


class CellStatus(enum.StrEnum):
    RELEASED = "released"
    ROUNDED = "rounded"
    SUPPRESSED = "suppressed"
    NOISED = "noised"
    """Noise was added: differential privacy (rule ``disclosure.dp``) or the cell-key method's
    perturbation (``disclosure.cell_key``); see ``Cell.ci`` and ``ResultTable.privacy``."""


@dataclass(frozen=True)
class Cell:
    value: float | int | None
    status: CellStatus
    rule: str = ""
    """Rule id that changed this cell (e.g. ``disclosure.min_persons``)."""
    ci: float | None = None
    """Half-width of the confidence interval of a noised value (level in ``privacy``)."""


@dataclass(frozen=True)
class ResultRow:
    keys: tuple[Key, ...]
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class ResultTable:
    """A released table: group keys plus aggregate cells, each with a status."""

    key_columns: tuple[str, ...]
    value_columns: tuple[str, ...]
    rows: tuple[ResultRow, ...]
    settings: dict[str, int] = field(default_factory=dict)
    """Disclosure settings applied (threshold, rounding base)."""
    privacy: dict[str, str] = field(default_factory=dict)
    """Terms of a noised result: the mechanism, and epsilon and delta spent (exact) and the
    confidence of ``Cell.ci`` (DP), or the p-table's largest perturbation and variance
    (cell key; ``Cell.ci`` is then a sure bound)."""
    policy_version: str = ""
    """The dataset policy version the job ran under (set when the table is released)."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able form (the inverse of ``from_json``)."""
        return {
            "key_columns": list(self.key_columns),
            "value_columns": list(self.value_columns),
            "rows": [
                {
                    "keys": [_key_json(k) for k in r.keys],
                    "cells": [
                        {"value": c.value, "status": c.status.value, "rule": c.rule, "ci": c.ci}
                        for c in r.cells
                    ],
                }
                for r in self.rows
            ],
            "settings": dict(self.settings),
            "privacy": dict(self.privacy),
            **({"policy_version": self.policy_version} if self.policy_version else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultTable:
        return cls(
            key_columns=tuple(data["key_columns"]),
            value_columns=tuple(data["value_columns"]),
            rows=tuple(
                ResultRow(
                    keys=tuple(TOTAL if isinstance(k, dict) else k for k in r["keys"]),
                    cells=tuple(
                        Cell(c["value"], CellStatus(c["status"]), c["rule"], c.get("ci"))
                        for c in r["cells"]
                    ),
                )
                for r in data["rows"]
            ),
            settings=dict(data["settings"]),
            privacy=dict(data.get("privacy", {})),
            policy_version=str(data.get("policy_version", "")),
        )

    def canonical_json(self) -> str:
        return self._canonical

    def digest(self) -> str:
        return self._digest

    @functools.cached_property
    def _canonical(self) -> str:  # a released table is never changed, only replaced
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @functools.cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self._canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Estimate:
    """How a job would fare and what it would cost, worked out without reading its data."""

    allowed: bool
    """Whether it would be accepted now (policy, canonical form, quota and budget)."""
    rule_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    """Why not, when not allowed; one message per refusal."""
    jobs: int = 0
    rows: int = 0
    """Quota it would be charged: one job and the rows it scans."""
    epsilon: str = "0"
    delta: str = "0"
    """Privacy budget it would spend, as exact fractions ("1/10")."""
    spec_digest: str = ""
    """Digest of the canonical spec: a job with this digest is the same query."""
    predicted: ResultTable | None = None
    """Cell statuses and rules when run on mock rows, values removed: a likely pattern only."""
    mock_rows: int = 0


def _key_json(k: Key) -> Any:
    return {"margin": "total"} if k is TOTAL else k


class ColumnRole(enum.StrEnum):
    IDENTIFIER = "identifier"
    DIMENSION = "dimension"
    MEASURE = "measure"
    HIDDEN = "hidden"


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    role: ColumnRole
    description: str = ""
    bins: tuple[float, ...] = ()
    values: tuple[Scalar, ...] = ()
    bounds: tuple[float, float] | None = None
    aggregates: tuple[AggFunc, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    title: str
    description: str
    person_key: str
    population: str
    row_count: int
    """Coarse: rounded to two significant figures."""
    columns: tuple[ColumnInfo, ...] = ()
    purposes: tuple[str, ...] = ()
    policy_version: str = ""


@dataclass(frozen=True)
class QuotaLimits:
    jobs_per_day: int | None = None
    jobs_total: int | None = None
    rows_per_day: int | None = None
    rows_total: int | None = None


@dataclass(frozen=True)
class QuotaUsage:
    project: str
    limits: QuotaLimits
    jobs_today: int
    jobs_total: int
    rows_today: int
    rows_total: int


@dataclass(frozen=True)
class Project:
    id: str
    title: str
    members: tuple[str, ...]
    grants: tuple[tuple[str, str], ...]
    """(dataset, purpose) pairs the project holds."""
    expires: dt.date
    """The project's last day: from the day after, it refuses every job."""
    quota: QuotaLimits = QuotaLimits()
    grant_expiry: tuple[tuple[str, str, dt.date], ...] = ()
    """(dataset, purpose, last day) of the grants that end on a date of their own: from the
    day after, that purpose is refused (rule ``project.purpose_expired``), with no one acting."""
    revoked: bool = False
    """A revoked project refuses every new job (rule ``project.revoked``). Final."""

    def grant_expires(self, dataset: str, purpose: str) -> dt.date | None:
        """The last day of the (dataset, purpose) grant, if it ends before the project does."""
        for d, p, last in self.grant_expiry:
            if d == dataset and p == purpose:
                return last
        return None


@dataclass(frozen=True)
class Grant:
    """A (dataset, purpose) grant; ``expires`` is its last day (None: as long as the project)."""

    dataset: str
    purpose: str
    expires: dt.date | None = None


@dataclass(frozen=True)
class ProjectUpdate:
    """A steward's change to a project; what is left unset stays as it is."""

    title: str | None = None
    add_members: tuple[str, ...] = ()
    remove_members: tuple[str, ...] = ()
    add_grants: tuple[Grant, ...] = ()
    """Granted, or re-granted with this expiry (``expires`` None clears a grant's own date)."""
    remove_grants: tuple[tuple[str, str], ...] = ()
    """(dataset, purpose) grants withdrawn."""
    expires: dt.date | None = None
    quota: QuotaLimits | None = None
    """Replaces every limit (unset = unlimited)."""


class ExceptionState(enum.StrEnum):
    PENDING = "PENDING"
    GRANTED = "GRANTED"
    """Granted and not yet used: it admits one job."""
    REJECTED = "REJECTED"
    USED = "USED"
    """Granted, and consumed by the one job it admitted (``used_by_job``)."""


@dataclass(frozen=True)
class ExceptionRequest:
    """A researcher's request for an exception to a policy refusal, and its decision.

    A granted exception admits exactly one later job of the requester, in the same project,
    with the same spec digest, and waives only ``rule_ids``: any other rule still applies.
    """

    id: str
    job_id: str
    """The refused job the request is about."""
    principal: str
    project: str
    dataset: str
    purpose: str
    spec_digest: str
    rule_ids: tuple[str, ...]
    """The policy rules to waive (each among the refused job's)."""
    justification: str
    state: ExceptionState
    requested_at: dt.datetime
    decided_by: str = ""
    decision_reason: str = ""
    decided_at: dt.datetime | None = None
    used_by_job: str = ""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    entry: dict[str, Any]
    leaf_hash: str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    size: int
    root: str
    first_bad_seq: int | None = None
    problem: str = ""


@dataclass(frozen=True)
class PendingReview:
    """A job held for human review, as a steward sees it."""

    job: JobInfo
    why: tuple[str, ...]
    approvals_required: int
    approved_by: tuple[str, ...]
