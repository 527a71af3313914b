"""In-process store (``memory://name``): same semantics as the SQL store, lost when the process ends."""

from __future__ import annotations


import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..checkpoint import Checkpoint
from ..canonical import GENESIS_HASH
from ..errors import WitnessKeyError
from ..keys import WitnessKeys
from ..merkle import CompactRange
from ..trust import SignedHead
from .base import PendingEntry, Query, Sealed, Sealer, StoredEntry, WitnessStore, is_milestone


@dataclass
class _Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: list[StoredEntry] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    milestones: list[bool] = field(default_factory=list)
    key_id: str | None = None
    frontier: CompactRange = field(default_factory=CompactRange)


_LOGS: dict[str, _Log] = {}
_LOGS_LOCK = threading.Lock()


def drop_memory_log(name: str) -> None:
    """Forget a named in-memory log (test isolation)."""
    with _LOGS_LOCK:
        _LOGS.pop(name, None)


class MemoryStore(WitnessStore):
    def __init__(self, url: str) -> None:
        self.url = url
        name = url.split("://", 1)[1] if "://" in url else ""
        self._private = not name  # "memory://" alone: a log private to this witness
        if self._private:
            self._log = _Log()
        else:
            with _LOGS_LOCK:
                self._log = _LOGS.setdefault(name, _Log())

    async def open(self, keys: WitnessKeys) -> None:
        with self._log.lock:
            if self._log.key_id is None:
                self._log.key_id = keys.key_id
            elif self._log.key_id != keys.key_id:
                raise WitnessKeyError(f"log {self.url} is signed by key {self._log.key_id}, not {keys.key_id}",
                                      error_code="WITNESS_KEY_MISMATCH")

    async def close(self) -> None:
        return None

    async def append(self, batch: Sequence[PendingEntry], seal: Sealer, presealed: Sealed | None = None) -> Sealed:
        log = self._log
        with log.lock:
            size = len(log.entries)
            head = log.entries[-1].content_hash if log.entries else GENESIS_HASH
            sealed = presealed if presealed is not None and presealed.fits(size, head) else \
                seal(size, head, log.frontier.copy(), batch)
            log.entries.extend(StoredEntry(*row) for row in sealed.rows)
            if log.checkpoints and log.checkpoints[-1].size == size and not log.milestones[-1]:
                log.checkpoints.pop()
                log.milestones.pop()
            log.checkpoints.append(sealed.checkpoint)
            log.milestones.append(is_milestone(size, sealed.checkpoint.size))
            log.frontier = sealed.frontier
            return sealed

    async def size(self) -> int:
        return len(self._log.entries)

    async def leaves(self, start: int, end: int) -> list[bytes]:
        return [e.leaf() for e in self._log.entries[start:end]]

    async def query(self, q: Query) -> list[StoredEntry]:
        entries = self._log.entries[q.start_seq : q.end_seq]
        out: list[StoredEntry] = []
        for e in (reversed(entries) if q.newest_first else entries):
            if q.contains is not None and q.contains not in e.params_json:
                continue
            if q.component is not None and e.component != q.component:
                continue
            if q.operation is not None and e.operation != q.operation:
                continue
            if q.trace_id is not None and e.trace_id != q.trace_id:
                continue
            if q.since is not None and e.timestamp < q.since:
                continue
            if q.until is not None and e.timestamp >= q.until:
                continue
            out.append(e)
            if q.limit is not None and len(out) >= q.limit:
                break
        return out

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        wanted = set(ids)
        return {e.id for e in self._log.entries if e.id in wanted}

    async def checkpoints(self) -> list[Checkpoint]:
        return list(self._log.checkpoints)

    async def latest_checkpoint(self) -> Checkpoint | None:
        cps = self._log.checkpoints
        return cps[-1] if cps else None

    async def signed_head(self) -> SignedHead:
        log = self._log
        with log.lock:
            size = len(log.entries)
            head = log.entries[-1].content_hash if log.entries else GENESIS_HASH
            cp = log.checkpoints[-1] if log.checkpoints and log.checkpoints[-1].size == size else None
            return SignedHead(size, head, log.frontier.to_text(), cp)

    async def link_rows(self, start: int, end: int) -> list[tuple[object, object]]:
        return [(e.content_hash, e.signature) for e in self._log.entries[start:end]]

    async def checkpoint_rows(self) -> list[tuple[object, ...]]:
        return [(c.size, c.root, c.timestamp, c.key_id, c.signature) for c in self._log.checkpoints]


__all__ = ["MemoryStore", "drop_memory_log"]
