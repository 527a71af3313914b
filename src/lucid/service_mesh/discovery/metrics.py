"""Registry health by plane, read from discovery's watch-fed cache at scrape time (never stale, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lucid.service_mesh.discovery.cache import ServiceCache

__all__ = ["RegistryCollector"]


class RegistryCollector(Collector):
    def __init__(self, cache: ServiceCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = Counter((i.reg.plane, i.reg.service_name, i.status) for i in self.cache.all())
        family = GaugeMetricFamily("lucid_mesh_service_instances", "Registered instances by plane, service "
                                   "and health (healthy, degraded, unhealthy)", labels=["plane", "service", "status"])
        for (plane, service, status), n in sorted(counts.items()):
            family.add_metric([plane, service, status], n)
        yield family
        yield GaugeMetricFamily("lucid_mesh_registry_stale", "1 while discovery's watch of the store is broken",
                                value=1.0 if self.cache.stale else 0.0)
