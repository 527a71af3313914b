"""Where the governor keeps its state: the coordination key-value store (embedded or etcd).

The governor's seed API is synchronous. On the embedded store a write is a direct, microsecond call. On
a network store, a sync call made inside a running event loop must not block it, so writes are queued in
order (latest value per key) and written by a task on that loop; `await flush()` waits for them, and
`close()` flushes. Without a running loop the write is made at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from backends.jsonsafe import loads_bounded
from backends.kv import KeyValueStore, SyncKV
from backends.kv.memory import MemoryKV


class StatePersister:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv
        self._direct = SyncKV(kv) if isinstance(kv, MemoryKV) else None
        self._pending: dict[str, bytes] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._blocking: SyncKV | None = None
        self.errors: list[BaseException] = []

    def put(self, key: str, record: Any) -> None:
        data = json.dumps(record, separators=(",", ":"), default=str).encode()
        if self._direct is not None:
            self._direct.put(key, data)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._blocking is None:
                self._blocking = SyncKV(self.kv)
            self._blocking.put(key, data)
            return
        self._pending.pop(key, None)
        self._pending[key] = data
        self._idle.clear()
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                key = next(iter(self._pending))
                data = self._pending[key]
                try:
                    await self.kv.put(key, data)
                except Exception as exc:  # kept for flush() to raise; the value stays pending
                    self.errors.append(exc)
                    return
                if self._pending.get(key) is data:
                    del self._pending[key]
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
            raise self.errors[0]

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
