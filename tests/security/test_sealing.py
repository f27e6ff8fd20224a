"""Sealed results and data at rest resist tampering, substitution and nonce reuse.

Every changed byte, every wrong job id or spec digest and every wrong key fails with one error
and one message. Nonces come from the real sealing path: the symmetric half shared by
``seal`` and the at-rest key ring is drawn 100 000 times, ``seal`` itself 2 000 times.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from Crypto.Cipher import PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey.RSA import RsaKey

from sandbox.crypto import (
    KeyRing,
    KeyUnknown,
    SealBroken,
    export_public_key,
    generate_key_pair,
    key_id,
    seal,
    unseal,
)
from sandbox.crypto._keys import key_fingerprint
from sandbox.crypto._seal import NONCE_BYTES, encrypt_gcm

JOB = "job-0042"
SPEC = "sha256:" + "5e" * 32
PLAINTEXT = b"district,n\nnorth,120\n"
HEADER = 39  # magic, version, fingerprint, wrapped key length


@pytest.fixture(scope="module")
def key_a() -> RsaKey:
    return generate_key_pair()


@pytest.fixture(scope="module")
def key_b() -> RsaKey:
    return generate_key_pair()


@pytest.fixture(scope="module")
def blob(key_a: RsaKey) -> bytes:
    return seal(PLAINTEXT, export_public_key(key_a), job_id=JOB, spec_digest=SPEC)


def _broken_message(fn: Callable[[], object]) -> str:
    with pytest.raises(SealBroken) as info:
        fn()
    err = info.value
    assert err.__cause__ is None
    return str(err)


# -- sealed results -----------------------------------------------------------------------


def test_every_single_byte_flip_is_rejected(key_a: RsaKey, blob: bytes) -> None:
    assert unseal(blob, key_a, job_id=JOB, spec_digest=SPEC) == PLAINTEXT
    messages = set()
    for position in range(len(blob)):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        messages.add(
            _broken_message(partial(unseal, bytes(damaged), key_a, job_id=JOB, spec_digest=SPEC))
        )
    assert len(messages) == 1  # nothing says which part was wrong


def test_truncated_or_extended_blob_is_rejected(key_a: RsaKey, blob: bytes) -> None:
    n = key_a.size_in_bytes()
    cuts = [0, 4, HEADER - 1, HEADER, HEADER + n, HEADER + n + 27, len(blob) - 1]
    variants = [blob[:cut] for cut in cuts] + [blob + b"\0", blob + blob]
    for variant in variants:
        _broken_message(partial(unseal, variant, key_a, job_id=JOB, spec_digest=SPEC))


@pytest.mark.parametrize(
    ("job_id", "spec_digest"),
    [
        ("job-0043", SPEC),
        (JOB, "sha256:" + "5f" * 32),
        (JOB.upper(), SPEC),
        (SPEC, JOB),  # swapped
        (JOB + SPEC, ""),  # the same bytes, split differently
        (JOB[:-1], JOB[-1] + SPEC),
        ("", ""),
    ],
)
def test_wrong_job_or_spec_is_rejected(
    key_a: RsaKey, blob: bytes, job_id: str, spec_digest: str
) -> None:
    message = _broken_message(lambda: unseal(blob, key_a, job_id=job_id, spec_digest=spec_digest))
    assert message == _broken_message(lambda: unseal(b"", key_a, job_id=JOB, spec_digest=SPEC))


def test_sealed_for_a_cannot_be_opened_with_b(key_a: RsaKey, key_b: RsaKey, blob: bytes) -> None:
    first = _broken_message(lambda: unseal(blob, key_b, job_id=JOB, spec_digest=SPEC))
    # Relabelled for B (B's fingerprint in the header), the wrapped key still fails under B.
    relabelled = blob[:5] + key_fingerprint(key_b) + blob[37:]
    second = _broken_message(lambda: unseal(relabelled, key_b, job_id=JOB, spec_digest=SPEC))
    assert first == second
    # And the same relabelled blob no longer opens for A either.
    _broken_message(lambda: unseal(relabelled, key_a, job_id=JOB, spec_digest=SPEC))


def test_splicing_a_ciphertext_under_another_header_is_rejected(key_a: RsaKey, blob: bytes) -> None:
    other = seal(PLAINTEXT, export_public_key(key_a), job_id=JOB, spec_digest=SPEC)
    body = HEADER + key_a.size_in_bytes()
    spliced = blob[:body] + other[body:]  # A's wrapped key, another seal's nonce/tag/data
    _broken_message(lambda: unseal(spliced, key_a, job_id=JOB, spec_digest=SPEC))


@pytest.mark.slow
def test_no_nonce_reuse_in_the_symmetric_half_over_100_000_seals() -> None:
    key = bytes(32)  # one key, so a repeated nonce would be a real (key, nonce) reuse
    count = 100_000
    nonces = {encrypt_gcm(key, b"", b"ad")[:NONCE_BYTES] for _ in range(count)}
    assert len(nonces) == count


def test_no_nonce_or_data_key_reuse_over_2_000_seals(key_a: RsaKey) -> None:
    public_pem = export_public_key(key_a)
    n = key_a.size_in_bytes()
    blobs = [seal(b"", public_pem, job_id=JOB, spec_digest=SPEC) for _ in range(2000)]
    nonces = {b[HEADER + n : HEADER + n + NONCE_BYTES] for b in blobs}
    assert len(nonces) == len(blobs)
    assert len({b[HEADER : HEADER + n] for b in blobs}) == len(blobs)
    # A fresh AES key each time (unwrapping is slow: a sample).
    oaep = PKCS1_OAEP.new(key_a, hashAlgo=SHA256)
    data_keys = {oaep.decrypt(b[HEADER : HEADER + n]) for b in blobs[:25]}
    assert len(data_keys) == 25


# -- data at rest -------------------------------------------------------------------------

KEY = bytes(range(32))
CONTEXT = b"result:job-0042"


def test_at_rest_every_single_byte_flip_is_rejected() -> None:
    ring = KeyRing([KEY])
    sealed = ring.seal_at_rest(PLAINTEXT, context=CONTEXT)
    messages = set()
    for position in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        if 5 <= position < 13:  # the key id: names a key the ring does not hold
            with pytest.raises(KeyUnknown):
                ring.open_at_rest(bytes(damaged), context=CONTEXT)
            continue
        messages.add(_broken_message(partial(ring.open_at_rest, bytes(damaged), context=CONTEXT)))
    assert len(messages) == 1
    for cut in (0, 12, 13, 40, len(sealed) - 1):
        _broken_message(partial(ring.open_at_rest, sealed[:cut], context=CONTEXT))


def test_at_rest_wrong_context_is_rejected() -> None:
    ring = KeyRing([KEY])
    sealed = ring.seal_at_rest(PLAINTEXT, context=CONTEXT)
    for context in (b"", b"result:job-0043", CONTEXT + b"\0", CONTEXT.upper()):
        _broken_message(partial(ring.open_at_rest, sealed, context=context))
        _broken_message(partial(ring.rewrap, sealed, context=context))


def test_at_rest_key_substitution_is_rejected() -> None:
    # A ring holding another key under the same id cannot exist (ids are key hashes), so
    # relabel a blob with another key's id: the key ring finds that key, which fails.
    other = bytes(range(1, 33))
    ring = KeyRing([KEY, other])
    sealed = ring.seal_at_rest(PLAINTEXT, context=CONTEXT)
    relabelled = sealed[:5] + bytes.fromhex(key_id(KEY)) + sealed[13:]
    _broken_message(lambda: ring.open_at_rest(relabelled, context=CONTEXT))


def test_at_rest_no_nonce_reuse_over_2_000_seals() -> None:
    ring = KeyRing([KEY])
    nonces = {ring.seal_at_rest(b"", context=CONTEXT)[13:25] for _ in range(2000)}
    assert len(nonces) == 2000
