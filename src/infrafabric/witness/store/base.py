"""The storage interface of the witness: one append primitive that serialises every writer.

``append`` must run the sealer while holding a lock that excludes every other writer of the same log,
in any process (a row lock on the head row in PostgreSQL, the database write lock in SQLite, a mutex
in memory), so that sequence numbers and hash links form one chain however many writers there are.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..canonical import content_text
from ..checkpoint import Checkpoint
from ..errors import WitnessFormatError, WitnessStorageError
from ..keys import WitnessKeys
from ..merkle import CompactRange, leaf_hash
from ..trust import SignedHead
from ..verify import RawRecord


UNREADABLE_LEAF = b"\xff" * 32  # the leaf of a row whose hash or signature is not hex: matches no root


def stored_leaf(content_hash: object, signature: object) -> bytes:
    """RFC 9162 leaf of a stored row (hash ‖ signature); a damaged row gets a leaf no checkpoint signs."""
    try:
        return leaf_hash(bytes.fromhex(content_hash) + bytes.fromhex(signature))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return UNREADABLE_LEAF


class Pending(NamedTuple):
    """An entry accepted by ``log`` but not yet sealed (no sequence number, hash or signature yet)."""

    id: str
    ts_ns: int
    component: str
    operation: str
    params_json: str
    severity: str
    trace_id: str | None


# What the queue holds and the writers take: a plain tuple in Pending's field order (``log`` builds it
# without a Python-level __new__, and it pickles to the writer process without one).
PendingEntry = tuple[str, int, str, str, str, str, "str | None"]


@dataclass(slots=True)
class StoredEntry:
    seq: int
    id: str
    timestamp: str
    component: str
    operation: str
    params_json: str
    severity: str
    trace_id: str | None
    prev_hash: str
    content_hash: str
    signature: str
    sig_seq: int  # seq of the entry closing this entry's signing group (its signature covers that hash)

    def content(self) -> str:
        return content_text(
            seq=self.seq, entry_id=self.id, timestamp=self.timestamp, component=self.component,
            operation=self.operation, params_json=self.params_json, severity=self.severity,
            trace_id=self.trace_id, prev_hash=self.prev_hash, sig_seq=self.sig_seq,
        )

    def raw(self) -> RawRecord:
        return RawRecord(self.content(), self.content_hash, self.signature)

    def leaf(self) -> bytes:
        return stored_leaf(self.content_hash, self.signature)

    def check(self) -> None:
        """Raise ``WITNESS_ROW_UNREADABLE`` unless every column has the type the writer stores: a row edited in
        the database can hold anything (SQLite keeps 'abc' or a blob in any column), and readers of such a
        row get a coded error, not a TypeError from deep inside a formatter. Verification names it instead."""
        for name in ("seq", "sig_seq"):
            if type(getattr(self, name)) is not int:
                raise unreadable_row(self, f"column {name} is not an integer")
        for name in _TEXT_FIELDS:
            if getattr(self, name).__class__ is not str:
                raise unreadable_row(self, f"column {name} is not text")
        if self.trace_id is not None and self.trace_id.__class__ is not str:
            raise unreadable_row(self, "column trace_id is not text")

    def parsed_params(self) -> dict[str, Any]:
        """The params column parsed (a JSON object), or ``WITNESS_ROW_UNREADABLE``."""
        try:
            params = json.loads(self.params_json)
        except (ValueError, TypeError, RecursionError):
            params = None
        if not isinstance(params, dict):
            raise unreadable_row(self, "column params is not a JSON object")
        return params

    def to_dict(self) -> dict[str, Any]:
        self.check()
        return {
            "id": self.id,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "component": self.component,
            "operation": self.operation,
            "params": self.parsed_params(),
            "severity": self.severity,
            "trace_id": self.trace_id,
            "prev_hash": self.prev_hash,
            "content_hash": self.content_hash,
            "signature": self.signature,
            "sig_seq": self.sig_seq,
        }


_TEXT_FIELDS = ("id", "timestamp", "component", "operation", "params_json", "severity", "prev_hash", "content_hash",
                "signature")


def unreadable_row(entry: StoredEntry, why: str) -> WitnessStorageError:
    """The coded error for a stored row that cannot be read as an entry (edited in the database)."""
    seq = entry.seq if type(entry.seq) is int else repr(entry.seq)[:40]
    return WitnessStorageError(f"the stored entry at seq {seq} is unreadable: {why} (run verify)",
                               error_code="WITNESS_ROW_UNREADABLE")


def checkpoint_of_stored(row: Sequence[Any]) -> Checkpoint:
    """A stored checkpoint row (size, root, timestamp, key_id, signature) parsed, or ``WITNESS_ROW_UNREADABLE``."""
    try:
        return Checkpoint.from_dict(dict(zip(("size", "root", "timestamp", "key_id", "signature"), row)))
    except WitnessFormatError as exc:
        raise WitnessStorageError(f"a stored checkpoint is unreadable: {exc.message} (run verify)",
                                  error_code="WITNESS_ROW_UNREADABLE") from None


# A sealed entry as stored: the fields of StoredEntry, in column order (plain lists: the SQL store passes
# them to the driver as they are, thousands are built per batch on the hot path, and the seal fills in
# the signature once the group's closing entry is signed).
Row = list[Any]
ROW_CONTENT_HASH = 9


@dataclass
class Sealed:
    """A batch chained after (base_size, base_head): its entries, checkpoint and the new tree edge."""

    base_size: int
    base_head: str
    rows: list[Row]
    checkpoint: Checkpoint
    frontier: CompactRange
    # the rows flattened into one parameter tuple, when the sealing thread had time to do it (the SQLite
    # writer process does, so that its commit thread, the busier of its two, need not)
    params: tuple[Any, ...] | None = None

    def fits(self, size: int, head_hash: str) -> bool:
        return self.base_size == size and self.base_head == head_hash

    @property
    def head(self) -> tuple[int, str, CompactRange]:
        """The log head once this batch is committed."""
        return self.frontier.size, self.rows[-1][ROW_CONTENT_HASH], self.frontier


CHECKPOINT_MILESTONE = 4096


def is_milestone(base_size: int, size: int) -> bool:
    """Checkpoints kept forever: the first of the log and each one that crosses a multiple of 4096 entries.

    Every batch gets a checkpoint (it anchors the group commit), but only the latest one and the
    milestones are kept, so a lightly loaded log does not store one checkpoint per entry.
    """
    return base_size == 0 or base_size // CHECKPOINT_MILESTONE != size // CHECKPOINT_MILESTONE


# seal(size, head_hash, right edge of the tree, batch) -> Sealed, committed as one transaction
Sealer = Callable[[int, str, CompactRange, Sequence[PendingEntry]], Sealed]


@dataclass(frozen=True)
class Query:
    component: str | None = None
    operation: str | None = None
    since: str | None = None
    until: str | None = None
    trace_id: str | None = None
    start_seq: int = 0
    end_seq: int | None = None
    limit: int | None = None
    contains: str | None = None  # a substring of the entry's params (JSON text), e.g. a task or swarm id
    newest_first: bool = False


class WitnessStore(abc.ABC):
    """One log, shared by every writer that opens the same URL."""

    url: str

    @abc.abstractmethod
    async def open(self, keys: WitnessKeys) -> None:
        """Create the schema if needed; refuse a log that was signed with another key."""

    async def open_readonly(self) -> None:
        """Open an existing log for reading only: no key, no schema or head written (verifiers)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def append(self, batch: Sequence[PendingEntry], seal: Sealer, presealed: Sealed | None = None) -> Sealed:
        """Lock the log, read the head (size, hash, tree edge), seal ``batch`` after it, commit atomically.

        ``presealed`` is the batch already sealed after the head the writer predicted; it is used only
        when the head still is that one (no other writer came in between), else the batch is resealed.
        """

    @abc.abstractmethod
    async def size(self) -> int: ...

    @abc.abstractmethod
    async def leaves(self, start: int, end: int) -> list[bytes]:
        """Merkle leaf hashes of entries [start, end)."""

    @abc.abstractmethod
    async def query(self, q: Query) -> list[StoredEntry]:
        """Entries matching ``q``, oldest (lowest seq) first."""

    @abc.abstractmethod
    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored (used to retry a batch whose commit outcome is unknown)."""

    @abc.abstractmethod
    async def latest_checkpoint(self) -> Checkpoint | None: ...

    @abc.abstractmethod
    async def signed_head(self) -> "SignedHead":
        """The head row and the checkpoint stored at its size, read in one statement (values as stored)."""

    @abc.abstractmethod
    async def link_rows(self, start: int, end: int) -> list[tuple[Any, Any]]:
        """(content_hash, signature) of the entries with seq in [start, end), in seq order, as stored."""

    @abc.abstractmethod
    async def checkpoint_rows(self) -> list[tuple[Any, ...]]:
        """Every stored checkpoint as (size, root, timestamp, key_id, signature), unparsed (for verifiers)."""

    @abc.abstractmethod
    async def checkpoints(self) -> list[Checkpoint]:
        """Stored checkpoints, oldest first: the milestones and the latest."""
