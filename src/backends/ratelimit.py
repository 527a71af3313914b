"""The project's one rate limiter: GCRA (the generic cell rate algorithm, a token bucket kept as one number).

Two forms over the same arithmetic:

- ``GCRALimiter``: one bucket, usable from the event loop and from a worker thread at once (a lock), with
  a refusing form (``try_acquire``), a pacing form (``acquire``) and a blocking form bounded by a deadline
  (``acquire_blocking``, for the thread that runs a guest). The chassis keeps one per swarm.
- ``KeyedLimiter``: a bucket per (tier, identity) in a bounded LRU, for HTTP front doors where a flood of
  distinct client addresses must not grow memory. The node API, the mesh API and the model gateway use it.

Written here rather than taken from a library: the limits sit on request hot paths of one process, a
bucket is one float, and the thread-safe blocking form has no asyncio library equivalent. Callers turn a
refusal into their own error class (each system has its spec's code), all of them ``RateLimited``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from backends.errors import RateLimited

__all__ = ["GCRALimiter", "KeyedLimiter"]

Clock = Callable[[], float]


_EPSILON = 1e-9  # seconds: float rounding of tat = now + interval (e.g. 1001.18 + 30 - 30 - 1001.18 > 0)


def _conforming_wait(tat: float, now: float, tolerance: float) -> float:
    """How long a call at ``now`` waits to conform, given the theoretical arrival time ``tat``; a wait
    shorter than the arithmetic's rounding is none (a call the bucket holds a token for is never refused)."""
    wait = max(tat, now) - tolerance - now
    return wait if wait > _EPSILON else 0.0


class GCRALimiter:
    """``rate`` calls per second with up to ``burst`` calls back to back."""

    # A paced call must have time left to be made: a wait that ends this close to the deadline is refused
    # as over the rate (the call would start with no time to run and be cut by the deadline instead).
    CALL_MARGIN_SECONDS = 0.05

    def __init__(self, rate: float, burst: int = 1, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self._interval = 1.0 / self.rate
        self._tolerance = self._interval * (self.burst - 1)
        self._tat = 0.0  # theoretical arrival time of the next conforming call
        self._lock = threading.Lock()
        self._clock = clock
        self.granted = 0
        self.refused = 0

    def refusal(self, who: str, wait: float) -> RateLimited:
        """The error a refused call raises (a system's subclass names its own code)."""
        return RateLimited(f"{who!r} is over its rate limit of {self.rate:g} calls/s", retry_after=wait)

    def _take(self, now: float) -> None:
        self._tat = max(self._tat, now) + self._interval
        self.granted += 1

    def reserve(self) -> float:
        """Take the next slot and return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            wait = _conforming_wait(self._tat, now, self._tolerance)
            self._take(now)
            return wait

    def try_acquire(self, who: str = "") -> None:
        """Take a slot now or raise the refusal (nothing is consumed on refusal)."""
        with self._lock:
            now = self._clock()
            wait = _conforming_wait(self._tat, now, self._tolerance)
            if wait > 0:
                self.refused += 1
                raise self.refusal(who, wait)
            self._take(now)

    async def acquire(self) -> float:
        """Pace: wait (without blocking the loop) until this call conforms. Returns the wait."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def acquire_blocking(self, who: str, deadline: float) -> float:
        """Pace from a worker thread, but never past ``deadline`` (monotonic): refuse instead."""
        with self._lock:
            now = self._clock()
            wait = _conforming_wait(self._tat, now, self._tolerance)
            if now + wait > deadline - (self.CALL_MARGIN_SECONDS if wait > 0 else 0.0):
                self.refused += 1
                raise self.refusal(who, wait)
            self._take(now)
        if wait > 0:
            time.sleep(wait)  # real pacing of the guest's own worker thread, not a stand-in for work
        return wait


class KeyedLimiter:
    """``per_minute`` calls a minute per (tier, identity), each bucket full at first use (``per_minute``
    calls back to back), at most ``max_keys`` buckets (the least recently used go first)."""

    def __init__(self, *, max_keys: int = 100_000, clock: Clock = time.monotonic) -> None:
        self._tats: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def _store(self, key: tuple[str, str], tat: float) -> None:
        self._tats[key] = tat
        while len(self._tats) > self._max_keys:
            self._tats.popitem(last=False)

    def take(self, tier: str, identity: str, per_minute: int) -> int | None:
        """Take one call: None, or (none left) the whole seconds until there is one."""
        key, now, interval = (tier, identity), self._clock(), 60.0 / per_minute
        tat = self._tats.pop(key, now)
        wait = _conforming_wait(tat, now, interval * (per_minute - 1))
        self._store(key, tat if wait > 0 else max(tat, now) + interval)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def wait(self, tier: str, identity: str, per_minute: int) -> int | None:
        """What ``take`` would answer, without taking anything."""
        key, now = (tier, identity), self._clock()
        wait = _conforming_wait(self._tats.get(key, now), now, 60.0 / per_minute * (per_minute - 1))
        if key in self._tats:
            self._tats.move_to_end(key)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def __len__(self) -> int:
        return len(self._tats)
