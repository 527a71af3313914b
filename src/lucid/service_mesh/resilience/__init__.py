"""Resilience: circuit breakers per destination service."""

from lucid.service_mesh.resilience.circuit_breaker import (
    SERVICE_BREAKER_SETTINGS,
    BreakerRegistry,
    BreakerSettings,
    CircuitBreaker,
    CircuitState,
)

__all__ = ["SERVICE_BREAKER_SETTINGS", "BreakerRegistry", "BreakerSettings", "CircuitBreaker", "CircuitState"]
