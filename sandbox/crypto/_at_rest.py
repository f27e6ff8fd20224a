"""Data at rest: AES-256-GCM under the server's own keys, with rotation.

A :class:`KeyRing` holds 32-byte AES keys, each named by its key id: the first 8 bytes of the
SHA-256 of the key, in hex. The newest key (last in the file) is the active one; older keys
only open what they sealed until :meth:`KeyRing.rewrap` moves it to the active key.

Key file: UTF-8 text, one key per line in base64 (44 characters) or hex (64 characters),
oldest first; blank lines and lines starting with ``#`` are ignored. The file must not be
accessible to its group or to others (mode 0600 or stricter).

Blob layout, format version 1::

    offset  size  field
    0       4     magic b"SBXR"
    4       1     format version, 1
    5       8     key id (raw bytes)
    13      12    nonce
    25      16    GCM tag
    41      rest  ciphertext (as long as the plaintext)

Associated data: ``b"SBXR" || version || field(key id) || field(context)``, with ``field(x)``
a 4-byte big-endian length then ``x``. The caller's ``context`` (e.g. b"result:<job id>")
binds a blob to its place: a blob moved elsewhere does not open.

Nonces are random (96 bits): rotate each key well before 2**32 seals.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import stat
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from sandbox._errors import (
    AlreadyExists,
    InvalidArgument,
    KeyFileInsecure,
    KeyFileInvalid,
    KeyUnknown,
    SealBroken,
)
from sandbox.crypto._seal import decrypt_gcm, encrypt_gcm, length_prefixed

AT_REST_FORMAT_VERSION = 1
MAGIC = b"SBXR"
KEY_BYTES = 32
KEY_ID_BYTES = 8

_HEADER = struct.Struct(">4sB8s")  # magic, version, key id
_BROKEN = "blob at rest does not open: damaged, or sealed for another context"
_FILE_HEADER = "# sandbox data-at-rest keys: one per line (base64), oldest first, last is active\n"
_SEPARATORS = re.compile(r"[\s,]+")


def key_id(key: bytes) -> str:
    """The id of a key: first 8 bytes of its SHA-256, in hex (16 digits)."""
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES].hex()


def blob_key_id(blob: bytes) -> str:
    """The key id named in a blob's header (unauthenticated until the blob is opened)."""
    _, _, raw_id = _parse_header(bytes(blob))
    return raw_id.hex()


class KeyRing:
    """The server's data-at-rest keys; the last one is active. Never shows key bytes."""

    __slots__ = ("_active", "_keys", "_source")

    def __init__(self, keys: Sequence[bytes], *, source: str = "key ring") -> None:
        """Keys oldest first (the last seals). ``source`` names them in error messages."""
        if not keys:
            raise KeyFileInvalid(f"{source}: no keys")
        by_id: dict[str, bytes] = {}
        for number, key in enumerate(keys, start=1):
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise KeyFileInvalid(f"{source}: key {number} is not {KEY_BYTES} bytes")
            kid = key_id(key)
            if kid in by_id:
                raise KeyFileInvalid(f"{source}: key {number} (id {kid}) appears twice")
            by_id[kid] = key
        self._keys = by_id
        self._active = key_id(keys[-1])
        self._source = source

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Load a key file (see the module doc); refuse it if group or others can access it."""
        return cls._from_text(_read_key_file(Path(path)), source=str(path))

    @classmethod
    def from_env_value(cls, value: str, *, source: str = "environment value") -> KeyRing:
        """Keys from a string such as an environment variable's value (which the caller reads).

        Keys are separated by commas, spaces or newlines, oldest first.
        """
        keys = []
        for number, token in enumerate(t for t in _SEPARATORS.split(value) if t):
            keys.append(_decode_key(token, f"{source}: entry {number + 1}"))
        return cls(keys, source=source)

    @classmethod
    def _from_text(cls, text: str, *, source: str) -> KeyRing:
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(_decode_key(line, f"{source}: line {number}"))
        return cls(keys, source=source)

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, oldest first."""
        return tuple(self._keys)

    def seal_at_rest(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Encrypt under the active key, bound to ``context``."""
        raw_id = bytes.fromhex(self._active)
        header = _HEADER.pack(MAGIC, AT_REST_FORMAT_VERSION, raw_id)
        return header + encrypt_gcm(
            self._keys[self._active], bytes(plaintext), _ad(raw_id, context)
        )

    def open_at_rest(self, blob: bytes, *, context: bytes) -> bytes:
        """Decrypt a blob sealed by any key of the ring under the same ``context``.

        Raises:
            KeyUnknown: the blob names a key id the ring does not hold.
            SealBroken: the blob is damaged or ``context`` differs.
        """
        blob = bytes(blob)
        _, _, raw_id = _parse_header(blob)
        key = self._keys.get(raw_id.hex())
        if key is None:
            raise KeyUnknown(
                f"blob sealed under key id {raw_id.hex()}, not in {self._source} "
                f"(ids: {', '.join(self._keys)})"
            )
        try:
            return decrypt_gcm(key, blob[_HEADER.size :], _ad(raw_id, context))
        except ValueError:
            raise SealBroken(_BROKEN) from None

    def rewrap(self, blob: bytes, *, context: bytes) -> bytes:
        """The blob under the active key (unchanged, once verified, if already there)."""
        plaintext = self.open_at_rest(blob, context=context)
        if blob_key_id(blob) == self._active:
            return bytes(blob)
        return self.seal_at_rest(plaintext, context=context)

    def __repr__(self) -> str:
        return (
            f"KeyRing(source={self._source!r}, key_ids={list(self._keys)}, active={self._active!r})"
        )


def generate_key_file(path: str | os.PathLike[str]) -> KeyRing:
    """Create a key file with one new key (mode 0600); refuse if ``path`` exists."""
    target = Path(path)
    with _directory_lock(target.parent) as dir_fd:
        if target.exists() or target.is_symlink():
            raise AlreadyExists(f"key file {target} already exists; use rotate_key_file")
        text = _FILE_HEADER + _encode_key(secrets.token_bytes(KEY_BYTES))
        _atomic_write(target, text, dir_fd)
    return KeyRing._from_text(text, source=str(target))


def rotate_key_file(path: str | os.PathLike[str]) -> KeyRing:
    """Append a new key to a key file (it becomes active); returns the new key ring.

    The file is replaced atomically (temporary file, fsync, rename) under an exclusive lock
    on its directory, so concurrent rotations do not lose a key. Processes holding the old
    key ring must reload it to seal under the new key. A symbolic link is followed (the file
    it points to is replaced, the link kept).
    """
    target = Path(path).resolve()
    with _directory_lock(target.parent) as dir_fd:
        text = _read_key_file(target)
        KeyRing._from_text(text, source=str(target))  # refuse to extend a broken file
        if text and not text.endswith("\n"):
            text += "\n"
        text += _encode_key(secrets.token_bytes(KEY_BYTES))
        _atomic_write(target, text, dir_fd)
    return KeyRing._from_text(text, source=str(target))


def _ad(raw_id: bytes, context: bytes) -> bytes:
    if not isinstance(context, bytes):
        raise InvalidArgument("context must be bytes")
    return MAGIC + bytes([AT_REST_FORMAT_VERSION]) + length_prefixed(raw_id, context)


def _parse_header(blob: bytes) -> tuple[bytes, int, bytes]:
    if len(blob) < _HEADER.size:
        raise SealBroken(_BROKEN)
    magic, version, raw_id = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != AT_REST_FORMAT_VERSION:
        raise SealBroken(_BROKEN)
    return magic, version, raw_id


def _encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii") + "\n"


def _decode_key(token: str, where: str) -> bytes:
    """A key in base64 or hex; the error names ``where``, never the text."""
    key: bytes | None = None
    try:
        if len(token) == 2 * KEY_BYTES:
            key = bytes.fromhex(token)
        else:
            key = base64.b64decode(token, validate=True)
    except (ValueError, binascii.Error):
        key = None
    if key is None or len(key) != KEY_BYTES:
        raise KeyFileInvalid(f"{where}: not a {KEY_BYTES}-byte key in base64 or hex")
    return key


def _read_key_file(path: Path) -> str:
    """The file's text, after checking it is a regular file only its owner can access."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileInvalid(
            f"key file {path} does not exist (create one with generate_key_file)"
        ) from None
    except OSError as exc:
        raise KeyFileInvalid(f"key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileInvalid(f"key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileInsecure(
                f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others "
                f"can access it; run chmod 600 {path}"
            )
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileInvalid(f"key file {path} is not UTF-8 text") from None


def _atomic_write(path: Path, text: str, dir_fd: int) -> None:
    """Write ``text`` to a 0600 temporary file beside ``path``, fsync, rename over ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise KeyFileInvalid(f"cannot write key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.fsync(dir_fd)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[int]:
    """An exclusive ``flock`` on ``directory``; yields its descriptor (for fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileInvalid(f"key directory {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)
