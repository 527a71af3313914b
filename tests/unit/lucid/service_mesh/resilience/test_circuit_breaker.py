"""CircuitBreaker: seed behaviour, half-open limits, async callables, concurrency, settings validation."""

from __future__ import annotations

import asyncio
import threading
from unittest.mock import Mock

import pytest

from lucid.service_mesh.errors import CircuitBreakerConfigError, CircuitBreakerOpenError
from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry, CircuitBreaker
from lucid.service_mesh.sidecar.circuit_breaker import CircuitBreaker as SeedPathBreaker


class FakeClock:
    """Deterministic time for the recovery timeout."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trip(breaker: CircuitBreaker, n: int) -> Mock:
    failing = Mock(side_effect=Exception("Service unavailable"))
    for _ in range(n):
        with pytest.raises(Exception, match="Service unavailable"):
            breaker.call(failing)
    return failing


def test_seed_path_is_the_same_class() -> None:
    assert SeedPathBreaker is CircuitBreaker


def test_circuit_breaker_opens_after_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=30, half_open_max_calls=2)
    failing = Mock(side_effect=Exception("Service unavailable"))
    for i in range(3):
        assert breaker.state == "closed"
        with pytest.raises(Exception, match="Service unavailable"):
            breaker.call(failing)
    assert breaker.state == "open"
    with pytest.raises(Exception) as exc_info:
        breaker.call(failing)
    assert "Circuit breaker is open" in str(exc_info.value)
    assert isinstance(exc_info.value, CircuitBreakerOpenError)
    assert failing.call_count == 3  # the open breaker did not call the service


def test_success_resets_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    _trip(breaker, 2)
    assert breaker.call(lambda: "ok") == "ok"
    _trip(breaker, 2)
    assert breaker.state == "closed"


def test_circuit_breaker_recovers() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=1, half_open_max_calls=2, success_threshold=2,
                             clock=clock)
    _trip(breaker, 3)
    assert breaker.state == "open"
    clock.now += 0.5
    assert breaker.state == "open"
    clock.now += 0.6
    assert breaker.state == "half-open"
    healthy = Mock(return_value="success")
    assert breaker.call(healthy) == "success"
    assert breaker.state == "half-open"
    assert breaker.call(healthy) == "success"
    assert breaker.state == "closed"


def test_failure_in_half_open_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=5, clock=clock)
    _trip(breaker, 2)
    clock.now += 5
    _trip(breaker, 1)
    assert breaker.state == "open"
    clock.now += 4.9
    assert breaker.state == "open"


def test_half_open_limits_concurrent_trial_calls() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1, half_open_max_calls=2, success_threshold=2,
                             clock=clock)
    _trip(breaker, 1)
    clock.now += 1
    release = threading.Event()
    started = threading.Barrier(3)
    results: list[object] = []

    def slow() -> str:
        started.wait(timeout=5)
        release.wait(timeout=5)
        return "ok"

    threads = [threading.Thread(target=lambda: results.append(breaker.call(slow))) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait(timeout=5)  # both trial calls are in flight
    with pytest.raises(CircuitBreakerOpenError, match="half-open"):
        breaker.call(lambda: "third")
    release.set()
    for t in threads:
        t.join(timeout=5)
    assert results == ["ok", "ok"] and breaker.state == "closed"


async def test_async_callables() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=1, success_threshold=1, clock=clock)

    async def fail() -> None:
        raise ConnectionError("down")

    async def ok() -> str:
        await asyncio.sleep(0)
        return "up"

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)  # call() of a coroutine function returns an awaitable
    assert breaker.state == "open"
    with pytest.raises(CircuitBreakerOpenError):
        await breaker.acall(ok)
    clock.now += 1
    assert await breaker.acall(ok) == "up"
    assert breaker.state == "closed"


async def test_async_timeout_counts_as_failure() -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30, timeout=0.1)

    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(asyncio.TimeoutError):
        await breaker.acall(hang)
    assert breaker.state == "open"


async def test_concurrent_async_failures_open_exactly_once() -> None:
    breaker = CircuitBreaker(failure_threshold=5, recovery_timeout=30)
    gate = asyncio.Event()

    async def fail() -> None:
        await gate.wait()
        raise ConnectionError("down")

    tasks = [asyncio.create_task(breaker.acall(fail)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert breaker.state == "open"
    assert breaker.transitions == [("closed", "open")]


def test_threads_hammering_stay_consistent() -> None:
    breaker = CircuitBreaker(failure_threshold=100, recovery_timeout=30)
    counter = {"n": 0}
    lock = threading.Lock()

    def work() -> None:
        with lock:
            counter["n"] += 1

    def worker() -> None:
        for _ in range(500):
            breaker.call(work)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter["n"] == 4000 and breaker.state == "closed"
    assert breaker.stats()["consecutive_failures"] == 0


def test_non_failure_exceptions_do_not_trip() -> None:
    breaker = CircuitBreaker(failure_threshold=1, failure_exceptions=(ConnectionError,))
    with pytest.raises(ValueError):
        breaker.call(Mock(side_effect=ValueError("bad input")))
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"failure_threshold": 101},
        {"recovery_timeout": 0},
        {"recovery_timeout": 3601},
        {"half_open_max_calls": 0},
        {"success_threshold": 0},
        {"timeout": 0.01},
        {"failure_threshold": "3"},
        {"failure_threshold": 2.5},
    ],
)
def test_invalid_settings_raise_1202(kwargs: dict) -> None:
    with pytest.raises(CircuitBreakerConfigError) as exc_info:
        CircuitBreaker(**kwargs)
    assert exc_info.value.error_code == "LUCID_ERR_1202"


def test_per_service_settings() -> None:
    bc = CircuitBreaker.for_service("blockchain-core")
    assert (bc.failure_threshold, bc.recovery_timeout, bc.timeout) == (3, 60, 10.0)
    tron = CircuitBreaker.for_service("tron-payment-service")
    assert (tron.failure_threshold, tron.timeout) == (10, 15.0)
    other = CircuitBreaker.for_service("api-gateway")
    assert (other.failure_threshold, other.recovery_timeout, other.half_open_max_calls) == (5, 30, 3)
    registry = BreakerRegistry()
    assert registry.get("blockchain-core") is registry.get("blockchain-core")
    assert registry.get("blockchain-core") is not registry.get("api-gateway")


def test_reset_closes() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    _trip(breaker, 1)
    breaker.reset()
    assert breaker.state == "closed" and breaker.call(lambda: 1) == 1
