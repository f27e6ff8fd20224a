"""Federation, coordinator side (transport-free): vet a researcher's federated job under the
coordinator's policy, fan it out to the nodes, check and add their encrypted partials, decrypt
only the combined totals, apply disclosure control to the combined table, log, release.

Design decisions (see also ``sandbox.federation._node`` for the node's part):

* Cells are fixed before fan-out, because the packing layout is positional: the product of the
  group-by columns' public key sets in the coordinator's policy, i.e. their declared ``values``
  or their ``bins`` (labels ``[lo, hi)``), or the single total cell without group-by. Columns
  without a declared key set cannot be grouped by in a federated job (``federation.group_by``):
  their keys would come from the data. Nodes refuse a job whose data holds a group outside the
  list (a missing key, or a value outside the key set or bins) instead of dropping its rows.
* Aggregates: ``count`` (rows), ``count_distinct`` (persons), ``sum`` and ``mean`` of a
  measure with declared bounds; ``mean`` is the combined sum over the combined row count,
  computed after decryption (nodes check that the measure has no missing values in any cell).
  Any other aggregate, margins, and datasets in DP or cell-key mode are refused: none of them
  is a sum of per-node parts.
* Bounds: every field of the job encoding bounds one node's value in one cell. Counts lie in
  ``[0, R]`` and a sum of a measure with policy bounds ``[lo, hi]`` in ``[min(0, R*lo),
  max(0, R*hi)]`` (scaled by ``10**decimals``), where ``R = max_rows_per_node`` of the
  federated dataset's config. Each node clamps its measure to its own policy's bounds; a node
  value outside the encoding's bounds refuses the job (never clipped).
* Persons: each node counts the distinct persons of each cell in its own data. With
  ``persons = "disjoint"`` (no person is in two nodes' data, e.g. regional registers) the
  combined count is exact and is what thresholds, the query-set check, the differencing guard
  and ``count_distinct`` use. With ``persons = "overlapping"`` (the default: the same person
  may be in several nodes' data) the sum over-counts, so thresholds use the lower bound
  ``ceil(sum / k)`` over ``k`` contributing nodes (the union holds at least the largest
  node's persons, which is at least the average), the query-set check uses the same bound on
  each side, and ``count_distinct`` is refused (``federation.persons``).
* Disclosure control runs on the combined table with the coordinator's policy, through the
  same functions the job pipeline uses for a rule-based job: ``check_query_set``, ``protect``
  (thresholds on combined persons, rounding, suppression; every declared key is a row) and the
  differencing guard against the coordinator's own release register (data version: the
  contributing nodes and their data versions, so a job that proceeds without a node is
  compared with earlier releases of the same region). ``disclose()`` itself is not called: it
  needs a ``DatasetRecord`` and a ``Plan`` the coordinator does not have, and its other branches
  (DP, cell-key) are refused for federated jobs. Dominance rules cannot be checked without
  per-person contributions, which never leave a node: if the policy has them, sums and means
  are suppressed (fail closed, ``protect``'s behaviour without contributions).
* Nodes: called concurrently, each with a deadline. A node that is down, overloaded or too
  slow fails the job under ``on_node_failure = "fail"``; under ``"proceed"`` the job goes on
  if at least ``min_nodes`` answered, and the result and the log name the missing nodes. A
  node that refuses the job (its policy, quota, ...) or sends a malformed answer (wrong key or
  encoding fingerprint, wrong count or length, a ciphertext that is not a unit below n^2, a
  digest that does not match) always fails it: a refusal is a decision, not an outage, and a
  malformed answer is a fault. Nothing is decrypted then, and nothing partial is released.
* Decryption happens only in :func:`sandbox.federation.decrypt_combined`, of the output of
  :func:`sandbox.federation.combine` over at least ``min_nodes`` distinct configured nodes
  (parties are the coordinator's names for the nodes it called, never names a node claims).
  The job's secret key lives only in this call's frame.
* Log: ``federation.accepted`` (before fan-out, with the key and encoding fingerprints),
  then ``federation.released`` (with each node's party name, job id and the SHA-256 of its
  ciphertext bytes, the same digest as the node's own ``job.partial`` entry; never values) or
  ``federation.failed``; ``federation.denied`` for refusals before fan-out. The release entry,
  the release register and the quota charge are written in one transaction before the table
  is returned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import logging
import math
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from sandbox._config import FederatedDatasetConfig, FederationConfig, FederationNodeConfig
from sandbox._errors import (
    ConfigError,
    EncodingMismatch,
    InvalidCiphertext,
    InvalidJobSpec,
    JobCancelled,
    JobFailed,
    JobKeyMismatch,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    QuotaExceeded,
    ResourceExhausted,
    SandboxError,
    Timeout,
    TooFewParties,
    Unavailable,
)
from sandbox._model import (
    AggFunc,
    Aggregate,
    CellStatus,
    JobInfo,
    JobSpec,
    JobState,
    Key,
    Principal,
    Project,
    ResultTable,
    Role,
)
from sandbox.audit import AuditLog
from sandbox.disclosure import (
    ReleasedCells,
    Settings,
    check_query_set,
    differencing_guard,
    protect,
)
from sandbox.engine import KeySpace, RawCell, RawTable, bin_labels
from sandbox.federation._encoding import FieldSpec, JobEncoding, layout
from sandbox.federation._node import PERSONS_FIELD, PartialsReply, PartialsRequest, partial_digest
from sandbox.federation._paillier import (
    EncryptedPartial,
    JobPublicKey,
    ciphertext_from_bytes,
    ciphertext_to_bytes,
    combine,
    decrypt_combined,
    generate_job_keys,
)
from sandbox.policy import Policy, canonicalize, decide, load_policy
from sandbox.state import Ledger, ReleaseRegister

if TYPE_CHECKING:
    from sandbox._app import Sandbox

log = logging.getLogger("sandbox.federation")

NodeCall = Callable[[FederationNodeConfig, PartialsRequest, float], PartialsReply]
"""Ask one node for its partials within a timeout (seconds). Raises the node's refusal as its
``SandboxError`` class, and ``Unavailable`` / ``Timeout`` when the node cannot be reached."""

ROWS_FIELD = "rows"
RULE_AGGREGATE = "federation.aggregate"
RULE_GROUP_BY = "federation.group_by"
RULE_PERSONS = "federation.persons"
RULE_MODE = "federation.mode"
RULE_NODE_FAILED = "federation.node_failed"
RULE_NODE_REFUSED = "federation.node_refused"
RULE_TOO_FEW = "federation.min_nodes"
_FEDERATED = (AggFunc.COUNT, AggFunc.COUNT_DISTINCT, AggFunc.SUM, AggFunc.MEAN)
_OUTAGES: tuple[type[SandboxError], ...] = (
    Unavailable,
    Timeout,
    ResourceExhausted,
    JobFailed,
    JobCancelled,
)
"""Node errors that are outages (subject to ``on_node_failure``), not decisions; so is a bare
``SandboxError`` (an internal error, or a status without a sandbox reason)."""


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class FederatedPlan:
    """A vetted federated job: what is sent to every node and how the answer is rebuilt."""

    spec: JobSpec
    """The researcher's canonical spec (coordinator dataset, project and purpose)."""
    dataset: FederatedDatasetConfig
    policy: Policy
    project: Project
    key_spaces: tuple[KeySpace, ...]
    cells: tuple[tuple[Key, ...], ...]
    fields: tuple[FieldSpec, ...]
    node_aggregates: tuple[Aggregate, ...]
    sum_fields: dict[str, str]
    """Measure column → the field holding its sum."""
    query_set: bool


@dataclass(frozen=True)
class NodeOutcome:
    """What became of one node's call (for the log and the result's metadata)."""

    party: str
    reply: PartialsReply | None = None
    error: SandboxError | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class FederatedRelease:
    """A released federated job: its record, the released table, and who contributed."""

    info: JobInfo
    table: ResultTable
    parties: tuple[str, ...]
    missing: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: vet, keygen, nodes (fan-out wall time), slowest_node, combine, decrypt,
    disclosure (query-set check, thresholds, rounding), differencing_and_log (the guard, the
    register and the release's transaction), total."""
    release_seq: int = -1
    """Index of the ``federation.released`` log entry (its receipt proves the release)."""


class Coordinator:
    """Runs federated jobs for the researchers of ``app`` over the nodes of ``config``."""

    def __init__(
        self,
        app: Sandbox,
        config: FederationConfig,
        call: NodeCall,
        *,
        today: Callable[[], dt.date] = _today,
    ) -> None:
        self.app = app
        self.config = config
        self._call = call
        self._today = today
        self._audit = AuditLog(app.db)
        self._ledger = Ledger()
        self._releases = ReleaseRegister(ReleasedCells)
        self.policies: dict[str, Policy] = {}
        for ds in config.datasets:
            policy = load_policy(ds.policy)
            if policy.dataset != ds.id:
                raise ConfigError(
                    f"federated dataset '{ds.id}': its policy file is for '{policy.dataset}'"
                )
            self.policies[ds.id] = policy
        self.last_timings: dict[str, float] = {}

    # ---- vetting ------------------------------------------------------------------------
    def _visible(
        self, principal: Principal, spec: JobSpec
    ) -> tuple[FederatedDatasetConfig, Policy]:
        """The federated dataset if the caller may see it, else exactly the not-found error."""
        ds = self.config.dataset(spec.dataset)
        if ds is None or ds.id not in self.policies:
            raise NotFound(f"dataset '{spec.dataset}' not found")
        if principal.role == Role.RESEARCHER:
            projects = self.app.projects.list()
            if not any(
                principal.name in p.members and any(d == ds.id for d, _ in p.grants)
                for p in projects
            ):
                raise NotFound(f"dataset '{spec.dataset}' not found")
        return ds, self.policies[ds.id]

    def vet(self, principal: Principal, spec: JobSpec) -> FederatedPlan:
        """Every check before fan-out; reads no data and writes nothing.

        Raises:
            NotFound: unknown or unseen federated dataset.
            PermissionDenied / PolicyDenied / InvalidJobSpec: as for a normal job, plus the
                federation rules (aggregates, group-by key sets, modes, persons).
        """
        if principal.role != Role.RESEARCHER:
            raise PermissionDenied(
                "only researchers run federated jobs", rule_ids=("principal.role",)
            )
        ds, policy = self._visible(principal, spec)
        project = self.app.projects.get(spec.project)
        decision = decide(policy, spec, principal, project, self._today())
        if not decision.allowed:
            raise PolicyDenied(
                "; ".join(r.message for r in decision.reasons), rule_ids=decision.rule_ids
            )
        assert project is not None
        spec = canonicalize(spec, policy)
        noise = policy.disclosure.noise
        if noise.enabled or noise.cell_key:
            raise PolicyDenied(
                f"dataset '{ds.id}' is released with noise: it takes no federated jobs",
                rule_ids=(RULE_MODE,),
            )
        names = [a.name for a in spec.aggregates]
        if not names or len(set(names)) != len(names) or set(names) & set(spec.group_by):
            raise InvalidJobSpec("output column names must be unique (set an alias)")
        if spec.margins:
            raise InvalidJobSpec("federated jobs take no margins", rule_ids=(RULE_AGGREGATE,))
        for agg in spec.aggregates:
            if agg.function not in _FEDERATED:
                raise InvalidJobSpec(
                    f"{agg.function} is not a sum of per-node parts: federated jobs take "
                    "count, count_distinct, sum and mean",
                    rule_ids=(RULE_AGGREGATE,),
                )
            if agg.function == AggFunc.COUNT_DISTINCT and ds.persons != "disjoint":
                raise InvalidJobSpec(
                    f"the nodes of dataset '{ds.id}' may hold the same persons: distinct "
                    "persons do not add up over them",
                    rule_ids=(RULE_PERSONS,),
                )
        key_spaces = tuple(_key_space(policy, column) for column in spec.group_by)
        cells = tuple(itertools.product(*(ks.labels or () for ks in key_spaces)))
        if len(cells) > policy.limits.max_groups:
            raise PolicyDenied(
                f"the result would have more than {policy.limits.max_groups} groups",
                rule_ids=("limits.max_groups",),
            )
        fields, node_aggs, sum_fields = _fields(spec, policy, ds)
        return FederatedPlan(
            spec=spec,
            dataset=ds,
            policy=policy,
            project=project,
            key_spaces=key_spaces,
            cells=cells,
            fields=fields,
            node_aggregates=node_aggs,
            sum_fields=sum_fields,
            query_set=bool(spec.filters),
        )

    # ---- running ------------------------------------------------------------------------
    def run(self, principal: Principal, spec: JobSpec) -> FederatedRelease:
        """Vet, fan out, combine, decrypt the combined totals, protect, log and release.

        Raises:
            SandboxError: a refusal (logged as ``federation.denied``) or a failure (logged as
                ``federation.failed``); nothing is released then.
        """
        started = time.perf_counter()
        job_id = secrets.token_hex(16)
        created = dt.datetime.now(dt.UTC)
        try:
            fplan = self.vet(principal, spec)
            t0 = time.perf_counter()
            public_key, secret_key = generate_job_keys(self.config.key_bits)
            encoding = JobEncoding(
                job_id=job_id,
                fields=fplan.fields,
                cells=len(fplan.cells) + (2 if fplan.query_set else 0),
                max_parties=len(fplan.dataset.nodes),
                min_parties=fplan.dataset.min_nodes,
            )
            layout(encoding, public_key.capacity)  # a slot wider than a plaintext fails here
        except SandboxError as exc:
            exc.job_id = job_id
            self._log_refusal(principal, spec, job_id, exc)
            raise
        timings = {"vet": t0 - started, "keygen": time.perf_counter() - t0}
        spec, policy = fplan.spec, fplan.policy
        base = _entry(principal, spec, job_id)
        self._accept(fplan, base, job_id, public_key, encoding)
        outcomes: list[NodeOutcome] = []
        try:
            t1 = time.perf_counter()
            outcomes = self._fan_out(fplan, job_id, principal, public_key, encoding)
            timings["nodes"] = time.perf_counter() - t1
            timings["slowest_node"] = max((o.seconds for o in outcomes), default=0.0)
            partials, missing = self._accept_replies(fplan, outcomes, public_key, encoding)
            t2 = time.perf_counter()
            combined = combine(partials, public_key, encoding, min_parties=fplan.dataset.min_nodes)
            t3 = time.perf_counter()
            totals = decrypt_combined(combined, secret_key, encoding)
            t4 = time.perf_counter()
            del secret_key
            parties = combined.parties
            raw, total_persons, persons = self._combined_table(fplan, totals.cells, len(parties))
            if raw.query_set_persons is not None:
                check_query_set(raw, total_persons, policy.disclosure.min_persons_per_cell)
            table = protect(raw, spec, fplan.key_spaces, _settings(policy))
            t5 = time.perf_counter()
            timings |= {"combine": t3 - t2, "decrypt": t4 - t3, "disclosure": t5 - t4}
            replies = {o.party: o for o in outcomes if o.party in parties}
            table, release_seq = self._release(
                fplan,
                base,
                job_id,
                table,
                persons,
                replies,
                missing,
                outcomes,
                public_key,
                encoding,
                partial_digest([ciphertext_to_bytes(c, public_key) for c in combined.ciphertexts]),
            )
            timings["differencing_and_log"] = time.perf_counter() - t5
        except SandboxError as exc:
            exc.job_id = job_id
            self._log_failure(base, policy, job_id, outcomes, exc)
            raise
        except Exception as exc:  # never leak internals: record the type only
            failure = JobFailed(f"internal error ({type(exc).__name__})", job_id=job_id)
            self._log_failure(base, policy, job_id, outcomes, failure)
            raise failure from None
        info = JobInfo(
            job_id=job_id,
            request_id="",
            principal=principal.name,
            spec=spec,
            state=JobState.SUCCEEDED,
            created_at=created,
            started_at=created,
            finished_at=dt.datetime.now(dt.UTC),
            policy_version=policy.version_label,
            progress=1.0,
        )
        timings["total"] = time.perf_counter() - started
        self.last_timings = timings
        log.info("federated job %s released: %s", job_id, _fmt(timings))
        return FederatedRelease(info, table, tuple(parties), tuple(missing), timings, release_seq)

    def _accept(
        self,
        fplan: FederatedPlan,
        base: dict[str, Any],
        job_id: str,
        public_key: JobPublicKey,
        encoding: JobEncoding,
    ) -> None:
        """Reserve the coordinator's quota and log the acceptance (or the quota refusal)."""
        ds, policy, project = fplan.dataset, fplan.policy, fplan.project
        with self.app.db.write() as conn:
            shortfalls = self._ledger.shortfalls(conn, project.id, project.quota, 0, self._today())
            if shortfalls:
                refusal = QuotaExceeded(
                    "; ".join(s.message for s in shortfalls),
                    rule_ids=tuple(s.rule_id for s in shortfalls),
                    job_id=job_id,
                )
                self._append_refusal(conn, base, refusal, policy.version_label)
            else:
                refusal = None
                self._ledger.reserve(conn, project.id, job_id, 0, self._today())
                self._audit.append(
                    conn,
                    "federation.accepted",
                    **base,
                    decision="allow",
                    policy_version=policy.version_label,
                    nodes=list(ds.nodes),
                    min_nodes=ds.min_nodes,
                    on_node_failure=ds.on_node_failure,
                    persons=ds.persons,
                    cells=encoding.cells,
                    key_fingerprint=public_key.fingerprint.hex(),
                    encoding_fingerprint=encoding.fingerprint.hex(),
                    reserved={"jobs": 1, "rows": 0},
                )
        if refusal is not None:
            raise refusal

    def _release(
        self,
        fplan: FederatedPlan,
        base: dict[str, Any],
        job_id: str,
        table: ResultTable,
        persons: dict[tuple[Key, ...], int],
        replies: dict[str, NodeOutcome],
        missing: Sequence[str],
        outcomes: Sequence[NodeOutcome],
        public_key: JobPublicKey,
        encoding: JobEncoding,
        combined_digest: str,
    ) -> tuple[ResultTable, int]:
        """Differencing guard, release register, quota charge and the release's log entry, in
        one transaction; the table as released, and the index of that entry."""
        ds, policy = fplan.dataset, fplan.policy
        version = _data_version(replies)
        with self.app.db.write() as conn:
            prior = self._releases.cells(conn, _register_key(ds.id))
            table, entries = differencing_guard(
                table, persons, fplan.spec, policy, prior, data_version=version
            )
            table = dataclasses.replace(
                table,
                settings={
                    **table.settings,
                    "federation_nodes": len(replies),
                    "federation_min_nodes": ds.min_nodes,
                    "federation_nodes_missing": len(missing),
                },
            )
            self._releases.record(
                conn,
                dataset=_register_key(ds.id),
                population=policy.population,
                project=fplan.spec.project,
                job_id=job_id,
                data_version=version,
                cells=entries,
            )
            self._ledger.commit(conn, job_id, 0)
            statuses = [c.status for r in table.rows for c in r.cells]
            seq = self._audit.append(
                conn,
                "federation.released",
                **base,
                policy_version=policy.version_label,
                parties=[_party_entry(replies[p]) for p in sorted(replies)],
                missing=[_missing_entry(o) for o in outcomes if o.party in missing],
                key_fingerprint=public_key.fingerprint.hex(),
                encoding_fingerprint=encoding.fingerprint.hex(),
                combined_digest=combined_digest,
                result_digest=table.digest(),
                cells={s.value: statuses.count(s) for s in CellStatus},
                charged={"jobs": 1, "rows": 0},
            )
        return table, seq

    def _fan_out(
        self,
        fplan: FederatedPlan,
        job_id: str,
        principal: Principal,
        public_key: JobPublicKey,
        encoding: JobEncoding,
    ) -> list[NodeOutcome]:
        """Ask every node at once, each within the timeout; one outcome per node, in order."""
        nodes = [self.config.node(name) for name in fplan.dataset.nodes]
        timeout = self.config.timeout_s

        def ask(node: FederationNodeConfig) -> NodeOutcome:
            request = PartialsRequest(
                federated_job_id=job_id,
                party=node.name,
                spec=JobSpec(
                    dataset=node.dataset_for(fplan.dataset.id),
                    project=node.project,
                    purpose=fplan.spec.purpose,
                    aggregates=fplan.node_aggregates,
                    group_by=fplan.spec.group_by,
                    filters=fplan.spec.filters,
                ),
                public_key=public_key,
                encoding=encoding,
                cells=fplan.cells,
                query_set=fplan.query_set,
                on_behalf_of=principal.name,
            )
            start = time.perf_counter()
            try:
                reply = self._call(node, request, timeout)
            except SandboxError as exc:
                return NodeOutcome(node.name, error=exc, seconds=time.perf_counter() - start)
            except Exception as exc:  # a transport fault: the node is treated as down
                error = Unavailable(f"node call failed ({type(exc).__name__})")
                return NodeOutcome(node.name, error=error, seconds=time.perf_counter() - start)
            return NodeOutcome(node.name, reply=reply, seconds=time.perf_counter() - start)

        pool = ThreadPoolExecutor(len(nodes), thread_name_prefix="sandbox-fed")
        try:
            futures = [pool.submit(ask, node) for node in nodes]
            # Each call has its own deadline; this bound only guards against a call that
            # ignores it (its late answer is then discarded, never combined).
            wait_futures(futures, timeout=timeout + 5.0)
            outcomes = []
            for node, future in zip(nodes, futures, strict=True):
                if future.done():
                    outcomes.append(future.result())
                else:
                    late = Timeout(f"no answer within {timeout:g} s")
                    outcomes.append(NodeOutcome(node.name, error=late, seconds=timeout))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return outcomes

    def _accept_replies(
        self,
        fplan: FederatedPlan,
        outcomes: Sequence[NodeOutcome],
        public_key: JobPublicKey,
        encoding: JobEncoding,
    ) -> tuple[list[EncryptedPartial], list[str]]:
        """Validated partials of the nodes that answered, and the nodes that did not.

        Raises:
            SandboxError: a node refused (its error class, naming it); a node's answer is
                malformed (``InvalidCiphertext``, ``JobKeyMismatch``, ``EncodingMismatch``);
                an outage under ``fail``, or too few nodes under ``proceed``.
        """
        ds = fplan.dataset
        for o in outcomes:
            if o.error is not None and not _outage(o.error):
                err = o.error
                raise type(err)(
                    f"node '{o.party}' refused its part of the job: {err.message}",
                    rule_ids=(*err.rule_ids, RULE_NODE_REFUSED),
                )
        expected = len(layout(encoding, public_key.capacity))
        partials = [
            _partial(o.party, o.reply, public_key, encoding, expected)
            for o in outcomes
            if o.reply is not None
        ]
        down = [o for o in outcomes if o.error is not None]
        if down and ds.on_node_failure == "fail":
            named = ", ".join(f"'{o.party}' ({_why(o.error)})" for o in down)
            raise JobFailed(
                f"node {named} did not answer: the federated job failed and nothing was released",
                rule_ids=(RULE_NODE_FAILED,),
            )
        if len(partials) < ds.min_nodes:
            named = ", ".join(f"'{o.party}' ({_why(o.error)})" for o in down)
            raise TooFewParties(
                f"{len(partials)} of {len(outcomes)} nodes answered (missing: {named}); "
                f"dataset '{ds.id}' needs at least {ds.min_nodes}",
                rule_ids=(RULE_TOO_FEW,),
            )
        return partials, [o.party for o in down]

    def _combined_table(
        self, fplan: FederatedPlan, totals: Sequence[Sequence[int | Fraction]], parties: int
    ) -> tuple[RawTable, int, dict[tuple[Key, ...], int]]:
        """The combined totals as the engine's raw table (what disclosure control takes), the
        dataset's persons for the query-set check, and each cell's persons for the guard."""
        spec = fplan.spec
        names = [f.name for f in fplan.fields]
        p = names.index(PERSONS_FIELD)
        r = names.index(ROWS_FIELD) if ROWS_FIELD in names else -1
        disjoint = fplan.dataset.persons == "disjoint"

        def persons_of(total: int | Fraction) -> int:
            n = int(total)
            return n if disjoint else -(-n // parties)  # ceil(n / parties)

        cells: list[RawCell] = []
        persons: dict[tuple[Key, ...], int] = {}
        for keys, cell in zip(fplan.cells, totals, strict=False):
            rows = int(cell[r]) if r >= 0 else None
            if int(cell[p]) == 0 and not rows:
                continue  # no node has rows here: the cell is absent, as from the engine
            values: list[float | int | None] = []
            for agg in spec.aggregates:
                if agg.function == AggFunc.COUNT:
                    values.append(rows)
                elif agg.function == AggFunc.COUNT_DISTINCT:
                    values.append(int(cell[p]))
                else:
                    total = Fraction(cell[names.index(fplan.sum_fields[agg.column])])
                    if agg.function == AggFunc.SUM:
                        values.append(float(total))
                    else:
                        values.append(float(total / rows) if rows else None)
            n = persons_of(cell[p])
            persons[keys] = n
            cells.append(RawCell(keys=keys, persons=n, values=tuple(values)))
        matched: int | None = None
        dataset_persons = 0
        if fplan.query_set:
            q, everyone = int(totals[-2][p]), int(totals[-1][p])
            matched = persons_of(q)
            dataset_persons = matched + persons_of(everyone - q)
        return RawTable(tuple(cells), matched), dataset_persons, persons

    # ---- log ----------------------------------------------------------------------------
    def _log_refusal(
        self, principal: Principal, spec: JobSpec, job_id: str, exc: SandboxError
    ) -> None:
        policy = self.policies.get(spec.dataset)
        with self.app.db.write() as conn:
            self._append_refusal(
                conn,
                _entry(principal, spec, job_id),
                exc,
                policy.version_label if policy is not None else "",
            )

    def _append_refusal(
        self, conn: sqlite3.Connection, base: dict[str, Any], exc: SandboxError, version: str
    ) -> None:
        self._audit.append(
            conn,
            "federation.denied",
            **base,
            decision="deny",
            reason=exc.reason,
            rule_ids=list(exc.rule_ids),
            message=exc.message,
            policy_version=version,
        )

    def _log_failure(
        self,
        base: dict[str, Any],
        policy: Policy,
        job_id: str,
        outcomes: Sequence[NodeOutcome],
        exc: SandboxError,
    ) -> None:
        """Log a failed job with every answer received (digests only); charge it once any
        node answered (it read data), else give the reservation back."""
        with self.app.db.write() as conn:
            if any(o.reply is not None for o in outcomes):
                self._ledger.commit(conn, job_id, 0)
            else:
                self._ledger.release(conn, job_id)
            self._audit.append(
                conn,
                "federation.failed",
                **base,
                decision="none",
                policy_version=policy.version_label,
                reason=exc.reason,
                rule_ids=list(exc.rule_ids),
                message=exc.message,
                parties=[_party_entry(o) for o in outcomes if o.reply is not None],
                missing=[_missing_entry(o) for o in outcomes if o.error is not None],
            )


# ---- helpers ------------------------------------------------------------------------------
def _key_space(policy: Policy, column: str) -> KeySpace:
    col = policy.column(column)
    if col is not None and col.bins:
        return KeySpace(column, bin_labels(col.bins), binned=True)
    if col is not None and col.values:
        return KeySpace(column, tuple(col.values))
    raise InvalidJobSpec(
        f"column '{column}' has no declared key set (values or bins): federated jobs group "
        "only by columns whose keys are public",
        rule_ids=(RULE_GROUP_BY,),
    )


def _fields(
    spec: JobSpec, policy: Policy, ds: FederatedDatasetConfig
) -> tuple[tuple[FieldSpec, ...], tuple[Aggregate, ...], dict[str, str]]:
    """The job encoding's fields, the aggregates every node runs, and each measure's sum field.

    Fields: ``persons``; ``rows`` if a count or mean needs it; ``sum_<i>`` per measure summed
    or averaged. Nodes also run the mean of each averaged measure, to check it is complete.
    """
    rows_max = ds.max_rows_per_node
    fields = [FieldSpec(PERSONS_FIELD, 0, rows_max)]
    aggs: list[Aggregate] = []
    funcs = {a.function for a in spec.aggregates}
    if funcs & {AggFunc.COUNT, AggFunc.MEAN}:
        fields.append(FieldSpec(ROWS_FIELD, 0, rows_max))
        aggs.append(Aggregate(AggFunc.COUNT, alias=ROWS_FIELD))
    measures = list(dict.fromkeys(a.column for a in spec.aggregates if a.function in _MAGNITUDE))
    sums: dict[str, str] = {}
    scale = 10**ds.decimals
    for i, column in enumerate(measures):
        col = policy.column(column)
        if col is None or col.bounds is None:
            raise InvalidJobSpec(
                f"measure '{column}' has no declared bounds: a federated sum needs them",
                rule_ids=(RULE_AGGREGATE,),
            )
        lo, hi = (Fraction(b) for b in col.bounds)
        name = f"sum_{i}"
        fields.append(
            FieldSpec(
                name,
                min(0, math.floor(lo * rows_max * scale)),
                max(0, math.ceil(hi * rows_max * scale)),
                decimals=ds.decimals,
            )
        )
        aggs.append(Aggregate(AggFunc.SUM, column=column, alias=name))
        sums[column] = name
    for i, column in enumerate(measures):
        if any(a.function == AggFunc.MEAN and a.column == column for a in spec.aggregates):
            aggs.append(Aggregate(AggFunc.MEAN, column=column, alias=f"mean_{i}"))
    return tuple(fields), tuple(aggs), sums


_MAGNITUDE = (AggFunc.SUM, AggFunc.MEAN)


def _partial(
    party: str,
    reply: PartialsReply | None,
    public_key: JobPublicKey,
    encoding: JobEncoding,
    expected: int,
) -> EncryptedPartial:
    """A node's reply, checked: fingerprints, count, length and value of every ciphertext,
    and the digest. The party is the coordinator's name for the node, never the node's claim.
    """
    assert reply is not None
    if reply.party != party:
        raise InvalidCiphertext(f"node '{party}' answered for another party")
    if reply.key_fingerprint != public_key.fingerprint:
        raise JobKeyMismatch(f"node '{party}' encrypted under another job key")
    if reply.encoding_fingerprint != encoding.fingerprint:
        raise EncodingMismatch(f"node '{party}' used another job encoding")
    if len(reply.ciphertexts) != expected:
        raise EncodingMismatch(f"node '{party}' sent a wrong number of ciphertexts")
    values = tuple(
        ciphertext_from_bytes(c, public_key, where=f"party {party!r}, index {i}")
        for i, c in enumerate(reply.ciphertexts)
    )
    if partial_digest(reply.ciphertexts) != reply.digest:
        raise InvalidCiphertext(f"node '{party}': the digest does not match its ciphertexts")
    return EncryptedPartial(party, reply.key_fingerprint, reply.encoding_fingerprint, values)


def _settings(policy: Policy) -> Settings:
    d = policy.disclosure
    return Settings(
        min_persons=d.min_persons_per_cell,
        rounding_base=d.rounding_base,
        max_groups=policy.limits.max_groups,
        zeros_disclosive=d.zeros_disclosive,
        dominance=d.dominance,
        p_percent=d.p_percent,
    )


def _entry(principal: Principal, spec: JobSpec, job_id: str) -> dict[str, Any]:
    return {
        "actor": principal.name,
        "role": str(principal.role),
        "job_id": job_id,
        "dataset": spec.dataset,
        "project": spec.project,
        "purpose": spec.purpose,
        "spec_digest": spec.digest(),
        "spec": spec.canonical(),
    }


def _party_entry(o: NodeOutcome) -> dict[str, Any]:
    reply = o.reply
    assert reply is not None
    return {
        "party": o.party,
        "node_job_id": reply.node_job_id,
        "result_digest": partial_digest(reply.ciphertexts),
        "policy_version": reply.policy_version,
        "data_version": reply.data_version,
    }


def _missing_entry(o: NodeOutcome) -> dict[str, Any]:
    err = o.error
    return {"party": o.party, "reason": err.reason if err is not None else ""}


def _outage(err: SandboxError) -> bool:
    """A node that cannot answer (down, overloaded, too slow, crashed), not a decision."""
    return isinstance(err, _OUTAGES) or type(err) is SandboxError


def _why(err: SandboxError | None) -> str:
    return err.reason.lower() if err is not None else "no answer"


def _data_version(replies: dict[str, NodeOutcome]) -> str:
    """The combined data's identity: the contributing nodes and their data versions."""
    h = hashlib.sha256(b"sandbox.federation.data.v1\x00")
    for party in sorted(replies):
        reply = replies[party].reply
        version = reply.data_version if reply is not None else ""
        h.update(f"{len(party)}:{party}={version};".encode())
    return h.hexdigest()


def _register_key(dataset: str) -> str:
    return f"federation:{dataset}"


def _fmt(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
