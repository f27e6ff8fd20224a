"""Researcher key pairs: RSA, the private key in passphrase-protected PKCS#8 PEM.

The public key travels as PEM ``SubjectPublicKeyInfo`` and is named by its fingerprint, the
SHA-256 (hex) of its DER encoding. Errors name what is wrong, never key bytes or passphrases.
"""

from __future__ import annotations

import hashlib

from Crypto.IO import PEM
from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Util.asn1 import DerObjectId, DerSequence

from sandbox._errors import InvalidArgument, KeyInvalid, KeyPassphraseInvalid

DEFAULT_RSA_BITS = 3072
MIN_RSA_BITS = 3072
MAX_RSA_BITS = 8192
"""Upper bound: sealing under a huge modulus would make every result slow for the server."""
PUBLIC_EXPONENT = 65537

# PBKDF2-HMAC-SHA256 (600 000 iterations, the OWASP figure) with AES-256-CBC: about 0.1 s to
# export or load on a laptop. scrypt (memory-hard) at a comparable strength needs 128 MiB and
# 3-6 times as long; the passphrase only guards a file the researcher already holds.
_PROTECTION = "PBKDF2WithHMAC-SHA256AndAES256-CBC"
_PBKDF2_ITERATIONS = 600_000

_RSA_OID = "1.2.840.113549.1.1.1"
_ALGORITHM_NAMES = {
    "1.2.840.10045.2.1": "EC",
    "1.2.840.10040.4.1": "DSA",
    "1.3.101.112": "Ed25519",
    "1.3.101.113": "Ed448",
    "1.2.840.113549.1.1.10": "RSA-PSS",
}


def generate_key_pair(bits: int = DEFAULT_RSA_BITS) -> RsaKey:
    """A new RSA private key (its ``public_key()`` is the half to register)."""
    _check_size(bits)
    return RSA.generate(bits, e=PUBLIC_EXPONENT)


def export_private_key(key: RsaKey, passphrase: str | bytes) -> bytes:
    """The private key as encrypted PKCS#8 PEM (``ENCRYPTED PRIVATE KEY``)."""
    if not key.has_private():
        raise InvalidArgument("export_private_key needs a private key")
    _check_passphrase(passphrase)
    return key.export_key(
        format="PEM",
        passphrase=passphrase,
        pkcs=8,
        protection=_PROTECTION,
        prot_params={"iteration_count": _PBKDF2_ITERATIONS},
    )


def load_private_key(pem: bytes, passphrase: str | bytes) -> RsaKey:
    """Decrypt a private key written by :func:`export_private_key`.

    Raises:
        KeyInvalid: not an encrypted PKCS#8 PEM block, or not an RSA key.
        KeyPassphraseInvalid: the passphrase is wrong (or the file is damaged).
    """
    _check_passphrase(passphrase)
    _, marker = _pem_block(pem)
    if marker != "ENCRYPTED PRIVATE KEY":
        raise KeyInvalid(
            f"expected an ENCRYPTED PRIVATE KEY PEM block (passphrase-protected PKCS#8), "
            f"got {_describe(marker)}"
        )
    try:
        key = RSA.import_key(pem, passphrase=passphrase)
    except (ValueError, IndexError, TypeError):
        # No chaining: the library's exception text is not ours to show.
        raise KeyPassphraseInvalid(
            "cannot decrypt the private key: wrong passphrase, damaged file, or not an RSA key"
        ) from None
    if not key.has_private():
        raise KeyInvalid("the PEM block holds no private key")
    return key


def export_public_key(key: RsaKey) -> bytes:
    """The public half as PEM ``SubjectPublicKeyInfo`` (``BEGIN PUBLIC KEY``)."""
    return key.public_key().export_key(format="PEM")


def load_public_key(pem: bytes) -> RsaKey:
    """Parse and validate a submitted public key.

    It must be one PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) block holding an RSA key of
    ``MIN_RSA_BITS`` to ``MAX_RSA_BITS`` bits with public exponent 65537.

    Raises:
        KeyInvalid: naming the failed check, never the key bytes.
    """
    key = _parse_public_key(pem)
    _check_size(key.size_in_bits())
    if key.e != PUBLIC_EXPONENT:
        raise KeyInvalid(f"RSA public exponent must be {PUBLIC_EXPONENT}")
    return key


def fingerprint(public_pem: bytes) -> str:
    """SHA-256 (64 hex digits) of the DER ``SubjectPublicKeyInfo`` of a valid public key."""
    return key_fingerprint(load_public_key(public_pem)).hex()


def key_fingerprint(key: RsaKey) -> bytes:
    """The raw 32-byte fingerprint of a key (public or private: of its public half)."""
    der = key.public_key().export_key(format="DER")
    return hashlib.sha256(der).digest()


def _check_size(bits: int) -> None:
    if bits < MIN_RSA_BITS:
        raise KeyInvalid(f"RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")
    if bits > MAX_RSA_BITS:
        raise KeyInvalid(f"RSA key has {bits} bits; at most {MAX_RSA_BITS} are accepted")


def _check_passphrase(passphrase: str | bytes) -> None:
    if not isinstance(passphrase, str | bytes):
        raise InvalidArgument("the passphrase must be str or bytes")
    if not passphrase:
        raise InvalidArgument("the passphrase must not be empty")


def _pem_block(pem: bytes) -> tuple[bytes, str]:
    """The DER body and marker (e.g. ``PUBLIC KEY``) of one unencrypted-header PEM block."""
    if not isinstance(pem, bytes):
        raise KeyInvalid("a PEM key must be bytes")
    try:
        text = pem.decode("ascii")
        der, marker, _ = PEM.decode(text)
    except (ValueError, IndexError, TypeError):
        raise KeyInvalid("not a PEM block") from None
    return der, marker


def _describe(marker: str) -> str:
    """A PEM marker fit to quote back (it is caller text): short, upper case, or elided."""
    if len(marker) <= 40 and marker.replace(" ", "").isalnum() and marker.isupper():
        return f"a {marker} block"
    return "another kind of PEM block"


def _parse_public_key(pem: bytes) -> RsaKey:
    der, marker = _pem_block(pem)
    if marker != "PUBLIC KEY":
        raise KeyInvalid(
            f"expected a PUBLIC KEY PEM block (SubjectPublicKeyInfo), got {_describe(marker)}"
        )
    algorithm = _spki_algorithm(der)
    if algorithm != _RSA_OID:
        name = _ALGORITHM_NAMES.get(algorithm, algorithm)
        raise KeyInvalid(f"the public key is {name}, not RSA")
    try:
        key = RSA.import_key(der)
    except (ValueError, IndexError, TypeError):
        raise KeyInvalid("the RSA public key does not parse") from None
    if key.has_private():  # pragma: no cover - a PUBLIC KEY block cannot hold one
        raise KeyInvalid("expected a public key")
    return key


def _spki_algorithm(der: bytes) -> str:
    """The algorithm OID of a DER ``SubjectPublicKeyInfo``."""
    try:
        spki = DerSequence().decode(der, nr_elements=2)
        algorithm = DerSequence().decode(spki[0], nr_elements=(1, 2))
        return str(DerObjectId().decode(algorithm[0]).value)
    except (ValueError, IndexError, TypeError, EOFError):
        raise KeyInvalid("the public key is not a valid SubjectPublicKeyInfo") from None
