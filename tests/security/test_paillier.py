"""Federation crypto attacks: malformed ciphertexts, lone partials, replays, foreign keys."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import phe
import pytest

import sandbox.federation as federation
from sandbox._errors import (
    AggregateCorrupt,
    InvalidArgument,
    InvalidCiphertext,
    JobKeyMismatch,
    TooFewParties,
)
from sandbox.federation import (
    CombinedCiphertexts,
    EncryptedPartial,
    FastEncryptor,
    FieldSpec,
    JobEncoding,
    JobPublicKey,
    JobSecretKey,
    ciphertext_from_bytes,
    combine,
    decrypt_combined,
    encrypt_partials,
    generate_job_keys,
    validate_ciphertext,
)
from sandbox.federation._encoding import layout

Keys = tuple[JobPublicKey, JobSecretKey, phe.PaillierPrivateKey]


@pytest.fixture(scope="module")
def keys() -> Keys:
    pk, sk = phe.generate_paillier_keypair(n_length=2048)
    pub = JobPublicKey(pk.n)
    return pub, JobSecretKey(pub, sk), sk


@pytest.fixture(scope="module")
def enc() -> JobEncoding:
    fields = (FieldSpec("count", 0, 1000), FieldSpec("total", -(10**6), 10**6, decimals=1))
    return JobEncoding("job-s", fields, cells=50, max_parties=5, min_parties=2)


@pytest.fixture(scope="module")
def partials(keys: Keys, enc: JobEncoding) -> list[EncryptedPartial]:
    pub = keys[0]
    return [
        encrypt_partials([[i + 1, 10 * i]] * enc.cells, enc, pub, party=f"agency-{i}")
        for i in range(4)
    ]


def bad_values(keys: Keys) -> list[tuple[str, object]]:
    pub, _, sk = keys
    n, n2, p = pub.n, pub.n_square, int(sk.p)
    return [
        ("zero", 0),
        ("n^2", n2),
        ("n^2+1", n2 + 1),
        ("negative", -5),
        ("negative unit", -(n2 - 1)),
        ("p", p),
        ("multiple of p", 7 * p),
        ("n", n),
        ("multiple of n", 3 * n),
        ("float", 1.0),
        ("bool", True),
        ("str", "12345"),
        ("bytes", b"\x01"),
        ("None", None),
    ]


def test_invalid_ciphertexts_are_refused_without_echoing_them(keys: Keys) -> None:
    pub = keys[0]
    for name, value in bad_values(keys):
        with pytest.raises(InvalidCiphertext) as err:
            validate_ciphertext(value, pub, where="party 'x', index 3")
        msg = str(err.value)
        assert "party 'x', index 3" in msg, name
        if isinstance(value, int) and abs(value) > 9:
            assert str(value) not in msg and hex(value)[2:12] not in msg, name
    assert validate_ciphertext(1, pub) == 1  # the trivial unit is a well-formed ciphertext


def test_combine_refuses_a_partial_with_an_invalid_ciphertext(
    keys: Keys, enc: JobEncoding, partials: list[EncryptedPartial]
) -> None:
    pub = keys[0]
    for name, value in bad_values(keys):
        cts = list(partials[1].ciphertexts)
        cts[1] = value  # type: ignore[call-overload]
        bad = dataclasses.replace(partials[1], ciphertexts=tuple(cts))
        with pytest.raises(InvalidCiphertext, match="party 'agency-1', index 1"):
            combine([partials[0], bad], pub, enc)
        assert name


def test_ciphertext_bytes_of_wrong_length_or_value_are_refused(keys: Keys) -> None:
    pub = keys[0]
    for data in (b"", b"\x01", b"\x00" * 511 + b"\x01" + b"\x00", b"\xff" * 512, b"\x00" * 512):
        with pytest.raises(InvalidCiphertext):
            ciphertext_from_bytes(data, pub, where="index 0")
    with pytest.raises(InvalidCiphertext):
        ciphertext_from_bytes(bytearray(512), pub)  # type: ignore[arg-type]


def test_fewer_than_min_parties_are_refused(
    keys: Keys, enc: JobEncoding, partials: list[EncryptedPartial]
) -> None:
    pub = keys[0]
    for few in ([], partials[:1]):
        with pytest.raises(TooFewParties):
            combine(few, pub, enc)
    with pytest.raises(TooFewParties):
        combine(partials[:2], pub, enc, min_parties=3)
    strict = dataclasses.replace(enc, min_parties=3)
    strict_partials = [
        encrypt_partials([[1, 1]] * enc.cells, strict, pub, party=f"p{i}") for i in range(2)
    ]
    with pytest.raises(TooFewParties):
        combine(strict_partials, pub, strict)
    with pytest.raises(InvalidArgument, match="lower than the job"):
        combine(strict_partials, pub, strict, min_parties=2)
    with pytest.raises(InvalidArgument, match="lower than the job"):
        combine(partials[:1], pub, enc, min_parties=1)


def test_more_than_max_parties_are_refused(keys: Keys, enc: JobEncoding) -> None:
    pub = keys[0]
    many = [encrypt_partials([[0, 0]] * enc.cells, enc, pub, party=f"p{i}") for i in range(6)]
    with pytest.raises(InvalidArgument, match="5 parties"):
        combine(many, pub, enc)


def test_one_node_cannot_count_twice(
    keys: Keys, enc: JobEncoding, partials: list[EncryptedPartial]
) -> None:
    pub = keys[0]
    with pytest.raises(InvalidArgument, match="more than once"):
        combine([partials[0], partials[0]], pub, enc)
    renamed = dataclasses.replace(partials[0], party="someone-else")
    with pytest.raises(InvalidArgument, match="repeated ciphertext"):
        combine([partials[0], renamed], pub, enc)
    # an encryption of zeros is accepted (it is a real party's honest answer) but the threshold
    # is about distinct parties, so the coordinator must only count authenticated nodes


def test_no_public_function_decrypts_a_lone_partial(
    keys: Keys, enc: JobEncoding, partials: list[EncryptedPartial]
) -> None:
    sec = keys[1]
    public = {name: getattr(federation, name) for name in federation.__all__}
    decryptors = [n for n, obj in public.items() if callable(obj) and "decrypt" in n.lower()]
    assert decryptors == ["decrypt_combined"]
    methods = [
        f"{cls}.{m}"
        for cls, obj in public.items()
        if inspect.isclass(obj)
        for m in dir(obj)
        if "decrypt" in m.lower()
    ]
    assert methods == []
    assert not [m for m in dir(sec) if not m.startswith("_") and m != "public_key"]

    lone = partials[0]
    for thing in (lone, lone.ciphertexts, lone.ciphertexts[0], [lone], None):
        with pytest.raises(InvalidArgument, match=r"only the result of combine"):
            decrypt_combined(thing, sec, enc)  # type: ignore[arg-type]


def test_combined_results_cannot_be_forged_or_altered(
    keys: Keys, enc: JobEncoding, partials: list[EncryptedPartial]
) -> None:
    pub, sec, _ = keys
    lone = partials[0]
    with pytest.raises(InvalidArgument, match="only from combine"):
        CombinedCiphertexts(
            ("a", "b"), lone.key_fingerprint, lone.encoding_fingerprint, lone.ciphertexts, b""
        )
    combined = combine(partials[:2], pub, enc)
    with pytest.raises(InvalidArgument, match="only from combine"):
        dataclasses.replace(combined, ciphertexts=lone.ciphertexts)
    with pytest.raises(InvalidArgument, match="only from combine"):
        dataclasses.replace(combined, parties=("a", "b", "c"))
    object.__setattr__(combined, "ciphertexts", lone.ciphertexts)  # bypass the constructor
    with pytest.raises(InvalidArgument, match="only the result of combine"):
        decrypt_combined(combined, sec, enc)


class _LookAlike:
    def __init__(self, combined: CombinedCiphertexts) -> None:
        self.__dict__.update(combined.__dict__)


def test_decrypt_refuses_look_alikes_and_foreign_keys(
    keys: Keys, enc: JobEncoding, partials: list[EncryptedPartial]
) -> None:
    pub, sec, _ = keys
    combined = combine(partials, pub, enc)
    with pytest.raises(InvalidArgument):
        decrypt_combined(_LookAlike(combined), sec, enc)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        decrypt_combined(combined, keys[2], enc)  # type: ignore[arg-type]
    other_pub, other_sec = generate_job_keys()
    with pytest.raises(JobKeyMismatch):
        decrypt_combined(combined, other_sec, enc)
    foreign = encrypt_partials([[1, 1]] * enc.cells, enc, other_pub, party="intruder")
    with pytest.raises(JobKeyMismatch, match="party 'intruder'"):
        combine([partials[0], foreign], pub, enc)
    # relabelled with this job's fingerprint: its ciphertexts are still foreign and do not pass
    relabelled = dataclasses.replace(foreign, key_fingerprint=pub.fingerprint)
    with pytest.raises((InvalidCiphertext, AggregateCorrupt)):
        decrypt_combined(combine([partials[0], relabelled], pub, enc), sec, enc)
    assert decrypt_combined(combined, sec, enc).cells[0] == (10, 60)


def test_encryptions_are_randomised(keys: Keys, enc: JobEncoding) -> None:
    pub = keys[0]
    e = FastEncryptor(pub, expected=8)
    assert len({e.encrypt(5) for _ in range(8)}) == 8
    assert FastEncryptor(pub, expected=1).encrypt(5) != e.encrypt(5)
    same = [[3, 4]] * enc.cells
    a = encrypt_partials(same, enc, pub, party="a")
    b = encrypt_partials(same, enc, pub, party="b", encryptor=e)
    assert not set(a.ciphertexts) & set(b.ciphertexts)


def test_out_of_bound_contribution_is_detected_not_carried(
    keys: Keys, enc: JobEncoding, partials: list[EncryptedPartial]
) -> None:
    """A node that bypasses encode_cells and overfills a slot breaks decoding loudly."""
    pub, sec, _ = keys
    counts = layout(enc, pub.capacity)
    used = sum(enc.widths) * counts[0] // len(enc.fields)  # bits of plaintext 0's slots
    assert used < pub.capacity
    e = FastEncryptor(pub, expected=2 * len(counts))
    cases = [(5005, "cell 0 field 'count'"), (1 << used, "plaintext 0: bits set beyond")]
    for first, where in cases:  # slot 0 above 2 parties * 1000 / a bit above the layout
        plain = [first] + [0] * (len(counts) - 1)
        rogue = EncryptedPartial(
            "rogue", pub.fingerprint, enc.fingerprint, tuple(e.encrypt(m) for m in plain)
        )
        with pytest.raises(AggregateCorrupt, match=where) as err:
            decrypt_combined(combine([partials[0], rogue], pub, enc), sec, enc)
        assert str(first) not in str(err.value)


def test_secret_key_is_not_printed_or_pickled(keys: Keys) -> None:
    pub, sec, sk = keys
    assert str(sk.p) not in repr(sec) and str(sk.q) not in repr(sec)
    with pytest.raises(TypeError):
        pickle.dumps(sec)
    with pytest.raises(InvalidArgument):
        JobSecretKey(pub, phe.generate_paillier_keypair(n_length=2048)[1])


@pytest.mark.parametrize("n", [2**1023 + 1, 2**2048, (2**1024 + 643) ** 2, 12345])
def test_weak_or_malformed_public_keys_are_refused(n: int) -> None:
    with pytest.raises(InvalidArgument):
        JobPublicKey(n)
    with pytest.raises(InvalidArgument):
        generate_job_keys(n_length=1024)
