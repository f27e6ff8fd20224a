"""Transport-free cryptography: researcher keys, sealed results, data at rest.

Researchers hold an RSA key pair (the private half in passphrase-protected PKCS#8 PEM) and
register the public half; :func:`seal` encrypts a result so only they can :func:`unseal` it.
A :class:`KeyRing` of the server's AES keys protects data at rest, with rotation.
"""

from __future__ import annotations

from sandbox._errors import (
    KeyFileInsecure,
    KeyFileInvalid,
    KeyInvalid,
    KeyPassphraseInvalid,
    KeyUnknown,
    SealBroken,
)
from sandbox.crypto._at_rest import (
    KeyRing,
    blob_key_id,
    generate_key_file,
    key_id,
    rotate_key_file,
)
from sandbox.crypto._keys import (
    DEFAULT_RSA_BITS,
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    export_private_key,
    export_public_key,
    fingerprint,
    generate_key_pair,
    load_private_key,
    load_public_key,
)
from sandbox.crypto._seal import SEAL_FORMAT_VERSION, seal, unseal

__all__ = [
    "DEFAULT_RSA_BITS",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "SEAL_FORMAT_VERSION",
    "KeyFileInsecure",
    "KeyFileInvalid",
    "KeyInvalid",
    "KeyPassphraseInvalid",
    "KeyRing",
    "KeyUnknown",
    "SealBroken",
    "blob_key_id",
    "export_private_key",
    "export_public_key",
    "fingerprint",
    "generate_key_file",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "rotate_key_file",
    "seal",
    "unseal",
]
