"""Choose a bus implementation from a URL: `memory://[NAME]` or `nats://host:port[,host:port...]`."""

from __future__ import annotations

from urllib.parse import parse_qsl

from backends.bus.base import MessageBus
from backends.bus.memory import MemoryBus
from backends.errors import InvalidBackendURL
from backends.url_scheme import split_scheme


def open_bus(url: str = "memory://") -> MessageBus:
    scheme, rest = split_scheme(url)
    if scheme == "memory":
        name = rest.strip("/")
        return MemoryBus(name or None, url)
    if scheme in ("nats", "tls"):
        from backends.bus.nats import NatsBus, nats_options

        where, _, query = rest.partition("?")
        hosts = [h for h in where.strip("/").split(",") if h]
        if not hosts:
            raise InvalidBackendURL(f"NATS URL names no server: {url!r}")
        if any("@" in h for h in hosts):
            raise InvalidBackendURL("NATS credentials do not go in the URL (it is logged and shown in process "
                                    "lists): use INFRAFABRIC_NATS_USER with INFRAFABRIC_NATS_PASSWORD(_FILE), "
                                    "or INFRAFABRIC_NATS_CREDS")
        options = nats_options(dict(parse_qsl(query)), tls=scheme == "tls")
        return NatsBus([f"{scheme}://{h}" for h in hosts], url=f"{scheme}://{where}", **options)
    raise InvalidBackendURL(f"unknown bus backend {scheme!r} in {url!r}")
