"""Verification of a stored log with the public key only: every row read as stored, every damage named.

A row someone edited with database access can hold anything the engine lets a column hold (SQLite
keeps ``'abc'`` in an INTEGER column). Each row is checked for the types the log writes before it is
turned into the canonical content, so a wrong-typed value is a ``malformed`` finding at its position,
never a traceback. Stored checkpoints are parsed the same way, the head row is compared with the entries
(``head_mismatch``), and the newest checkpoints published outside the database (``publish.py``) are
checked like any other: a log cut shorter than a published checkpoint is ``truncated``, and so is a log
with no verified checkpoint of its own size (every batch the writer commits stores one). Each text column
must also have the shape the writer gives it (hex hashes, one canonical JSON object as params), since the
signed content is the columns joined and text moved from one column into the next would keep its bytes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import GENESIS_HASH, _encode_params
from .checkpoint import Checkpoint
from .errors import WitnessError, WitnessFormatError
from .publish import CheckpointPublisher
from .report import Problem, VerificationReport
from .store.base import Query, StoredEntry, WitnessStore
from .trust import frontier_of
from .verify import RawRecord, verify_records

if TYPE_CHECKING:
    from .merkle import MerkleTree
    from .trust import SignedHead

T = TypeVar("T")

_TEXT_COLUMNS = ("id", "timestamp", "component", "operation", "params_json", "severity", "prev_hash",
                 "content_hash", "signature")


_MAX_SEQ = 2**63 - 1  # the largest integer a SQL filter can bind
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_UNQUOTED = re.compile(r'[^"\\\x00-\x1f]*\Z')  # columns the content embeds raw, between quotes


def _column_problem(entry: StoredEntry) -> str | None:
    """Why the text columns cannot be the ones the writer stored, or None.

    The content is the columns joined into one string, so a key-less editor could move text from one
    column into its neighbour and keep the signed bytes. Each column the writer fills must therefore have
    the shape the writer gives it: the hashes lowercase hex, the timestamp free of quotes, the params one
    canonical JSON object (which cannot end early or run on into the next field).
    """
    for column in ("prev_hash", "content_hash"):
        if not _HEX64.match(getattr(entry, column)):
            return f"column {column} is not 64 lowercase hex digits"
    if not _UNQUOTED.match(entry.timestamp):
        return "column timestamp holds a quote, a backslash or a control character"
    text = entry.params_json
    try:
        params = json.loads(text)
        canonical = isinstance(params, dict) and _encode_params(params) == text  # the writer's own encoder
    except (ValueError, TypeError, RecursionError):
        canonical = False
    if not canonical:
        return "column params is not one canonical JSON object"
    return None


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def record_of(entry: StoredEntry, position: int) -> RawRecord:
    """The entry's canonical content and claims, or a malformed record naming the column that is wrong."""
    where = f"row {position} (seq {_describe(entry.seq)})"
    for column in ("seq", "sig_seq"):
        value = getattr(entry, column)
        if type(value) is not int:
            return RawRecord(None, "", "", f"{where}: column {column} holds {_describe(value)}, not an integer")
    for column in _TEXT_COLUMNS:
        value = getattr(entry, column)
        if not isinstance(value, str):
            return RawRecord(None, "", "", f"{where}: column {column} holds {_describe(value)}, not text")
    if entry.trace_id is not None and not isinstance(entry.trace_id, str):
        return RawRecord(None, "", "", f"{where}: column trace_id holds {_describe(entry.trace_id)}, not text")
    shape = _column_problem(entry)
    if shape is not None:
        return RawRecord(None, "", "", f"{where}: {shape}")
    try:
        return RawRecord(entry.content(), entry.content_hash, entry.signature)
    except Exception as exc:  # noqa: BLE001 - any value the canonical form cannot take is the same finding
        return RawRecord(None, "", "", f"{where}: cannot be put in canonical form: {exc}")


def checkpoint_of_row(row: Sequence[object], index: int) -> Checkpoint | Problem:
    try:
        return Checkpoint.from_dict(dict(zip(("size", "root", "timestamp", "key_id", "signature"), row)))
    except WitnessFormatError as exc:
        return Problem("checkpoint_invalid", f"stored checkpoint row {index} is unreadable: {exc.message}")


async def verify_store(store: WitnessStore, public_key: Ed25519PublicKey, *,
                       trusted: Sequence[Checkpoint] = (), publishers: Sequence[CheckpointPublisher] = (),
                       all_signatures: bool = True) -> VerificationReport:
    """Verify everything the store holds against the public key, its checkpoints and the published ones.

    Other writers may append while this reads. The head row and the checkpoints are read together (the
    head read again until it did not move, ``_head_and_checkpoints``), then the entries; an append can
    only add entries above that head, so rows beyond it that a re-read head covers are another writer's
    and left out. Rows beyond a head that did not grow stay in, and are named as ``head_mismatch``."""
    head, checkpoint_rows = await _head_and_checkpoints(store)
    entries = await store.query(Query())
    size = head.size
    if type(size) is int and entries and type(entries[-1].seq) is int and entries[-1].seq >= size:
        later = await store.signed_head()
        if type(later.size) is int and later.size > entries[-1].seq:  # committed since: not part of this view
            entries = [e for e in entries if not (type(e.seq) is int and e.seq >= size)]
    problems: list[Problem] = []
    checkpoints: list[Checkpoint] = []
    for i, row in enumerate(checkpoint_rows):
        parsed = checkpoint_of_row(row, i)
        (checkpoints if isinstance(parsed, Checkpoint) else problems).append(parsed)  # type: ignore[arg-type]
    for publisher in publishers:
        try:
            record = await publisher.read()
        except WitnessError as exc:
            problems.append(Problem("checkpoint_invalid", f"the checkpoint published in {publisher.name} "
                                    f"is unreadable: {exc.message}"))
            continue
        if record is not None:
            checkpoints.append(record.checkpoint)
    records = [record_of(e, pos) for pos, e in enumerate(entries)]
    checkpoints.sort(key=lambda c: -c.size)  # newest first: the report lists the one covering most first
    report = verify_records(records, public_key, checkpoints=[*checkpoints, *trusted], all_signatures=all_signatures,
                            require_checkpoint=bool(entries), extra_problems=problems)
    n = len(records)
    if n and not any(cp.size == n for cp in (*checkpoints, *trusted)) \
            and not any(p.kind == "no_checkpoint" for p in report.problems):
        # every committed batch stores a checkpoint of the log's new size (``is_milestone``: the latest is
        # always kept), so a log with none of its own size lost its tail together with that checkpoint (one
        # of that size that does not verify is already named: checkpoint_invalid or checkpoint_mismatch)
        report.problems.append(Problem(
            "truncated", f"no checkpoint signed by this key covers the log's {n} entries: the writer signs one "
            "with every batch, so the tail was cut together with its checkpoint", None, n))
        report.ok = False
    head_problems = _head_problems(head, records, report.root)
    if head_problems:
        report.problems = head_problems + report.problems
        report.ok = False
    return report


async def _head_and_checkpoints(store: WitnessStore) -> "tuple[SignedHead, list[tuple[object, ...]]]":
    """The head row and the checkpoint rows of one moment: every commit moves the head, so checkpoints read
    between two equal head reads belong to that head (a commit in between replaces the latest one)."""
    head = await store.signed_head()
    for _ in range(50):
        rows = await store.checkpoint_rows()
        again = await store.signed_head()
        if (again.size, again.head_hash) == (head.size, head.head_hash):
            return head, rows
        head = again
    return head, rows  # a log appended to without pause: the report may name a race, never hide tampering


def _head_problems(head: object, records: Sequence[RawRecord], root_hex: str) -> list[Problem]:
    """The head row must describe the stored entries: their number, the last hash, the tree edge."""
    size, head_hash, frontier_text = head.size, head.head_hash, head.frontier_text  # type: ignore[attr-defined]
    try:
        frontier = frontier_of(frontier_text, size)
    except WitnessError as exc:
        return [Problem("head_mismatch", exc.message)]
    n = len(records)
    last = records[-1].content_hash if records else GENESIS_HASH
    if size != n or head_hash != last:
        return [Problem("head_mismatch", f"the head row says {size} entries ending in {str(head_hash)[:16]}..., "
                        f"the log holds {n} ending in {last[:16]}...")]
    if frontier.root().hex() != root_hex:
        return [Problem("head_mismatch", "the head row's tree edge is not the Merkle tree of the stored entries")]
    return []


def verify_url(url: str, public_key: Ed25519PublicKey, *, trusted: Sequence[Checkpoint] = (),
               publishers: Sequence[CheckpointPublisher] = (), all_signatures: bool = True) -> VerificationReport:
    """Open the log at ``url`` read-only (no private key, no schema changes) and verify it."""

    async def verify_then_close(store: WitnessStore) -> VerificationReport:
        try:
            return await verify_store(store, public_key, trusted=trusted, publishers=publishers,
                                      all_signatures=all_signatures)
        finally:
            for publisher in publishers:
                await publisher.close()

    return _on_readonly_store(url, verify_then_close)


def _on_readonly_store(url: str, work: "Callable[[WitnessStore], Awaitable[T]]") -> T:
    """Run ``work`` on the log at ``url`` opened read-only (no key, no schema or head written), then close it."""
    from .store import make_store

    async def run() -> T:
        store = make_store(url)
        await store.open_readonly()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


async def consistency_in_store(store: WitnessStore, public_key: Ed25519PublicKey, old: Checkpoint,
                               new: Checkpoint | None = None) -> dict[str, object]:
    """RFC 9162 consistency proof, from the stored entries, that the log of ``new`` (default: the newest
    stored checkpoint) extends the log of ``old``; both checkpoints must be signed by ``public_key``, and
    the proof is checked against their roots before it is returned (``consistent``)."""
    from .merkle import MerkleTree, verify_consistency

    if new is None:
        rows = await store.checkpoint_rows()
        parsed = [c for c in (checkpoint_of_row(r, i) for i, r in enumerate(rows)) if isinstance(c, Checkpoint)]
        new = max(parsed, key=lambda c: c.size, default=None)
        if new is None:
            raise WitnessFormatError("the log holds no readable checkpoint to prove against")
    problems = [f"{name} checkpoint (size {cp.size}) is not signed by this key"
                for name, cp in (("old", old), ("new", new)) if not cp.verify(public_key)]
    answer: dict[str, object] = {"first": old.size, "second": new.size, "first_root": old.root,
                                 "second_root": new.root, "proof": [], "consistent": False, "problems": problems}
    if problems:
        return answer
    if old.size > new.size:
        problems.append(f"the old checkpoint ({old.size} entries) is larger than the new one ({new.size}): "
                        "the log was truncated")
        return answer
    tree = MerkleTree(await store.leaves(0, new.size))
    if tree.size < new.size:
        problems.append(f"the log holds {tree.size} entries, the new checkpoint commits to {new.size}: truncated")
        return answer
    if tree.root(new.size).hex() != new.root:
        problems.append(f"the stored entries do not hash to the new checkpoint's root (size {new.size})")
    proof = tree.consistency_proof(old.size, new.size) if old.size else []
    answer["proof"] = [p.hex() for p in proof]
    ok = (old.size == 0 or verify_consistency(old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root),
                                              proof))
    if not ok:
        problems.append(f"the log of {new.size} entries does not extend the log of {old.size} entries the old "
                        "checkpoint signed: history was rewritten")
    answer["consistent"] = not problems
    return answer


def consistency_at_url(url: str, public_key: Ed25519PublicKey, old: Checkpoint,
                       new: Checkpoint | None = None) -> dict[str, object]:
    """``consistency_in_store`` on the log at ``url``, opened read-only (no private key)."""
    return _on_readonly_store(url, lambda store: consistency_in_store(store, public_key, old, new))


async def inclusion_in_store(store: WitnessStore, public_key: Ed25519PublicKey, seq: int, size: int | None = None,
                             *, tree: "MerkleTree | None" = None) -> dict[str, object]:
    """RFC 9162 audit path of entry ``seq`` in the tree of ``size`` entries (default: all), with the public
    key only. The leaf is built from the entry's content hashed again, not from its stored hash, and the
    root must be the one a stored checkpoint of that size signs (``checkpoint``; None when no checkpoint
    of that size is kept): an edited row gets no proof (``WITNESS_ENTRY_EDITED``)."""
    import hashlib

    from .errors import WitnessProofError
    from .merkle import MerkleTree, leaf_hash, verify_inclusion

    if type(seq) is not int or seq < 0:
        raise WitnessProofError(f"seq must be a non-negative integer, not {seq!r}")
    if seq >= _MAX_SEQ:  # beyond what a SQL filter can bind, so beyond any stored entry
        raise WitnessProofError(f"no entry with seq {seq}")
    if size is not None and (type(size) is not int or not 0 <= size <= _MAX_SEQ):
        raise WitnessProofError(f"size must be an integer from 0 to {_MAX_SEQ}, not {size!r:.40}")
    found = await store.query(Query(start_seq=seq, end_seq=seq + 1))
    if not found:
        raise WitnessProofError(f"no entry with seq {seq}")
    record = record_of(found[0], seq)
    if record.content is None:
        raise WitnessProofError(record.error or "entry unreadable", error_code="WITNESS_ENTRY_EDITED")
    digest = hashlib.sha256(record.content.encode("utf-8", "surrogatepass")).digest()
    if digest.hex() != record.content_hash:
        raise WitnessProofError(f"entry {seq} does not hash to its stored content hash: it was edited",
                                error_code="WITNESS_ENTRY_EDITED")
    try:
        leaf = leaf_hash(digest + bytes.fromhex(record.signature))
    except ValueError:
        raise WitnessProofError(f"entry {seq} has an unreadable signature", error_code="WITNESS_ENTRY_EDITED") from None
    checkpoints = {c.size: c for c in (checkpoint_of_row(r, i) for i, r in enumerate(await store.checkpoint_rows()))
                   if isinstance(c, Checkpoint) and c.verify(public_key)}
    if tree is None:
        tree = MerkleTree(await store.leaves(0, await store.size()))
    n = tree.size if size is None else size
    path = tree.inclusion_proof(seq, n)
    root = tree.root(n)
    if tree.leaf(seq) != leaf or not verify_inclusion(leaf, seq, n, path, root):
        raise WitnessProofError(f"entry {seq} is not the leaf the stored tree holds: it was edited",
                                error_code="WITNESS_ENTRY_EDITED")
    cp = checkpoints.get(n)
    if cp is not None and cp.root != root.hex():
        raise WitnessProofError(f"the stored entries do not hash to the signed checkpoint of size {n}: "
                                "the log was rewritten", error_code="WITNESS_ENTRY_EDITED")
    return {"leaf_index": seq, "tree_size": n, "leaf_hash": leaf.hex(), "path": [p.hex() for p in path],
            "root": root.hex(), "checkpoint": None if cp is None else cp.to_dict()}


def inclusion_at_url(url: str, public_key: Ed25519PublicKey, seq: int, size: int | None = None) -> dict[str, object]:
    """``inclusion_in_store`` on the log at ``url``, opened read-only (no private key)."""
    return _on_readonly_store(url, lambda store: inclusion_in_store(store, public_key, seq, size))
