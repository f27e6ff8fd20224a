"""Sealed results: only the holder of the researcher's private key can open them.

Each seal draws a fresh 32-byte AES key and a fresh 12-byte nonce, encrypts the plaintext
with AES-256-GCM and wraps the AES key with RSA-OAEP (SHA-256, MGF1-SHA-256, empty label)
under the researcher's registered public key.

Blob layout, format version 1 (integers big-endian; ``n`` is the RSA modulus length in
bytes, 384 for a 3072-bit key)::

    offset   size  field
    0        4     magic b"SBXS"
    4        1     format version, 1
    5        32    fingerprint: SHA-256 of the recipient public key's DER SubjectPublicKeyInfo
    37       2     n, the length of the wrapped key
    39       n     wrapped key: RSA-OAEP-SHA256 of the 32-byte AES key
    39+n     12    nonce
    51+n     16    GCM tag
    67+n     rest  ciphertext (as long as the plaintext)

Associated data of the GCM encryption (rebuilt by the opener, never stored)::

    b"SBXS" || version (1 byte) || field(fingerprint) || field(job_id) || field(spec_digest)

where ``field(x)`` is a 4-byte length then ``x``, strings in UTF-8. The result is thus bound to
one key, one job and one job spec: opening it under another job id or spec digest fails.

Any failure to open (a changed byte anywhere, a wrong job id or spec digest, a wrong private
key) raises :class:`~sandbox._errors.SealBroken` with one fixed message.

A seal protects confidentiality and integrity, not origin: anyone holding the public key can
seal. That a result comes from the sandbox rests on the authenticated channel it arrives by.
"""

from __future__ import annotations

import hmac
import secrets
import struct

from Crypto.Cipher import PKCS1_OAEP
from Crypto.Cipher.PKCS1_OAEP import PKCS1OAEP_Cipher
from Crypto.Hash import SHA256
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Signature.pss import MGF1
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox._errors import InvalidArgument, SealBroken
from sandbox.crypto._keys import key_fingerprint, load_public_key

SEAL_FORMAT_VERSION = 1
MAGIC = b"SBXS"
AES_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_HEADER = struct.Struct(">4sB32sH")  # magic, version, fingerprint, wrapped key length
_BROKEN = "sealed result does not open: damaged, or not sealed for this key, job and spec"


def seal(plaintext: bytes, public_key_pem: bytes, *, job_id: str, spec_digest: str) -> bytes:
    """Seal ``plaintext`` for the holder of the private half of ``public_key_pem``.

    Raises:
        KeyInvalid: the public key fails validation (see ``load_public_key``).
    """
    public_key = load_public_key(public_key_pem)
    fp = key_fingerprint(public_key)
    ad = _associated_data(fp, job_id, spec_digest)
    data_key = secrets.token_bytes(AES_KEY_BYTES)
    wrapped = _oaep(public_key).encrypt(data_key)
    header = _HEADER.pack(MAGIC, SEAL_FORMAT_VERSION, fp, len(wrapped)) + wrapped
    return header + encrypt_gcm(data_key, bytes(plaintext), ad)


def unseal(blob: bytes, private_key: RsaKey, *, job_id: str, spec_digest: str) -> bytes:
    """Open a blob made by :func:`seal` for ``private_key``'s public half, job and spec.

    Raises:
        SealBroken: for every reason the blob does not open (one message for all).
    """
    if not private_key.has_private():
        raise InvalidArgument("unseal needs the private key")
    fp = key_fingerprint(private_key)
    ad = _associated_data(fp, job_id, spec_digest)
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise SealBroken(_BROKEN)
    magic, version, blob_fp, wrapped_len = _HEADER.unpack_from(blob)
    ok = (
        magic == MAGIC
        and version == SEAL_FORMAT_VERSION
        and hmac.compare_digest(blob_fp, fp)
        and wrapped_len == private_key.size_in_bytes()
        and len(blob) >= _HEADER.size + wrapped_len + NONCE_BYTES + TAG_BYTES
    )
    if not ok:
        raise SealBroken(_BROKEN)
    body = _HEADER.size + wrapped_len
    try:
        data_key = _oaep(private_key).decrypt(blob[_HEADER.size : body])
        if len(data_key) != AES_KEY_BYTES:
            raise ValueError
        return decrypt_gcm(data_key, blob[body:], ad)
    except ValueError:
        raise SealBroken(_BROKEN) from None


def encrypt_gcm(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM under a fresh random nonce: ``nonce || tag || ciphertext``.

    The symmetric half of :func:`seal` and of sealing at rest (internal to the package).
    OpenSSL's GCM (``cryptography``): it runs on every release, where pycryptodome's
    per-cipher set-up cost more than the encryption.
    """
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, ad)  # ciphertext || tag
    return nonce + sealed[-TAG_BYTES:] + sealed[:-TAG_BYTES]


def decrypt_gcm(key: bytes, sealed: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`encrypt_gcm`; ``ValueError`` if anything fails to authenticate."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise ValueError("too short")
    nonce = sealed[:NONCE_BYTES]
    tag = sealed[NONCE_BYTES : NONCE_BYTES + TAG_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, sealed[NONCE_BYTES + TAG_BYTES :] + tag, ad)
    except InvalidTag:
        raise ValueError("does not authenticate") from None


def length_prefixed(*fields: bytes) -> bytes:
    """Each field as a 4-byte big-endian length then its bytes (an unambiguous join)."""
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def _associated_data(fp: bytes, job_id: str, spec_digest: str) -> bytes:
    fields = (fp, _utf8("job_id", job_id), _utf8("spec_digest", spec_digest))
    return MAGIC + bytes([SEAL_FORMAT_VERSION]) + length_prefixed(*fields)


def _utf8(name: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{name} is not encodable as UTF-8") from None


def _oaep(key: RsaKey) -> PKCS1OAEP_Cipher:
    return PKCS1_OAEP.new(key, hashAlgo=SHA256, mgfunc=lambda x, y: MGF1(x, y, SHA256))
