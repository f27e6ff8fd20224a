"""Job-fixed encoding of per-cell partial aggregates into packed Paillier plaintexts.

The coordinator fixes a :class:`JobEncoding` per federated job and sends it to every node with
the job's public key. It names the values of each cell (e.g. count, sum, distinct count), each
with a fixed-point scale (``decimals``) and inclusive bounds on the *scaled* per-node value, the
number of cells, and the party limits. Nodes and coordinator derive the same slot layout from it.

Encoding of one value (field ``f`` with bounds ``[L, U]`` and ``d`` decimals)::

    scaled = round_half_even(value * 10**d)      # exact for ints, Fractions and Decimals
    L <= scaled <= U                             # else ValueOutOfBound, never clipped
    slot   = scaled - L                          # in [0, U - L]: the job-fixed bias -L

Packing: the slots of all cells, cell-major (cell 0's fields, then cell 1's, ...), are laid
greedily into plaintexts of ``C = n.bit_length() - 1`` bits, a slot never straddling two
plaintexts; slot ``j`` of a plaintext sits at bit offset ``o_j`` with ``o_{j+1} = o_j + w_j``.
The width of field ``f`` is ``w_f = bitlen(K * (U - L)) + g`` (``K`` = max parties, ``g`` =
guard bits), at least 1.

No-carry bound (why homomorphic addition stays slot-wise exact). Let ``k <= K`` parties each
contribute plaintext ``P_i = sum_j s_ij * 2**o_j`` with ``0 <= s_ij <= U_j - L_j``. Then
``sum_i P_i = sum_j S_j * 2**o_j`` with ``0 <= S_j <= K * (U_j - L_j) < 2**w_j``, so this is
the base-2 positional form of the sum (no slot spills into the next) and
``sum_i P_i < 2**C <= 2**(bitlen(n) - 1) < n``: the reduction mod ``n`` that Paillier addition
performs is the identity. Decryption therefore yields every ``S_j`` exactly, and the total of
field ``f`` in a cell is ``S_j + k * L``. ``combine`` enforces ``k <= K``; ``encode`` enforces
the per-value bounds; ``unpack`` re-checks ``S_j <= k * (U - L)`` and that no bit above the
layout is set, so a contribution that bypassed ``encode`` (a faulty node) is reported instead
of silently corrupting a neighbouring cell, as long as its excess stays within the guard bits.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from sandbox._errors import AggregateCorrupt, InvalidArgument, ValueOutOfBound

Number = int | Fraction | Decimal | float
"""A per-cell value as a node computes it; floats are taken at their exact binary value."""

MAX_DECIMALS = 18
MAX_PARTIES = 1 << 16
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class FieldSpec:
    """One value per cell: its name, scale and inclusive bounds on the scaled per-node value.

    Attributes:
        name: Identifier of the value (``count``, ``sum_income``, ...).
        lower: Smallest allowed ``round(value * 10**decimals)`` from one node for one cell.
        upper: Largest allowed ``round(value * 10**decimals)`` from one node for one cell.
        decimals: Fixed-point exponent: values are scaled by ``10**decimals`` and rounded.
    """

    name: str
    lower: int
    upper: int
    decimals: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidArgument("a field name must be an identifier of at most 64 characters")
        if not (_is_int(self.lower) and _is_int(self.upper) and _is_int(self.decimals)):
            raise InvalidArgument(f"field {self.name!r}: bounds and decimals must be integers")
        if self.lower > self.upper:
            raise InvalidArgument(f"field {self.name!r}: lower bound exceeds upper bound")
        if not 0 <= self.decimals <= MAX_DECIMALS:
            raise InvalidArgument(f"field {self.name!r}: decimals must be in 0..{MAX_DECIMALS}")


@dataclass(frozen=True)
class JobEncoding:
    """Everything about the plaintexts that the coordinator fixes for one federated job.

    Attributes:
        job_id: The federated job; part of the fingerprint, so partials cannot cross jobs.
        fields: The values of every cell, in slot order.
        cells: Number of cells; every node sends all of them (zeros where it has no rows).
        max_parties: Most nodes whose partials may be added (sizes the slots).
        min_parties: Fewest distinct nodes whose partials may be decrypted together (>= 2).
        guard_bits: Extra bits per slot that turn a faulty out-of-bound contribution into a
            detected error at decoding instead of a carry into the next slot.
    """

    job_id: str
    fields: tuple[FieldSpec, ...]
    cells: int
    max_parties: int
    min_parties: int = 2
    guard_bits: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not self.job_id:
            raise InvalidArgument("job_id must be a non-empty string")
        if not isinstance(self.fields, tuple) or not self.fields:
            raise InvalidArgument("fields must be a non-empty tuple of FieldSpec")
        if not all(isinstance(f, FieldSpec) for f in self.fields):
            raise InvalidArgument("fields must be a non-empty tuple of FieldSpec")
        if len({f.name for f in self.fields}) != len(self.fields):
            raise InvalidArgument("field names must be unique")
        ints = (self.cells, self.max_parties, self.min_parties, self.guard_bits)
        if not all(_is_int(x) for x in ints):
            raise InvalidArgument("cells, party limits and guard_bits must be integers")
        if self.cells < 1:
            raise InvalidArgument("cells must be at least 1")
        if not 2 <= self.min_parties <= self.max_parties <= MAX_PARTIES:
            raise InvalidArgument(
                f"party limits must satisfy 2 <= min_parties <= max_parties <= {MAX_PARTIES}"
            )
        if not 0 <= self.guard_bits <= 64:
            raise InvalidArgument("guard_bits must be in 0..64")

    @functools.cached_property
    def widths(self) -> tuple[int, ...]:
        """Slot width in bits of each field: ``bitlen(max_parties * (U - L)) + guard_bits``."""
        return tuple(
            max(1, (self.max_parties * (f.upper - f.lower)).bit_length() + self.guard_bits)
            for f in self.fields
        )

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the form sent to nodes and fingerprinted."""
        doc = {
            "cells": self.cells,
            "fields": [
                {"decimals": f.decimals, "lower": f.lower, "name": f.name, "upper": f.upper}
                for f in self.fields
            ],
            "guard_bits": self.guard_bits,
            "job_id": self.job_id,
            "max_parties": self.max_parties,
            "min_parties": self.min_parties,
            "version": 1,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JobEncoding:
        try:
            doc = json.loads(data)
            if doc.pop("version") != 1:
                raise InvalidArgument("unsupported job encoding version")
            fields = tuple(FieldSpec(**f) for f in doc.pop("fields"))
            enc = cls(fields=fields, **doc)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidArgument("malformed job encoding") from exc
        if enc.to_json() != data:
            raise InvalidArgument("job encoding is not in canonical form")
        return enc

    @functools.cached_property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical JSON; partials carry it so a mismatch is refused."""
        return hashlib.sha256(b"sandbox.federation.encoding.v1\x00" + self.to_json()).digest()


def _scale(value: Number, decimals: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Fraction | Decimal | float):
        raise TypeError
    scale = int(10**decimals)
    if isinstance(value, int):
        return value * scale
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError
    if isinstance(value, Decimal) and not value.is_finite():
        raise TypeError
    return round(Fraction(value) * scale)


def encode_cells(values: Sequence[Sequence[Number]], encoding: JobEncoding) -> list[int]:
    """Slot values ``round(v * 10**d) - L`` of every cell and field, cell-major.

    Raises:
        InvalidArgument: wrong number of cells or of values in a cell, or a non-number.
        ValueOutOfBound: a value outside its field's declared bounds (names cell and field).
    """
    if len(values) != encoding.cells:
        raise InvalidArgument(f"expected {encoding.cells} cells, got {len(values)}")
    nf = len(encoding.fields)
    out: list[int] = []
    for i, cell in enumerate(values):
        if len(cell) != nf:
            raise InvalidArgument(f"cell {i}: expected {nf} values, got {len(cell)}")
        for f, v in zip(encoding.fields, cell, strict=True):
            try:
                scaled = _scale(v, f.decimals)
            except TypeError:
                raise InvalidArgument(
                    f"cell {i} field {f.name!r}: not a finite int, Fraction, Decimal or float"
                ) from None
            if not f.lower <= scaled <= f.upper:
                raise ValueOutOfBound(f"cell {i} field {f.name!r} is outside its declared bounds")
            out.append(scaled - f.lower)
    return out


@functools.lru_cache(maxsize=64)
def layout(encoding: JobEncoding, capacity: int) -> tuple[int, ...]:
    """Number of slots in each plaintext, for plaintexts of ``capacity`` bits."""
    widths = encoding.widths
    if max(widths) > capacity:
        raise InvalidArgument("a slot is wider than a plaintext: lower the bounds or parties")
    counts: list[int] = []
    used = n = 0
    for _ in range(encoding.cells):
        for w in widths:
            if used + w > capacity:
                counts.append(n)
                used = n = 0
            used += w
            n += 1
    counts.append(n)
    return tuple(counts)


def pack(slots: Sequence[int], encoding: JobEncoding, capacity: int) -> list[int]:
    """Pack slot values (from :func:`encode_cells`) into plaintexts below ``2**capacity``."""
    widths = encoding.widths
    nf = len(widths)
    out: list[int] = []
    j = 0
    for count in layout(encoding, capacity):
        acc = 0
        for k in range(j + count - 1, j - 1, -1):  # last slot ends up most significant
            acc = (acc << widths[k % nf]) | slots[k]
        out.append(acc)
        j += count
    return out


def unpack(
    plaintexts: Sequence[int], encoding: JobEncoding, capacity: int, parties: int
) -> tuple[tuple[int | Fraction, ...], ...]:
    """Per-cell totals from the decrypted sums of ``parties`` packed contributions.

    Integers for fields with ``decimals == 0``, otherwise exact ``Fraction``s.

    Raises:
        AggregateCorrupt: a slot above its bound or a bit set outside the layout, i.e. some
            contribution was not produced by :func:`encode_cells` under this encoding.
    """
    counts = layout(encoding, capacity)
    if len(plaintexts) != len(counts):
        raise InvalidArgument(f"expected {len(counts)} plaintexts, got {len(plaintexts)}")
    fields = encoding.fields
    nf = len(fields)
    widths = encoding.widths
    limits = [parties * (f.upper - f.lower) for f in fields]
    flat: list[int | Fraction] = []
    j = 0
    for index, (p, count) in enumerate(zip(plaintexts, counts, strict=True)):
        for k in range(j, j + count):
            fi = k % nf
            s = p & ((1 << widths[fi]) - 1)
            p >>= widths[fi]
            if s > limits[fi]:
                raise AggregateCorrupt(
                    f"cell {k // nf} field {fields[fi].name!r}: combined slot exceeds its bound"
                )
            total = s + parties * fields[fi].lower
            d = fields[fi].decimals
            flat.append(Fraction(total, 10**d) if d else total)
        if p:
            raise AggregateCorrupt(f"plaintext {index}: bits set beyond the slot layout")
        j += count
    return tuple(tuple(flat[c * nf : (c + 1) * nf]) for c in range(encoding.cells))
