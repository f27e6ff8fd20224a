"""Signed checkpoints (tree heads) of the audit log, receipts, and the timer that signs them.

A checkpoint is ``{origin, size, root, timestamp, key_id}`` signed with the server's Ed25519
key (RFC 8032, ``cryptography``). The signed message is ``CHECKPOINT_CONTEXT`` followed by the
canonical JSON of those five fields, so a signature binds the size and the root together:
a root cannot be presented as the head of a tree of another size. ``key_id`` is the SHA-256
of the raw 32-byte public key; the document also carries the public key itself (base64) so
an offline verifier can work from it alone, though a reviewer should pin the key
(``sandbox audit public-key``) rather than trust the copy inside the file.

The signing key lives in a file in the state directory (PKCS#8 PEM, created 0600 on first
use, refused when group or others can read it).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sandbox._errors import CheckpointInvalid, KeyFileInsecure, KeyFileInvalid
from sandbox.audit._canonical import canonical_json
from sandbox.audit._merkle import HASH_SIZE, leaf_hash
from sandbox.audit._proofs import verify_inclusion

if TYPE_CHECKING:
    from sandbox.audit._log import AuditLog

log = logging.getLogger("sandbox.audit")

SIGNING_KEY_FILE = "audit_signing.key"
"""Default name of the signing key file in the state directory."""
CHECKPOINT_CONTEXT = b"sandbox-audit-checkpoint/v1\n"
_SIGNED_FIELDS = ("key_id", "origin", "root", "size", "timestamp")


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


# ---- keys -----------------------------------------------------------------------------------
class SigningKey:
    """The server's Ed25519 checkpoint signing key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_raw: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self.public_raw)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key in ``path``; created (0600, atomically, never overwritten) if absent."""
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        fresh = cls.generate()
        pem = fresh._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> SigningKey:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # FileNotFoundError: caller creates
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileInvalid(f"audit signing key {path} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyFileInsecure(
                    f"audit signing key {path} has mode {stat.S_IMODE(st.st_mode):04o}: group "
                    f"or others can access it; run chmod 600 {path}"
                )
            data = f.read()
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileInvalid(f"audit signing key {path} is not an Ed25519 PEM private key")
        return cls(key)

    def public_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def load_public_key(data: bytes | str) -> bytes:
    """A raw 32-byte Ed25519 public key from PEM, or from 32 bytes in hex or base64."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    text = text.strip()
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode("ascii", "replace"))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CheckpointInvalid("the public key is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointInvalid("the public key is not an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _raw_key(text, "the public key")


def _raw_key(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise CheckpointInvalid(f"{what} is not a 32-byte Ed25519 key (PEM, hex or base64)")
    return raw


def verify_signature(public_raw: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# ---- checkpoints ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: the log ``origin`` had ``size`` entries with Merkle ``root``."""

    origin: str
    size: int
    root: str
    timestamp: str
    key_id: str
    signature: str
    public_key: str

    def signed_message(self) -> bytes:
        return CHECKPOINT_CONTEXT + canonical_json(
            {
                "key_id": self.key_id,
                "origin": self.origin,
                "root": self.root,
                "size": self.size,
                "timestamp": self.timestamp,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "origin": self.origin,
            "public_key": self.public_key,
            "root": self.root,
            "signature": self.signature,
            "size": self.size,
            "timestamp": self.timestamp,
        }

    def to_json(self) -> str:
        return canonical_json(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, doc: Any) -> Checkpoint:
        if not isinstance(doc, Mapping):
            raise CheckpointInvalid("a checkpoint is a JSON object")
        missing = [k for k in (*_SIGNED_FIELDS, "signature", "public_key") if k not in doc]
        if missing:
            raise CheckpointInvalid(f"checkpoint lacks {', '.join(missing)}")
        size = doc["size"]
        if type(size) is not int or size < 0:
            raise CheckpointInvalid("checkpoint size must be a non-negative integer")
        for name in ("origin", "root", "timestamp", "key_id", "signature", "public_key"):
            if not isinstance(doc[name], str):
                raise CheckpointInvalid(f"checkpoint {name} must be a string")
        if not _is_hex(doc["root"], HASH_SIZE) or not _is_hex(doc["key_id"], 32):
            raise CheckpointInvalid("checkpoint root and key_id must be 64 lower-case hex digits")
        return cls(
            origin=doc["origin"],
            size=size,
            root=doc["root"],
            timestamp=doc["timestamp"],
            key_id=doc["key_id"],
            signature=doc["signature"],
            public_key=doc["public_key"],
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        try:
            doc = json.loads(text)
        except ValueError:
            raise CheckpointInvalid("a checkpoint is a JSON object") from None
        return cls.from_dict(doc)

    def problem(self, trusted_key: bytes | None = None) -> str:
        """Why this checkpoint is not a valid signature by ``trusted_key`` ('' if it is).

        Without ``trusted_key`` the public key carried in the document is used (which only
        shows the document is intact, not who signed it).
        """
        try:
            carried = _raw_key(self.public_key, "the checkpoint's public key")
        except CheckpointInvalid as exc:
            return exc.message
        key = carried if trusted_key is None else trusted_key
        if key_id_of(key) != self.key_id:
            return (
                f"checkpoint of size {self.size} names signing key {self.key_id[:16]}…, not the "
                f"trusted key {key_id_of(key)[:16]}… (wrong signing key)"
            )
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except (ValueError, binascii.Error):
            return f"checkpoint of size {self.size}: the signature is not base64"
        if not verify_signature(key, self.signed_message(), signature):
            return (
                f"checkpoint of size {self.size}: the signature does not verify with key "
                f"{key_id_of(key)[:16]}… (altered checkpoint or wrong signing key)"
            )
        return ""


def _is_hex(text: str, n_bytes: int) -> bool:
    return len(text) == 2 * n_bytes and all(c in "0123456789abcdef" for c in text)


def sign_checkpoint(
    key: SigningKey, origin: str, size: int, root: bytes, timestamp: str
) -> Checkpoint:
    unsigned = Checkpoint(
        origin=origin,
        size=size,
        root=root.hex(),
        timestamp=timestamp,
        key_id=key.key_id,
        signature="",
        public_key=base64.b64encode(key.public_raw).decode("ascii"),
    )
    signature = base64.b64encode(key.sign(unsigned.signed_message())).decode("ascii")
    return dataclasses.replace(unsigned, signature=signature)


def read_checkpoints(text: str | bytes) -> list[Checkpoint]:
    """Checkpoints from a file: one JSON object, a JSON array, or JSON Lines of objects."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            docs = [json.loads(line) for line in lines]
        except ValueError:
            raise CheckpointInvalid(
                "not a checkpoint file (one JSON object, a JSON array or JSON Lines)"
            ) from None
    else:
        docs = doc if isinstance(doc, list) else [doc]
    if isinstance(doc, dict) and "checkpoint" in doc and "size" not in doc:
        docs = [doc["checkpoint"]]  # a proof or receipt document
    if not docs:
        raise CheckpointInvalid("the checkpoint file holds no checkpoint")
    return [Checkpoint.from_dict(d) for d in docs]


# ---- receipts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Receipt:
    """Where an entry sits in the log: its seq and leaf hash, a signed checkpoint covering it,
    and the inclusion proof of the leaf in that checkpoint's tree (hex, deepest first)."""

    seq: int
    leaf_hash: str
    checkpoint: Checkpoint
    proof: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint.to_dict(),
            "leaf_hash": self.leaf_hash,
            "proof": list(self.proof),
            "seq": self.seq,
        }

    def to_json(self) -> str:
        return canonical_json(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, doc: Any) -> Receipt:
        if not isinstance(doc, Mapping):
            raise CheckpointInvalid("a receipt is a JSON object")
        seq, leaf, proof = doc.get("seq"), doc.get("leaf_hash"), doc.get("proof")
        if type(seq) is not int or seq < 0:
            raise CheckpointInvalid("receipt seq must be a non-negative integer")
        if not isinstance(leaf, str) or not _is_hex(leaf, HASH_SIZE):
            raise CheckpointInvalid("receipt leaf_hash must be 64 lower-case hex digits")
        if not isinstance(proof, list) or not all(
            isinstance(p, str) and _is_hex(p, HASH_SIZE) for p in proof
        ):
            raise CheckpointInvalid("receipt proof must be a list of 64-hex-digit hashes")
        return cls(seq, leaf, Checkpoint.from_dict(doc.get("checkpoint")), tuple(proof))


def receipt_problem(receipt: Receipt, trusted_key: bytes | None = None, entry: Any = None) -> str:
    """Why ``receipt`` does not prove its entry is in the signed log ('' if it does).

    With ``entry`` (the entry object), also checks that the leaf hash is that entry's.
    """
    cp = receipt.checkpoint
    problem = cp.problem(trusted_key)
    if problem:
        return problem
    leaf = bytes.fromhex(receipt.leaf_hash)
    if entry is not None:
        try:
            data = canonical_json(entry)
        except (TypeError, ValueError):
            return "the entry is not canonical JSON"
        if leaf_hash(data) != leaf:
            return f"entry {receipt.seq}: its leaf hash is not the one in the proof (altered)"
        if isinstance(entry, Mapping) and entry.get("seq") != receipt.seq:
            return f"the entry's seq {entry.get('seq')!r} is not the proof's seq {receipt.seq}"
    path = [bytes.fromhex(p) for p in receipt.proof]
    if not verify_inclusion(receipt.seq, cp.size, leaf, path, bytes.fromhex(cp.root)):
        return (
            f"entry {receipt.seq} is not proven to be in the log of size {cp.size} with root "
            f"{cp.root[:16]}… (wrong proof, index or tree)"
        )
    return ""


# ---- the timer ------------------------------------------------------------------------------
class Checkpointer:
    """Signs a checkpoint when ``every_entries`` entries or ``every_seconds`` seconds have
    passed since the last one (and the log grew), and once more when stopped.

    Transport-free and safe across server processes: the decision is re-checked inside the
    write transaction against the checkpoints already stored, so two processes ticking at the
    same moment sign once. Call ``tick`` on a timer, or ``start()`` a background thread that
    does, and ``stop()`` at shutdown.
    """

    def __init__(
        self, log: AuditLog, *, every_entries: int = 1000, every_seconds: float = 60.0
    ) -> None:
        if every_entries < 1 or every_seconds <= 0:
            raise ValueError("checkpoint intervals must be positive")
        self.log = log
        self.every_entries = every_entries
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self, now: dt.datetime | None = None) -> bool:
        size = self.log.size()
        last = self.log.latest_checkpoint()
        if size == 0 or (last is not None and last.size >= size):
            return False
        if last is None or size - last.size >= self.every_entries:
            return True
        try:
            signed_at = dt.datetime.fromisoformat(last.timestamp)
        except ValueError:
            return True
        elapsed = ((now or now_utc()) - signed_at).total_seconds()
        return elapsed >= self.every_seconds

    def tick(self) -> Checkpoint | None:
        """Sign a checkpoint if one is due; the new checkpoint, or None."""
        if not self.due():
            return None
        return self.log.checkpoint()

    def checkpoint(self) -> Checkpoint | None:
        """Sign now if the log grew since the last checkpoint (e.g. at shutdown)."""
        if self.log.size() == 0:
            return None
        return self.log.checkpoint()

    def start(self, interval: float = 1.0) -> None:
        """Tick every ``interval`` seconds on a daemon thread until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="sandbox-audit-checkpoints", daemon=True
        )
        self._thread.start()

    def _run(self, interval: float) -> None:
        try:
            while not self._stop.wait(interval):
                try:
                    self.tick()
                except Exception:  # keep ticking: a failed tick is retried on the next one
                    log.exception("audit checkpoint failed")
        finally:
            self.log.close_thread()

    def stop(self, *, final: bool = True) -> Checkpoint | None:
        """Stop the timer; with ``final``, sign a last checkpoint covering every entry."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()
        if not final:
            return None
        try:
            return self.checkpoint()
        except Exception:  # shutting down: say so, do not stop the shutdown
            log.exception("final audit checkpoint failed")
            return None


def checkpoints_by_size(checkpoints: Sequence[Checkpoint]) -> dict[int, list[Checkpoint]]:
    out: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        out.setdefault(cp.size, []).append(cp)
    return out
