"""The embedded bus: subscribers in the same process, called directly.

A request runs the handler before returning, so delivery is confirmed exactly as with NATS request/reply;
a broadcast calls every matching handler. Named buses (`memory://NAME`) are shared in the process.
"""

from __future__ import annotations

import inspect
import itertools
import random
import threading
from dataclasses import dataclass

from backends.bus.base import Handler, Message, MessageBus, Subscription, check_subject, subject_matches
from backends.errors import BackendError, NoResponders, RemoteError


@dataclass(eq=False, slots=True)
class _Sub:
    id: int
    pattern: str
    handler: Handler
    queue: str | None
    exact: bool


class _MemoryHub:
    def __init__(self) -> None:
        self.subs: dict[int, _Sub] = {}
        self.exact: dict[str, list[_Sub]] = {}
        self.wild: list[_Sub] = []
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def add(self, pattern: str, handler: Handler, queue: str | None) -> _Sub:
        exact = "*" not in pattern.split(".") and ">" not in pattern.split(".")
        sub = _Sub(next(self.ids), pattern, handler, queue, exact)
        with self.lock:
            self.subs[sub.id] = sub
            if exact:
                self.exact.setdefault(pattern, []).append(sub)
            else:
                self.wild.append(sub)
        return sub

    def remove(self, sub: _Sub) -> None:
        with self.lock:
            if self.subs.pop(sub.id, None) is None:
                return
            if sub.exact:
                lst = self.exact.get(sub.pattern, [])
                if sub in lst:
                    lst.remove(sub)
                if not lst:
                    self.exact.pop(sub.pattern, None)
            elif sub in self.wild:
                self.wild.remove(sub)

    def matching(self, subject: str) -> list[_Sub]:
        found = list(self.exact.get(subject, ()))
        if self.wild:
            found.extend(s for s in self.wild if subject_matches(s.pattern, subject))
        return found


_hubs: dict[str, _MemoryHub] = {}


class _MemorySubscription(Subscription):
    def __init__(self, hub: _MemoryHub, sub: _Sub) -> None:
        self._hub = hub
        self._sub = sub

    async def unsubscribe(self) -> None:
        self._hub.remove(self._sub)


def _pick(subs: list[_Sub]) -> list[_Sub]:
    """One receiver per queue group, every plain subscriber (NATS semantics)."""
    plain = [s for s in subs if s.queue is None]
    groups: dict[str, list[_Sub]] = {}
    for s in subs:
        if s.queue is not None:
            groups.setdefault(s.queue, []).append(s)
    return plain + [random.choice(g) for g in groups.values()]


async def _call(handler: Handler, msg: Message) -> bytes | None:
    result = handler(msg)
    if inspect.isawaitable(result):
        result = await result
    return result  # type: ignore[return-value]


class MemoryBus(MessageBus):
    backend = "memory"

    def __init__(self, name: str | None = None, url: str = "memory://") -> None:
        self.url = url
        if name:
            self._hub = _hubs.setdefault(name, _MemoryHub())
        else:
            self._hub = _MemoryHub()

    async def close(self) -> None:
        """Subscriptions live as long as their owners; closing a handle drops nothing shared."""

    async def publish(self, subject: str, data: bytes) -> None:
        check_subject(subject)
        msg = Message(subject, data)
        for sub in _pick(self._hub.matching(subject)):
            try:
                await _call(sub.handler, msg)
            except Exception:  # a broadcast never fails the publisher (as on NATS)
                continue

    async def request(self, subject: str, data: bytes, timeout: float = 2.0) -> bytes:
        check_subject(subject)
        subs = self._hub.matching(subject)
        if not subs:
            raise NoResponders(f"no subscriber for {subject}")
        sub = subs[0] if len(subs) == 1 else random.choice(subs)
        try:
            reply = await _call(sub.handler, Message(subject, data, reply="_INBOX.local"))
        except BackendError as exc:
            raise RemoteError(getattr(exc, "error_code", type(exc).__name__), exc.message) from exc
        except Exception as exc:
            raise RemoteError(getattr(exc, "error_code", type(exc).__name__), str(exc)) from exc
        return reply or b""

    async def subscribe(self, subject: str, handler: Handler, *, queue: str | None = None) -> Subscription:
        check_subject(subject, wildcards=True)
        return _MemorySubscription(self._hub, self._hub.add(subject, handler, queue))

    async def flush(self, timeout: float = 2.0) -> None:
        """Delivery is synchronous: nothing is ever in flight."""

    async def status(self) -> dict[str, object]:
        return {"healthy": True, "backend": "memory", "subscriptions": len(self._hub.subs), "url": self.url}
