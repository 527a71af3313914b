"""Seed module ``lucid.service_mesh.discovery.service_registry``.

``ServiceRegistry`` is the seed's synchronous API; it drives ``AsyncServiceRegistry`` on a private event
loop thread (the KV clients are asyncio), so it works from plain code. Async code should use
``AsyncServiceRegistry`` directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from backends.kv import KeyValueStore, open_kv
from backends.loop_thread import LoopThread
from backends.seed_urls import consul_kv_url

from lucid.service_mesh.discovery.keys import DEFAULT_PREFIX
from lucid.service_mesh.discovery.model import Registration
from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry
from lucid.service_mesh.errors import (
    InvalidServiceConfigError,
    ServiceAlreadyRegisteredError,
    ServiceNotFoundError,
    ServiceRegistrationError,
)

DEFAULT_KV_URL = "memory://lucid-mesh"


class ServiceRegistry:
    """Synchronous registry facade (seed API)."""

    def __init__(self, kv_url: str | None = None, *, kv: KeyValueStore | None = None,
                 consul_host: str | None = None, consul_port: int | None = None,
                 prefix: str = DEFAULT_PREFIX, call_timeout: float = 30.0) -> None:
        if kv_url is None:
            kv_url = consul_kv_url(consul_host, consul_port) if consul_host else DEFAULT_KV_URL
        self.kv_url = kv.url if kv is not None else kv_url
        self._template = kv if kv is not None else open_kv(kv_url)
        self._thread = LoopThread("mesh-registry")
        self._timeout = call_timeout
        self._core = AsyncServiceRegistry(self._template.reopen(), prefix=prefix)

    def _run(self, coro):
        return self._thread.run(coro, timeout=self._timeout)

    def register_service(
        self,
        service_name: str,
        cluster: str,
        plane: str,
        host: str,
        port: int,
        version: str,
        health_check_path: str | None = "/health",
        health_check_interval: str | float = "30s",
        health_check_timeout: str | float = "10s",
        metadata: dict[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Register an instance; returns its UUID. 1001 on backend failure, 1003 duplicate id, 1004 bad input."""
        try:
            return self._run(
                self._core.register_service(
                    service_name, cluster, plane, host, port, version, health_check_path,
                    health_check_interval, health_check_timeout, metadata, **options,
                )
            )
        except (ServiceRegistrationError, ServiceAlreadyRegisteredError, InvalidServiceConfigError):
            raise
        except TimeoutError as exc:
            raise ServiceRegistrationError(f"registration of {service_name} timed out") from exc

    def deregister_service(self, service_id: str) -> bool:
        return self._run(self._core.deregister_service(service_id))

    def update_health_status(self, service_id: str, status: str, output: str = "") -> bool:
        return self._run(self._core.update_health_status(service_id, status, output))

    def get_registration(self, service_id: str) -> Registration:
        return self._run(self._core.get_registration(service_id))

    def list_registrations(self) -> list[Registration]:
        return self._run(self._core.list_registrations())

    def close(self) -> None:
        try:
            self._thread.run(asyncio.wait_for(self._core.kv.close(), 3), timeout=5)
        except (TimeoutError, asyncio.TimeoutError):
            pass  # best effort: the loop thread is stopped below either way
        finally:
            self._thread.stop()

    def __enter__(self) -> "ServiceRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "AsyncServiceRegistry",
    "InvalidServiceConfigError",
    "ServiceAlreadyRegisteredError",
    "ServiceNotFoundError",
    "ServiceRegistrationError",
    "ServiceRegistry",
]
