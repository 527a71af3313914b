"""The node API's rate limiter: the project's keyed limiter (backends.ratelimit), refusing with the node
API's RateLimitExceededError (LUCID_ERR_4291, 429, Retry-After)."""

from __future__ import annotations

from backends.ratelimit import KeyedLimiter
from ..errors import RateLimitExceededError

__all__ = ["RateLimiter"]


class RateLimiter(KeyedLimiter):
    def check(self, tier: str, identity: str, per_minute: int) -> None:
        """Take one token or raise RateLimitExceededError with the seconds until the next one."""
        retry_after = self.take(tier, identity, per_minute)
        if retry_after is not None:
            raise RateLimitExceededError(retry_after=retry_after)
