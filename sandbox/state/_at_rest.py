"""The server's data-at-rest keys, as the state store uses them for stored results.

Keys come from a key file (rotated with ``sandbox keys rotate``) or from an environment value
(a comma-separated list, newest last). A running server rereads the key file when it changes,
so a rotation reaches it without a restart: it then seals with the new key and still opens
what the old keys sealed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sandbox.crypto import KeyRing, blob_key_id, generate_key_file

DEFAULT_KEY_FILE = "at_rest.keys"


class AtRestKeys:
    """A :class:`KeyRing` from a file (reloaded when the file changes) or a fixed value."""

    def __init__(self, ring: KeyRing, path: Path | None = None) -> None:
        self._ring = ring
        self._path = path
        self._stamp = _stamp(path) if path else None
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> AtRestKeys:
        """The ring in ``path``; a new file with one fresh key if it is missing and ``create``."""
        ring = generate_key_file(path) if create and not path.exists() else KeyRing.from_file(path)
        return cls(ring, path)

    @classmethod
    def from_value(cls, value: str) -> AtRestKeys:
        return cls(KeyRing.from_env_value(value, source="SANDBOX_AT_REST_KEYS"))

    @classmethod
    def configured(cls, key_file: Path | None, keys_value: str, state_dir: Path) -> AtRestKeys:
        """From the server's settings: the keys value if set, else the key file (by default
        ``state_dir / "at_rest.keys"``, created on first start)."""
        if keys_value:
            return cls.from_value(keys_value)
        return cls.from_file(key_file or state_dir / DEFAULT_KEY_FILE)

    @property
    def path(self) -> Path | None:
        return self._path

    def ring(self, wanted_key_id: str = "") -> KeyRing:
        """The current ring; reread from its file if the file changed or lacks ``wanted_key_id``."""
        with self._lock:
            if self._path is not None:
                stamp = _stamp(self._path)
                missing = wanted_key_id and wanted_key_id not in self._ring.key_ids
                if stamp != self._stamp or missing:
                    self._ring = KeyRing.from_file(self._path)
                    self._stamp = stamp
            return self._ring

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        return self.ring().seal_at_rest(plaintext, context=context)

    def open(self, blob: bytes, context: bytes) -> bytes:
        return self.ring(blob_key_id(blob)).open_at_rest(blob, context=context)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def result_context(job_id: str) -> bytes:
    """Binds a stored result to its job: a result copied to another job's row does not open."""
    return b"result:" + job_id.encode()
