"""The embedded message queue: per-destination priority queues in this process, RabbitMQ's semantics.

Written here, not taken from a library, because the job is small and must match the RabbitMQ backend
exactly (priority order, FIFO within a priority, per-message TTL, requeue of unsettled deliveries on
close), which the contract suite checks on both. ``memory://NAME`` is shared by every handle in the
process (as a broker is shared by its clients); ``memory://`` is private to one handle. Handles may live
on different event loops (the sync client runs its own): the core is guarded by a lock, and a waiting
consumer is woken on its own loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field

from backends.errors import AlreadySettled, QueueUnavailable
from backends.mq.base import Delivery, MessageBroker, QueueMessage


@dataclass(order=True)
class _Entry:
    rank: int  # -priority: heapq pops the smallest
    seq: int  # arrival order within a priority
    expires_at: float = field(compare=False)
    message: QueueMessage = field(compare=False)
    redelivered: bool = field(compare=False, default=False)


class _Core:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Entry]] = {}
        self._seq = itertools.count()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def put(self, message: QueueMessage, expires_at: float, redelivered: bool = False, seq: int | None = None) -> None:
        """Queue a message; a requeued one keeps its arrival ``seq``, so it goes back to its place (FIFO
        within its priority, as RabbitMQ requeues), not to the end."""
        entry = _Entry(-message.priority, next(self._seq) if seq is None else seq, expires_at, message, redelivered)
        with self._lock:
            heapq.heappush(self._queues.setdefault(message.destination, []), entry)
            waiters = list(self._waiters.get(message.destination, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that consumer's loop is closed
                pass

    def take(self, destination: str) -> _Entry | None:
        now = time.monotonic()
        with self._lock:
            queue = self._queues.get(destination)
            while queue:
                entry = heapq.heappop(queue)
                if entry.expires_at > now:  # expired messages are dropped, never delivered
                    return entry
        return None

    def watch(self, destination: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.setdefault(destination, set()).add(waiter)

    def unwatch(self, destination: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.get(destination, set()).discard(waiter)

    def depth(self, destination: str) -> int:
        with self._lock:
            return len(self._queues.get(destination, ()))


_named: dict[str, _Core] = {}
_named_lock = threading.Lock()


def _core_for(name: str | None) -> _Core:
    if not name:
        return _Core()
    with _named_lock:
        return _named.setdefault(name, _Core())


class _MemoryDelivery(Delivery):
    def __init__(self, broker: "MemoryBroker", entry: _Entry) -> None:
        self._broker = broker
        self._entry = entry
        self.message = entry.message
        self.redelivered = entry.redelivered
        self._settled = False

    async def ack(self) -> None:
        self._settle()

    async def reject(self, requeue: bool = True) -> None:
        self._settle()
        if requeue:
            self._broker._core.put(self.message, self._entry.expires_at, redelivered=True, seq=self._entry.seq)

    def _settle(self) -> None:
        if self._settled:
            raise AlreadySettled(f"message {self.message.message_id} was already acknowledged or rejected")
        self._settled = True
        self._broker._unsettled.discard(self)

    def _return(self) -> None:
        """Back to the queue, marked redelivered (the consumer closed without settling)."""
        self._settled = True
        self._broker._core.put(self.message, self._entry.expires_at, redelivered=True, seq=self._entry.seq)


class MemoryBroker(MessageBroker):
    backend = "memory"

    def __init__(self, name: str | None = None, url: str = "memory://") -> None:
        self.url = url
        self._core = _core_for(name)
        self._connected = False
        self._unsettled: set[_MemoryDelivery] = set()

    async def connect(self) -> None:
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        for delivery in list(self._unsettled):
            delivery._return()
        self._unsettled.clear()

    def _check(self) -> None:
        if not self._connected:
            raise QueueUnavailable("message queue client is not connected")

    async def publish(self, message: QueueMessage, *, timeout: float = 5.0) -> None:
        self._check()
        self._core.put(message, time.monotonic() + message.ttl)

    async def get(self, destination: str, *, timeout: float = 5.0) -> Delivery | None:
        self._check()
        deadline = time.monotonic() + max(timeout, 0.0)
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        self._core.watch(destination, waiter)
        try:
            while True:
                waiter[1].clear()
                entry = self._core.take(destination)
                if entry is not None:
                    delivery = _MemoryDelivery(self, entry)
                    self._unsettled.add(delivery)
                    return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(waiter[1].wait(), remaining)
                except asyncio.TimeoutError:
                    return None
                self._check()
        finally:
            self._core.unwatch(destination, waiter)
