"""The project's one rate limiter (``backends.ratelimit``) against a plain token bucket written out as the
reference model: any sequence of calls at any times gets the same answers from both."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backends.errors import RateLimited
from backends.ratelimit import GCRALimiter, KeyedLimiter


class TokenBucketModel:
    """``per_minute`` tokens, refilled continuously, full at first use; a refusal says the whole seconds
    until one token is back."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, tier: str, who: str, per_minute: int, now: float) -> int | None:
        tokens, last = self.buckets.get((tier, who), (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * per_minute / 60.0)
        if tokens < 1.0:
            self.buckets[(tier, who)] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) * 60.0 / per_minute))
        self.buckets[(tier, who)] = (tokens - 1.0, now)
        return None


calls = st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.sampled_from(["a", "b"]),
                           st.sampled_from(["rpm", "auth"])), max_size=120)


@settings(max_examples=300, deadline=None)
@given(calls=calls, per_minute=st.integers(1, 600))
@example(calls=[(1.18232837869743, "a", "rpm"), (0.0, "a", "rpm")], per_minute=2)  # float rounding: refused once
def test_keyed_limiter_answers_as_a_token_bucket(calls: list[tuple[float, str, str]], per_minute: int) -> None:
    now = [1000.0]
    limiter, model = KeyedLimiter(clock=lambda: now[0]), TokenBucketModel()
    for step, who, tier in calls:
        now[0] += step
        assert limiter.wait(tier, who, per_minute) == limiter.wait(tier, who, per_minute)  # wait takes nothing
        expected = model.take(tier, who, per_minute, now[0])
        got = limiter.take(tier, who, per_minute)
        if expected is None or got is None:
            assert got == expected
        else:  # float rounding at a whole-second boundary may differ by one second, never more
            assert abs(got - expected) <= 1


def test_keyed_limiter_forgets_the_least_recently_used_beyond_its_bound() -> None:
    now = [0.0]
    limiter = KeyedLimiter(max_keys=3, clock=lambda: now[0])
    assert limiter.take("t", "a", 1) is None and limiter.take("t", "a", 1) == 60
    for who in "bcd":
        limiter.take("t", who, 1)
    assert len(limiter) == 3
    assert limiter.take("t", "a", 1) is None  # "a" was dropped: a flood of addresses cannot grow memory


def test_gcra_refuses_beyond_the_burst_and_paces_after() -> None:
    now = [0.0]
    limiter = GCRALimiter(rate=10, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.try_acquire("s")
    with pytest.raises(RateLimited) as refused:
        limiter.try_acquire("s")
    assert refused.value.retry_after == pytest.approx(0.1) and limiter.refused == 1 and limiter.granted == 3
    now[0] += 0.11
    limiter.try_acquire("s")  # one slot back after 1/rate
    with pytest.raises(RateLimited):
        limiter.acquire_blocking("s", deadline=now[0] + 0.01)  # the wait would end past the deadline
