"""Merkle tree of the log, hashing as RFC 9162 §2.1: leaf = H(0x00‖d), node = H(0x01‖l‖r).

Written here rather than taken from a library because no maintained Python package implements RFC
9162 proofs on top of hashlib; the tests check every function against a literal transcription of the
RFC's recursive definitions. The tree keeps only perfect subtrees (level i holds the hashes of
aligned blocks of 2**i leaves), so appends are amortised O(1) and any MTH(D[lo:hi]) is O(log n).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .errors import WitnessProofError

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, bottom-up (pairing left to right, an odd last node moves up unchanged)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    h = _sha256
    while len(level) > 1:
        nxt = [h(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class MerkleTree:
    """Append-only Merkle tree over leaf hashes."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self.extend(leaves)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def __len__(self) -> int:
        return self.size

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def append(self, leaf: bytes) -> None:
        levels = self._levels
        levels[0].append(leaf)
        i = 0
        while not len(levels[i]) & 1:
            lvl = levels[i]
            parent = _sha256(b"\x01" + lvl[-2] + lvl[-1]).digest()
            if len(levels) == i + 1:
                levels.append([])
            levels[i + 1].append(parent)
            i += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def truncate(self, size: int) -> None:
        """Forget leaves beyond ``size`` (used to undo a batch whose commit failed)."""
        for i, lvl in enumerate(self._levels):
            del lvl[size >> i :]
        while len(self._levels) > 1 and not self._levels[-1]:
            self._levels.pop()

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for 0 ≤ lo < hi ≤ size."""
        n = hi - lo
        if n == 1:
            return self._levels[0][lo]
        if not n & (n - 1) and not lo % n:
            i = n.bit_length() - 1
            return self._levels[i][lo >> i]
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if size < 0 or size > self.size:
            raise WitnessProofError(f"tree has {self.size} leaves, cannot compute root of size {size}")
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 PATH(index, D[0:size]): audit path, leaf level first."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise WitnessProofError(f"no leaf {index} in a tree of size {size} (log has {self.size})")
        path: list[bytes] = []
        lo, hi, m = 0, size, index
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                path.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.subtree(lo, lo + k))
                lo, m = lo + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """RFC 9162 PROOF(first, D[0:second])."""
        second = self.size if second is None else second
        if not 0 <= first <= second <= self.size:
            raise WitnessProofError(f"no consistency proof from {first} to {second} (log has {self.size})")
        if first == 0 or first == second:
            return []
        proof: list[bytes] = []
        lo, hi, m, whole = 0, second, first, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.subtree(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        if not whole:
            proof.append(self.subtree(lo, hi))
        proof.reverse()
        return proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show ``leaf`` at ``index`` in the tree of ``size`` with ``root``?"""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (second, second_root) an append-only extension of (first, first_root)?"""
    if first < 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if not first & (first - 1):
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
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


class CompactRange:
    """The right edge of a Merkle tree: one hash per perfect subtree (O(log n) memory).

    Enough to append leaves and compute the RFC 9162 root, which is all a writer needs for its signed
    checkpoints. Stored in the log's head row, so every writer (any process) continues from it under
    the append lock without keeping the whole tree in memory.
    """

    __slots__ = ("size", "_nodes")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise WitnessProofError(f"a range of {size} leaves has {bin(size).count('1')} nodes, got {len(nodes)}")
        self.size = size
        self._nodes = list(nodes)

    def copy(self) -> "CompactRange":
        return CompactRange(self.size, self._nodes)

    @property
    def nodes(self) -> list[bytes]:
        """The subtree roots, leftmost (largest) first; do not mutate."""
        return self._nodes

    def append(self, leaf: bytes) -> None:
        nodes = self._nodes
        nodes.append(leaf)
        self.size += 1
        n = self.size
        while not n & 1:  # each trailing zero bit of the new size is a merge of two equal subtrees
            right = nodes.pop()
            nodes[-1] = _sha256(b"\x01" + nodes[-1] + right).digest()
            n >>= 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaves: aligned power-of-two blocks are hashed level by level, then merged.

        Same result as ``append`` per leaf (a property test holds us to that), with the per-leaf
        Python loop replaced by one list comprehension per tree level.
        """
        nodes = self._nodes
        h = _sha256
        i, n = 0, len(leaves)
        while i < n:
            size = self.size
            block = 1 << ((n - i).bit_length() - 1)  # largest power of two that fits the rest
            if size:
                block = min(block, size & -size)  # ... and keeps the block aligned in the tree
            level = leaves[i : i + block]
            while len(level) > 1:
                level = [h(b"\x01" + level[k] + level[k + 1]).digest() for k in range(0, len(level), 2)]
            nodes.append(level[0])
            size += block
            self.size = size
            blocks = size // block
            while not blocks & 1:  # merge with the equal-height subtree on its left
                right = nodes.pop()
                nodes[-1] = h(b"\x01" + nodes[-1] + right).digest()
                blocks >>= 1
            i += block

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        nodes = self._nodes
        r = nodes[-1]
        for left in reversed(nodes[:-1]):
            r = _sha256(b"\x01" + left + r).digest()
        return r

    def to_text(self) -> str:
        return f"{self.size}:" + ",".join(n.hex() for n in self._nodes)

    @classmethod
    def from_text(cls, text: str | None) -> "CompactRange":
        if not text:
            return cls()
        try:
            size_text, _, nodes_text = text.partition(":")
            nodes = [bytes.fromhex(h) for h in nodes_text.split(",")] if nodes_text else []
            return cls(int(size_text), nodes)
        except ValueError as exc:
            raise WitnessProofError(f"corrupt compact range {text[:80]!r}: {exc}") from exc
