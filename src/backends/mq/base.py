"""The inter-service message queue interface: durable per-destination queues with priorities and TTLs.

A message is addressed to a destination service and waits in that service's queue until a consumer
takes it. ``publish`` returns only once the broker has the message (RabbitMQ: a publisher confirm for a
persistent message on a durable queue), so a message is never reported sent before that. A consumer
gets a :class:`Delivery` and acknowledges it; a delivery neither acknowledged nor rejected goes back to
its queue when the consumer closes (at-least-once). Higher priorities are delivered first, first in
first out within a priority; a message whose TTL has passed is never delivered.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

PRIORITIES = {"low": 1, "normal": 5, "high": 8, "critical": 10}
MAX_PRIORITY = 10
MIN_TTL_SECONDS, MAX_TTL_SECONDS, DEFAULT_TTL_SECONDS = 1, 86_400, 3_600


class QueueMessage(NamedTuple):  # a NamedTuple: made once per message, and much cheaper than a frozen dataclass
    message_id: str
    source: str
    destination: str
    body: bytes  # JSON, encoded by the client
    priority: int
    ttl: int  # seconds
    timestamp: float  # seconds since the epoch, when it was sent
    correlation_id: str | None = None
    #: the broker account that published it, as the broker checked it (RabbitMQ's validated user-id);
    #: None on the embedded broker, which has no accounts. ``source`` is what the sender says it is.
    sender_account: str | None = None


class Delivery(abc.ABC):
    """One message handed to a consumer; settle it with ``ack`` or ``reject`` (once)."""

    message: QueueMessage
    redelivered: bool

    @abc.abstractmethod
    async def ack(self) -> None: ...

    @abc.abstractmethod
    async def reject(self, requeue: bool = True) -> None: ...


class MessageBroker(abc.ABC):
    url: str
    backend: str

    @property
    def account(self) -> str | None:
        """The broker account this client publishes as (checked by the broker); None without accounts."""
        return None

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; deliveries not yet settled go back to their queues."""

    @abc.abstractmethod
    async def publish(self, message: QueueMessage, *, timeout: float = 5.0) -> None:
        """Queue ``message`` durably for its destination; returns once the broker confirmed it.

        Raises QueueUnavailable (not connected, broker down), DeliveryFailed (refused) or ConfirmTimeout
        (sent, but no confirm in time: the outcome is unknown)."""

    @abc.abstractmethod
    async def get(self, destination: str, *, timeout: float = 5.0) -> Delivery | None:
        """The next message for ``destination`` (highest priority first), or None after ``timeout``."""

    @abc.abstractmethod
    async def depth(self, destination: str) -> int:
        """Messages waiting in ``destination``'s queue (ready, not handed out; for metrics)."""

    async def publish_many(self, messages: list[QueueMessage], *, timeout: float = 5.0) -> None:
        """Queue several messages, in order; returns once the broker confirmed all of them. On an error
        any prefix may have been queued (the error says which kind, as ``publish`` does)."""
        for message in messages:
            await self.publish(message, timeout=timeout)

    async def ack_many(self, deliveries: list[Delivery]) -> None:
        """Acknowledge each delivery, in order; an already settled one raises ``AlreadySettled`` there (the
        ones before it stay acknowledged)."""
        for delivery in deliveries:
            await delivery.ack()

    async def get_many(self, destination: str, limit: int, *, timeout: float = 5.0) -> list[Delivery]:
        """Up to ``limit`` messages: waits up to ``timeout`` for the first, then takes what is there."""
        first = await self.get(destination, timeout=timeout)
        if first is None:
            return []
        out = [first]
        while len(out) < limit and (more := await self.get(destination, timeout=0)) is not None:
            out.append(more)
        return out
