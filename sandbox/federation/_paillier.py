"""Paillier encryption of federated partial aggregates: fast node-side encryption, checked
coordinator-side combination, and decryption of combined totals only.

Scheme
------
Paillier with ``g = n + 1``: ``Enc(m; rho) = (1 + m*n) * rho mod n^2`` for a plaintext
``0 <= m < n`` and an *obfuscator* ``rho`` that is an n-th residue mod ``n^2``. Plain ``phe``
draws ``rho = r^n`` with ``r`` uniform in ``Z_n^*``: one powmod with a 2048-bit exponent modulo
a 4096-bit number per encryption (~13 ms, ~70 encryptions/s).

Fast obfuscators (:class:`FastEncryptor`). Each node, once per job key, draws ``r0`` uniform in
``Z_n^*`` from the OS CSPRNG and sets ``h = r0^n mod n^2`` (an n-th residue: one full powmod).
Each encryption then draws a fresh ``x`` uniform in ``[1, 2^l)`` and uses ``rho = h^x mod n^2``,
with ``l = max(256, bitlen(n) // 2)``: 1024 bits for a 2048-bit key, the randomness length of
the ``h_s`` variant of Damgard-Jurik-Nielsen ("A generalization of Paillier's public-key
system with applications to electronic voting", IJIS 2010). ``h^x`` is a fixed-base
exponentiation with base-``2^w`` digits of ``x`` and no squarings per encryption, from one of
two precomputed tables, whichever needs fewer products mod ``n^2`` for building plus the
expected number of encryptions (see :func:`_plan`):

* powers only, ``g_i = h^(2^(w*i))`` (``l`` squarings to build), combined per digit value
  with the Brickell-Gordon-McCurley-Wilson bucket method (HAC alg. 14.109): ``ceil(l/w) +
  2^w - 2`` products per encryption; best for a job's few dozen ciphertexts per node;
* every digit multiple, ``T[i][d] = h^(d * 2^(w*i))``: ``ceil(l/w)`` products per encryption
  after ``ceil(l/w) * (2^w + w - 2)`` to build; best for thousands of ciphertexts.

Either way ``rho = h^x`` exactly; the tables change the cost, not the distribution.

Security argument (confidentiality of a node's partials against anyone without the secret
key: other nodes, the network, the coordinator's callers). Hybrid games over an IND-CPA
adversary who sees ``n``, ``h`` and ciphertexts ``(1 + m_b*n) * h^(x_i)``:

* G0 -> G1: replace every short exponent ``x_i`` by ``y_i`` uniform in ``[0, n^2 * 2^128)``.
  Indistinguishable under the *short-exponent assumption* (SE): for ``h = r0^n`` as above,
  ``(n, h, h^(x_1), ..., h^(x_q))`` with ``l``-bit ``x_i`` is computationally
  indistinguishable from the same with full-length ``y_i``. This is the assumption behind the
  DJN ``h_s`` variant and the "fast Paillier" literature; it is the composite-modulus analogue
  of the short-exponent discrete-log indistinguishability of Koshiba-Kurosawa (PKC 2004).
  It is an assumption on top of DCR, not a theorem: we do not claim a reduction to DCR alone.
* G1 -> G2: replace ``h`` by ``z`` uniform in ``Z_{n^2}^*``. Indistinguishable under DCR
  (Paillier 1999): ``h`` is a uniform n-th residue (``r -> r^n`` is a bijection of
  ``Z_n^*`` onto the n-th residues since ``gcd(n, phi(n)) = 1``) and G1 needs only ``h``.
* G2: write ``z = (1+n)^a * s^n``; ``a`` is a unit mod ``n`` except with probability
  ``< 2^-1000``. Since ``ord(s^n)`` divides ``lambda(n) < n``, ``gcd(n, lambda(n)) = 1`` and
  ``y_i`` is uniform over a range ``2^128`` times longer than ``n^2``, ``y_i mod n`` is close to
  uniform and independent of ``y_i mod ord(s^n)``; so ``z^(y_i)`` adds ``a*y_i`` uniform mod
  ``n`` to the plaintext: the ciphertexts are statistically independent of ``m_b``.

So the scheme is IND-CPA under DCR + SE (``h`` never leaves the node; the argument even
grants it to the adversary). Known attacks: factoring ``n`` (GNFS; ~112-bit security at 2048
bits, as for plain Paillier; ``n_length=3072`` gives ~128), or recovering ``x`` from ``h^x``
by generic methods (baby-step giant-step, Pollard kangaroo: ``~2^(l/2)`` = ``2^512`` group
operations at ``l = 1024``; the floor ``l >= 256`` keeps this at ``>= 2^128``, never the
weakest link). The order of ``h`` is unknown without factoring ``n``, which rules out
Pohlig-Hellman / van Oorschot-Wiener style speed-ups. The Jacobi symbol of a ciphertext mod
``n`` is ``J(r0)^x`` (constant, or the parity of the random ``x``), independent of ``m`` since
``1 + m*n = 1 mod n``. Residual risks, as with ``phe``: gmpy2 is not constant-time (table
lookups and products depend on secret digits), so nodes must not share CPUs with untrusted
code; randomness comes from ``secrets`` (the OS CSPRNG).

Decrypting only combined totals
-------------------------------
The secret key is a :class:`JobSecretKey` with no decrypt method; the only decryption in this
package is :func:`decrypt_combined`, which accepts only a :class:`CombinedCiphertexts` that
carries :func:`combine`'s HMAC tag (a per-process key). :func:`combine` tags only after
checking: at least ``max(min_parties, job min)`` (>= 2) partials from distinct parties and at
most the job's ``max_parties``; every partial's key and encoding fingerprints; the ciphertext
count of the job's layout; every ciphertext ``0 < c < n^2`` and ``gcd(c, n) = 1``; and no
ciphertext occurring twice (honest randomised encryptions collide with negligible
probability, so a repeat is a replayed partial under a second party name). This is a
software control: whoever runs arbitrary code with the secret key can decrypt anything (a
threshold-decryption key would make it cryptographic), and ``m - 1`` colluding nodes that
know their own inputs learn the rest of an ``m``-party sum, which is why totals also pass
disclosure control, and why the coordinator must count only authenticated nodes as parties.
Nodes are not proven honest: a node that bypasses :func:`encrypt_partials` can shift totals
(no range proofs); decoding detects slot overflows within the guard bits (see ``_encoding``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import gmpy2  # type: ignore[import-untyped]
import phe  # type: ignore[import-untyped]

from sandbox._errors import (
    EncodingMismatch,
    InvalidArgument,
    InvalidCiphertext,
    JobKeyMismatch,
    TooFewParties,
)
from sandbox.federation._encoding import JobEncoding, Number, encode_cells, layout, pack, unpack

MIN_MODULUS_BITS = 2048
MIN_EXPONENT_BITS = 256
_TAG_KEY = secrets.token_bytes(32)  # authenticates CombinedCiphertexts made by combine()


@dataclass(frozen=True)
class JobPublicKey:
    """A job's Paillier public key (``g = n + 1``): the modulus ``n`` is all there is."""

    n: int
    n_square: int = field(init=False, repr=False, compare=False)
    fingerprint: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.n
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidArgument("a Paillier modulus must be an int")
        if n.bit_length() < MIN_MODULUS_BITS or n % 2 == 0 or gmpy2.is_square(n):
            raise InvalidArgument(f"a Paillier modulus must be odd, >= {MIN_MODULUS_BITS} bits")
        object.__setattr__(self, "n_square", n * n)
        digest = hashlib.sha256(b"sandbox.federation.paillier.v1\x00" + self.to_bytes())
        object.__setattr__(self, "fingerprint", digest.digest())

    @property
    def capacity(self) -> int:
        """Plaintext bits usable for packing: every value below ``2**capacity`` is below n."""
        return self.n.bit_length() - 1

    @property
    def ciphertext_bytes(self) -> int:
        return (self.n_square.bit_length() + 7) // 8

    def to_bytes(self) -> bytes:
        """``n`` big-endian, for sending to nodes."""
        return self.n.to_bytes((self.n.bit_length() + 7) // 8, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> JobPublicKey:
        return cls(int.from_bytes(data, "big"))


class JobSecretKey:
    """A job's Paillier secret key. It has no decrypt method: see :func:`decrypt_combined`.

    Its repr shows only the key fingerprint, and it refuses to be pickled, so it stays in the
    coordinator process that generated it.
    """

    __slots__ = ("_phe", "public_key")

    def __init__(self, public_key: JobPublicKey, phe_private_key: Any) -> None:
        if not isinstance(phe_private_key, phe.PaillierPrivateKey) or (
            int(phe_private_key.p) * int(phe_private_key.q) != public_key.n
        ):
            raise InvalidArgument("the secret key does not belong to this public key")
        self.public_key = public_key
        self._phe = phe_private_key

    def __repr__(self) -> str:
        return f"JobSecretKey(fingerprint={self.public_key.fingerprint.hex()[:16]})"

    def __reduce__(self) -> Any:
        raise TypeError("a job secret key is not serialisable")


def generate_job_keys(n_length: int = 2048) -> tuple[JobPublicKey, JobSecretKey]:
    """A fresh Paillier key pair for one federated job (~0.03-0.2 s at 2048 bits)."""
    if n_length < MIN_MODULUS_BITS:
        raise InvalidArgument(f"job keys must have at least {MIN_MODULUS_BITS} bits")
    pub, priv = phe.generate_paillier_keypair(n_length=n_length)
    public_key = JobPublicKey(int(pub.n))
    return public_key, JobSecretKey(public_key, priv)


def _plan(exponent_bits: int, expected: int) -> tuple[int, bool]:
    """(window, full table?) minimising products mod n^2 for building plus ``expected`` uses.

    Full table: per window ``w`` squarings + ``2^w - 2`` products to build, one product per
    window per exponentiation. Powers only (HAC 14.109): ``l`` squarings to build,
    ``windows + 2^w - 2`` products per exponentiation.
    """
    costs = {}
    for w in range(1, 13):
        t = math.ceil(exponent_bits / w)
        costs[(w, True)] = t * (w + (1 << w) - 2 + expected)
        costs[(w, False)] = exponent_bits + expected * (t + (1 << w) - 2)
    return min(costs, key=costs.__getitem__)


class FastEncryptor:
    """Node-side encryption with fixed-base obfuscators ``h^x`` (see the module docstring).

    One per node and job key; thread-safe after construction. ``expected`` (how many
    encryptions will follow) only chooses the precomputation (window and table shape).
    """

    def __init__(
        self,
        public_key: JobPublicKey,
        *,
        exponent_bits: int | None = None,
        expected: int = 128,
    ) -> None:
        bits = exponent_bits or max(MIN_EXPONENT_BITS, public_key.n.bit_length() // 2)
        if bits < MIN_EXPONENT_BITS:
            raise InvalidArgument(f"obfuscator exponents need >= {MIN_EXPONENT_BITS} bits")
        w, full = _plan(bits, max(1, expected))
        self.public_key = public_key
        self.exponent_bits = bits
        self.window = w
        n = gmpy2.mpz(public_key.n)
        n2 = gmpy2.mpz(public_key.n_square)
        self._n, self._n2, self._full = n, n2, full
        while True:
            r0 = gmpy2.mpz(secrets.randbelow(public_key.n - 1) + 1)
            if gmpy2.gcd(r0, n) == 1:
                break
        base = gmpy2.powmod(r0, n, n2)  # h, an n-th residue
        rows: list[list[Any]] = []  # rows[i][d - 1] = h^(d * 2^(w*i)); d = 1 only if not full
        for _ in range(math.ceil(bits / w)):
            row = [base]
            for _ in range((1 << w) - 2 if full else 0):
                row.append(row[-1] * base % n2)
            rows.append(row)
            for _ in range(w):
                base = base * base % n2
        self._rows = rows

    def _draw_digits(self) -> list[int]:
        x = 0
        while x == 0:
            x = secrets.randbits(self.exponent_bits)
        w, mask = self.window, (1 << self.window) - 1
        return [(x >> (w * i)) & mask for i in range(len(self._rows))]

    def obfuscator(self) -> Any:
        """A fresh ``h^x mod n^2`` (an n-th residue) as a gmpy2 ``mpz``."""
        digits, n2, rows = self._draw_digits(), self._n2, self._rows
        acc: Any = None
        if self._full:
            for row, d in zip(rows, digits, strict=True):
                if d:
                    acc = row[d - 1] if acc is None else acc * row[d - 1] % n2
            return acc
        buckets: list[list[Any]] = [[] for _ in range(1 << self.window)]
        for row, d in zip(rows, digits, strict=True):
            buckets[d].append(row[0])
        run: Any = None  # product of h^(2^(w*i)) over windows i with digit >= d
        for d in range(len(buckets) - 1, 0, -1):
            for g in buckets[d]:
                run = g if run is None else run * g % n2
            if run is not None:
                acc = run if acc is None else acc * run % n2
        return acc

    def encrypt(self, plaintext: int) -> int:
        """``(1 + m*n) * h^x mod n^2`` for ``0 <= m < n``."""
        if isinstance(plaintext, bool) or not isinstance(plaintext, int):
            raise InvalidArgument("a plaintext must be an int")
        if not 0 <= plaintext < self.public_key.n:
            raise InvalidArgument("a plaintext must be in [0, n)")
        return int((1 + plaintext * self._n) * self.obfuscator() % self._n2)


def validate_ciphertext(c: object, public_key: JobPublicKey, *, where: str = "") -> int:
    """``c`` itself if it is an int with ``0 < c < n^2`` and ``gcd(c, n) = 1``.

    Raises:
        InvalidCiphertext: naming ``where`` (party and index), never the value.
    """
    at = f" ({where})" if where else ""
    if isinstance(c, bool) or not isinstance(c, int):
        raise InvalidCiphertext(f"ciphertext{at} is not an integer")
    if not 0 < c < public_key.n_square:
        raise InvalidCiphertext(f"ciphertext{at} is outside (0, n^2)")
    if gmpy2.gcd(c, public_key.n) != 1:
        raise InvalidCiphertext(f"ciphertext{at} is not a unit mod n^2")
    return c


def ciphertext_to_bytes(c: int, public_key: JobPublicKey) -> bytes:
    """Fixed-length big-endian bytes of a valid ciphertext (for protobuf ``bytes`` fields)."""
    validate_ciphertext(c, public_key)
    return c.to_bytes(public_key.ciphertext_bytes, "big")


def ciphertext_from_bytes(data: bytes, public_key: JobPublicKey, *, where: str = "") -> int:
    """Inverse of :func:`ciphertext_to_bytes`; validates length and value."""
    if not isinstance(data, bytes) or len(data) != public_key.ciphertext_bytes:
        raise InvalidCiphertext(f"ciphertext{f' ({where})' if where else ''} has a wrong length")
    return validate_ciphertext(int.from_bytes(data, "big"), public_key, where=where)


@dataclass(frozen=True)
class EncryptedPartial:
    """One node's packed, encrypted partial aggregates for one job (the wire-facing form)."""

    party: str
    key_fingerprint: bytes
    encoding_fingerprint: bytes
    ciphertexts: tuple[int, ...]


def encrypt_partials(
    values: Sequence[Sequence[Number]],
    encoding: JobEncoding,
    public_key: JobPublicKey,
    *,
    party: str,
    encryptor: FastEncryptor | None = None,
) -> EncryptedPartial:
    """Encode, pack and encrypt one node's per-cell values (one row per cell, fields in order).

    Raises:
        ValueOutOfBound: a value outside its declared bounds (names cell and field).
        InvalidArgument: wrong shape, or an encryptor for another key.
    """
    if not isinstance(party, str) or not party:
        raise InvalidArgument("party must be a non-empty string")
    plaintexts = pack(encode_cells(values, encoding), encoding, public_key.capacity)
    if encryptor is None:
        encryptor = FastEncryptor(public_key, expected=len(plaintexts))
    elif encryptor.public_key != public_key:
        raise InvalidArgument("the encryptor belongs to another job key")
    return EncryptedPartial(
        party=party,
        key_fingerprint=public_key.fingerprint,
        encoding_fingerprint=encoding.fingerprint,
        ciphertexts=tuple(encryptor.encrypt(m) for m in plaintexts),
    )


def _tag(
    parties: tuple[str, ...], key_fp: bytes, encoding_fp: bytes, cts: tuple[int, ...]
) -> bytes:
    mac = hmac.new(_TAG_KEY, b"sandbox.federation.combined.v1", hashlib.sha256)
    for part in (*(p.encode() for p in parties), key_fp, encoding_fp, *map(_int_bytes, cts)):
        mac.update(len(part).to_bytes(8, "big") + part)
    return mac.digest()


def _int_bytes(c: int) -> bytes:
    return c.to_bytes((c.bit_length() + 7) // 8, "big")


@dataclass(frozen=True)
class CombinedCiphertexts:
    """The homomorphic sum of the partials of at least ``min_parties`` distinct parties.

    Only :func:`combine` can construct one: ``tag`` is an HMAC over every other field under a
    key that exists only in this process's memory, checked on construction and again by
    :func:`decrypt_combined`, so neither a forged object nor ``dataclasses.replace`` (e.g.
    swapping in one node's ciphertexts) gets decrypted.
    """

    parties: tuple[str, ...]
    key_fingerprint: bytes
    encoding_fingerprint: bytes
    ciphertexts: tuple[int, ...]
    tag: bytes = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._authentic():
            raise InvalidArgument("combined ciphertexts come only from combine()")

    def _authentic(self) -> bool:
        try:
            want = _tag(
                self.parties, self.key_fingerprint, self.encoding_fingerprint, self.ciphertexts
            )
        except (TypeError, AttributeError, OverflowError):
            return False
        return isinstance(self.tag, bytes) and hmac.compare_digest(self.tag, want)


def combine(
    partials: Sequence[EncryptedPartial],
    public_key: JobPublicKey,
    encoding: JobEncoding,
    *,
    min_parties: int | None = None,
) -> CombinedCiphertexts:
    """Multiply the partials' ciphertexts position-wise (adding the packed plaintexts).

    ``min_parties`` may raise, never lower, the job's ``encoding.min_parties``.

    Raises:
        TooFewParties: fewer partials than the minimum.
        InvalidArgument: a repeated party or ciphertext, more parties than the job allows.
        JobKeyMismatch / EncodingMismatch: a partial from another key or encoding.
        InvalidCiphertext: a ciphertext that is not a unit below n^2.
    """
    floor = encoding.min_parties if min_parties is None else min_parties
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < encoding.min_parties:
        raise InvalidArgument("min_parties may not be lower than the job's minimum")
    if len(partials) < floor:
        raise TooFewParties(f"{len(partials)} partials; the job needs at least {floor} parties")
    if len(partials) > encoding.max_parties:
        raise InvalidArgument(f"more than the job's {encoding.max_parties} parties")
    expected = len(layout(encoding, public_key.capacity))
    parties: list[str] = []
    seen: set[int] = set()
    for p in partials:
        if not isinstance(p, EncryptedPartial):
            raise InvalidArgument("combine() takes EncryptedPartial objects")
        if not isinstance(p.party, str) or not p.party:
            raise InvalidArgument("every partial must name its party")
        if p.party in parties:
            raise InvalidArgument(f"party {p.party!r} contributed more than once")
        if p.key_fingerprint != public_key.fingerprint:
            raise JobKeyMismatch(f"party {p.party!r} encrypted under another job key")
        if p.encoding_fingerprint != encoding.fingerprint:
            raise EncodingMismatch(f"party {p.party!r} used another job encoding")
        if not isinstance(p.ciphertexts, tuple) or len(p.ciphertexts) != expected:
            raise EncodingMismatch(f"party {p.party!r} sent a wrong number of ciphertexts")
        for i, c in enumerate(p.ciphertexts):
            validate_ciphertext(c, public_key, where=f"party {p.party!r}, index {i}")
            if c in seen:
                raise InvalidArgument(f"party {p.party!r}, index {i}: a repeated ciphertext")
            seen.add(c)
        parties.append(p.party)
    n2 = gmpy2.mpz(public_key.n_square)
    sums = []
    for i in range(expected):
        acc = gmpy2.mpz(partials[0].ciphertexts[i])
        for p in partials[1:]:
            acc = acc * p.ciphertexts[i] % n2
        sums.append(int(acc))
    kfp, efp, cts = public_key.fingerprint, encoding.fingerprint, tuple(sums)
    return CombinedCiphertexts(tuple(parties), kfp, efp, cts, _tag(tuple(parties), kfp, efp, cts))


@dataclass(frozen=True)
class Totals:
    """Decrypted, decoded combined totals: ``cells[i][j]`` is field ``fields[j]`` of cell i."""

    fields: tuple[str, ...]
    parties: tuple[str, ...]
    cells: tuple[tuple[int | Fraction, ...], ...]


def decrypt_combined(
    combined: CombinedCiphertexts, secret_key: JobSecretKey, encoding: JobEncoding
) -> Totals:
    """Decrypt and decode the output of :func:`combine` (nothing else is accepted).

    Raises:
        InvalidArgument: anything but a :class:`CombinedCiphertexts`, or a wrong key type.
        TooFewParties / JobKeyMismatch / EncodingMismatch: re-checked against the job.
        AggregateCorrupt: a decoded slot breaks its bound (a malformed contribution).
    """
    if type(combined) is not CombinedCiphertexts or not combined._authentic():
        raise InvalidArgument("only the result of combine() can be decrypted")
    if not isinstance(secret_key, JobSecretKey):
        raise InvalidArgument("decrypt_combined() takes a JobSecretKey")
    public_key = secret_key.public_key
    if combined.key_fingerprint != public_key.fingerprint:
        raise JobKeyMismatch("the combined ciphertexts belong to another job key")
    if combined.encoding_fingerprint != encoding.fingerprint:
        raise EncodingMismatch("the combined ciphertexts belong to another job encoding")
    if len(set(combined.parties)) < encoding.min_parties:
        raise TooFewParties(f"the job needs at least {encoding.min_parties} parties")
    priv = secret_key._phe
    plaintexts = [int(priv.raw_decrypt(c)) for c in combined.ciphertexts]
    cells = unpack(plaintexts, encoding, public_key.capacity, len(combined.parties))
    return Totals(tuple(f.name for f in encoding.fields), combined.parties, cells)
