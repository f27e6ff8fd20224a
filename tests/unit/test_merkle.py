"""RFC 6962 Merkle hashing: the incremental frontier, the recursive definition and known answers."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.audit import Frontier, leaf_hash, node_hash, root_of
from sandbox.audit._merkle import EMPTY_ROOT


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_root(leaf_hashes: list[bytes]) -> bytes:
    """Independent bottom-up reference: pair neighbours, carry an odd last node up unchanged.

    For RFC 6962's left-balanced tree this equals MTH(D[n]) (the split at the largest power of
    two below n); it shares no code with the implementation under test.
    """
    if not leaf_hashes:
        return _sha(b"")
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = [_sha(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _leaves(n: int) -> list[bytes]:
    return [_sha(b"\x00" + i.to_bytes(4, "big")) for i in range(n)]


def test_every_prefix_up_to_300_agrees() -> None:
    leaves = _leaves(300)
    frontier = Frontier()
    assert frontier.root() == root_of([]) == reference_root([])
    for n, leaf in enumerate(leaves, start=1):
        frontier = frontier.append(leaf)
        assert frontier.size == n
        # One stored subtree root per 1-bit of the size.
        assert len(frontier.hashes) == bin(n).count("1")
        expected = reference_root(leaves[:n])
        assert root_of(leaves[:n]) == expected, n
        assert frontier.root() == expected, n


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=0, max_size=300))
def test_frontier_equals_recursive_and_reference(data: list[bytes]) -> None:
    leaves = [leaf_hash(d) for d in data]
    frontier = Frontier()
    for leaf in leaves:
        frontier = frontier.append(leaf)
    assert frontier.size == len(leaves)
    assert frontier.root() == root_of(leaves) == reference_root(leaves)


def test_append_does_not_mutate_the_original() -> None:
    one = Frontier().append(leaf_hash(b"a"))
    two = one.append(leaf_hash(b"b"))
    assert one.size == 1 and one.root() == leaf_hash(b"a")
    assert two.size == 2 and two.root() == node_hash(leaf_hash(b"a"), leaf_hash(b"b"))


def test_rfc6962_empty_tree_and_empty_leaf() -> None:
    empty = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert EMPTY_ROOT == _sha(b"") == empty
    assert root_of([]) == Frontier().root() == empty
    assert leaf_hash(b"") == _sha(b"\x00")
    assert (
        leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_rfc6962_known_answer_roots() -> None:
    # The Certificate Transparency reference test vectors (8 leaves, roots of every prefix).
    inputs = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        bytes(range(0x50, 0x58)),
        bytes(range(0x60, 0x70)),
    ]
    roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    leaves = [leaf_hash(x) for x in inputs]
    frontier = Frontier()
    for n, (leaf, want) in enumerate(zip(leaves, roots, strict=True), start=1):
        frontier = frontier.append(leaf)
        assert root_of(leaves[:n]).hex() == want
        assert frontier.root().hex() == want


def test_node_hash_is_domain_separated_from_leaf_hash() -> None:
    a, b = leaf_hash(b"left"), leaf_hash(b"right")
    assert node_hash(a, b) == _sha(b"\x01" + a + b)
    # A 64-byte leaf whose bytes are two child hashes must not collide with their parent node.
    assert leaf_hash(a + b) != node_hash(a, b)
    assert leaf_hash(b"") != node_hash(b"", b"")
    # Order matters.
    assert node_hash(a, b) != node_hash(b, a)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_domain_separation_property(a: bytes, b: bytes) -> None:
    assert leaf_hash(a + b) != node_hash(a, b)
