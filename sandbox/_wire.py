"""The one module that converts between protobuf messages and domain objects.

Used by the server's servicer and by the client; nothing else imports generated code.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator
from fractions import Fraction

import pyarrow as pa

from sandbox._errors import InvalidArgument, InvalidJobSpec, SandboxError
from sandbox._model import TOTAL as TOTAL_KEY
from sandbox._model import (
    AggFunc,
    Aggregate,
    Cell,
    CellStatus,
    ColumnInfo,
    ColumnRole,
    DatasetInfo,
    Estimate,
    ExceptionRequest,
    ExceptionState,
    Filter,
    FilterOp,
    Grant,
    JobInfo,
    JobSpec,
    JobState,
    Key,
    Project,
    ProjectUpdate,
    PublicKeyInfo,
    QuotaLimits,
    QuotaUsage,
    ResultRow,
    ResultTable,
    Scalar,
)
from sandbox.api.v1 import catalog_pb2, common_pb2, jobs_pb2, keys_pb2, projects_pb2
from sandbox.mock import MockRequest

_OPS = {
    FilterOp.EQ: jobs_pb2.FILTER_OP_EQ,
    FilterOp.NE: jobs_pb2.FILTER_OP_NE,
    FilterOp.LT: jobs_pb2.FILTER_OP_LT,
    FilterOp.LE: jobs_pb2.FILTER_OP_LE,
    FilterOp.GT: jobs_pb2.FILTER_OP_GT,
    FilterOp.GE: jobs_pb2.FILTER_OP_GE,
    FilterOp.IN: jobs_pb2.FILTER_OP_IN,
    FilterOp.BETWEEN: jobs_pb2.FILTER_OP_BETWEEN,
}
_OPS_BACK = {v: k for k, v in _OPS.items()}
_FUNCS = {
    AggFunc.COUNT: jobs_pb2.AGGREGATE_FUNCTION_COUNT,
    AggFunc.COUNT_DISTINCT: jobs_pb2.AGGREGATE_FUNCTION_COUNT_DISTINCT,
    AggFunc.SUM: jobs_pb2.AGGREGATE_FUNCTION_SUM,
    AggFunc.MEAN: jobs_pb2.AGGREGATE_FUNCTION_MEAN,
    AggFunc.VARIANCE: jobs_pb2.AGGREGATE_FUNCTION_VARIANCE,
    AggFunc.STDDEV: jobs_pb2.AGGREGATE_FUNCTION_STDDEV,
    AggFunc.MEDIAN: jobs_pb2.AGGREGATE_FUNCTION_MEDIAN,
    AggFunc.QUANTILE: jobs_pb2.AGGREGATE_FUNCTION_QUANTILE,
}
_FUNCS_BACK = {v: k for k, v in _FUNCS.items()}
_STATES = {
    JobState.QUEUED: jobs_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jobs_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobState.DENIED: jobs_pb2.JOB_STATE_DENIED,
    JobState.CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
    JobState.AWAITING_APPROVAL: jobs_pb2.JOB_STATE_AWAITING_APPROVAL,
}
_STATES_BACK = {v: k for k, v in _STATES.items()}
_CELLS = {
    CellStatus.RELEASED: jobs_pb2.CELL_STATUS_RELEASED,
    CellStatus.ROUNDED: jobs_pb2.CELL_STATUS_ROUNDED,
    CellStatus.SUPPRESSED: jobs_pb2.CELL_STATUS_SUPPRESSED,
    CellStatus.NOISED: jobs_pb2.CELL_STATUS_NOISED,
}
_CELLS_BACK = {v: k for k, v in _CELLS.items()}
MAX_VALUES_PER_FILTER = 1000
ROWS_PER_CHUNK = 2000
MOCK_CHUNK_BYTES = 1 << 20
"""Target size of one MockRows chunk (its Arrow IPC stream)."""
SEALED_CHUNK_BYTES = 1 << 20
"""Most bytes of a sealed result one ResultChunk carries."""


# ---- values -------------------------------------------------------------------------------
def value_to_pb(v: Scalar | None) -> common_pb2.Value:
    if v is None:
        return common_pb2.Value(null_value=True)
    if isinstance(v, bool):
        return common_pb2.Value(bool_value=v)
    if isinstance(v, int):
        if not -(2**63) <= v < 2**63:
            raise InvalidJobSpec("integer values must fit in 64 bits")
        return common_pb2.Value(int_value=v)
    if isinstance(v, float):
        return common_pb2.Value(float_value=v)
    if isinstance(v, str):
        return common_pb2.Value(string_value=v)
    if isinstance(v, dt.date):
        return common_pb2.Value(string_value=v.isoformat())
    raise InvalidJobSpec(f"unsupported value type {type(v).__name__}")


def value_from_pb(v: common_pb2.Value) -> Scalar | None:
    kind = v.WhichOneof("kind")
    if kind is None or kind in ("null_value", "total_value"):
        return None  # a margin is only meaningful as a released key (``key_from_pb``)
    out: Scalar = getattr(v, kind)
    return out


def key_to_pb(k: Key) -> common_pb2.Value:
    """A released group key: a value, null, or the margin ``TOTAL``."""
    return common_pb2.Value(total_value=True) if k is TOTAL_KEY else value_to_pb(k)


def key_from_pb(v: common_pb2.Value) -> Key:
    return TOTAL_KEY if v.WhichOneof("kind") == "total_value" else value_from_pb(v)


# ---- job spec -----------------------------------------------------------------------------
def spec_to_pb(spec: JobSpec) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        dataset=spec.dataset,
        project=spec.project,
        purpose=spec.purpose,
        group_by=list(spec.group_by),
        margins=spec.margins,
        aggregates=[
            jobs_pb2.Aggregate(
                function=_FUNCS[a.function],
                column=a.column,
                alias=a.alias,
                q="" if a.q is None else str(a.q),
            )
            for a in spec.aggregates
        ],
        filters=[
            jobs_pb2.Filter(
                column=f.column, op=_OPS[f.op], values=[value_to_pb(v) for v in f.values]
            )
            for f in spec.filters
        ],
    )


def spec_from_pb(pb: jobs_pb2.JobSpec) -> JobSpec:
    """Validate and convert; unknown enum values or null/NaN filter values are refused."""
    filters = []
    for f in pb.filters:
        if f.op not in _OPS_BACK:
            raise InvalidJobSpec(f"filter on column '{f.column}' has an unknown operator")
        if len(f.values) > MAX_VALUES_PER_FILTER:
            raise InvalidJobSpec(f"filter on column '{f.column}' has too many values")
        values = []
        for v in f.values:
            scalar = value_from_pb(v)
            if scalar is None or (isinstance(scalar, float) and not math.isfinite(scalar)):
                raise InvalidJobSpec(
                    f"filter on column '{f.column}' has a missing, NaN or infinite value"
                )
            values.append(scalar)
        filters.append(Filter(f.column, _OPS_BACK[f.op], tuple(values)))
    aggregates = []
    for a in pb.aggregates:
        if a.function not in _FUNCS_BACK:
            raise InvalidJobSpec("an aggregate has an unknown function")
        aggregates.append(
            Aggregate(_FUNCS_BACK[a.function], a.column, a.alias, _level_from_pb(a.q))
        )
    return JobSpec(
        dataset=pb.dataset,
        project=pb.project,
        purpose=pb.purpose,
        group_by=tuple(pb.group_by),
        aggregates=tuple(aggregates),
        filters=tuple(filters),
        margins=pb.margins,
    )


def _level_from_pb(text: str) -> Fraction | None:
    """A quantile level sent as an exact fraction ("9/10", "0.9"); the text is not echoed."""
    if not text:
        return None
    if len(text) > 32 or not _LEVEL_RE.fullmatch(text):
        raise InvalidJobSpec("a quantile level must be an exact fraction such as 9/10 or 0.9")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise InvalidJobSpec("a quantile level must be an exact fraction such as 9/10") from None


_LEVEL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:/[0-9]+)?")


# ---- jobs ---------------------------------------------------------------------------------
def _us(t: dt.datetime | None) -> int:
    return int(t.timestamp() * 1_000_000) if t else 0


def _from_us(us: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC) if us else None


def job_to_pb(info: JobInfo) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        job_id=info.job_id,
        request_id=info.request_id,
        principal=info.principal,
        spec=spec_to_pb(info.spec),
        state=_STATES[info.state],
        reason=info.reason,
        message=info.message,
        rule_ids=list(info.rule_ids),
        created_at_us=_us(info.created_at),
        started_at_us=_us(info.started_at),
        finished_at_us=_us(info.finished_at),
        rows_scanned=info.rows_scanned,
        policy_version=info.policy_version,
        progress=info.progress,
    )


def job_from_pb(pb: jobs_pb2.Job) -> JobInfo:
    created = _from_us(pb.created_at_us) or dt.datetime.now(dt.UTC)
    return JobInfo(
        job_id=pb.job_id,
        request_id=pb.request_id,
        principal=pb.principal,
        spec=spec_from_pb(pb.spec),
        state=_STATES_BACK.get(pb.state, JobState.FAILED),
        created_at=created,
        started_at=_from_us(pb.started_at_us),
        finished_at=_from_us(pb.finished_at_us),
        reason=pb.reason,
        message=pb.message,
        rule_ids=tuple(pb.rule_ids),
        rows_scanned=pb.rows_scanned,
        policy_version=pb.policy_version,
        progress=pb.progress,
    )


# ---- results ------------------------------------------------------------------------------
def result_to_chunks(
    table: ResultTable, rows_per_chunk: int = ROWS_PER_CHUNK
) -> Iterator[jobs_pb2.ResultChunk]:
    rows = [
        jobs_pb2.ResultRow(
            keys=[key_to_pb(k) for k in r.keys],
            cells=[
                jobs_pb2.Cell(
                    has_value=c.value is not None,
                    value=float(c.value) if c.value is not None else 0.0,
                    status=_CELLS[c.status],
                    rule=c.rule,
                    ci_half_width=c.ci,
                )
                for c in r.cells
            ],
        )
        for r in table.rows
    ]
    yield jobs_pb2.ResultChunk(
        key_columns=list(table.key_columns),
        value_columns=list(table.value_columns),
        settings=dict(table.settings),
        privacy=dict(table.privacy),
        policy_version=table.policy_version,
        rows=rows[:rows_per_chunk],
        result_digest=table.digest(),
    )
    for start in range(rows_per_chunk, len(rows), rows_per_chunk):
        yield jobs_pb2.ResultChunk(rows=rows[start : start + rows_per_chunk])


def result_from_chunks(chunks: Iterable[jobs_pb2.ResultChunk]) -> tuple[ResultTable, str]:
    header: jobs_pb2.ResultChunk | None = None
    rows: list[ResultRow] = []
    for chunk in chunks:
        if header is None:
            header = chunk
        for r in chunk.rows:
            rows.append(
                ResultRow(
                    keys=tuple(key_from_pb(k) for k in r.keys),
                    cells=tuple(
                        Cell(
                            c.value if c.has_value else None,
                            _CELLS_BACK.get(c.status, CellStatus.SUPPRESSED),
                            c.rule,
                            c.ci_half_width if c.HasField("ci_half_width") else None,
                        )
                        for c in r.cells
                    ),
                )
            )
    if header is None:
        raise InvalidJobSpec("empty result stream")
    table = ResultTable(
        key_columns=tuple(header.key_columns),
        value_columns=tuple(header.value_columns),
        rows=tuple(rows),
        settings=dict(header.settings),
        privacy=dict(header.privacy),
        policy_version=header.policy_version,
    )
    return table, header.result_digest


def sealed_to_chunks(
    blob: bytes, max_bytes: int = SEALED_CHUNK_BYTES
) -> list[jobs_pb2.ResultChunk]:
    """A sealed result as chunks carrying only ``sealed_result`` (at least one)."""
    step = max(1, max_bytes)
    pieces = [blob[i : i + step] for i in range(0, len(blob), step)] or [b""]
    return [jobs_pb2.ResultChunk(sealed_result=piece) for piece in pieces]


SEALED_FIELDS = {"sealed_result", "receipt_json"}
"""What a chunk of a sealed result may carry: the seal, and the release's receipt (no data)."""


def sealed_from_chunks(chunks: Iterable[jobs_pb2.ResultChunk]) -> bytes | None:
    """The sealed result the chunks carry, or None if they carry a plaintext table.

    A sealed result arrives with nothing else but its receipt: a chunk mixing it with table
    fields, or a stream mixing sealed and plaintext chunks, is refused.
    """
    parts: list[bytes] = []
    plain = False
    for chunk in chunks:
        if chunk.sealed_result:
            if {f.name for f, _ in chunk.ListFields()} - SEALED_FIELDS:
                raise SandboxError("the server sent a sealed result mixed with plaintext fields")
            parts.append(chunk.sealed_result)
        else:
            plain = True
    if parts and plain:
        raise SandboxError("the server sent a result partly sealed and partly in plaintext")
    return b"".join(parts) if parts else None


def estimate_to_pb(e: Estimate) -> jobs_pb2.JobEstimate:
    return jobs_pb2.JobEstimate(
        allowed=e.allowed,
        rule_ids=list(e.rule_ids),
        reasons=list(e.reasons),
        jobs=e.jobs,
        rows=e.rows,
        epsilon=e.epsilon,
        delta=e.delta,
        spec_digest=e.spec_digest,
        predicted=next(result_to_chunks(e.predicted, len(e.predicted.rows) or 1))
        if e.predicted is not None
        else None,
        mock_rows=e.mock_rows,
    )


def estimate_from_pb(pb: jobs_pb2.JobEstimate) -> Estimate:
    predicted = result_from_chunks([pb.predicted])[0] if pb.HasField("predicted") else None
    return Estimate(
        allowed=pb.allowed,
        rule_ids=tuple(pb.rule_ids),
        reasons=tuple(pb.reasons),
        jobs=pb.jobs,
        rows=pb.rows,
        epsilon=pb.epsilon or "0",
        delta=pb.delta or "0",
        spec_digest=pb.spec_digest,
        predicted=predicted,
        mock_rows=pb.mock_rows,
    )


# ---- keys ---------------------------------------------------------------------------------
def key_info_to_pb(info: PublicKeyInfo) -> keys_pb2.PublicKeyInfo:
    return keys_pb2.PublicKeyInfo(
        principal=info.principal,
        registered=info.registered,
        fingerprint=info.fingerprint,
        bits=info.bits,
        replaced_fingerprint=info.replaced_fingerprint,
    )


def key_info_from_pb(pb: keys_pb2.PublicKeyInfo) -> PublicKeyInfo:
    return PublicKeyInfo(
        principal=pb.principal,
        fingerprint=pb.fingerprint if pb.registered else "",
        bits=pb.bits,
        replaced_fingerprint=pb.replaced_fingerprint,
    )


# ---- catalogue ----------------------------------------------------------------------------
def dataset_to_pb(info: DatasetInfo) -> catalog_pb2.Dataset:
    return catalog_pb2.Dataset(
        id=info.id,
        title=info.title,
        description=info.description,
        person_key=info.person_key,
        population=info.population,
        row_count=info.row_count,
        purposes=list(info.purposes),
        policy_version=info.policy_version,
        columns=[
            catalog_pb2.Column(
                name=c.name,
                type=c.type,
                role=str(c.role),
                description=c.description,
                bins=list(c.bins),
                values=[value_to_pb(v) for v in c.values],
                has_bounds=c.bounds is not None,
                lower_bound=c.bounds[0] if c.bounds else 0.0,
                upper_bound=c.bounds[1] if c.bounds else 0.0,
                aggregates=[str(a) for a in c.aggregates],
            )
            for c in info.columns
        ],
    )


def dataset_from_pb(pb: catalog_pb2.Dataset) -> DatasetInfo:
    return DatasetInfo(
        id=pb.id,
        title=pb.title,
        description=pb.description,
        person_key=pb.person_key,
        population=pb.population,
        row_count=pb.row_count,
        purposes=tuple(pb.purposes),
        policy_version=pb.policy_version,
        columns=tuple(
            ColumnInfo(
                name=c.name,
                type=c.type,
                role=ColumnRole(c.role),
                description=c.description,
                bins=tuple(c.bins),
                values=tuple(v for v in (value_from_pb(x) for x in c.values) if v is not None),
                bounds=(c.lower_bound, c.upper_bound) if c.has_bounds else None,
                aggregates=tuple(AggFunc(a) for a in c.aggregates),
            )
            for c in pb.columns
        ),
    )


# ---- mock rows ----------------------------------------------------------------------------
def mock_request_to_pb(req: MockRequest) -> catalog_pb2.MockRowsRequest:
    if isinstance(req.n, bool) or not isinstance(req.n, int) or not 0 <= req.n < 2**63:
        raise InvalidArgument("the number of mock rows must be a non-negative integer")
    if isinstance(req.matching, bool) or not isinstance(req.matching, int | float):
        raise InvalidArgument("matching must be a share between 0 and 1")
    if req.seed is not None and (isinstance(req.seed, bool) or not isinstance(req.seed, int)):
        raise InvalidArgument("the mock seed must be an integer in [0, 2**63)")
    pb = catalog_pb2.MockRowsRequest(dataset=req.dataset, n=req.n, matching=req.matching)
    if req.seed is not None:
        if not 0 <= req.seed < 2**63:
            raise InvalidArgument("the mock seed must be an integer in [0, 2**63)")
        pb.seed = req.seed
    if req.job is not None:
        pb.job.CopyFrom(spec_to_pb(req.job))
    return pb


def mock_request_from_pb(pb: catalog_pb2.MockRowsRequest) -> MockRequest:
    """Convert; the job is validated like a submitted one, ``n`` and the seed by the generator."""
    return MockRequest(
        dataset=pb.dataset,
        n=pb.n,
        seed=pb.seed if pb.HasField("seed") else None,
        job=spec_from_pb(pb.job) if pb.HasField("job") else None,
        matching=pb.matching if pb.HasField("matching") else 1.0,
    )


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def mock_to_chunks(
    table: pa.Table, seed: int, max_bytes: int = MOCK_CHUNK_BYTES
) -> list[catalog_pb2.MockRowsChunk]:
    """The table as self-contained Arrow IPC streams of about ``max_bytes`` each (at least one,
    so an empty table still carries its schema)."""
    n = table.num_rows
    per_chunk = max(1, n * max_bytes // max(1, table.nbytes)) if n else 1
    pieces: list[bytes] = []
    stack = [table.slice(start, per_chunk) for start in range(0, n, per_chunk)][::-1]
    while stack:
        piece = stack.pop()
        data = _ipc(piece)
        if len(data) > max_bytes and piece.num_rows > 1:
            half = piece.num_rows // 2
            stack += [piece.slice(half), piece.slice(0, half)]
            continue
        pieces.append(data)
    if not pieces:
        pieces.append(_ipc(table))
    return [catalog_pb2.MockRowsChunk(arrow_ipc=p, seed=seed, rows=n) for p in pieces]


def mock_from_chunks(chunks: Iterable[catalog_pb2.MockRowsChunk]) -> tuple[pa.Table, int]:
    """Reassemble the table (and the seed used) from its chunks."""
    tables: list[pa.Table] = []
    seed = rows = 0
    for chunk in chunks:
        try:
            tables.append(pa.ipc.open_stream(chunk.arrow_ipc).read_all())
        except (pa.ArrowInvalid, OSError):
            raise SandboxError("the server sent malformed mock rows") from None
        seed, rows = chunk.seed, chunk.rows
    if not tables:
        raise SandboxError("the server sent no mock rows")
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid:
        raise SandboxError("the server sent mock rows with differing schemas") from None
    if table.num_rows != rows:
        raise SandboxError("the server sent an incomplete set of mock rows")
    return table, seed


# ---- projects -----------------------------------------------------------------------------
def quota_to_pb(q: QuotaLimits) -> projects_pb2.QuotaLimits:
    pb = projects_pb2.QuotaLimits()
    for name in ("jobs_per_day", "jobs_total", "rows_per_day", "rows_total"):
        value = getattr(q, name)
        if value is not None:
            setattr(pb, name, value)
    return pb


def quota_from_pb(pb: projects_pb2.QuotaLimits) -> QuotaLimits:
    def opt(name: str) -> int | None:
        return int(getattr(pb, name)) if pb.HasField(name) else None

    return QuotaLimits(
        jobs_per_day=opt("jobs_per_day"),
        jobs_total=opt("jobs_total"),
        rows_per_day=opt("rows_per_day"),
        rows_total=opt("rows_total"),
    )


def _date(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be an ISO date (YYYY-MM-DD)") from None


def grant_to_pb(g: Grant) -> projects_pb2.Grant:
    return projects_pb2.Grant(
        dataset=g.dataset, purpose=g.purpose, expires=g.expires.isoformat() if g.expires else ""
    )


def grant_from_pb(pb: projects_pb2.Grant) -> Grant:
    expires = _date(pb.expires, "a grant's expiry") if pb.expires else None
    return Grant(pb.dataset, pb.purpose, expires)


def project_to_pb(p: Project) -> projects_pb2.Project:
    return projects_pb2.Project(
        id=p.id,
        title=p.title,
        members=list(p.members),
        grants=[grant_to_pb(Grant(d, u, p.grant_expires(d, u))) for d, u in p.grants],
        expires=p.expires.isoformat(),
        quota=quota_to_pb(p.quota),
        revoked=p.revoked,
    )


def project_from_pb(pb: projects_pb2.Project) -> Project:
    expires = _date(pb.expires, "project expiry")
    grants = [grant_from_pb(g) for g in pb.grants]
    return Project(
        id=pb.id,
        title=pb.title,
        members=tuple(pb.members),
        grants=tuple((g.dataset, g.purpose) for g in grants),
        expires=expires,
        quota=quota_from_pb(pb.quota),
        grant_expiry=tuple((g.dataset, g.purpose, g.expires) for g in grants if g.expires),
        revoked=pb.revoked,
    )


def update_to_pb(project: str, u: ProjectUpdate) -> projects_pb2.UpdateProjectRequest:
    pb = projects_pb2.UpdateProjectRequest(
        project=project,
        add_members=list(u.add_members),
        remove_members=list(u.remove_members),
        add_grants=[grant_to_pb(g) for g in u.add_grants],
        remove_grants=[projects_pb2.Grant(dataset=d, purpose=p) for d, p in u.remove_grants],
    )
    if u.title is not None:
        pb.title = u.title
    if u.expires is not None:
        pb.expires = u.expires.isoformat()
    if u.quota is not None:
        pb.quota.CopyFrom(quota_to_pb(u.quota))
    return pb


def update_from_pb(pb: projects_pb2.UpdateProjectRequest) -> tuple[str, ProjectUpdate]:
    return pb.project, ProjectUpdate(
        title=pb.title if pb.HasField("title") else None,
        add_members=tuple(pb.add_members),
        remove_members=tuple(pb.remove_members),
        add_grants=tuple(grant_from_pb(g) for g in pb.add_grants),
        remove_grants=tuple((g.dataset, g.purpose) for g in pb.remove_grants),
        expires=_date(pb.expires, "project expiry") if pb.HasField("expires") else None,
        quota=quota_from_pb(pb.quota) if pb.HasField("quota") else None,
    )


_EXCEPTION_STATES = {
    ExceptionState.PENDING: projects_pb2.EXCEPTION_STATE_PENDING,
    ExceptionState.GRANTED: projects_pb2.EXCEPTION_STATE_GRANTED,
    ExceptionState.REJECTED: projects_pb2.EXCEPTION_STATE_REJECTED,
    ExceptionState.USED: projects_pb2.EXCEPTION_STATE_USED,
}
_EXCEPTION_STATES_BACK = {v: k for k, v in _EXCEPTION_STATES.items()}


def exception_state_to_pb(state: ExceptionState | None) -> projects_pb2.ExceptionState:
    return projects_pb2.EXCEPTION_STATE_UNSPECIFIED if state is None else _EXCEPTION_STATES[state]


def exception_state_from_pb(pb: projects_pb2.ExceptionState) -> ExceptionState | None:
    """None for UNSPECIFIED (any state, in a filter)."""
    if pb == projects_pb2.EXCEPTION_STATE_UNSPECIFIED:
        return None
    try:
        return _EXCEPTION_STATES_BACK[pb]
    except KeyError:
        raise InvalidArgument(f"unknown exception state {int(pb)}") from None


def exception_to_pb(r: ExceptionRequest) -> projects_pb2.ExceptionRequest:
    return projects_pb2.ExceptionRequest(
        id=r.id,
        job_id=r.job_id,
        principal=r.principal,
        project=r.project,
        dataset=r.dataset,
        purpose=r.purpose,
        spec_digest=r.spec_digest,
        rule_ids=list(r.rule_ids),
        justification=r.justification,
        state=_EXCEPTION_STATES[r.state],
        requested_at_us=_us(r.requested_at),
        decided_by=r.decided_by,
        decision_reason=r.decision_reason,
        decided_at_us=_us(r.decided_at),
        used_by_job=r.used_by_job,
    )


def exception_from_pb(pb: projects_pb2.ExceptionRequest) -> ExceptionRequest:
    state = exception_state_from_pb(pb.state)
    requested = _from_us(pb.requested_at_us)
    if state is None or requested is None:
        raise SandboxError("the server sent an exception request without a state or time")
    return ExceptionRequest(
        id=pb.id,
        job_id=pb.job_id,
        principal=pb.principal,
        project=pb.project,
        dataset=pb.dataset,
        purpose=pb.purpose,
        spec_digest=pb.spec_digest,
        rule_ids=tuple(pb.rule_ids),
        justification=pb.justification,
        state=state,
        requested_at=requested,
        decided_by=pb.decided_by,
        decision_reason=pb.decision_reason,
        decided_at=_from_us(pb.decided_at_us),
        used_by_job=pb.used_by_job,
    )


def usage_to_pb(u: QuotaUsage) -> projects_pb2.QuotaUsage:
    return projects_pb2.QuotaUsage(
        project=u.project,
        limits=quota_to_pb(u.limits),
        jobs_today=u.jobs_today,
        jobs_total=u.jobs_total,
        rows_today=u.rows_today,
        rows_total=u.rows_total,
    )


def usage_from_pb(pb: projects_pb2.QuotaUsage) -> QuotaUsage:
    return QuotaUsage(
        project=pb.project,
        limits=quota_from_pb(pb.limits),
        jobs_today=pb.jobs_today,
        jobs_total=pb.jobs_total,
        rows_today=pb.rows_today,
        rows_total=pb.rows_total,
    )
