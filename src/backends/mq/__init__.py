"""Inter-service message queue: one interface, embedded (``memory://``) and RabbitMQ (``amqp://``)."""

from backends.mq.base import (
    DEFAULT_TTL_SECONDS,
    MAX_PRIORITY,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    PRIORITIES,
    Delivery,
    MessageBroker,
    QueueMessage,
)
from backends.mq.urls import open_broker

__all__ = ["DEFAULT_TTL_SECONDS", "MAX_PRIORITY", "MAX_TTL_SECONDS", "MIN_TTL_SECONDS", "PRIORITIES", "Delivery",
           "MessageBroker", "QueueMessage", "open_broker"]
