"""The node API's rate limiter: the shared token buckets (lucid.rate_limit), refusing with the node
API's RateLimitExceededError (LUCID_ERR_4291, 429, Retry-After)."""

from __future__ import annotations

from ...rate_limit import TokenBuckets
from ..errors import RateLimitExceededError

__all__ = ["RateLimiter"]


class RateLimiter(TokenBuckets):
    def check(self, tier: str, identity: str, per_minute: int) -> None:
        """Take one token or raise RateLimitExceededError with the seconds until the next one."""
        retry_after = self.take(tier, identity, per_minute)
        if retry_after is not None:
            raise RateLimitExceededError(retry_after=retry_after)
