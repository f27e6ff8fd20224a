"""RFC 6962 Merkle tree hashing (SHA-256, 0x00 leaf / 0x01 node domain separation).

A perfect subtree of ``2**level`` leaves starting at leaf ``index * 2**level`` is named by
``node_id(level, index)``; the log stores the hash of every perfect subtree above the leaves
(written when the compact range merges on append) so proofs need O(log n) lookups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32
LEVEL_SHIFT = 40
"""``node_id`` packs the level above bit 40: up to 2**40 leaves."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def node_id(level: int, index: int) -> int:
    """The key of the perfect subtree of ``2**level`` leaves starting at ``index * 2**level``."""
    return (level << LEVEL_SHIFT) | index


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) per RFC 6962 §2.1, from leaf hashes (recursive reference definition)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root over perfect subtrees of strictly decreasing size, left to right."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        acc = _sha256(b"\x01" + hashes[i] + acc).digest()
    return acc


def perfect_cover(start: int, end: int) -> list[tuple[int, int]]:
    """``(level, index)`` of the perfect subtrees covering leaves ``[start, end)``, left to right.

    Each piece is the largest aligned perfect subtree that fits. For the ranges RFC 6962 proofs
    use (``start`` aligned to a power of two at least ``end - start``) the pieces shrink from
    left to right, and ``fold`` over their hashes is MTH(D[start:end]).
    """
    out: list[tuple[int, int]] = []
    while start < end:
        size = start & -start if start else 1 << (end - 1).bit_length()
        while size > end - start:
            size >>= 1
        level = size.bit_length() - 1
        out.append((level, start >> level))
        start += size
    return out


class CompactRange:
    """Mutable compact range of ``[0, size)``: roots of the perfect subtrees, left to right.

    ``push`` is amortised O(1) hashes and returns the perfect subtrees it completed, as
    ``(node_id, hash)``; the log stores them for proofs.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError("a compact range holds one hash per 1-bit of its size")
        self.size = size
        self.hashes = list(hashes)

    def push(self, leaf: bytes) -> list[tuple[int, bytes]]:
        hashes = self.hashes
        hashes.append(leaf)
        size = self.size + 1
        self.size = size
        done: list[tuple[int, bytes]] = []
        level = 0
        carry = size - 1
        while carry & 1:
            right = hashes.pop()
            merged = _sha256(b"\x01" + hashes.pop() + right).digest()
            hashes.append(merged)
            level += 1
            carry >>= 1
            done.append(((level << LEVEL_SHIFT) | ((size >> level) - 1), merged))
        return done

    def root(self) -> bytes:
        return fold(self.hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)


@dataclass(frozen=True)
class Frontier:
    """Compact range of the tree: roots of the perfect subtrees, left to right.

    Appending is O(log n); the root equals ``root_of`` over all leaves appended.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def append(self, leaf: bytes) -> Frontier:
        hashes = list(self.hashes)
        hashes.append(leaf)
        size = self.size + 1
        # Merge equal-size subtrees: one merge per trailing 1-bit of the old size.
        merges = (size & -size).bit_length() - 1
        for _ in range(merges):
            right = hashes.pop()
            left = hashes.pop()
            hashes.append(node_hash(left, right))
        return Frontier(size, tuple(hashes))

    def root(self) -> bytes:
        return fold(self.hashes)
