"""Message bus backends: one interface, an embedded in-process bus and NATS, chosen by URL."""

from backends.bus.base import Message, MessageBus, Subscription, subject_matches
from backends.bus.urls import open_bus

__all__ = ["Message", "MessageBus", "Subscription", "open_bus", "subject_matches"]
