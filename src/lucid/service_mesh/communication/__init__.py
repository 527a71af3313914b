"""Inter-service messaging: durable, prioritised messages between Lucid services."""

from .message_queue import AsyncMessageQueueClient, MessageQueueClient, ReceivedMessage

__all__ = ["AsyncMessageQueueClient", "MessageQueueClient", "ReceivedMessage"]
