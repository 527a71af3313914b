"""The synchronous key-value calls the seed uses on `coordinator.etcd` (put/get/replace/delete_prefix/status).

On the embedded store they run directly on the thread-safe core. On etcd they run on a private loop
thread with their own client, so they work from plain code and from inside a running event loop alike.
A sync call to a network store necessarily waits for its answer; async code should use the async store.
"""

from __future__ import annotations

from typing import Any

from backends.kv.base import Bytesish, Compare, KeyValue, KeyValueStore, Put, to_bytes
from backends.kv.memory import MemoryKV
from backends.loop_thread import LoopThread


class SyncKV:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        self._memory = store if isinstance(store, MemoryKV) else None
        self._thread: LoopThread | None = None
        self._remote: KeyValueStore | None = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._memory is not None:
            core = self._memory.core
            if method == "get":
                return core.get(*args)
            if method == "get_prefix":
                return core.get_prefix(*args)
            if method == "put":
                return core.put(args[0], to_bytes(args[1]), kwargs.get("lease", 0))
            if method == "delete":
                return core.delete_range(args[0], False) > 0
            if method == "delete_prefix":
                return core.delete_range(args[0], True)
            if method == "txn":
                return core.txn(*args)
            if method == "status":
                return {"healthy": True, "backend": self._memory.backend, "revision": core.revision}
            raise AttributeError(method)
        if self._thread is None:
            self._thread = LoopThread("kv-sync")
            self._remote = self._store.reopen()
        assert self._remote is not None
        return self._thread.run(getattr(self._remote, method)(*args, **kwargs))

    def put(self, key: str, value: Bytesish, lease: int = 0) -> int:
        return int(self._call("put", key, value, lease=lease))

    def get(self, key: str) -> tuple[bytes | None, KeyValue | None]:
        """(value, metadata) like the etcd3 client: value is None when the key is missing."""
        kv = self._call("get", key)
        return (kv.value, kv) if kv is not None else (None, None)

    def get_prefix(self, prefix: str) -> list[tuple[bytes, KeyValue]]:
        return [(kv.value, kv) for kv in self._call("get_prefix", prefix)]

    def replace(self, key: str, initial_value: Bytesish, new_value: Bytesish) -> bool:
        """Atomic compare-and-swap: set new_value only if the current value is initial_value."""
        result = self._call("txn", [Compare.value(key, to_bytes(initial_value))], [Put(key, new_value)], [])
        return bool(result.succeeded)

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", key))

    def delete_prefix(self, prefix: str) -> int:
        return int(self._call("delete_prefix", prefix))

    def status(self) -> dict[str, object]:
        return dict(self._call("status"))

    def close(self) -> None:
        if self._thread is not None:
            if self._remote is not None:
                try:
                    self._thread.run(self._remote.close(), timeout=5)
                except Exception:  # closing is best effort: the thread dies with the process anyway
                    pass
            self._thread.stop()
            self._thread = None
            self._remote = None
