"""Federation crypto: encoding, packing, fast Paillier encryption and combined decryption."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox._errors import EncodingMismatch, InvalidArgument, ValueOutOfBound
from sandbox.federation import (
    EncryptedPartial,
    FastEncryptor,
    FieldSpec,
    JobEncoding,
    JobPublicKey,
    JobSecretKey,
    ciphertext_from_bytes,
    ciphertext_to_bytes,
    combine,
    decrypt_combined,
    encrypt_partials,
    generate_job_keys,
)
from sandbox.federation._encoding import encode_cells, layout, pack, unpack


@pytest.fixture(scope="module")
def phe_keys() -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    return phe.generate_paillier_keypair(n_length=2048)


@pytest.fixture(scope="module")
def keys(
    phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
) -> tuple[JobPublicKey, JobSecretKey]:
    pub = JobPublicKey(phe_keys[0].n)
    return pub, JobSecretKey(pub, phe_keys[1])


def cell_encoding(cells: int = 4, **kw: object) -> JobEncoding:
    fields = (
        FieldSpec("count", 0, 10_000),
        FieldSpec("sum_income", -(10**9), 10**10, decimals=2),
        FieldSpec("persons", 0, 10_000),
    )
    return JobEncoding(
        **{"job_id": "job-1", "fields": fields, "cells": cells, "max_parties": 10, **kw}
    )  # type: ignore[arg-type]


@st.composite
def scenarios(draw: st.DrawFn, max_cells: int = 6) -> tuple[JobEncoding, list[list[list[int]]]]:
    """An encoding and, for k parties, scaled integer values per cell and field (edges often)."""
    fields = []
    for i in range(draw(st.integers(1, 3))):
        lower = draw(st.integers(-(2**40), 2**40))
        upper = lower + draw(st.integers(0, 2**48))
        fields.append(FieldSpec(f"f{i}", lower, upper, draw(st.integers(0, 3))))
    k = draw(st.integers(2, 6))
    enc = JobEncoding(
        "job-h",
        tuple(fields),
        cells=draw(st.integers(1, max_cells)),
        max_parties=draw(st.integers(k, 8)),
        guard_bits=draw(st.integers(0, 8)),
    )

    def scaled(f: FieldSpec) -> st.SearchStrategy[int]:
        return st.one_of(st.sampled_from([f.lower, f.upper]), st.integers(f.lower, f.upper))

    parties = [[[draw(scaled(f)) for f in enc.fields] for _ in range(enc.cells)] for _ in range(k)]
    return enc, parties


def as_values(enc: JobEncoding, scaled_cells: list[list[int]]) -> list[list[int | Fraction]]:
    return [
        [Fraction(v, 10**f.decimals) if f.decimals else v for f, v in zip(enc.fields, cell)]
        for cell in scaled_cells
    ]


def expected_totals(
    enc: JobEncoding, parties: list[list[list[int]]]
) -> tuple[tuple[object, ...], ...]:
    out = []
    for c in range(enc.cells):
        row: list[object] = []
        for j, f in enumerate(enc.fields):
            s = sum(p[c][j] for p in parties)
            row.append(Fraction(s, 10**f.decimals) if f.decimals else s)
        out.append(tuple(row))
    return tuple(out)


@given(scenarios(), st.sampled_from([64, 200, 2047]))
@settings(max_examples=300, deadline=None)
def test_pack_sum_unpack_is_slotwise_exact(
    scenario: tuple[JobEncoding, list[list[list[int]]]], capacity: int
) -> None:
    enc, parties = scenario
    packed = [pack(encode_cells(as_values(enc, p), enc), enc, capacity) for p in parties]
    assert all(0 <= m < 2**capacity for one in packed for m in one)
    sums = [sum(col) for col in zip(*packed)]
    assert all(s < 2**capacity for s in sums)  # below n: the mod-n reduction is the identity
    assert unpack(sums, enc, capacity, len(parties)) == expected_totals(enc, parties)


@given(scenarios(max_cells=4))
@settings(max_examples=15, deadline=None)
def test_encrypted_sum_of_k_parties_decrypts_to_slot_sums(
    keys: tuple[JobPublicKey, JobSecretKey], scenario: tuple[JobEncoding, list[list[list[int]]]]
) -> None:
    pub, sec = keys
    enc, parties = scenario
    partials = [
        encrypt_partials(as_values(enc, p), enc, pub, party=f"node-{i}")
        for i, p in enumerate(parties)
    ]
    totals = decrypt_combined(combine(partials, pub, enc), sec, enc)
    assert totals.cells == expected_totals(enc, parties)
    assert totals.parties == tuple(f"node-{i}" for i in range(len(parties)))
    assert totals.fields == tuple(f.name for f in enc.fields)


@pytest.mark.parametrize("expected", [1, 5000])  # powers-only table / full digit table
def test_fast_encryption_decrypts_with_phe_private_key(
    phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey], expected: int
) -> None:
    pk, sk = phe_keys
    enc = FastEncryptor(
        JobPublicKey(pk.n), expected=expected, exponent_bits=256 if expected > 1 else None
    )
    rng = random.Random(3)
    for m in [0, 1, 2, pk.n - 1, *(rng.randrange(pk.n) for _ in range(20))]:
        assert sk.raw_decrypt(enc.encrypt(m)) == m
    assert sk.raw_decrypt(int(enc.obfuscator())) == 0  # an n-th residue: encrypts zero
    # interoperates with phe's own arithmetic
    total = phe.EncryptedNumber(pk, enc.encrypt(40)) + pk.encrypt(2)
    assert sk.decrypt(total) == 42


def test_homomorphic_sum_of_ten_parties_equals_plain_sum(
    keys: tuple[JobPublicKey, JobSecretKey],
) -> None:
    pub, sec = keys
    enc = cell_encoding(cells=300)
    rng = random.Random(11)
    parties = [
        [
            [rng.randint(0, 10_000), rng.randint(-(10**9), 10**10), rng.randint(0, 10_000)]
            for _ in range(enc.cells)
        ]
        for _ in range(10)
    ]
    partials = [
        encrypt_partials(as_values(enc, p), enc, pub, party=f"agency-{i}")
        for i, p in enumerate(parties)
    ]
    assert len(partials[0].ciphertexts) == len(layout(enc, pub.capacity)) < enc.cells
    totals = decrypt_combined(combine(partials, pub, enc), sec, enc)
    assert totals.cells == expected_totals(enc, parties)
    # any subset of at least min_parties also adds up
    sub = decrypt_combined(combine(partials[3:5], pub, enc), sec, enc)
    assert sub.cells == expected_totals(enc, parties[3:5])


def test_decimal_scaling_rounds_half_even_and_decodes_exactly(
    keys: tuple[JobPublicKey, JobSecretKey],
) -> None:
    pub, sec = keys
    enc = JobEncoding("job-d", (FieldSpec("x", -1000, 1000, decimals=2),), cells=4, max_parties=2)
    a = [
        [Decimal("1.005")],
        [0.125],
        [Fraction(-1, 3)],
        [-7],
    ]  # 100.5 -> 100, 12.5 -> 12, -33.3 -> -33
    b = [[Decimal("2.015")], [Fraction(1, 200)], [Decimal("-0.01")], [10]]  # 201.5 -> 202, 0.5 -> 0
    totals = decrypt_combined(
        combine(
            [
                encrypt_partials(a, enc, pub, party="a"),
                encrypt_partials(b, enc, pub, party="b"),
            ],
            pub,
            enc,
        ),
        sec,
        enc,
    )
    assert totals.cells == (
        (Fraction(302, 100),),
        (Fraction(12, 100),),
        (Fraction(-34, 100),),
        (Fraction(3),),
    )


@pytest.mark.parametrize(
    ("cell", "field", "value"),
    [
        (0, 0, -1),
        (1, 0, 10_001),
        (2, 1, Fraction(10**8) + Fraction(1, 100)),
        (3, 1, -(10**7) - 0.01),
        (0, 2, 2**70),
    ],
)
def test_value_out_of_bound_is_refused_naming_cell_and_field_only(
    keys: tuple[JobPublicKey, JobSecretKey], cell: int, field: int, value: object
) -> None:
    pub, _ = keys
    enc = cell_encoding()
    values: list[list[object]] = [[0, 0, 0] for _ in range(enc.cells)]
    values[cell][field] = value
    with pytest.raises(ValueOutOfBound) as err:
        encrypt_partials(values, enc, pub, party="a")  # type: ignore[arg-type]
    msg = str(err.value)
    assert f"cell {cell}" in msg and enc.fields[field].name in msg
    assert str(value) not in msg


def test_bound_edges_are_accepted(keys: tuple[JobPublicKey, JobSecretKey]) -> None:
    pub, sec = keys
    enc = cell_encoding(cells=2)
    lo = [[0, Fraction(-(10**9), 100), 0]] * 2
    hi = [[10_000, Fraction(10**10, 100), 10_000]] * 2
    totals = decrypt_combined(
        combine(
            [encrypt_partials(v, enc, pub, party=str(i)) for i, v in enumerate([lo, hi, hi])],
            pub,
            enc,
        ),
        sec,
        enc,
    )
    assert totals.cells == ((20_000, Fraction(10**10 * 2 - 10**9, 100), 20_000),) * 2


@pytest.mark.parametrize(
    "value", [True, "3", None, float("nan"), float("inf"), Decimal("NaN"), Decimal("sNaN"), 1j]
)
def test_non_numbers_are_refused(keys: tuple[JobPublicKey, JobSecretKey], value: object) -> None:
    pub, _ = keys
    enc = cell_encoding(cells=1)
    with pytest.raises(InvalidArgument, match="cell 0 field 'persons'"):
        encrypt_partials([[1, 1, value]], enc, pub, party="a")  # type: ignore[list-item]


@pytest.mark.parametrize(
    "other",
    [
        # the fixed-point exponent differs
        dict(
            fields=(
                FieldSpec("count", 0, 10_000),
                FieldSpec("sum_income", -(10**9), 10**10, decimals=3),
                FieldSpec("persons", 0, 10_000),
            )
        ),
        dict(
            fields=(
                FieldSpec("count", 0, 10_001),
                FieldSpec("sum_income", -(10**9), 10**10, decimals=2),
                FieldSpec("persons", 0, 10_000),
            )
        ),
        dict(job_id="job-2"),
        dict(max_parties=11),
        dict(guard_bits=4),
        dict(min_parties=3),
    ],
)
def test_encoding_mismatch_is_refused(
    keys: tuple[JobPublicKey, JobSecretKey], other: dict[str, object]
) -> None:
    pub, _ = keys
    job, wrong = cell_encoding(), cell_encoding(**other)
    zeros = [[0, 0, 0]] * job.cells
    good = encrypt_partials(zeros, job, pub, party="a")
    bad = encrypt_partials(zeros, wrong, pub, party="b")
    with pytest.raises(EncodingMismatch, match="party 'b'"):
        combine([good, bad], pub, job)


def test_wrong_ciphertext_count_is_refused(keys: tuple[JobPublicKey, JobSecretKey]) -> None:
    pub, _ = keys
    enc = cell_encoding(cells=200)
    good = encrypt_partials([[0, 0, 0]] * enc.cells, enc, pub, party="a")
    short = EncryptedPartial(
        "b", good.key_fingerprint, good.encoding_fingerprint, good.ciphertexts[:-1]
    )
    with pytest.raises(EncodingMismatch, match="wrong number"):
        combine([good, short], pub, enc)


def test_wrong_shape_is_refused(keys: tuple[JobPublicKey, JobSecretKey]) -> None:
    pub, _ = keys
    enc = cell_encoding(cells=2)
    with pytest.raises(InvalidArgument, match="expected 2 cells"):
        encrypt_partials([[0, 0, 0]], enc, pub, party="a")
    with pytest.raises(InvalidArgument, match="cell 1: expected 3 values"):
        encrypt_partials([[0, 0, 0], [0, 0]], enc, pub, party="a")


def test_layout_never_splits_a_slot_and_fills_plaintexts(
    keys: tuple[JobPublicKey, JobSecretKey],
) -> None:
    pub, _ = keys
    enc = cell_encoding(cells=1000)
    counts = layout(enc, pub.capacity)
    assert sum(counts) == 3000
    widths = enc.widths * 1000
    j = 0
    for count in counts:
        used = sum(widths[j : j + count])
        assert used <= pub.capacity
        if j + count < len(widths):
            assert used + widths[j + count] > pub.capacity  # greedy: the next slot did not fit
        j += count
    assert enc.widths == ((10 * 10_000).bit_length() + 8, (10 * 11 * 10**9).bit_length() + 8, 25)


def test_plaintext_range_is_enforced(keys: tuple[JobPublicKey, JobSecretKey]) -> None:
    pub, _ = keys
    enc = FastEncryptor(pub, expected=1)
    for m in (-1, pub.n, pub.n + 5):
        with pytest.raises(InvalidArgument):
            enc.encrypt(m)
    with pytest.raises(InvalidArgument):
        enc.encrypt(1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="256"):
        FastEncryptor(pub, exponent_bits=128)


def test_wire_forms_round_trip(keys: tuple[JobPublicKey, JobSecretKey]) -> None:
    pub, _ = keys
    assert JobPublicKey.from_bytes(pub.to_bytes()) == pub
    assert JobPublicKey.from_bytes(pub.to_bytes()).fingerprint == pub.fingerprint
    c = FastEncryptor(pub, expected=1).encrypt(7)
    data = ciphertext_to_bytes(c, pub)
    assert len(data) == pub.ciphertext_bytes == 512
    assert ciphertext_from_bytes(data, pub) == c
    enc = cell_encoding()
    assert JobEncoding.from_json(enc.to_json()) == enc
    assert JobEncoding.from_json(enc.to_json()).fingerprint == enc.fingerprint
    with pytest.raises(InvalidArgument, match="canonical"):
        JobEncoding.from_json(enc.to_json().replace(b'{"cells"', b'{ "cells"'))
    with pytest.raises(InvalidArgument, match="malformed"):
        JobEncoding.from_json(b"[]")


@pytest.mark.parametrize(
    "kw",
    [
        dict(min_parties=1),
        dict(min_parties=5, max_parties=4),
        dict(cells=0),
        dict(fields=()),
        dict(fields=(FieldSpec("a", 0, 1), FieldSpec("a", 0, 1))),
        dict(guard_bits=-1),
        dict(job_id=""),
    ],
)
def test_invalid_encodings_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        cell_encoding(**kw)


@pytest.mark.parametrize(
    "args",
    [("x", 2, 1), ("x", 0, 1, -1), ("x", 0, 1, 19), ("1x", 0, 1), ("x", 0.0, 1), ("x", True, 1)],
)
def test_invalid_fields_are_refused(args: tuple[object, ...]) -> None:
    with pytest.raises(InvalidArgument):
        FieldSpec(*args)  # type: ignore[arg-type]


def test_slot_wider_than_plaintext_is_refused(keys: tuple[JobPublicKey, JobSecretKey]) -> None:
    pub, _ = keys
    enc = JobEncoding("job-w", (FieldSpec("huge", 0, 2**2100),), cells=1, max_parties=2)
    with pytest.raises(InvalidArgument, match="wider than a plaintext"):
        encrypt_partials([[0]], enc, pub, party="a")


def test_generated_job_keys_work_end_to_end() -> None:
    pub, sec = generate_job_keys()
    assert pub.n.bit_length() == 2048
    enc = cell_encoding(cells=3)
    partials = [encrypt_partials([[1, 2, 3]] * 3, enc, pub, party=p) for p in ("a", "b")]
    assert decrypt_combined(combine(partials, pub, enc), sec, enc).cells == ((2, 4, 6),) * 3
