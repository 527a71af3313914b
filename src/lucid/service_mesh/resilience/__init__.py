"""Resilience: circuit breakers per destination service, and their states published for operators."""

from lucid.service_mesh.resilience.circuit_breaker import (
    SERVICE_BREAKER_SETTINGS,
    BreakerRegistry,
    BreakerSettings,
    CircuitBreaker,
    CircuitState,
)
from lucid.service_mesh.resilience.published import BreakerPublisher, PublishedBreakers, read_breakers

__all__ = ["SERVICE_BREAKER_SETTINGS", "BreakerPublisher", "BreakerRegistry", "BreakerSettings", "CircuitBreaker",
           "CircuitState", "PublishedBreakers", "read_breakers"]
