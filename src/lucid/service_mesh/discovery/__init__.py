"""Service registry and discovery on the key-value backends (embedded by default, etcd for real)."""

from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
from lucid.service_mesh.discovery.dns_resolver import ServiceDiscoveryClient
from lucid.service_mesh.discovery.load_balancer import LoadBalancer
from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry
from lucid.service_mesh.discovery.service_registry import ServiceRegistry

__all__ = [
    "AsyncServiceDiscoveryClient",
    "AsyncServiceRegistry",
    "LoadBalancer",
    "ServiceDiscoveryClient",
    "ServiceRegistry",
]
