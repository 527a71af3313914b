"""A local, watch-fed copy of the registry, so a resolve costs no round trip.

Writers (the watch task) rebuild one service's tuple of instances per event and swap it in; readers
(any thread) only read whole tuples, so a resolve never sees a half-applied change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from backends.kv import KeyValue, WatchEvent

from lucid.service_mesh.discovery.keys import RegistryKeys
from lucid.service_mesh.discovery.model import HealthRecord, Instance, Registration


class ServiceCache:
    def __init__(self, keys: RegistryKeys) -> None:
        self.keys = keys
        self._regs: dict[str, Registration] = {}
        self._ids_by_name: dict[str, set[str]] = {}
        self._health: dict[str, HealthRecord] = {}
        self._by_service: dict[str, tuple[Instance, ...]] = {}
        self.revision = 0
        self.synced = False
        self.stale = False  # True while the watch is broken (answers may be old)
        self.updated_at = 0.0

    def load(self, revision: int, kvs: Iterable[KeyValue]) -> None:
        """Replace the whole content with a snapshot taken at ``revision``."""
        self._regs.clear()
        self._ids_by_name.clear()
        self._health.clear()
        for kv in kvs:
            self._set(kv.key, kv.value)
        self._by_service = {}
        for name in {r.service_name for r in self._regs.values()}:
            self._rebuild(name)
        self.revision = revision
        self.synced = True
        self.stale = False
        self.updated_at = time.monotonic()

    def _set(self, key: str, value: bytes) -> str | None:
        kind = self.keys.classify(key)
        if kind is None:
            return None
        what, name, sid = kind
        if what == "service":
            self._regs[sid] = Registration.from_json(value)
            self._ids_by_name.setdefault(name, set()).add(sid)
            return name
        if what == "health":
            self._health[sid] = HealthRecord.from_json(value)
            reg = self._regs.get(sid)
            return reg.service_name if reg else None
        return None

    def _unset(self, key: str) -> str | None:
        kind = self.keys.classify(key)
        if kind is None:
            return None
        what, name, sid = kind
        if what == "service":
            self._regs.pop(sid, None)
            ids = self._ids_by_name.get(name)
            if ids is not None:
                ids.discard(sid)
                if not ids:
                    del self._ids_by_name[name]
            return name
        if what == "health":
            self._health.pop(sid, None)
            reg = self._regs.get(sid)
            return reg.service_name if reg else None
        return None

    def apply(self, event: WatchEvent) -> None:
        name = self._set(event.key, event.value) if event.type == "put" else self._unset(event.key)
        if name is not None:
            self._rebuild(name)
        self.revision = max(self.revision, event.mod_revision)
        self.updated_at = time.monotonic()

    def _rebuild(self, name: str) -> None:
        instances = tuple(
            Instance(self._regs[sid], self._health.get(sid))
            for sid in sorted(self._ids_by_name.get(name, ()))
            if sid in self._regs
        )
        if instances:
            self._by_service[name] = instances
        else:
            self._by_service.pop(name, None)

    def instances(self, name: str) -> tuple[Instance, ...]:
        return self._by_service.get(name, ())

    def all(self) -> list[Instance]:
        return [i for group in list(self._by_service.values()) for i in group]

    def service_names(self) -> list[str]:
        return sorted(self._by_service)
