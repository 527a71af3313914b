"""Token buckets per (tier, identity), shared by the node API and the mesh API.

Why not a library: the limits are checked on the request hot path of a single process, a bucket is two
floats, and the bounded LRU (so a flood of distinct client addresses cannot grow memory) is the only
other requirement; the callers turn a refusal into their own error class (both LUCID_ERR_4291)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBuckets"]


class TokenBuckets:
    """``per_minute`` tokens a minute per (tier, identity), refilled continuously, full at first use."""

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def _level(self, key: tuple[str, str], per_minute: int, now: float) -> float:
        tokens, last = self._buckets.pop(key, (float(per_minute), now))
        return min(float(per_minute), tokens + (now - last) * per_minute / 60.0)

    @staticmethod
    def _retry_after(tokens: float, per_minute: int) -> int:
        return max(1, math.ceil((1.0 - tokens) * 60.0 / per_minute))

    def take(self, tier: str, identity: str, per_minute: int) -> int | None:
        """Take one token: None, or (none left) the whole seconds until there is one."""
        key, now = (tier, identity), self._clock()
        tokens = self._level(key, per_minute, now)
        if tokens < 1.0:
            self._store(key, tokens, now)
            return self._retry_after(tokens, per_minute)
        self._store(key, tokens - 1.0, now)
        return None

    def wait(self, tier: str, identity: str, per_minute: int) -> int | None:
        """What ``take`` would answer, without taking anything."""
        key, now = (tier, identity), self._clock()
        tokens = self._level(key, per_minute, now)
        self._store(key, tokens, now)
        return None if tokens >= 1.0 else self._retry_after(tokens, per_minute)

    def _store(self, key: tuple[str, str], tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
