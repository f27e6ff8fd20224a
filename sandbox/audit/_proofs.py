"""RFC 6962 inclusion (§2.1.1) and consistency (§2.1.2) proofs, and their verifiers.

Proof generation is split from hashing: ``inclusion_ranges`` and ``consistency_ranges`` name
the subtrees ``[start, end)`` whose hashes make up a proof, in proof order; a caller hashes
them from wherever its nodes live (``hash_ranges`` over any node lookup, the log's node
table, or the leaves themselves). The verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 and
accept nothing else: every hash must be 32 bytes, sizes and indexes must be in range, and
the proof must have exactly the length the tree shape asks for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from sandbox.audit._merkle import EMPTY_ROOT, HASH_SIZE, fold, perfect_cover, root_of

_sha256 = hashlib.sha256
Range = tuple[int, int]


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees of PATH(index, D[size]), deepest first (RFC 6962 §2.1.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    siblings: list[Range] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
            m -= k
    siblings.reverse()
    return siblings


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The subtrees of PROOF(first, D[second]), in proof order (RFC 6962 §2.1.2).

    Empty when ``first`` is 0 or equals ``second`` (nothing to prove).
    """
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    siblings: list[Range] = []
    base: list[Range] = []
    lo, hi, m, whole = 0, second, first, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                base.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    siblings.reverse()
    return base + siblings


def hash_ranges(ranges: Sequence[Range], node: Callable[[int, int], bytes]) -> list[bytes]:
    """MTH of each range, from ``node(level, index)``: the hash of one perfect subtree."""
    return [fold([node(level, index) for level, index in perfect_cover(a, b)]) for a, b in ranges]


def inclusion_proof_of(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) straight from all leaf hashes (reference; O(n))."""
    return [root_of(leaves[a:b]) for a, b in inclusion_ranges(index, len(leaves))]


def consistency_proof_of(leaves: Sequence[bytes], first: int) -> list[bytes]:
    """PROOF(first, D[n]) straight from all leaf hashes (reference; O(n))."""
    return [root_of(leaves[a:b]) for a, b in consistency_ranges(first, len(leaves))]


def _hash_ok(*values: bytes) -> bool:
    return all(type(v) is bytes and len(v) == HASH_SIZE for v in values)


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The root that ``proof`` implies for ``leaf`` at ``index``, or None if it cannot be one."""
    if not (0 <= index < size) or not _hash_ok(leaf, *proof):
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return None  # longer than the path to the root
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None  # shorter than the path to the root
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff ``proof`` shows ``leaf`` at ``index`` in the tree of ``size`` with ``root``."""
    got = root_from_inclusion(index, size, leaf, proof)
    return got is not None and _hash_ok(root) and got == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True iff ``proof`` shows the tree (first, first_root) is a prefix of (second, ...)."""
    if not (0 <= first <= second) or not _hash_ok(first_root, second_root, *proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the old root is a node of the path
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
