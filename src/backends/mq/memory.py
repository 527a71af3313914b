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
from collections import deque
from typing import Tuple

from backends.errors import AlreadySettled, QueueUnavailable
from backends.mq.base import Delivery, MessageBroker, QueueMessage

# (-priority, arrival seq, expires_at, message fields, redelivered): a plain tuple, so a heap of given-back
# entries compares in C; seq is unique, so a comparison never reaches the message. The message is kept as
# a plain tuple of its fields (str, bytes, numbers, None), not the QueueMessage: the cyclic collector
# stops tracking such tuples, so a backlog of queued messages costs it nothing (benchmarks/RESULTS.md).
_Entry = Tuple[int, int, float, tuple, bool]


class _Lanes:
    """One destination's queue: a FIFO per priority for arrivals (their seq only grows, so appending keeps
    them in order: no heap work per message), and a heap per priority for entries given back, which keep
    their old seq and so their place; taking merges the two by seq."""

    __slots__ = ("fifo", "back", "order", "size")

    def __init__(self) -> None:
        self.fifo: dict[int, deque[_Entry]] = {}
        self.back: dict[int, list[_Entry]] = {}
        self.order: list[int] = []  # the priorities seen, highest first
        self.size = 0

    def lane(self, priority: int) -> deque[_Entry]:
        fifo = self.fifo.get(priority)
        if fifo is None:
            fifo = self.fifo[priority] = deque()
            self.back[priority] = []
            self.order = sorted(self.fifo, reverse=True)
        return fifo

    def give_back(self, entry: _Entry) -> None:
        self.lane(-entry[0])
        heapq.heappush(self.back[-entry[0]], entry)
        self.size += 1

    def take(self, limit: int, now: float, out: list[_Entry]) -> None:
        pop = heapq.heappop
        for priority in self.order:
            fifo, back = self.fifo[priority], self.back[priority]
            while len(out) < limit and (fifo or back):
                entry = pop(back) if back and (not fifo or back[0][1] < fifo[0][1]) else fifo.popleft()
                self.size -= 1
                if entry[2] > now:  # expired ones are dropped, never delivered
                    out.append(entry)
            if len(out) >= limit:
                return


class _Core:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, _Lanes] = {}
        self._seq = itertools.count()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def _lanes(self, destination: str) -> _Lanes:
        lanes = self._queues.get(destination)
        if lanes is None:
            lanes = self._queues[destination] = _Lanes()
        return lanes

    def put(self, message: QueueMessage, expires_at: float, redelivered: bool = False, seq: int | None = None) -> None:
        """Queue a message; a requeued one keeps its arrival ``seq``, so it goes back to its place (FIFO
        within its priority, as RabbitMQ requeues), not to the end."""
        with self._lock:
            lanes = self._lanes(message.destination)
            if seq is None:
                lanes.lane(message.priority).append((-message.priority, next(self._seq), expires_at,
                                                     tuple(message), redelivered))
                lanes.size += 1
            else:
                lanes.give_back((-message.priority, seq, expires_at, tuple(message), redelivered))
            waiters = list(self._waiters.get(message.destination, ()))
        self._wake(waiters)

    def put_many(self, messages: list[QueueMessage], now: float) -> None:
        """Queue several messages under one lock, in order."""
        seq = self._seq
        with self._lock:
            destinations = set()
            key: tuple[str, int] | None = None
            lanes: _Lanes | None = None
            append = None
            for m in messages:
                if (m.destination, m.priority) != key:  # a batch is mostly one destination and priority
                    key = (m.destination, m.priority)
                    lanes = self._lanes(m.destination)
                    append = lanes.lane(m.priority).append
                    destinations.add(m.destination)
                append((-m.priority, next(seq), now + m.ttl, tuple(m), False))  # type: ignore[misc]
                lanes.size += 1  # type: ignore[union-attr]
            waiters = [w for d in destinations for w in self._waiters.get(d, ())]
        self._wake(waiters)

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that consumer's loop is closed
                pass

    def take(self, destination: str, limit: int = 1) -> list[_Entry]:
        """Up to ``limit`` entries, highest priority first; expired ones are dropped, never delivered."""
        now = time.monotonic()
        out: list[_Entry] = []
        with self._lock:
            lanes = self._queues.get(destination)
            if lanes is not None and lanes.size:
                lanes.take(limit, now, out)
        return out

    def watch(self, destination: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.setdefault(destination, set()).add(waiter)

    def unwatch(self, destination: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.get(destination, set()).discard(waiter)

    def depth(self, destination: str) -> int:
        with self._lock:
            lanes = self._queues.get(destination)
            return lanes.size if lanes is not None else 0


_named: dict[str, _Core] = {}
_named_lock = threading.Lock()


def _core_for(name: str | None) -> _Core:
    if not name:
        return _Core()
    with _named_lock:
        return _named.setdefault(name, _Core())


class _MemoryDelivery(Delivery):
    __slots__ = ("_broker", "_entry", "message", "redelivered", "_settled")

    def __init__(self, broker: "MemoryBroker", entry: _Entry) -> None:
        self._broker = broker
        self._entry = entry
        self.message = QueueMessage._make(entry[3])
        self.redelivered = entry[4]
        self._settled = False

    async def ack(self) -> None:
        self._settle()

    async def reject(self, requeue: bool = True) -> None:
        self._settle()
        if requeue:
            self._broker._core.put(self.message, self._entry[2], redelivered=True, seq=self._entry[1])

    def _settle(self) -> None:
        if self._settled:
            raise AlreadySettled(f"message {self.message.message_id} was already acknowledged or rejected")
        self._settled = True
        self._broker._unsettled.discard(self)

    def _return(self) -> None:
        """Back to the queue, marked redelivered (the consumer closed without settling)."""
        self._settled = True
        self._broker._core.put(self.message, self._entry[2], redelivered=True, seq=self._entry[1])


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

    async def depth(self, destination: str) -> int:
        self._check()
        return self._core.depth(destination)

    async def publish(self, message: QueueMessage, *, timeout: float = 5.0) -> None:
        self._check()
        self._core.put(message, time.monotonic() + message.ttl)

    async def publish_many(self, messages: list[QueueMessage], *, timeout: float = 5.0) -> None:
        self._check()
        self._core.put_many(messages, time.monotonic())

    async def get(self, destination: str, *, timeout: float = 5.0) -> Delivery | None:
        got = await self.get_many(destination, 1, timeout=timeout)
        return got[0] if got else None

    async def get_many(self, destination: str, limit: int, *, timeout: float = 5.0) -> list[Delivery]:
        self._check()
        entries = self._core.take(destination, limit)  # the common case: no waiter to register
        if entries:
            return self._deliver(entries)
        deadline = time.monotonic() + max(timeout, 0.0)
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        self._core.watch(destination, waiter)
        try:
            while True:
                waiter[1].clear()
                entries = self._core.take(destination, limit)
                if entries:
                    return self._deliver(entries)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                try:
                    await asyncio.wait_for(waiter[1].wait(), remaining)
                except asyncio.TimeoutError:
                    return []
                self._check()
        finally:
            self._core.unwatch(destination, waiter)

    async def ack_many(self, deliveries: list[Delivery]) -> None:
        """Settled in one pass, no await per message (the embedded broker's ack is bookkeeping)."""
        for delivery in deliveries:
            if type(delivery) is _MemoryDelivery:
                delivery._settle()
            else:
                await delivery.ack()

    def _deliver(self, entries: list[_Entry]) -> list[Delivery]:
        deliveries = [_MemoryDelivery(self, e) for e in entries]
        self._unsettled.update(deliveries)
        return deliveries  # type: ignore[return-value]
