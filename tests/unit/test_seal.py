"""Researcher keys and sealed results: round trips, the documented layout, key validation.

The layout test opens a seal from the module docstring's layout alone, with the library the
sealing code does not use for each step (``cryptography`` unwraps the RSA-OAEP key that
pycryptodome wrapped; pycryptodome opens the AES-GCM that ``cryptography`` sealed), so the
documented format and the standard primitives are what is implemented.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from Crypto.PublicKey import ECC, RSA
from Crypto.PublicKey.RSA import RsaKey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox import SandboxError
from sandbox.crypto import (
    DEFAULT_RSA_BITS,
    SEAL_FORMAT_VERSION,
    KeyInvalid,
    KeyPassphraseInvalid,
    export_private_key,
    export_public_key,
    fingerprint,
    generate_key_pair,
    load_private_key,
    load_public_key,
    seal,
    unseal,
)
from sandbox.crypto._seal import length_prefixed

JOB = "job-0001"
SPEC = "sha256:" + "ab" * 32
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def key() -> RsaKey:
    return generate_key_pair()


@pytest.fixture(scope="module")
def public_pem(key: RsaKey) -> bytes:
    return export_public_key(key)


@pytest.mark.parametrize("size", [0, 1, 1024, 1 << 20])
def test_round_trip(key: RsaKey, public_pem: bytes, size: int) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    blob = seal(plaintext, public_pem, job_id=JOB, spec_digest=SPEC)
    if size >= 1024:
        assert plaintext[:64] not in blob
    assert unseal(blob, key, job_id=JOB, spec_digest=SPEC) == plaintext


def test_blob_layout_matches_the_docstring(key: RsaKey, public_pem: bytes) -> None:
    plaintext = b"district,n\nnorth,120\nsouth,95\n"
    blob = seal(plaintext, public_pem, job_id=JOB, spec_digest=SPEC)
    n = key.size_in_bytes()
    assert n == 384
    magic, version, fp, wrapped_len = struct.unpack(">4sB32sH", blob[:39])
    assert (magic, version, wrapped_len) == (b"SBXS", SEAL_FORMAT_VERSION, n)
    assert fp.hex() == fingerprint(public_pem)
    wrapped = blob[39 : 39 + n]
    nonce = blob[39 + n : 51 + n]
    tag = blob[51 + n : 67 + n]
    ciphertext = blob[67 + n :]
    assert len(ciphertext) == len(plaintext)

    private = serialization.load_pem_private_key(
        export_private_key(key, PASSPHRASE), PASSPHRASE.encode()
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    data_key = private.decrypt(wrapped, oaep)
    assert len(data_key) == 32
    ad = b"SBXS\x01" + b"".join(
        len(f).to_bytes(4, "big") + f for f in (fp, JOB.encode(), SPEC.encode())
    )
    cipher = AES.new(data_key, AES.MODE_GCM, nonce=nonce)
    cipher.update(ad)
    assert cipher.decrypt_and_verify(ciphertext, tag) == plaintext


def test_length_prefixed_fields_are_unambiguous() -> None:
    assert length_prefixed(b"ab", b"c") != length_prefixed(b"a", b"bc")
    assert length_prefixed(b"", b"x") == b"\0\0\0\0\0\0\0\x01x"


def test_fingerprint_is_sha256_of_the_der_spki(key: RsaKey, public_pem: bytes) -> None:
    der = serialization.load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert fingerprint(public_pem) == hashlib.sha256(der).hexdigest()
    # The same key in PEM with other line breaks has the same fingerprint.
    reflowed = public_pem.replace(b"\n", b"\r\n")
    assert fingerprint(reflowed) == fingerprint(public_pem)


def test_public_key_pem_is_spki(key: RsaKey, public_pem: bytes) -> None:
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = load_public_key(public_pem)
    assert (loaded.n, loaded.e) == (key.n, 65537)
    assert not loaded.has_private()


def test_generate_default_size_and_refuse_short() -> None:
    assert DEFAULT_RSA_BITS == 3072
    with pytest.raises(KeyInvalid, match="at least 3072"):
        generate_key_pair(2048)


# -- private key file ---------------------------------------------------------------------


def test_private_key_file_round_trip(key: RsaKey, tmp_path: Path) -> None:
    path = tmp_path / "researcher.pem"
    path.write_bytes(export_private_key(key, PASSPHRASE))
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = load_private_key(pem, PASSPHRASE)
    assert loaded.has_private()
    assert (loaded.n, loaded.e, loaded.d) == (key.n, key.e, key.d)
    assert load_private_key(pem, PASSPHRASE.encode()).n == key.n
    # The protection is PBKDF2-HMAC-SHA256 with AES-256-CBC: another library reads it.
    other = serialization.load_pem_private_key(pem, PASSPHRASE.encode())
    assert isinstance(other, rsa.RSAPrivateKey)
    assert other.private_numbers().d == key.d


def test_wrong_passphrase_is_rejected_without_library_text(key: RsaKey) -> None:
    pem = export_private_key(key, PASSPHRASE)
    with pytest.raises(KeyPassphraseInvalid) as info:
        load_private_key(pem, "not the passphrase")
    err = info.value
    assert isinstance(err, SandboxError)
    assert err.__cause__ is None and err.__suppress_context__
    assert "not the passphrase" not in str(err)
    assert PASSPHRASE not in str(err)


def test_damaged_private_key_file_is_rejected(key: RsaKey) -> None:
    pem = bytearray(export_private_key(key, PASSPHRASE))
    lines = pem.split(b"\n")
    middle = len(lines) // 2
    lines[middle] = lines[middle][::-1]  # still base64, different bytes
    with pytest.raises((KeyPassphraseInvalid, KeyInvalid)):
        load_private_key(b"\n".join(lines), PASSPHRASE)


def test_unprotected_private_key_is_refused(key: RsaKey) -> None:
    clear = key.export_key(format="PEM", pkcs=8)
    with pytest.raises(KeyInvalid, match="ENCRYPTED PRIVATE KEY") as info:
        load_private_key(clear, PASSPHRASE)
    assert "a PRIVATE KEY block" in str(info.value)


def test_empty_passphrase_is_refused(key: RsaKey) -> None:
    with pytest.raises(SandboxError, match="must not be empty"):
        export_private_key(key, "")
    with pytest.raises(SandboxError, match="private key"):
        export_private_key(key.public_key(), PASSPHRASE)


# -- public key validation ----------------------------------------------------------------


def _assert_no_key_bytes(err: Exception, pem: bytes) -> None:
    text = str(err)
    body = [line for line in pem.decode("ascii", "replace").splitlines() if "-----" not in line]
    for line in body:
        if len(line) >= 8:
            assert line[:8] not in text


def test_rejects_a_2048_bit_key() -> None:
    pem = RSA.generate(2048).public_key().export_key(format="PEM")
    with pytest.raises(KeyInvalid, match="2048 bits; at least 3072") as info:
        load_public_key(pem)
    _assert_no_key_bytes(info.value, pem)
    with pytest.raises(KeyInvalid):
        seal(b"x", pem, job_id=JOB, spec_digest=SPEC)


def test_rejects_an_ecc_key() -> None:
    pem = ECC.generate(curve="P-256").public_key().export_key(format="PEM").encode()
    with pytest.raises(KeyInvalid, match="is EC, not RSA") as info:
        load_public_key(pem)
    _assert_no_key_bytes(info.value, pem)


def test_rejects_a_wrong_exponent(key: RsaKey) -> None:
    pem = RSA.construct((key.n, 3)).export_key(format="PEM")
    with pytest.raises(KeyInvalid, match="exponent must be 65537") as info:
        load_public_key(pem)
    _assert_no_key_bytes(info.value, pem)


def test_rejects_a_private_key_and_pkcs1(key: RsaKey) -> None:
    private_pem = key.export_key(format="PEM", pkcs=8)
    with pytest.raises(KeyInvalid, match="got a PRIVATE KEY block") as info:
        load_public_key(private_pem)
    _assert_no_key_bytes(info.value, private_pem)
    pkcs1 = serialization.load_pem_public_key(export_public_key(key)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    with pytest.raises(KeyInvalid, match="got a RSA PUBLIC KEY block"):
        load_public_key(pkcs1)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not a key",
        b"\xff\xfe\x00binary",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
        b"-----BEGIN secret stuff-----\nAAAA\n-----END secret stuff-----\n",
    ],
)
def test_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(KeyInvalid) as info:
        load_public_key(garbage)
    assert "secret stuff" not in str(info.value)
    with pytest.raises(KeyInvalid):
        fingerprint(garbage)


def test_rejects_a_truncated_key(public_pem: bytes) -> None:
    lines = public_pem.splitlines()
    truncated = b"\n".join([*lines[:3], lines[-1]]) + b"\n"
    with pytest.raises(KeyInvalid):
        load_public_key(truncated)
