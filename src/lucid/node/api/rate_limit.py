"""In-process token-bucket rate limiter per (tier, identity). Buckets are kept in a bounded LRU so a flood
of distinct client addresses cannot grow memory without limit."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from ..errors import RateLimitExceededError

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys

    def check(self, tier: str, identity: str, per_minute: int) -> None:
        """Take one token or raise RateLimitExceededError with the seconds until the next one."""
        key = (tier, identity)
        now = time.monotonic()
        rate = per_minute / 60.0
        tokens, last = self._buckets.pop(key, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._store(key, tokens, now)
            raise RateLimitExceededError(retry_after=max(1, math.ceil((1.0 - tokens) / rate)))
        self._store(key, tokens - 1.0, now)

    def _store(self, key: tuple[str, str], tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
