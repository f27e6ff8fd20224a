"""Offline verification of a JSON Lines export against signed checkpoints.

Needs no server and no state store: the export (``sandbox audit export --format jsonl``, whole
and unfiltered), one or more checkpoints (``sandbox audit checkpoint``), and the server's
public key (``sandbox audit public-key``; else the key the checkpoint file carries).

What it checks, in one pass:

1. every checkpoint is signed by the trusted key (else: **wrong signing key**, or an altered
   checkpoint) and all name one log;
2. line ``i`` is an export line whose seq is ``i``: a missing seq is a **deleted** entry, an
   unexpected one an **inserted** or **reordered** entry;
3. the leaf hash of the line's entry bytes is the line's leaf hash, and the entry's own seq
   is ``i`` (an **edited** or moved entry);
4. at each checkpoint size, the Merkle root of the entries so far is the signed root. A
   mismatch means an entry before it was altered, inserted or removed with its hashes redone,
   or the history **forked**; the first bad index reported is then the size of the last
   checkpoint that did match (the first entry not proven authentic);
5. the export reaches the largest checkpoint size (else: a **truncated** tail).

Entries after the largest checkpoint are reported as not covered (``strict`` makes that a
failure: an entry appended there cannot be told from a forged one).

The first bad index is the smallest index that cannot be trusted: the first line that is
inconsistent by itself (when two different lines claim one seq, the first of them, since
either may be the inserted one), or, when only a signed root disagrees, the size of the last
checkpoint that matched. An export whose hashes were all recomputed by whoever altered it
can only be caught by the roots, so the closer the checkpoints, the closer that index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sandbox.audit._checkpoint import Checkpoint
from sandbox.audit._merkle import EMPTY_ROOT, fold

_HEAD = b'{"entry":'
_MID = b',"leaf_hash":"'
_SEQ = b'","seq":'


@dataclass(frozen=True)
class OfflineReport:
    ok: bool
    entries: int
    """Lines read (up to the first problem)."""
    verified_size: int
    """Entries proven authentic: the largest checkpoint size the export matched."""
    checkpoint_size: int
    root: str
    """Merkle root over the entries read."""
    first_bad_index: int | None = None
    problem: str = ""
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "verified_size": self.verified_size,
            "checkpoint_size": self.checkpoint_size,
            "root": self.root,
            "first_bad_index": self.first_bad_index,
            "problem": self.problem,
            "notes": list(self.notes),
        }


def verify_export(
    lines: Iterable[bytes],
    checkpoints: Sequence[Checkpoint],
    trusted_key: bytes | None = None,
    *,
    strict: bool = False,
) -> OfflineReport:
    """Verify an export (its lines, as bytes) against ``checkpoints`` signed by ``trusted_key``
    (None: the key each checkpoint carries)."""
    if not checkpoints:
        return _fail(0, 0, 0, [], None, "no checkpoint to verify against")
    top = max(cp.size for cp in checkpoints)
    notes: list[str] = []
    if trusted_key is None:
        notes.append("public key taken from the checkpoint file (pin it with --public-key)")
    for cp in checkpoints:
        problem = cp.problem(trusted_key)
        if problem:
            return _fail(0, 0, top, [], None, problem, notes)
    origins = {cp.origin for cp in checkpoints}
    if len(origins) > 1:
        return _fail(
            0, 0, top, [], None, f"checkpoints of different logs: {sorted(origins)}", notes
        )
    roots: dict[int, set[bytes]] = {}
    for cp in checkpoints:
        roots.setdefault(cp.size, set()).add(bytes.fromhex(cp.root))
    if len(roots.get(0, {EMPTY_ROOT}) - {EMPTY_ROOT}):
        return _fail(0, 0, top, [], 0, "the checkpoint of the empty log has a wrong root", notes)
    for size, found in roots.items():
        if len(found) > 1:
            notes.append(f"{len(found)} signed checkpoints of size {size} disagree: a split view")

    sha = hashlib.sha256
    stack: list[bytes] = []
    verified = 0
    pos = 0
    previous = b""
    sizes = sorted(s for s in roots if s > 0)
    next_cp = sizes.pop(0) if sizes else -1
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        cut = line.rfind(_MID)
        tail = line[cut + len(_MID) :] if cut > 0 else b""
        if not line.startswith(_HEAD) or len(tail) < 74 or tail[64:72] != _SEQ:
            return _fail(
                pos, verified, top, stack, pos, f"line {pos + 1} is not an export line", notes
            )
        digits = tail[72:-1]
        if tail[-1:] != b"}" or not digits.isdigit():
            return _fail(
                pos, verified, top, stack, pos, f"line {pos + 1} is not an export line", notes
            )
        seq = int(digits)
        if seq != pos:
            bad = pos
            if seq > pos:
                why = f"entry {pos} is missing (the line there holds seq {seq}): deleted or moved"
            elif seq == pos - 1 and line != previous:
                # Two different entries claim seq pos-1: either may be the forged one.
                bad = seq
                why = f"two different entries claim seq {seq}: one was inserted"
            else:
                why = f"seq {seq} appears again at index {pos}: a repeated or moved entry"
            return _fail(pos, verified, top, stack, bad, why, notes)
        previous = line
        body = line[len(_HEAD) : cut]
        leaf = sha(b"\x00" + body).digest()
        if leaf.hex().encode() != tail[:64]:
            return _fail(
                pos, verified, top, stack, pos, f"entry {pos} altered: leaf hash differs", notes
            )
        # The entry's own seq (canonical JSON: sorted keys, no spaces, "time" after "seq").
        # A substring test, not a parse: it never fails a clean entry, and whatever it lets
        # through the checkpoint roots still catch.
        own = b'"seq":%d' % pos
        if own + b"," not in body and not body.endswith(own + b"}"):
            return _fail(
                pos,
                verified,
                top,
                stack,
                pos,
                f"entry {pos} carries another seq: moved or forged",
                notes,
            )
        stack.append(leaf)
        pos += 1
        merge = pos
        while not merge & 1:
            right = stack.pop()
            stack[-1] = sha(b"\x01" + stack[-1] + right).digest()
            merge >>= 1
        if pos == next_cp:
            root = fold(stack)
            if root not in roots[pos] or len(roots[pos]) > 1:
                return _fail(
                    pos,
                    verified,
                    top,
                    stack,
                    verified,
                    f"the root of the first {pos} entries is not the signed checkpoint's: an "
                    f"entry in [{verified}, {pos}) was altered, inserted or removed with its "
                    "hashes recomputed, or the log forked",
                    notes,
                )
            verified = pos
            next_cp = sizes.pop(0) if sizes else -1
    if pos < top:
        return _fail(
            pos,
            verified,
            top,
            stack,
            pos,
            f"log truncated: the export ends after {pos} entries but a checkpoint covers {top}",
            notes,
        )
    if pos > verified:
        message = f"entries [{verified}, {pos}) are after the last checkpoint: not verified"
        if strict:
            return _fail(pos, verified, top, stack, verified, message, notes)
        notes.append(message)
    return OfflineReport(True, pos, verified, top, fold(stack).hex(), notes=tuple(notes))


def _fail(
    entries: int,
    verified: int,
    top: int,
    stack: list[bytes],
    index: int | None,
    problem: str,
    notes: Sequence[str] = (),
) -> OfflineReport:
    return OfflineReport(
        False, entries, verified, top, fold(stack).hex(), index, problem, tuple(notes)
    )
