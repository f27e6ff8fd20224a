"""RFC 6962 inclusion and consistency proofs: known answers, and property tests of the verifiers.

The verifiers must accept every right proof and never a wrong one: wrong tree size, an index
off by one, a proof one element too long or too short, a flipped bit, a wrong leaf or root,
the empty tree, size 1, and sizes at powers of two ± 1. The log's own proofs (from its node
table) must equal the reference proofs computed from all leaves.

A root is always checked together with the size it was signed with (a checkpoint signs both);
"wrong size" below therefore means the proof for one size checked against the tree head of
another. That a checkpoint's size cannot be changed without breaking its signature is tested
in tests/security/test_audit_checkpoints.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sandbox.audit import (
    AuditLog,
    CompactRange,
    consistency_proof_of,
    inclusion_proof_of,
    leaf_hash,
    root_from_inclusion,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from sandbox.audit._merkle import EMPTY_ROOT, LEVEL_SHIFT, perfect_cover
from sandbox.audit._proofs import consistency_ranges, inclusion_ranges
from sandbox.state import Database

MAX = 1100
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(MAX)]
ROOTS: dict[int, bytes] = {}


def root(n: int) -> bytes:
    if n not in ROOTS:
        ROOTS[n] = root_of(LEAVES[:n])
    return ROOTS[n]


EDGES = sorted({s for k in range(11) for s in ((1 << k) - 1, 1 << k, (1 << k) + 1) if s >= 0})
sizes = st.one_of(st.sampled_from(EDGES), st.integers(min_value=0, max_value=300))
nonempty = sizes.filter(lambda n: n > 0)


def flip(h: bytes, bit: int) -> bytes:
    return bytes([h[0] ^ (1 << (bit % 8))]) + h[1:]


# ---- known answers (Certificate Transparency / transparency-dev test vectors) -----------------
CT_DATA = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip
CT_LEAVES = [leaf_hash(d) for d in CT_DATA]
INCLUSION_VECTORS = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CONSISTENCY_VECTORS = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip


@pytest.mark.parametrize(("index", "size", "want"), INCLUSION_VECTORS)
def test_inclusion_known_answers(index: int, size: int, want: list[str]) -> None:
    leaves = CT_LEAVES[:size]
    proof = inclusion_proof_of(leaves, index)
    assert [p.hex() for p in proof] == want
    assert verify_inclusion(index, size, leaves[index], proof, root_of(leaves))


@pytest.mark.parametrize(("first", "second", "want"), CONSISTENCY_VECTORS)
def test_consistency_known_answers(first: int, second: int, want: list[str]) -> None:
    leaves = CT_LEAVES[:second]
    proof = consistency_proof_of(leaves, first)
    assert [p.hex() for p in proof] == want
    assert verify_consistency(first, second, root_of(leaves[:first]), root_of(leaves), proof)


# ---- inclusion: every right proof is accepted -------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(nonempty, st.data())
def test_inclusion_accepts_every_right_proof(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof_of(LEAVES[:n], i)
    assert len(proof) == len(inclusion_ranges(i, n))
    assert root_from_inclusion(i, n, LEAVES[i], proof) == root(n)
    assert verify_inclusion(i, n, LEAVES[i], proof, root(n))


def test_inclusion_every_index_of_small_trees_and_size_one() -> None:
    for n in range(1, 70):
        for i in range(n):
            assert verify_inclusion(i, n, LEAVES[i], inclusion_proof_of(LEAVES[:n], i), root(n))
    # Size 1: the root is the leaf and the proof is empty.
    assert inclusion_proof_of(LEAVES[:1], 0) == []
    assert verify_inclusion(0, 1, LEAVES[0], [], LEAVES[0])
    assert not verify_inclusion(0, 1, LEAVES[0], [LEAVES[0]], LEAVES[0])
    assert not verify_inclusion(0, 1, LEAVES[1], [], LEAVES[0])


def test_inclusion_empty_tree_proves_nothing() -> None:
    for leaf in (LEAVES[0], EMPTY_ROOT):
        for proof in ([], [LEAVES[1]]):
            assert not verify_inclusion(0, 0, leaf, proof, EMPTY_ROOT)
            assert root_from_inclusion(0, 0, leaf, proof) is None
    with pytest.raises(ValueError):
        inclusion_ranges(0, 0)


# ---- inclusion: no wrong proof is accepted ----------------------------------------------------
INCLUSION_MUTATIONS = [
    "size-1", "size+1", "size*2", "size/2", "index-1", "index+1", "index^1", "index=size",
    "negative index", "drop last", "drop first", "append hash", "append root", "prepend root",
    "append empty", "flip bit", "swap two", "wrong leaf", "leaf as root", "empty root",
    "short hash", "duplicate element",
]  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(nonempty, st.sampled_from(INCLUSION_MUTATIONS), st.data())
def test_inclusion_never_accepts_a_wrong_proof(n: int, how: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof_of(LEAVES[:n], i)
    index, size, leaf, path, head = i, n, LEAVES[i], list(proof), root(n)
    if how.startswith("size"):
        size = {"size-1": n - 1, "size+1": n + 1, "size*2": 2 * n, "size/2": n // 2}[how]
        assume(size != n and size <= MAX)
        head = root(size)  # the genuine head of the claimed size
    elif how == "index-1":
        index = i - 1
    elif how == "index+1":
        index = i + 1
    elif how == "index^1":
        index = i ^ 1
    elif how == "index=size":
        index = n
    elif how == "negative index":
        index = -1
    elif how == "drop last":
        assume(path)
        path.pop()
    elif how == "drop first":
        assume(path)
        path.pop(0)
    elif how == "append hash":
        path.append(LEAVES[(i + 1) % MAX])
    elif how == "append root":
        path.append(head)
    elif how == "prepend root":
        path.insert(0, head)
    elif how == "append empty":
        path.append(b"")
    elif how == "flip bit":
        assume(path)
        k = data.draw(st.integers(0, len(path) - 1), label="element")
        path[k] = flip(path[k], data.draw(st.integers(0, 7), label="bit"))
    elif how == "swap two":
        assume(len(path) >= 2)
        a, b = data.draw(st.lists(st.integers(0, len(path) - 1), min_size=2, max_size=2,
                                  unique=True), label="pair")  # fmt: skip
        assume(path[a] != path[b])
        path[a], path[b] = path[b], path[a]
    elif how == "wrong leaf":
        leaf = LEAVES[(i + 1 + data.draw(st.integers(0, MAX - 2), label="other")) % MAX]
        assume(leaf != LEAVES[i])
    elif how == "leaf as root":
        assume(n > 1)
        head = LEAVES[i]
    elif how == "empty root":
        head = EMPTY_ROOT
    elif how == "short hash":
        assume(path)
        path[0] = path[0][:31]
    elif how == "duplicate element":
        assume(path)
        path.insert(0, path[0])
    assert not verify_inclusion(index, size, leaf, path, head), (how, i, n)


# ---- consistency ------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(sizes, st.data())
def test_consistency_accepts_every_right_proof(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n), label="first")
    proof = consistency_proof_of(LEAVES[:n], m)
    assert verify_consistency(m, n, root(m), root(n), proof)
    if m in (0, n):
        assert proof == []


def test_consistency_every_pair_of_small_trees() -> None:
    for n in range(0, 70):
        for m in range(0, n + 1):
            proof = consistency_proof_of(LEAVES[:n], m)
            assert verify_consistency(m, n, root(m), root(n), proof), (m, n)


def test_consistency_edge_cases() -> None:
    # The empty tree is a prefix of every tree, with an empty proof and the empty root.
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, root(5), [])
    assert not verify_consistency(0, 5, root(1), root(5), [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, root(5), [root(5)])
    # Equal sizes: equal roots and nothing else.
    assert verify_consistency(1, 1, root(1), root(1), [])
    assert not verify_consistency(1, 1, root(1), root(2), [])
    assert not verify_consistency(3, 3, root(3), root(3), [root(3)])
    # Time does not run backwards; a non-trivial proof is never empty.
    assert not verify_consistency(2, 1, root(2), root(1), [])
    assert not verify_consistency(1, 2, root(1), root(2), [])
    with pytest.raises(ValueError):
        consistency_ranges(3, 2)


CONSISTENCY_MUTATIONS = [
    "first-1", "first+1", "second-1", "second+1", "second*2", "swap roots", "wrong first root",
    "wrong second root", "empty proof", "drop last", "drop first", "append hash",
    "append first root", "append second root", "prepend first root", "prepend element",
    "flip bit", "short hash",
]  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(EDGES[2:] + list(range(2, 200))), st.sampled_from(CONSISTENCY_MUTATIONS),
       st.data())  # fmt: skip
def test_consistency_never_accepts_a_wrong_proof(n: int, how: str, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n - 1), label="first")
    proof = consistency_proof_of(LEAVES[:n], m)
    first, second, r1, r2, path = m, n, root(m), root(n), list(proof)
    if how in ("first-1", "first+1"):
        first = m - 1 if how == "first-1" else m + 1
        r1 = root(first)  # the genuine root of the claimed size
    elif how in ("second-1", "second+1", "second*2"):
        second = {"second-1": n - 1, "second+1": n + 1, "second*2": 2 * n}[how]
        assume(second <= MAX)
        r2 = root(second)
    elif how == "swap roots":
        r1, r2 = r2, r1
    elif how == "wrong first root":
        r1 = root(m + 1)
    elif how == "wrong second root":
        r2 = root(n - 1)
    elif how == "empty proof":
        path = []
    elif how == "drop last":
        path.pop()
    elif how == "drop first":
        path.pop(0)
    elif how == "append hash":
        path.append(LEAVES[0])
    elif how == "append first root":
        path.append(r1)
    elif how == "append second root":
        path.append(r2)
    elif how == "prepend first root":
        path.insert(0, r1)
    elif how == "prepend element":
        path.insert(0, path[0])
    elif how == "flip bit":
        k = data.draw(st.integers(0, len(path) - 1), label="element")
        path[k] = flip(path[k], data.draw(st.integers(0, 7), label="bit"))
    elif how == "short hash":
        path[-1] = path[-1][:31]
    if (first, second) == (m, n) and (r1, r2) == (root(m), root(n)):
        assume(path != proof)
    assert not verify_consistency(first, second, r1, r2, path), (how, m, n)


# ---- the compact range and the subtree cover ---------------------------------------------------
def test_compact_range_reports_every_perfect_subtree_once() -> None:
    rng = CompactRange()
    seen: dict[int, bytes] = {}
    for n, leaf in enumerate(LEAVES[:300], start=1):
        for key, value in rng.push(leaf):
            assert key not in seen
            seen[key] = value
        assert rng.size == n and rng.root() == root(n)
    for key, value in seen.items():
        level, index = key >> LEVEL_SHIFT, key & ((1 << LEVEL_SHIFT) - 1)
        start = index << level
        assert value == root_of(LEAVES[start : start + (1 << level)])
    assert len(seen) == 300 - bin(300).count("1")  # every internal node of the perfect parts
    with pytest.raises(ValueError):
        CompactRange(3, [LEAVES[0]])


@given(st.integers(0, 2000), st.integers(0, 2000))
def test_perfect_cover_tiles_the_range(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    cover = perfect_cover(start, end)
    at = start
    for level, index in cover:
        assert index << level == at  # aligned and contiguous
        at += 1 << level
    assert at == end


# ---- the log's own proofs equal the reference -------------------------------------------------
def test_log_proofs_equal_reference_proofs(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.sqlite3")
    log = AuditLog(db)
    with db.write() as conn:
        for i in range(130):
            log.append(conn, "test.entry", actor="t", n=i)
    leaves = [bytes.fromhex(leaf) for _, _, leaf in log.scan()]
    for n in range(1, 131):
        assert log.root_at(n) == root_of(leaves[:n])
        for i in range(n):
            assert log.inclusion_proof(i, n) == inclusion_proof_of(leaves[:n], i), (i, n)
        for m in range(0, n + 1):
            assert log.consistency_proof(m, n) == consistency_proof_of(leaves[:n], m), (m, n)
    assert log.root_at(0) == EMPTY_ROOT == hashlib.sha256(b"").digest()
