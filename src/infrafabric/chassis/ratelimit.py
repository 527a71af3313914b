"""Per-swarm rate limiting with GCRA (the generic cell rate algorithm, a token bucket in one number).

One bucket per swarm, shared by the async pacing form (``acquire``), the non-waiting form
(``try_acquire`` → RateLimitExceeded) and the blocking form used from the worker thread that runs a
guest (``acquire_blocking``). A lock makes the three safe together. Written here rather than taken
from a library because it must be usable from both the event loop and a worker thread at once.
"""

from __future__ import annotations

import asyncio
import threading
import time

from .errors import RateLimitExceeded


class GCRALimiter:
    """``rate`` calls per second with up to ``burst`` calls back to back."""

    def __init__(self, rate: float, burst: int = 1, *, clock=time.monotonic) -> None:
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

    def _wait_for(self, now: float) -> float:
        tat = max(self._tat, now)
        return max(0.0, tat - self._tolerance - now)

    def reserve(self) -> float:
        """Take the next slot and return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            wait = self._wait_for(now)
            self._tat = max(self._tat, now) + self._interval
            self.granted += 1
            return wait

    def try_acquire(self, swarm_id: str = "") -> None:
        """Take a slot now or raise RateLimitExceeded (nothing is consumed on refusal)."""
        with self._lock:
            now = self._clock()
            wait = self._wait_for(now)
            if wait > 0:
                self.refused += 1
                raise RateLimitExceeded(
                    f"swarm {swarm_id!r} is over its rate limit of {self.rate:g} calls/s",
                    retry_after=wait, swarm_id=swarm_id, rate=self.rate)
            self._tat = max(self._tat, now) + self._interval
            self.granted += 1

    async def acquire(self) -> float:
        """Pace: wait (without blocking the loop) until this call conforms. Returns the wait."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    # A paced call must have time left to be made: a wait that ends this close to the deadline is refused
    # as over the rate (the call would start with no time to run and be cut by the deadline instead).
    CALL_MARGIN_SECONDS = 0.05

    def acquire_blocking(self, swarm_id: str, deadline: float) -> float:
        """Pace from a worker thread, but never past ``deadline`` (monotonic): refuse instead."""
        with self._lock:
            now = self._clock()
            wait = self._wait_for(now)
            if now + wait > deadline - (self.CALL_MARGIN_SECONDS if wait > 0 else 0.0):
                self.refused += 1
                raise RateLimitExceeded(
                    f"swarm {swarm_id!r} is over its rate limit of {self.rate:g} calls/s and the task "
                    "deadline comes first", retry_after=wait, swarm_id=swarm_id, rate=self.rate)
            self._tat = max(self._tat, now) + self._interval
            self.granted += 1
        if wait > 0:
            time.sleep(wait)  # real pacing of the guest's own worker thread, not a stand-in for work
        return wait
