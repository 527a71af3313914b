"""RFC 9162 Merkle tree: every function checked against a literal transcription of the RFC definitions."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrafabric.witness.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from infrafabric.witness.errors import WitnessProofError


# ---- independent reference: RFC 9162 §2.1.1-2.1.4, recursion on lists of raw data ----
def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = _k(n)
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


DATA = [f"entry-{i}".encode() for i in range(70)]
LEAVES = [leaf_hash(x) for x in DATA]


def test_hash_prefixes_follow_rfc() -> None:
    assert leaf_hash(b"abc") == _h(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == _h(b"\x01" + b"L" * 32 + b"R" * 32)
    assert EMPTY_ROOT == _h(b"") == MerkleTree().root()


@pytest.mark.parametrize("n", list(range(0, 70)))
def test_root_matches_reference_for_every_size(n: int) -> None:
    expected = ref_mth(DATA[:n])
    assert root_of(LEAVES[:n]) == expected
    tree = MerkleTree(LEAVES[:n])
    assert tree.root() == expected
    big = MerkleTree(LEAVES)
    assert big.root(n) == expected  # historical roots from a bigger tree


def test_inclusion_proofs_match_reference_and_verify() -> None:
    tree = MerkleTree(LEAVES[:45])
    for n in range(1, 46):
        root = ref_mth(DATA[:n])
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == ref_path(m, DATA[:n]), (m, n)
            assert verify_inclusion(LEAVES[m], m, n, proof, root)


def test_consistency_proofs_match_reference_and_verify() -> None:
    tree = MerkleTree(LEAVES[:40])
    for n in range(1, 41):
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == ref_proof(m, DATA[:n]), (m, n)
            assert verify_consistency(m, n, ref_mth(DATA[:m]), ref_mth(DATA[:n]), proof), (m, n)


def test_wrong_inclusion_proofs_are_rejected() -> None:
    tree = MerkleTree(LEAVES[:33])
    root = tree.root()
    proof = tree.inclusion_proof(7)
    assert not verify_inclusion(LEAVES[8], 7, 33, proof, root)  # other leaf
    assert not verify_inclusion(LEAVES[7], 8, 33, proof, root)  # other index
    assert not verify_inclusion(LEAVES[7], 7, 34, proof, MerkleTree(LEAVES[:34]).root())  # other size
    assert not verify_inclusion(LEAVES[7], 7, 16, proof, root)  # a size with a shorter path
    assert not verify_inclusion(LEAVES[7], 7, 33, proof[:-1], root)  # short path
    assert not verify_inclusion(LEAVES[7], 7, 33, proof + [root], root)  # long path
    bad = list(proof)
    bad[1] = bytes(32)
    assert not verify_inclusion(LEAVES[7], 7, 33, bad, root)
    assert not verify_inclusion(LEAVES[7], 33, 33, proof, root)


def test_wrong_consistency_proofs_are_rejected() -> None:
    tree = MerkleTree(LEAVES[:30])
    proof = tree.consistency_proof(11, 30)
    r11, r30 = tree.root(11), tree.root(30)
    assert verify_consistency(11, 30, r11, r30, proof)
    assert not verify_consistency(11, 30, tree.root(12), r30, proof)
    assert not verify_consistency(11, 30, r11, tree.root(29), proof)
    assert not verify_consistency(12, 30, r11, r30, proof)
    assert not verify_consistency(11, 30, r11, r30, proof[:-1])
    assert not verify_consistency(11, 30, r11, r30, [])
    # a rewritten history is not consistent with the published old root
    forked = MerkleTree(LEAVES[:5] + [leaf_hash(b"forged")] + LEAVES[6:30])
    assert not verify_consistency(11, 30, r11, forked.root(), forked.consistency_proof(11, 30))


def test_random_large_sizes_against_reference() -> None:
    rng = random.Random(9162)
    data = [rng.randbytes(8) for _ in range(600)]
    tree = MerkleTree(leaf_hash(x) for x in data)
    for _ in range(40):
        n = rng.randint(1, 600)
        m = rng.randrange(n)
        assert tree.inclusion_proof(m, n) == ref_path(m, data[:n])
        first = rng.randint(1, n)
        assert tree.consistency_proof(first, n) == ref_proof(first, data[:n])


def test_truncate_restores_earlier_state() -> None:
    tree = MerkleTree(LEAVES[:50])
    tree.truncate(21)
    assert tree.size == 21 and tree.root() == ref_mth(DATA[:21])
    tree.extend(LEAVES[21:37])
    assert tree.root() == ref_mth(DATA[:37])


def test_out_of_range_requests_raise_clear_errors() -> None:
    tree = MerkleTree(LEAVES[:4])
    with pytest.raises(WitnessProofError):
        tree.inclusion_proof(4)
    with pytest.raises(WitnessProofError):
        tree.consistency_proof(3, 5)
    with pytest.raises(WitnessProofError):
        tree.root(5)


def test_compact_range_root_matches_reference_and_round_trips() -> None:
    from infrafabric.witness.merkle import CompactRange

    rng = CompactRange()
    assert rng.root() == EMPTY_ROOT
    for n in range(1, 70):
        rng.append(LEAVES[n - 1])
        assert rng.size == n and rng.root() == ref_mth(DATA[:n])
        again = CompactRange.from_text(rng.to_text())
        assert again.root() == rng.root() and again.size == n
    with pytest.raises(WitnessProofError):
        CompactRange(5, [LEAVES[0]])  # 5 = 0b101 needs two nodes


@settings(max_examples=300, deadline=None)
@given(start=st.integers(min_value=0, max_value=300), count=st.integers(min_value=0, max_value=600))
def test_compact_range_extend_equals_appending_one_by_one(start: int, count: int) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(start + count)]
    one_by_one, bulk = CompactRange(), CompactRange()
    for leaf in leaves[:start]:
        one_by_one.append(leaf)
        bulk.append(leaf)
    for leaf in leaves[start:]:
        one_by_one.append(leaf)
    bulk.extend(leaves[start:])
    assert bulk.size == one_by_one.size == start + count
    assert bulk.to_text() == one_by_one.to_text()
    assert bulk.root() == one_by_one.root() == root_of(leaves)
