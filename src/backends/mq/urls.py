"""Choose a message queue implementation from a URL: ``memory://[NAME]`` or ``amqp(s)://user:pass@host:port/vhost``."""

from __future__ import annotations

from backends.errors import InvalidBackendURL
from backends.url_scheme import split_scheme
from backends.mq.base import MessageBroker
from backends.mq.memory import MemoryBroker


def open_broker(url: str = "memory://") -> MessageBroker:
    scheme, rest = split_scheme(url, "not a message queue URL (memory://, amqp://, amqps://)")
    if scheme == "memory":
        return MemoryBroker(rest.strip("/") or None, url)
    if scheme in ("amqp", "amqps"):
        from backends.mq.rabbitmq import RabbitMQBroker

        if not rest.strip("/"):
            raise InvalidBackendURL("AMQP URL names no host")
        return RabbitMQBroker(url)
    raise InvalidBackendURL(f"unknown message queue backend {scheme!r}")
