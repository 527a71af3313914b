"""Circuit breaker (closed -> open -> half-open -> closed), for sync and async callables.

One ``threading.Lock`` guards the state, so the breaker is safe when shared by threads and by
asyncio tasks (the lock is held only for counter updates, never across the protected call).
Results of calls admitted under an earlier state are ignored, so a slow call that started before
the breaker opened cannot close or re-open it later by mistake. A call that never finished (cancelled,
or interrupted by a ``BaseException`` that is not an ``Exception``) says nothing about the dependency:
it frees its half-open trial slot and is neither a success nor a failure, so cancelled trials cannot
close the breaker and cancelled calls cannot wipe out a run of failures.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lucid.service_mesh.errors import CircuitBreakerConfigError, CircuitBreakerOpenError

T = TypeVar("T")


class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerSettings:
    """Per-service breaker settings (02-data-models defaults; timeout in milliseconds)."""

    failure_threshold: int = 5
    recovery_timeout: float = 30
    half_open_max_calls: int = 3
    success_threshold: int = 3
    timeout_ms: int = 5000


DEFAULT_SETTINGS = BreakerSettings()
SERVICE_BREAKER_SETTINGS: dict[str, BreakerSettings] = {
    "blockchain-core": BreakerSettings(failure_threshold=3, recovery_timeout=60, timeout_ms=10000),
    "tron-payment-service": BreakerSettings(failure_threshold=10, recovery_timeout=30, timeout_ms=15000),
    "tron-payment": BreakerSettings(failure_threshold=10, recovery_timeout=30, timeout_ms=15000),
    "session-recorder": BreakerSettings(failure_threshold=5, recovery_timeout=45, timeout_ms=8000),
}


def _check_range(name: str, value: float, low: float, high: float, *, low_inclusive: bool = True) -> None:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or not ((value >= low if low_inclusive else value > low) and value <= high):
        bound = "[" if low_inclusive else "("
        raise CircuitBreakerConfigError(f"{name}={value!r} outside {bound}{low}, {high}]")


class CircuitBreaker:
    """Fails fast while a dependency is failing; probes it again after ``recovery_timeout`` seconds."""

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 30,
        half_open_max_calls: int = 3,
        success_threshold: int = 3,
        *,
        timeout: float | None = None,
        name: str = "default",
        failure_exceptions: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_range("failure_threshold", failure_threshold, 1, 100)
        _check_range("recovery_timeout", recovery_timeout, 0, 3600, low_inclusive=False)
        _check_range("half_open_max_calls", half_open_max_calls, 1, 100)
        _check_range("success_threshold", success_threshold, 1, 100)
        if timeout is not None:
            _check_range("timeout", timeout, 0.1, 30, low_inclusive=True)
        counts = {"failure_threshold": failure_threshold, "half_open_max_calls": half_open_max_calls,
                  "success_threshold": success_threshold}
        for n, v in counts.items():
            if not isinstance(v, int):
                raise CircuitBreakerConfigError(f"{n} must be an integer")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = float(recovery_timeout)
        self.half_open_max_calls = half_open_max_calls
        self.success_threshold = success_threshold
        self.timeout = timeout
        self.failure_exceptions = failure_exceptions
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._epoch = 0
        self._failures = 0
        self._successes = 0
        self._in_flight = 0
        self._opened_at = 0.0
        self.rejected_calls = 0
        self.transitions: list[tuple[str, str]] = []

    @classmethod
    def for_service(cls, service_name: str, **overrides: Any) -> "CircuitBreaker":
        """A breaker with the per-service settings of the reference notes (defaults otherwise)."""
        s = SERVICE_BREAKER_SETTINGS.get(service_name, DEFAULT_SETTINGS)
        kwargs: dict[str, Any] = {
            "failure_threshold": s.failure_threshold,
            "recovery_timeout": s.recovery_timeout,
            "half_open_max_calls": s.half_open_max_calls,
            "success_threshold": s.success_threshold,
            "timeout": s.timeout_ms / 1000,
            "name": service_name,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------ state machine
    def _move(self, new: CircuitState) -> None:
        """Caller holds the lock."""
        if new is not self._state:
            self.transitions.append((self._state.value, new.value))
        self._state = new
        self._epoch += 1
        self._failures = 0
        self._successes = 0
        self._in_flight = 0
        if new is CircuitState.OPEN:
            self._opened_at = self._clock()

    def _refresh(self) -> None:
        """Caller holds the lock: open -> half-open once the recovery timeout has passed."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.recovery_timeout:
            self._move(CircuitState.HALF_OPEN)

    @property
    def state(self) -> str:
        with self._lock:
            self._refresh()
            return self._state.value

    def _admit(self) -> int:
        with self._lock:
            self._refresh()
            if self._state is CircuitState.OPEN:
                self.rejected_calls += 1
                remaining = self.recovery_timeout - (self._clock() - self._opened_at)
                raise CircuitBreakerOpenError(
                    f"Circuit breaker is open for {self.name}; retry in {remaining:.1f}s",
                    details={"service": self.name, "retry_after": max(0.0, remaining)},
                )
            if self._state is CircuitState.HALF_OPEN:
                if self._in_flight >= self.half_open_max_calls:
                    self.rejected_calls += 1
                    raise CircuitBreakerOpenError(
                        f"Circuit breaker is open for {self.name} (half-open: trial calls in progress)",
                        details={"service": self.name},
                    )
                self._in_flight += 1
            return self._epoch

    def _record(self, epoch: int, ok: bool | None) -> None:
        """``ok`` None: the call did not finish (cancelled); only its half-open slot is given back."""
        with self._lock:
            if epoch != self._epoch:
                return  # admitted under an earlier state: ignore
            if ok is None:
                if self._state is CircuitState.HALF_OPEN:
                    self._in_flight -= 1
                return
            if self._state is CircuitState.HALF_OPEN:
                self._in_flight -= 1
                if not ok:
                    self._move(CircuitState.OPEN)
                    return
                self._successes += 1
                if self._successes >= self.success_threshold:
                    self._move(CircuitState.CLOSED)
            elif self._state is CircuitState.CLOSED:
                if ok:
                    self._failures = 0
                else:
                    self._failures += 1
                    if self._failures >= self.failure_threshold:
                        self._move(CircuitState.OPEN)

    def _counts(self, exc: BaseException) -> bool:
        return isinstance(exc, self.failure_exceptions) and not isinstance(exc, CircuitBreakerOpenError)

    def _outcome(self, exc: BaseException, *, timeout_fails: bool = False) -> bool | None:
        """What a raised call tells about the dependency: None when it never finished (cancellation,
        KeyboardInterrupt, ...), False when it failed, True when the error is not the dependency's fault."""
        if not isinstance(exc, Exception):
            return None
        return not (self._counts(exc) or (timeout_fails and isinstance(exc, asyncio.TimeoutError)))

    # ------------------------------------------------------------------ calls
    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` through the breaker. A coroutine function returns an awaitable (see ``acall``)."""
        if inspect.iscoroutinefunction(func):
            return self.acall(func, *args, **kwargs)  # type: ignore[return-value]
        epoch = self._admit()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._record(epoch, self._outcome(exc))
            raise
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            return self._finish_async(epoch, result)  # type: ignore[return-value]
        self._record(epoch, True)
        return result

    async def _finish_async(self, epoch: int, awaitable: Awaitable[T]) -> T:
        try:
            if self.timeout is not None:
                result = await asyncio.wait_for(awaitable, self.timeout)
            else:
                result = await awaitable
        except BaseException as exc:
            self._record(epoch, self._outcome(exc, timeout_fails=True))
            raise
        self._record(epoch, True)
        return result

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``func(*args)`` through the breaker; ``timeout`` (seconds) counts as a failure."""
        epoch = self._admit()
        try:
            awaitable = func(*args, **kwargs)
        except BaseException as exc:
            self._record(epoch, self._outcome(exc))
            raise
        return await self._finish_async(epoch, awaitable)

    def reset(self) -> None:
        """Operator action: close the breaker and forget the failure count."""
        with self._lock:
            self._move(CircuitState.CLOSED)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._refresh()
            return {
                "name": self.name,
                "state": self._state.value,
                "consecutive_failures": self._failures,
                "half_open_successes": self._successes,
                "rejected_calls": self.rejected_calls,
            }


class BreakerRegistry:
    """One breaker per destination service, created on first use with that service's settings."""

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, service_name: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(service_name)
            if breaker is None:
                breaker = CircuitBreaker.for_service(service_name, **self._overrides)
                self._breakers[service_name] = breaker
            return breaker

    def states(self) -> dict[str, str]:
        with self._lock:
            items = list(self._breakers.items())
        return {k: b.state for k, b in items}
