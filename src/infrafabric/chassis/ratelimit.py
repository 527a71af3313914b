"""The chassis's per-swarm rate limiter: the project's GCRA limiter (``backends.ratelimit``), refusing with
the chassis's ``RateLimitExceeded`` (IF_ERR_CHASSIS_RATE_LIMITED)."""

from __future__ import annotations

from backends import ratelimit

from .errors import RateLimitExceeded

__all__ = ["GCRALimiter"]


class GCRALimiter(ratelimit.GCRALimiter):
    """``rate`` guest calls per second with up to ``burst`` back to back, shared by the event loop and the
    thread that runs the guest."""

    def refusal(self, who: str, wait: float) -> RateLimitExceeded:
        return RateLimitExceeded(f"swarm {who!r} is over its rate limit of {self.rate:g} calls/s",
                                 retry_after=wait, swarm_id=who, rate=self.rate)
