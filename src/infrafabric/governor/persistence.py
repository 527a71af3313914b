"""Where the governor keeps its state: the coordination key-value store (embedded or etcd).

The governor's seed API is synchronous. On the embedded store a write is a direct, microsecond call. On
a network store, a sync call made inside a running event loop must not block it, so writes are queued in
order (latest value per key) and written by a task on that loop; `await flush()` waits for them, and
`close()` flushes. Without a running loop the write is made at once.

`update` is a read-modify-write decided in the store (compare-and-swap on the key's revision, retried
on conflict), for records several replicas change: a blind `put` of this replica's cached copy would
undo what another replica wrote in between (a stale replica re-closed a breaker another had tripped).
It keeps its place in the same write order as `put`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.errors import BackendUnavailable
from backends.jsonsafe import loads_bounded
from backends.kv import Compare, KeyValueStore, Put, SyncKV
from backends.kv.memory import MemoryKV

MISSING: Any = object()  # what `update`'s plan is given for a key that is not in the store
CAS_ATTEMPTS = 256

Writes = list[tuple[str, Any]]
Plan = Callable[[Any], tuple[Writes | None, Any]]


@dataclass
class _Update:
    """A read-modify-write: ``plan(current record)`` -> (writes, outcome), the writes made only if ``key``
    is unchanged since it was read; ``done(outcome)`` once they are stored (or nothing needed writing)."""

    key: str
    plan: Plan
    done: Callable[[Any], None] | None


def _encode(record: Any) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=str).encode()


def _decoded(value: bytes | None) -> Any:
    """A stored value for a plan: MISSING, the record, or the ValueError saying why it is not JSON."""
    if value is None:
        return MISSING
    try:
        return loads_bounded(value)
    except ValueError as exc:
        return exc


class StatePersister:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv
        self._direct = SyncKV(kv) if isinstance(kv, MemoryKV) else None
        self._pending: dict[str, list[bytes | _Update]] = {}  # per key, in order; a put drops what it replaces
        self._drainer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._blocking: SyncKV | None = None
        self.errors: list[BaseException] = []

    def _now(self) -> SyncKV | None:
        """The store to write to at once, or None when writes must be queued (network store, running loop)."""
        if self._direct is not None:
            return self._direct
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._blocking is None:
                self._blocking = SyncKV(self.kv)
            return self._blocking
        return None

    def put(self, key: str, record: Any) -> None:
        data = _encode(record)
        sync = self._now()
        if sync is not None:
            sync.put(key, data)
            return
        self._pending.pop(key, None)
        self._enqueue(key, data)

    def update(self, key: str, plan: Plan, done: Callable[[Any], None] | None = None) -> None:
        """Read-modify-write ``key`` in the store (see the module docstring). ``plan`` may run more than once
        (once per conflict) and must only compute; ``done`` runs once, with the outcome of the plan that
        was stored. Made at once where ``put`` is, else queued after the writes already queued."""
        op = _Update(key, plan, done)
        sync = self._now()
        if sync is None:
            self._enqueue(key, op)
            return
        for _attempt in range(CAS_ATTEMPTS):
            value, meta = sync.get(key)
            writes, outcome = plan(_decoded(value))
            if writes is not None:
                guard = [Compare.mod_revision(key, meta.mod_revision if meta is not None else 0)]
                # SyncKV has no public txn; its _call runs one on the embedded core or its loop thread
                if not sync._call("txn", guard, [Put(k, _encode(r)) for k, r in writes], []).succeeded:
                    continue
            if done is not None:
                done(outcome)
            return
        raise BackendUnavailable(f"{key} kept changing under this replica's update; try again")

    def _enqueue(self, key: str, op: bytes | _Update) -> None:
        self._pending.setdefault(key, []).append(op)
        self._idle.clear()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _run(self, key: str, op: bytes | _Update) -> Any:
        """Make one queued write; an update's outcome is returned (``done`` is called once it is dequeued)."""
        if isinstance(op, bytes):
            await self.kv.put(key, op)
            return None
        for _attempt in range(CAS_ATTEMPTS):
            current = await self.kv.get(key)
            writes, outcome = op.plan(_decoded(current.value if current is not None else None))
            if writes is not None:
                guard = [Compare.mod_revision(key, current.mod_revision if current is not None else 0)]
                if not (await self.kv.txn(guard, [Put(k, _encode(r)) for k, r in writes])).succeeded:
                    continue
            return outcome
        raise BackendUnavailable(f"{key} kept changing under this replica's update; try again")

    async def _drain(self) -> None:
        try:
            while self._pending:
                key = next(iter(self._pending))
                ops = self._pending[key]
                op = ops[0]
                try:
                    outcome = await self._run(key, op)
                except Exception as exc:  # kept for flush() to raise; the write stays pending
                    self.errors.append(exc)
                    return
                if self._pending.get(key) is ops and ops and ops[0] is op:  # not replaced by a put meanwhile
                    ops.pop(0)
                    if not ops:
                        del self._pending[key]
                if isinstance(op, _Update) and op.done is not None:
                    try:
                        op.done(outcome)
                    except Exception as exc:  # stored already: reported by flush(), never written twice
                        self.errors.append(exc)
        finally:
            if not self._pending:
                self._idle.set()

    async def flush(self) -> None:
        """Wait until every queued write is stored; raise the first write error if one happened."""
        if self._pending and (self._drainer is None or self._drainer.done()):
            self.errors.clear()
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        if self._drainer is not None:
            await asyncio.shield(self._drainer)
        if self.errors:
            error = self.errors[0]
            self.errors.clear()  # raised once; a write still pending is tried again by the next flush
            raise error

    async def load_prefix(self, prefix: str) -> dict[str, Any]:
        """Records under ``prefix``; one that is not JSON is returned as the ``ValueError`` that says why
        (the governor reports it and starts without it, rather than refusing to start)."""
        records: dict[str, Any] = {}
        for kv in await self.kv.get_prefix(prefix):
            try:
                records[kv.key] = loads_bounded(kv.value)
            except ValueError as exc:
                records[kv.key] = exc
        return records

    def close(self) -> None:
        if self._blocking is not None:
            self._blocking.close()
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
