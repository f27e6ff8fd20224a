"""RFC 6962 Merkle tree hashing (SHA-256, 0x00 leaf / 0x01 node domain separation)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) per RFC 6962 §2.1, from leaf hashes (recursive reference definition)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


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
        if not self.hashes:
            return EMPTY_ROOT
        acc = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            acc = node_hash(h, acc)
        return acc
