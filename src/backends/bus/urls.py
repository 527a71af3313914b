"""Choose a bus implementation from a URL: `memory://[NAME]` or `nats://host:port[,host:port...]`."""

from __future__ import annotations

from backends.bus.base import MessageBus
from backends.bus.memory import MemoryBus
from backends.errors import InvalidBackendURL


def open_bus(url: str = "memory://") -> MessageBus:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidBackendURL(f"not a backend URL: {url!r}")
    scheme = scheme.lower()
    if scheme == "memory":
        name = rest.strip("/")
        return MemoryBus(name or None, url)
    if scheme in ("nats", "tls"):
        from backends.bus.nats import NatsBus

        hosts = [h for h in rest.strip("/").split(",") if h]
        if not hosts:
            raise InvalidBackendURL(f"NATS URL names no server: {url!r}")
        return NatsBus([f"{scheme}://{h}" for h in hosts], url=url)
    raise InvalidBackendURL(f"unknown bus backend {scheme!r} in {url!r}")
