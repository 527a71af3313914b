"""The embedded key-value store: etcd semantics in process, optionally persisted to SQLite.

One `_MemoryCore` holds the data and is thread-safe (a lock around every operation), so the async
store, the sync facade and a lease reaper thread can share it. With a SQLite path every mutation is
written through in the same critical section (WAL, one transaction per operation), so a restarted
process sees exactly the acknowledged state.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from backends.errors import LeaseNotFound
from backends.kv.base import (
    WATCH_ENDED,
    Bytesish,
    Compare,
    compare_holds,
    Delete,
    Get,
    KeyValue,
    KeyValueStore,
    Put,
    TxnOp,
    TxnResult,
    Watch,
    WatchEvent,
    to_bytes,
)

_HISTORY = 10_000
new_tuple = tuple.__new__  # events kept for watches that start from a past revision


@dataclass(slots=True)
class _Lease:
    ttl: int
    expires_at: float  # time.monotonic()
    keys: set[str] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class _Watcher:
    key: str
    prefix: bool
    loop: asyncio.AbstractEventLoop
    thread_id: int
    queue: asyncio.Queue[WatchEvent]

    def matches(self, key: str) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key

    def deliver(self, event: WatchEvent) -> None:
        if threading.get_ident() == self.thread_id:
            self.queue.put_nowait(event)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class _SQLitePersistence:
    """Write-through persistence of the core's state (one SQLite transaction per operation)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,
                create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL,
                lease INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL,
                expires_wall REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            """
        )

    def load(self) -> tuple[int, int, dict[str, KeyValue], dict[int, tuple[int, float]]]:
        row = self.conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
        revision = row[0] if row else 0
        row = self.conn.execute("SELECT value FROM meta WHERE name='lease_seq'").fetchone()
        lease_seq = row[0] if row else 0
        data = {
            k: KeyValue(k, bytes(v), c, m, ver, lease)
            for k, v, c, m, ver, lease in self.conn.execute("SELECT * FROM kv")
        }
        leases = {i: (ttl, wall) for i, ttl, wall in self.conn.execute("SELECT * FROM leases")}
        return revision, lease_seq, data, leases

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def commit(self, revision: int, lease_seq: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('revision', ?), ('lease_seq', ?)", (revision, lease_seq)
        )
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def put(self, kv: KeyValue) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO kv VALUES (?,?,?,?,?,?)",
            (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        )

    def delete(self, key: str) -> None:
        self.conn.execute("DELETE FROM kv WHERE key=?", (key,))

    def put_lease(self, lease_id: int, ttl: int, expires_monotonic: float) -> None:
        wall = time.time() + (expires_monotonic - time.monotonic())
        self.conn.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?)", (lease_id, ttl, wall))

    def delete_lease(self, lease_id: int) -> None:
        self.conn.execute("DELETE FROM leases WHERE id=?", (lease_id,))

    def close(self) -> None:
        self.conn.close()


class _MemoryCore:
    """The shared state behind every MemoryKV opened on the same name or file."""

    def __init__(self, sqlite_path: str | None = None) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, KeyValue] = {}
        self._sorted_keys: list[str] | None = None
        self._revision = 0
        self._lease_ids = itertools.count(1)
        self._lease_seq = 0
        self._leases: dict[int, _Lease] = {}
        self._expiries: list[tuple[float, int]] = []
        self._watchers: list[_Watcher] = []
        self._history: collections.deque[WatchEvent | KeyValue] = collections.deque(maxlen=_HISTORY)
        self._reaper: threading.Thread | None = None
        self._wakeup = threading.Condition(self._lock)
        self._closed = False
        self._db = _SQLitePersistence(sqlite_path) if sqlite_path else None
        if self._db is not None:
            self._revision, self._lease_seq, self._data, leases = self._db.load()
            self._lease_ids = itertools.count(self._lease_seq + 1)
            now_wall, now_mono = time.time(), time.monotonic()
            for lease_id, (ttl, wall) in leases.items():
                lease = _Lease(ttl, now_mono + (wall - now_wall))
                self._leases[lease_id] = lease
                heapq.heappush(self._expiries, (lease.expires_at, lease_id))
            for kv in self._data.values():
                if kv.lease in self._leases:
                    self._leases[kv.lease].keys.add(kv.key)
            if self._leases:
                self._start_reaper()

    # -- helpers (lock held) -------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    def _keys_sorted(self) -> list[str]:
        if self._sorted_keys is None:
            self._sorted_keys = sorted(self._data)
        return self._sorted_keys

    def _range(self, key: str, prefix: bool) -> list[KeyValue]:
        if not prefix:
            kv = self._data.get(key)
            return [kv] if kv is not None else []
        return [self._data[k] for k in self._keys_sorted() if k.startswith(key)]

    def _emit(self, event: WatchEvent) -> None:
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.matches(event.key):
                watcher.deliver(event)

    def _put_locked(self, key: str, value: bytes, lease: int, revision: int) -> None:
        if lease and lease not in self._leases:
            raise LeaseNotFound(f"lease {lease} not found")
        old = self._data.get(key)
        if old is None:
            kv = KeyValue(key, value, revision, revision, 1, lease)
            self._sorted_keys = None
        else:
            kv = KeyValue(key, value, old.create_revision, revision, old.version + 1, lease)
            if old.lease and old.lease != lease and old.lease in self._leases:
                self._leases[old.lease].keys.discard(key)
        self._data[key] = kv
        if lease:
            self._leases[lease].keys.add(key)
        if self._db is not None:
            self._db.put(kv)
        self._emit(WatchEvent("put", key, value, revision, lease))

    def _delete_locked(self, key: str, revision: int) -> bool:
        old = self._data.pop(key, None)
        if old is None:
            return False
        self._sorted_keys = None
        if old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        if self._db is not None:
            self._db.delete(key)
        self._emit(WatchEvent("delete", key, b"", revision, 0))
        return True

    def _check(self, cmp: Compare) -> bool:
        return compare_holds(cmp, self._data.get(cmp.key))

    def _mutate(self, fn):  # type: ignore[no-untyped-def]
        """Run fn(revision) under the lock inside one persisted transaction."""
        with self._lock:
            self._expire_locked(time.monotonic())
            if self._db is not None:
                self._db.begin()
            try:
                result = fn(self._revision + 1)
            except BaseException:
                if self._db is not None:
                    self._db.rollback()
                raise
            if self._db is not None:
                self._db.commit(self._revision, self._lease_seq)
            return result

    # -- leases ----------------------------------------------------------------------------------

    def _expire_locked(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, lease_id = heapq.heappop(self._expiries)
            lease = self._leases.get(lease_id)
            if lease is None or lease.expires_at != expires_at:
                continue  # refreshed or revoked since this entry was pushed
            self._drop_lease_locked(lease_id)

    def _drop_lease_locked(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        if self._db is not None:
            if not self._db.conn.in_transaction:
                self._db.begin()
                self._db.delete_lease(lease_id)
                self._delete_lease_keys(lease, own_txn=True)
                return
            self._db.delete_lease(lease_id)
        self._delete_lease_keys(lease, own_txn=False)

    def _delete_lease_keys(self, lease: _Lease, own_txn: bool) -> None:
        if lease.keys:
            self._revision += 1
            for key in sorted(lease.keys):
                self._delete_locked(key, self._revision)
        if own_txn and self._db is not None:
            self._db.commit(self._revision, self._lease_seq)

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap_forever, name="kv-lease-reaper", daemon=True)
            self._reaper.start()

    def _reap_forever(self) -> None:
        """Expire leases on time even when nobody touches the store, so watchers see the deletes."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                self._expire_locked(now)
                timeout = (self._expiries[0][0] - now) if self._expiries else None
                self._wakeup.wait(timeout=None if timeout is None else max(timeout, 0.001))

    def grant_lease(self, ttl: int) -> int:
        if ttl <= 0:
            raise ValueError("lease TTL must be positive")

        def op(_rev: int) -> int:
            lease_id = next(self._lease_ids)
            self._lease_seq = lease_id
            lease = _Lease(ttl, time.monotonic() + ttl)
            self._leases[lease_id] = lease
            heapq.heappush(self._expiries, (lease.expires_at, lease_id))
            if self._db is not None:
                self._db.put_lease(lease_id, ttl, lease.expires_at)
            return lease_id

        lease_id = self._mutate(op)
        with self._lock:
            self._start_reaper()
            self._wakeup.notify_all()
        return lease_id

    def refresh_lease(self, lease_id: int) -> int:
        def op(_rev: int) -> int:
            lease = self._leases.get(lease_id)
            if lease is None:
                raise LeaseNotFound(f"lease {lease_id} not found")
            lease.expires_at = time.monotonic() + lease.ttl
            heapq.heappush(self._expiries, (lease.expires_at, lease_id))
            if self._db is not None:
                self._db.put_lease(lease_id, lease.ttl, lease.expires_at)
            return lease.ttl

        return self._mutate(op)

    def revoke_lease(self, lease_id: int) -> None:
        def op(_rev: int) -> None:
            self._drop_lease_locked(lease_id)

        self._mutate(op)

    def lease_ttl(self, lease_id: int) -> float:
        """Seconds left on the lease, -1 when it is gone."""
        with self._lock:
            self._expire_locked(time.monotonic())
            lease = self._leases.get(lease_id)
            return -1.0 if lease is None else max(lease.expires_at - time.monotonic(), 0.0)

    # -- key-value operations -------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        with self._lock:
            self._expire_locked(time.monotonic())
            return self._data.get(key)

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        with self._lock:
            self._expire_locked(time.monotonic())
            return self._range(prefix, True)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        def op(rev: int) -> int:
            self._put_locked(key, value, lease, rev)
            self._revision = rev
            return rev

        return self._mutate(op)

    def delete_range(self, key: str, prefix: bool) -> int:
        def op(rev: int) -> int:
            keys = [kv.key for kv in self._range(key, prefix)]
            for k in keys:
                self._delete_locked(k, rev)
            if keys:
                self._revision = rev
            return len(keys)

        return self._mutate(op)

    def _check_leases(self, ops: Sequence[TxnOp]) -> None:
        """Validate before mutating anything: a transaction is all or nothing."""
        for o in ops:
            if type(o) is Put and o.lease and o.lease not in self._leases:
                raise LeaseNotFound(f"lease {o.lease} not found")

    def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[TxnOp], Sequence[TxnOp]]]
    ) -> list[TxnResult]:
        """Independent transactions under one lock and one persisted commit (each its own revision)."""

        def op(_rev: int) -> list[TxnResult]:
            for _c, success, failure in txns:  # every lease checked first: nothing half-applied
                self._check_leases(success)
                self._check_leases(failure)
            return [self._txn_locked(c, s, f, self._revision + 1) for c, s, f in txns]

        return self._mutate(op)

    def create_many(self, items: Sequence[tuple[str, bytes, int]]) -> list[tuple[bool, KeyValue | None]]:
        """Bulk put-if-absent under one lock; each created key gets its own revision (as separate txns)."""

        def op(_rev: int) -> list[tuple[bool, KeyValue | None]]:
            leases = self._leases
            for _key, _value, lease in items:
                if lease and lease not in leases:
                    raise LeaseNotFound(f"lease {lease} not found")
            # The put path of _put_locked/_emit inlined: this loop is the hot path of batch claims.
            out: list[tuple[bool, KeyValue | None]] = []
            data, history, watchers, db = self._data, self._history, self._watchers, self._db
            rev = self._revision
            for key, value, lease in items:
                current = data.get(key)
                if current is not None:
                    out.append((False, current))
                    continue
                rev += 1
                kv = new_tuple(KeyValue, (key, value, rev, rev, 1, lease))  # NamedTuple without its slow __new__
                data[key] = kv
                if lease:
                    leases[lease].keys.add(key)
                if db is not None:
                    db.put(kv)
                if watchers:
                    event = WatchEvent("put", key, value, rev, lease)
                    history.append(event)
                    for watcher in watchers:
                        if watcher.matches(key):
                            watcher.deliver(event)
                else:
                    history.append(kv)  # a put, kept as its KeyValue: made into an event only if replayed
                out.append((True, kv))
            if rev != self._revision:
                self._revision = rev
                self._sorted_keys = None
            return out

        return self._mutate(op)

    def txn(self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]) -> TxnResult:
        return self._mutate(lambda rev: self._txn_locked(compare, success, failure, rev))

    def _txn_locked(
        self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp], rev: int
    ) -> TxnResult:
        ok = all(self._check(c) for c in compare)
        branch = success if ok else failure
        self._check_leases(branch)
        wrote = False
        results: list[list[KeyValue] | int | None] = []
        for o in branch:
            if isinstance(o, Get):
                results.append(self._range(o.key, o.prefix))
            elif isinstance(o, Put):
                self._put_locked(o.key, o.value, o.lease, rev)
                wrote = True
                results.append(None)
            elif isinstance(o, Delete):
                keys = [kv.key for kv in self._range(o.key, o.prefix)]
                for k in keys:
                    self._delete_locked(k, rev)
                wrote = wrote or bool(keys)
                results.append(len(keys))
            else:
                raise TypeError(f"unknown txn op {o!r}")
        if wrote:
            self._revision = rev
        return TxnResult(ok, self._revision, results)

    # -- watch ----------------------------------------------------------------------------------

    def add_watcher(self, watcher: _Watcher, start_revision: int) -> None:
        with self._lock:
            if start_revision:
                for item in self._history:
                    if item.mod_revision >= start_revision and watcher.matches(item.key):
                        event = item if isinstance(item, WatchEvent) else WatchEvent(
                            "put", item.key, item.value, item.mod_revision, item.lease)
                        watcher.queue.put_nowait(event)
            self._watchers.append(watcher)

    def remove_watcher(self, watcher: _Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
            if self._db is not None:
                self._db.close()
                self._db = None


_named_cores: dict[str, _MemoryCore] = {}
_named_lock = threading.Lock()


def shared_core(name: str, sqlite_path: str | None = None) -> _MemoryCore:
    """The process-wide core for a name (memory://name) or a file (sqlite:///path)."""
    with _named_lock:
        core = _named_cores.get(name)
        if core is None or core._closed:
            core = _MemoryCore(sqlite_path)
            _named_cores[name] = core
        return core


def drop_shared_core(name: str) -> None:
    """Forget a named core (tests; a 'restart' of the embedded store re-reads its SQLite file)."""
    with _named_lock:
        core = _named_cores.pop(name, None)
    if core is not None:
        core.close()


class _MemoryWatch(Watch):
    def __init__(self, handle: "MemoryKV", key: str, prefix: bool, start_revision: int) -> None:
        self._handle = handle
        self._core = handle.core
        self._watcher = _Watcher(key, prefix, asyncio.get_running_loop(), threading.get_ident(), asyncio.Queue())
        self._ended = False
        self._core.add_watcher(self._watcher, start_revision)
        handle._watches.add(self)

    async def _events(self) -> AsyncIterator[WatchEvent]:
        while True:
            item = await self._watcher.queue.get()
            if item is WATCH_ENDED:
                return
            yield item

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    async def cancel(self) -> None:
        self._handle._watches.discard(self)
        self._core.remove_watcher(self._watcher)
        if not self._ended:
            self._ended = True
            self._watcher.queue.put_nowait(WATCH_ENDED)


class MemoryKV(KeyValueStore):
    """Async face of the embedded core; every call completes without awaiting I/O."""

    backend = "memory"

    def __init__(self, core: _MemoryCore | None = None, url: str = "memory://") -> None:
        self.core = core or _MemoryCore()
        self.url = url
        self._watches: set[_MemoryWatch] = set()
        if url.startswith("sqlite"):
            self.backend = "sqlite"

    def reopen(self) -> "MemoryKV":
        return MemoryKV(self.core, self.url)

    async def close(self) -> None:
        """Ends the watches opened through this handle; the core may be shared with other handles, so it
        keeps running."""
        for watch in list(self._watches):
            await watch.cancel()

    async def get(self, key: str) -> KeyValue | None:
        return self.core.get(key)

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        return self.core.get_prefix(prefix)

    async def put(self, key: str, value: Bytesish, *, lease: int = 0) -> int:
        return self.core.put(key, to_bytes(value), lease)

    async def delete(self, key: str) -> bool:
        return self.core.delete_range(key, False) > 0

    async def delete_prefix(self, prefix: str) -> int:
        return self.core.delete_range(prefix, True)

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        return self.core.txn(compare, success, failure)

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[TxnOp], Sequence[TxnOp]]]
    ) -> list[TxnResult]:
        return self.core.txn_many(txns)

    async def create_many(self, items: Sequence[tuple[str, bytes, int]]) -> list[tuple[bool, KeyValue | None]]:
        return self.core.create_many(items)

    async def grant_lease(self, ttl: int) -> int:
        return self.core.grant_lease(ttl)

    async def refresh_lease(self, lease_id: int) -> int:
        return self.core.refresh_lease(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        self.core.revoke_lease(lease_id)

    async def lease_remaining(self, lease_id: int) -> float | None:
        left = self.core.lease_ttl(lease_id)
        return None if left < 0 else left

    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> Watch:
        return _MemoryWatch(self, key, prefix, start_revision)

    async def status(self) -> dict[str, object]:
        return {"healthy": True, "backend": self.backend, "revision": self.core.revision, "url": self.url}
