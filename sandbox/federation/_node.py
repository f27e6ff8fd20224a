"""Federation, node side: run a coordinator's job under this node's policy and return its
per-cell partial aggregates encrypted under the job's Paillier key (transport-free).

What a node computes for a federated job (the protocol between coordinator and node):

* Cells: the coordinator fixes the list of cells (group-key tuples) before fan-out, because
  the packing layout is positional. The node maps every group of its data onto that list; a
  group that is not in it (a missing key, a value outside the declared key set or bins)
  makes the node refuse the job (``federation.cells``): rows are never dropped silently.
  Cells the node has no rows in are sent as zeros.
* Fields: the encoding's fields name what each slot holds: ``persons`` is the cell's
  distinct persons; any other field is the alias of a ``count`` (rows) or ``sum`` aggregate
  of the job spec the node runs. A ``mean`` in that spec is not a field (a mean does not add
  up): it is there only to check that the sum of its measure covers every row of the cell
  (no missing values), so that the coordinator's mean, combined sum over combined rows, is
  the mean of the union's rows; a cell with missing values refuses the job
  (``federation.mean_missing``). A measure whose non-missing values are all 0 cannot be
  checked that way; its sum is 0 either way.
* Query set: with ``query_set``, two more cells follow the cell list: the distinct persons
  matching the filters, then those of the whole dataset (only their ``persons`` slot is set),
  for the coordinator's query-set check on the combined counts.
* Bounds: each value must lie within its field's bounds in the job encoding; a value outside
  them refuses the job (``ValueOutOfBound``), it is never clipped.

The job is vetted, charged and logged by ``JobPipeline.run_partial`` exactly like a normal
job (policy, purpose, membership, limits, quota; DP datasets are refused). Only principals
the node's federation config names as coordinators may ask at all: a partial encrypted under
a key of the caller's choosing would otherwise be readable by that caller. The node's log
gets the pipeline's ``job.partial`` entry (digest: SHA-256 of the concatenated ciphertexts,
see :func:`partial_digest`) and a ``federation.partial`` entry linking it to the federated job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sandbox._errors import InvalidArgument, InvalidJobSpec, PermissionDenied, PolicyDenied
from sandbox._model import AggFunc, JobSpec, Key, Principal
from sandbox.audit import AuditLog
from sandbox.engine import RawTable
from sandbox.federation._encoding import JobEncoding, Number, layout
from sandbox.federation._paillier import (
    FastEncryptor,
    JobPublicKey,
    ciphertext_to_bytes,
    encrypt_partials,
)

if TYPE_CHECKING:
    from sandbox._app import Sandbox

PERSONS_FIELD = "persons"
MAX_CELLS = 100_000
"""Most cells a node accepts in one request, whatever its policy's ``max_groups``."""
RULE_CELLS = "federation.cells"
RULE_MEAN_MISSING = "federation.mean_missing"
RULE_COORDINATOR = "federation.coordinator"
_ADDITIVE = (AggFunc.COUNT, AggFunc.SUM)
_NODE_AGGREGATES = (AggFunc.COUNT, AggFunc.SUM, AggFunc.MEAN)


@dataclass(frozen=True)
class PartialsRequest:
    """What a coordinator asks of one node for one federated job."""

    federated_job_id: str
    party: str
    spec: JobSpec
    public_key: JobPublicKey
    encoding: JobEncoding
    cells: tuple[tuple[Key, ...], ...]
    query_set: bool = False
    on_behalf_of: str = ""


@dataclass(frozen=True)
class PartialsReply:
    """A node's answer: fixed-length ciphertext bytes and the identities they were made under."""

    party: str
    key_fingerprint: bytes
    encoding_fingerprint: bytes
    ciphertexts: tuple[bytes, ...]
    digest: str
    node_job_id: str = ""
    policy_version: str = ""
    data_version: str = ""


def partial_digest(ciphertexts: Sequence[bytes]) -> str:
    """Hex SHA-256 of the concatenated fixed-length ciphertexts (node log and coordinator log)."""
    h = hashlib.sha256()
    for c in ciphertexts:
        h.update(c)
    return h.hexdigest()


def data_version_of(file_digest: str) -> str:
    """A node's registered data version as it leaves the node (a hash of the file digest)."""
    return hashlib.sha256(b"sandbox.federation.data.v1\x00" + file_digest.encode()).hexdigest()


def check_request(req: PartialsRequest, max_groups: int | None = None) -> None:
    """Shape checks before anything is vetted or charged.

    Raises:
        InvalidArgument: the encoding is for another job, or its cell count does not match.
        InvalidJobSpec: margins, an aggregate a node does not compute for federation, an
            encoding field that is not ``persons`` or an additive aggregate, a mean without the
            sum and row count of its measure, repeated cells or cells of the wrong width.
        PolicyDenied: more cells than the node allows (``limits.max_groups``).
    """
    spec, enc = req.spec, req.encoding
    if not req.party or not req.federated_job_id:
        raise InvalidArgument("a partials request names its federated job and party")
    if enc.job_id != req.federated_job_id:
        raise InvalidArgument("the job encoding belongs to another federated job")
    if enc.cells != len(req.cells) + (2 if req.query_set else 0):
        raise InvalidArgument("the job encoding's cell count does not match the cells sent")
    if spec.margins:
        raise InvalidJobSpec("federated jobs take no margins")
    limit = MAX_CELLS if max_groups is None else min(MAX_CELLS, max_groups)
    if len(req.cells) > limit:
        raise PolicyDenied(f"the job has more than {limit} cells", rule_ids=("limits.max_groups",))
    width = len(spec.group_by)
    if any(len(k) != width for k in req.cells):
        raise InvalidJobSpec("every cell needs one key per group-by column")
    if len(set(req.cells)) != len(req.cells):
        raise InvalidJobSpec("the cells of a federated job must be distinct")
    by_name = {a.name: a for a in spec.aggregates}
    for agg in spec.aggregates:
        if agg.function not in _NODE_AGGREGATES:
            raise InvalidJobSpec(f"a node computes no {agg.function} for a federated job")
    names = [f.name for f in enc.fields]
    for name in names:
        if name != PERSONS_FIELD and (
            name not in by_name or by_name[name].function not in _ADDITIVE
        ):
            raise InvalidJobSpec(f"encoding field '{name}' is not an additive aggregate")
    counted = any(by_name[n].function == AggFunc.COUNT for n in names if n in by_name)
    for agg in spec.aggregates:
        if agg.function == AggFunc.MEAN and not (
            counted and any(_sum_of(by_name.get(n), agg.column) for n in names)
        ):
            raise InvalidJobSpec(
                f"a federated mean of '{agg.column}' needs its sum and the row count as fields"
            )


def _sum_of(agg: object, column: str) -> bool:
    return getattr(agg, "function", None) == AggFunc.SUM and getattr(agg, "column", "") == column


def cell_values(
    raw: RawTable,
    req: PartialsRequest,
    dataset_persons: int,
) -> list[list[Number]]:
    """One row of field values per cell of the job (zeros where the node has no rows).

    Raises:
        PolicyDenied: a group of the data is not a cell of the job (``federation.cells``), or
            a mean's measure has missing values in some cell (``federation.mean_missing``).
    """
    spec, fields = req.spec, req.encoding.fields
    index = {a.name: j for j, a in enumerate(spec.aggregates)}
    row_j = next((j for j, a in enumerate(spec.aggregates) if a.function == AggFunc.COUNT), -1)
    means = [
        (j, next(i for i, a in enumerate(spec.aggregates) if _sum_of(a, agg.column)))
        for j, agg in enumerate(spec.aggregates)
        if agg.function == AggFunc.MEAN
    ]
    position = {keys: i for i, keys in enumerate(req.cells)}
    out: list[list[Number]] = [[0] * len(fields) for _ in range(req.encoding.cells)]
    for cell in raw.cells:
        i = position.get(cell.keys)
        if i is None:
            raise PolicyDenied(
                "the data holds a group that is not a cell of the federated job (a missing "
                "key, or a value outside the declared key set or bins): add a filter",
                rule_ids=(RULE_CELLS,),
            )
        rows = (cell.values[row_j] or 0) if row_j >= 0 else 0
        for mean_j, sum_j in means:
            _check_complete(cell.values[mean_j], cell.values[sum_j], rows, spec, mean_j)
        for f, field in enumerate(fields):
            if field.name == PERSONS_FIELD:
                out[i][f] = cell.persons
            else:
                value = cell.values[index[field.name]]
                out[i][f] = 0 if value is None else value  # a sum over no value is 0
    if req.query_set:
        p = next(f for f, field in enumerate(fields) if field.name == PERSONS_FIELD)
        matched = raw.query_set_persons
        out[len(req.cells)][p] = dataset_persons if matched is None else matched
        out[len(req.cells) + 1][p] = dataset_persons
    return out


def _check_complete(
    mean: float | int | None, total: float | int | None, rows: float | int, spec: JobSpec, j: int
) -> None:
    """Refuse a cell whose mean's measure is missing in some rows: there the mean's count of
    values (sum / mean) is not the cell's row count."""
    if not rows:
        return
    column = spec.aggregates[j].column
    if mean is None:
        complete = False
    elif mean == 0:
        complete = True  # nothing to check: the sum is 0 however many values are missing
    else:
        complete = abs(float(total or 0) / float(mean) - float(rows)) < 0.5
    if not complete:
        raise PolicyDenied(
            f"measure '{column}' has missing values: a federated mean needs every row of a "
            "cell to hold a value (add a filter, or ask for the sum and count)",
            rule_ids=(RULE_MEAN_MISSING,),
        )


class FederationNode:
    """The node's side of a federation, for the app it serves (see the module docstring)."""

    def __init__(self, app: Sandbox, coordinators: Sequence[str]) -> None:
        self.app = app
        self.coordinators = frozenset(coordinators)
        self._audit = AuditLog(app.db)

    def authorize(self, principal: Principal) -> None:
        """Refuse (and log) anyone but the coordinators this node's federation config names."""
        if principal.name in self.coordinators:
            return
        refusal = PermissionDenied(
            f"'{principal.name}' is not a federation coordinator of this node",
            rule_ids=(RULE_COORDINATOR,),
        )
        with self.app.db.write() as conn:
            self._audit.append(
                conn,
                "federation.denied",
                actor=principal.name,
                role=str(principal.role),
                decision="deny",
                reason=refusal.reason,
                rule_ids=list(refusal.rule_ids),
                message=refusal.message,
            )
        raise refusal

    def compute_partials(self, principal: Principal, req: PartialsRequest) -> PartialsReply:
        """Vet, run, encrypt and log one node's part of a federated job.

        Raises:
            PermissionDenied: the caller is not a coordinator this node serves.
            SandboxError: anything the job pipeline refuses, and the checks of
                :func:`check_request` and :func:`cell_values`.
        """
        self.authorize(principal)
        check_request(req)  # the policy's max_groups only once the job is vetted (below)
        record = self.app.catalogue.get(req.spec.dataset)
        dataset_persons = record.persons if record is not None else 0
        pub, enc = req.public_key, req.encoding

        def publish(raw: RawTable) -> tuple[tuple[bytes, ...], str]:
            # Vetted: the dataset is visible to the caller, so its limits may be named.
            policy = self.app.policies[req.spec.dataset]
            check_request(req, policy.limits.max_groups)
            values = cell_values(raw, req, dataset_persons)
            encryptor = FastEncryptor(pub, expected=len(layout(enc, pub.capacity)))
            partial = encrypt_partials(values, enc, pub, party=req.party, encryptor=encryptor)
            cts = tuple(ciphertext_to_bytes(c, pub) for c in partial.ciphertexts)
            return cts, partial_digest(cts)

        info, cts = self.app.jobs.run_partial(
            principal, req.spec, publish, request_id=f"federation:{req.federated_job_id}"
        )
        digest = partial_digest(cts)
        with self.app.db.write() as conn:
            self._audit.append(
                conn,
                "federation.partial",
                actor=principal.name,
                role=str(principal.role),
                federated_job_id=req.federated_job_id,
                party=req.party,
                on_behalf_of=req.on_behalf_of,
                job_id=info.job_id,
                dataset=req.spec.dataset,
                key_fingerprint=pub.fingerprint.hex(),
                encoding_fingerprint=enc.fingerprint.hex(),
                ciphertexts=len(cts),
                result_digest=digest,
            )
        return PartialsReply(
            party=req.party,
            key_fingerprint=pub.fingerprint,
            encoding_fingerprint=enc.fingerprint,
            ciphertexts=cts,
            digest=digest,
            node_job_id=info.job_id,
            policy_version=info.policy_version,
            data_version=data_version_of(record.file_digest) if record is not None else "",
        )
