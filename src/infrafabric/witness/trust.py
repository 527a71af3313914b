"""Which log heads a writer may sign after: the ones it sealed itself or has proven.

A writer extends the head it reads from the database (size, hash of the last entry, right edge of the
Merkle tree). Someone with write access to the database but not the key can rewrite that head, and a
writer that signed whatever head it read would then sign a checkpoint over their history. So the
sealer signs only after a head it knows (``HeadTrust.check``); any other head is first proven:

* the head carries a checkpoint of exactly its size whose root is the head's tree edge, signed by this
  witness's key (only a key holder made it), and
* the entries between the newest head this writer trusts and the new one, read from the log and
  hashed, extend the trusted tree edge to exactly that root: the RFC 9162 consistency of the two
  checkpoints, checked from the leaves (a writer has them; a remote verifier uses the proof), and the
  last of them is the head's hash.

The first trusted head is the newest checkpoint published outside the database (``publish.py``), so a
log rolled back to an older, genuinely signed state is refused too; with nothing published, a writer
starts from the head's own signed checkpoint. A published record's head hash is not covered by its
checkpoint's signature, so it is not trusted: the first proof from that anchor re-reads the entries of its
last perfect subtree, whose leaves tie the last entry's hash to the signed root. Standard library plus our own Merkle code: the proof is
ours because the trust rule is.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import GENESIS_HASH
from .checkpoint import Checkpoint
from .errors import WitnessHeadRewrittenError, WitnessHeadUnprovenError, WitnessStorageError
from .merkle import EMPTY_ROOT, CompactRange

_sha256 = hashlib.sha256
UNPROVEN_HASH = ""  # head hash of a trusted tree edge whose last entry is not proven yet (see anchor)
_KEEP = 16  # heads remembered: the pipeline has at most three batches sealed ahead of the commit


@dataclass(frozen=True)
class SignedHead:
    """The head row as read in one statement with the checkpoint stored at its size (or None)."""

    size: object
    head_hash: object
    frontier_text: object
    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class TrustedHead:
    size: int
    head_hash: str
    root: str  # hex
    frontier: CompactRange


def frontier_of(text: object, size: object) -> CompactRange:
    if type(size) is not int or not isinstance(text, str):
        raise WitnessHeadRewrittenError(f"the head row is unreadable (size {size!r}, tree edge {str(text)[:40]!r})")
    try:
        frontier = CompactRange.from_text(text)
    except Exception as exc:  # noqa: BLE001 - any damage to the text is the same finding
        raise WitnessHeadRewrittenError(f"the head row's tree edge is unreadable: {exc}") from None
    if frontier.size != size or any(len(node) != 32 for node in frontier.nodes):
        raise WitnessHeadRewrittenError(f"the head row is inconsistent: size {size}, tree edge of {frontier.size}")
    return frontier


def _leaf(content_hash: object, signature: object) -> bytes:
    try:
        if not (isinstance(content_hash, str) and isinstance(signature, str)):
            raise ValueError
        hb, sb = bytes.fromhex(content_hash), bytes.fromhex(signature)
        if len(hb) != 32 or len(sb) != 64:
            raise ValueError
    except ValueError:
        raise WitnessHeadRewrittenError(
            f"a stored entry has an unreadable content hash or signature ({str(content_hash)[:70]!r})") from None
    return _sha256(b"\x00" + hb + sb).digest()


class HeadTrust:
    """The heads one writer may extend. Used under the append lock by the sealer: ``check`` is cheap."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self.public_key = public_key
        self._heads: OrderedDict[int, TrustedHead] = OrderedDict()
        self._logged: set[int] = set()  # sizes of heads known to be in the log (bases for proofs)
        self._lock = threading.Lock()  # the seal thread records heads while the write loop proves others
        self.high_water = 0  # the largest log size trusted: the log never shrinks below it

    @property
    def newest(self) -> TrustedHead | None:
        """The newest head known to be in the log."""
        with self._lock:
            return self._heads[max(self._logged)] if self._logged else None

    def remember(self, head: TrustedHead, *, in_log: bool = True) -> None:
        """Trust ``head``; ``in_log`` when it is known to be in the log (committed, proven, published), so
        the log may never shrink below it (a head sealed ahead of its commit may never be stored)."""
        with self._lock:
            self._heads[head.size] = head
            self._heads.move_to_end(head.size)
            while len(self._heads) > _KEEP:
                self._logged.discard(self._heads.popitem(last=False)[0])
            if in_log:
                self._logged.add(head.size)
                self.high_water = max(self.high_water, head.size)
            else:
                self._logged.discard(head.size)

    def confirm(self, size: int, head_hash: str) -> None:
        """The head this writer sealed at ``size`` is committed: it may now be the base of a proof."""
        with self._lock:
            known = self._heads.get(size)
            if known is not None and known.head_hash == head_hash:
                self._logged.add(size)
            self.high_water = max(self.high_water, size)

    def anchor(self, checkpoint: Checkpoint, head_hash: str, frontier_text: str) -> None:
        """Start from a published checkpoint (signature and tree edge checked, else refused).

        The record's ``head_hash`` is not covered by the checkpoint's signature, so it is not trusted: the
        head is remembered with no hash (``UNPROVEN_HASH``), the first append finds it unproven, and the proof
        re-reads the entries of the last perfect subtree, whose leaves bind the last entry's hash to the
        signed root (``begin_proof``). ``head_hash`` is kept in the signature for callers; it is ignored."""
        del head_hash
        frontier = frontier_of(frontier_text, checkpoint.size)
        if not checkpoint.verify(self.public_key) or frontier.root().hex() != checkpoint.root:
            raise WitnessHeadRewrittenError(
                f"the published checkpoint of size {checkpoint.size} is not signed by this witness's key "
                "or does not match its tree edge")
        self.remember(TrustedHead(checkpoint.size, UNPROVEN_HASH, checkpoint.root, frontier))

    def check(self, size: int, head_hash: str, frontier: CompactRange) -> None:
        """Raise unless (size, hash, tree edge) is a head this writer sealed or proved."""
        if size < self.high_water:  # fail closed: never write a second history over trusted entries
            raise WitnessStorageError(
                f"the log shrank from {self.high_water} to {size} entries: acknowledged entries were lost "
                "or the database was rolled back", error_code="WITNESS_LOG_ROLLED_BACK")
        known = self._heads.get(size)
        if known is None and size == 0 and head_hash == GENESIS_HASH and frontier.size == 0:
            return  # an empty log: nothing to prove (a wiped log is caught by high_water and publishing)
        if known is None or known.head_hash != head_hash or known.frontier.nodes != frontier.nodes:
            raise WitnessHeadUnprovenError(f"the log head at size {size} is not one this writer sealed or proved")

    def sealed(self, size: int, head_hash: str, root_hex: str, frontier: CompactRange) -> None:
        """Record a head this writer's own signature just made (the frontier is not mutated afterwards)."""
        self.remember(TrustedHead(size, head_hash, root_hex, frontier), in_log=False)

    # ------------------------------------------------------------------ proving a head we did not seal
    def begin_proof(self, head: SignedHead) -> "HeadProof":
        """Check the head's own signature and say which stored entries the proof needs (``HeadProof``)."""
        frontier = frontier_of(head.frontier_text, head.size)
        size = frontier.size
        if size < self.high_water:
            raise WitnessStorageError(
                f"the log shrank from {self.high_water} to {size} entries: acknowledged entries were lost "
                "or the database was rolled back", error_code="WITNESS_LOG_ROLLED_BACK")
        if not isinstance(head.head_hash, str):
            raise WitnessHeadRewrittenError(f"the head row's hash is unreadable: {str(head.head_hash)[:70]!r}")
        if size == 0:
            if head.head_hash != GENESIS_HASH:
                raise WitnessHeadRewrittenError("an empty log's head does not name the genesis hash")
            return HeadProof(self, TrustedHead(0, GENESIS_HASH, EMPTY_ROOT.hex(), frontier), CompactRange(), None)
        cp = head.checkpoint
        if cp is None or cp.size != size or not cp.verify(self.public_key) or cp.root != frontier.root().hex():
            raise WitnessHeadRewrittenError(
                f"the log head (size {size}) carries no checkpoint signed by this witness's key over its tree: "
                "the head row, the entries or the checkpoints were rewritten without the key")
        base = self._base(size)
        if base is not None and base.head_hash != UNPROVEN_HASH:
            edge, base_hash = base.frontier.copy(), base.head_hash
        else:  # a signed tree edge vouches for all but its last perfect subtree: re-read that one, whose
            # last leaf holds the last entry's hash (the head's own, or an anchor's whose hash is unsigned)
            known = frontier if base is None else base.frontier
            edge = CompactRange(known.size - (known.size & -known.size), known.nodes[:-1])
            base_hash = None
        return HeadProof(self, TrustedHead(size, head.head_hash, cp.root, frontier), edge, base_hash)

    def _base(self, size: int) -> TrustedHead | None:
        """The newest trusted head at or below ``size``."""
        best = None
        with self._lock:  # only heads known to be in the log: a head sealed ahead may never have been stored
            heads = [h for h in self._heads.values() if h.size in self._logged]
        for known in heads:
            if known.size <= size and (best is None or known.size > best.size):
                best = known
        return best


class HeadProof:
    """One proof in progress: feed it the stored (content_hash, signature) of entries [start, end)."""

    CHUNK = 65_536  # rows read at a time: a proof from an old head must not hold the whole log in memory

    def __init__(self, trust: HeadTrust, head: TrustedHead, edge: CompactRange, last_hash: str | None) -> None:
        self._trust = trust
        self._head = head
        self._edge = edge
        self._last_hash = last_hash
        self.start = edge.size
        self.end = head.size

    def add(self, rows: Sequence[tuple[object, object]]) -> None:
        if self._edge.size + len(rows) > self.end:
            raise WitnessHeadRewrittenError(f"more entries than the head's {self.end} were read")
        self._edge.extend([_leaf(h, s) for h, s in rows])
        if rows:
            self._last_hash = rows[-1][0]  # type: ignore[assignment]

    def finish(self) -> TrustedHead:
        """Compare the extended tree edge with the head's signed root; remember the head if it holds."""
        head, edge = self._head, self._edge
        if head.size and edge.size != head.size:
            raise WitnessHeadRewrittenError(
                f"entries {edge.size}..{head.size - 1} are missing from the log below its head")
        if head.size and edge.root().hex() != head.root:
            raise WitnessHeadRewrittenError(
                f"the log at size {head.size} is not consistent with the last head this witness trusts "
                f"(size {self.start}): entries before the head were rewritten, deleted or inserted")
        if head.size and self._last_hash != head.head_hash:
            raise WitnessHeadRewrittenError(
                f"the head row names hash {head.head_hash[:16]}..., but entry {head.size - 1} hashes to "
                f"{str(self._last_hash)[:16]}...")
        self._trust.remember(head)
        return head


def prove_head(trust: HeadTrust, read_head: "Callable[[], SignedHead]",
               read_rows: "Callable[[int, int], Sequence[tuple[object, object]]]") -> TrustedHead:
    """Prove the current head with synchronous reads (the SQLite writer process's raw connection)."""
    proof = trust.begin_proof(read_head())
    for first in range(proof.start, proof.end, HeadProof.CHUNK):
        proof.add(read_rows(first, min(first + HeadProof.CHUNK, proof.end)))
    return proof.finish()
