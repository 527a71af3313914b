"""Seed path ``lucid.service_mesh.sidecar.circuit_breaker``; implementation in ``resilience``."""

from lucid.service_mesh.errors import CircuitBreakerConfigError, CircuitBreakerOpenError
from lucid.service_mesh.resilience.circuit_breaker import (
    SERVICE_BREAKER_SETTINGS,
    BreakerRegistry,
    CircuitBreaker,
    CircuitState,
)

__all__ = [
    "SERVICE_BREAKER_SETTINGS",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitBreakerConfigError",
    "CircuitBreakerOpenError",
    "CircuitState",
]
