"""RabbitMQ through aio-pika: the topology of SPEC.md, persistent messages, publisher confirms.

Topology: one durable topic exchange ``lucid.inter-service``; each destination service has a durable
queue ``lucid.<destination>`` (``x-max-priority`` 10) bound with ``<destination>.*``; a message is
routed with ``<destination>.<source>``, so a tap can bind ``#`` or ``*.<source>``. The sender declares
the destination's queue before its first message to it (idempotent), so nothing sent before the
destination's first consumer is dropped. Publishes go on a channel with publisher confirms and the
``mandatory`` flag: ``publish`` returns after the broker's ack, and raises when it nacks or cannot
route. Consumers share one channel with a prefetch window; unsettled deliveries return to their queue
when the connection closes (the broker requeues them).
"""

from __future__ import annotations

import asyncio
import time
import datetime as dt
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPConnectionError, AMQPError, ChannelInvalidStateError, DeliveryError, PublishError

from backends.errors import AlreadySettled, ConfirmTimeout, DeliveryFailed, QueueUnavailable
from backends.mq.base import MAX_PRIORITY, Delivery, MessageBroker, QueueMessage

EXCHANGE = "lucid.inter-service"


def queue_name(destination: str) -> str:
    return f"lucid.{destination}"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}" if at else url


class _RabbitDelivery(Delivery):
    def __init__(self, incoming: AbstractIncomingMessage, message: QueueMessage) -> None:
        self._incoming = incoming
        self.message = message
        self.redelivered = bool(incoming.redelivered)

    def _first_settlement(self) -> None:
        if self._incoming.processed:
            raise AlreadySettled(f"message {self.message.message_id} was already acknowledged or rejected")

    async def ack(self) -> None:
        self._first_settlement()
        try:
            await self._incoming.ack()
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise QueueUnavailable(f"ack failed, the message will be redelivered: {exc}") from exc

    async def reject(self, requeue: bool = True) -> None:
        self._first_settlement()
        try:
            await self._incoming.reject(requeue=requeue)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise QueueUnavailable(f"reject failed, the message will be redelivered: {exc}") from exc


def _decode(incoming: AbstractIncomingMessage) -> QueueMessage:
    headers: dict[str, Any] = dict(incoming.headers or {})
    ts = incoming.timestamp
    sent_us = headers.get("sent_at_us")
    if isinstance(sent_us, int):
        stamp = sent_us / 1_000_000
    else:
        stamp = ts.timestamp() if isinstance(ts, dt.datetime) else float(ts or 0)
    return QueueMessage(
        message_id=str(incoming.message_id), source=str(headers.get("source", "")),
        destination=str(headers.get("destination", "")), body=bytes(incoming.body),
        priority=int(incoming.priority or 0), ttl=int(headers.get("ttl", 0)), timestamp=stamp,
        correlation_id=incoming.correlation_id, sender_account=incoming.user_id,
    )


class RabbitMQBroker(MessageBroker):
    backend = "rabbitmq"

    def __init__(self, url: str, *, prefetch: int = 64, connect_timeout: float = 10.0) -> None:
        self.url = url
        self._login = unquote(urlsplit(url).username or "guest")
        self._prefetch = prefetch
        self._connect_timeout = connect_timeout
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumer: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._inboxes: dict[str, asyncio.Queue[AbstractIncomingMessage]] = {}
        self._consumers: dict[str, tuple[AbstractQueue, str]] = {}
        self._lock = asyncio.Lock()
        self._closed_by_user = True  # until connect()

    def __repr__(self) -> str:
        return f"RabbitMQBroker({_redact(self.url)!r})"

    async def connect(self) -> None:
        self._closed_by_user = False
        try:
            self._connection = await aio_pika.connect(self.url, timeout=self._connect_timeout)
            self._publisher = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._publisher.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                                    durable=True)
            self._consumer = await self._connection.channel()
            await self._consumer.set_qos(prefetch_count=self._prefetch)
        except (AMQPConnectionError, AMQPError, OSError, asyncio.TimeoutError) as exc:
            await self._drop()
            raise QueueUnavailable(f"cannot reach RabbitMQ at {_redact(self.url)}: {exc}") from exc

    async def close(self) -> None:
        self._closed_by_user = True
        await self._drop()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._publisher = self._exchange = self._consumer = None
        self._declared.clear()
        self._consumers.clear()
        self._inboxes.clear()
        if connection is not None:
            try:
                await connection.close()
            except (AMQPError, OSError, asyncio.TimeoutError, RuntimeError):
                pass

    async def _ensure_connected(self) -> None:
        """Reconnect after the broker dropped the connection (restart, network); never after ``close``."""
        if self._healthy():
            return
        if self._closed_by_user:
            raise QueueUnavailable("message queue client is not connected")
        async with self._lock:
            if not self._healthy():
                await self._drop()
                await self.connect()

    def _healthy(self) -> bool:
        return not (self._connection is None or self._connection.is_closed or self._publisher is None
                    or self._publisher.is_closed or self._consumer is None or self._consumer.is_closed)

    async def _declare(self, channel: AbstractChannel, destination: str) -> AbstractQueue:
        queue = await channel.declare_queue(queue_name(destination), durable=True,
                                            arguments={"x-max-priority": MAX_PRIORITY})
        await queue.bind(EXCHANGE, routing_key=f"{destination}.*")
        return queue

    def _unavailable(self, exc: BaseException) -> QueueUnavailable:
        return QueueUnavailable(f"RabbitMQ at {_redact(self.url)} is unavailable: {exc}")

    async def publish(self, message: QueueMessage, *, timeout: float = 5.0) -> None:
        await self._ensure_connected()
        assert self._publisher is not None and self._exchange is not None
        try:  # nothing of this message has left yet: a failure here means it was not sent
            if message.destination not in self._declared:
                await self._declare(self._publisher, message.destination)
                self._declared.add(message.destination)
            channel_open = not self._publisher.is_closed
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError) as exc:
            raise self._unavailable(exc) from exc
        if not channel_open:
            raise QueueUnavailable(f"RabbitMQ at {_redact(self.url)} closed the channel")
        amqp = aio_pika.Message(
            body=message.body, content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=message.priority,
            expiration=message.ttl, message_id=message.message_id,
            timestamp=dt.datetime.fromtimestamp(message.timestamp, dt.timezone.utc),
            correlation_id=message.correlation_id, app_id=message.source,
            # RabbitMQ refuses a user-id other than the connection's login: consumers read who sent it
            user_id=self._login,
            headers={"source": message.source, "destination": message.destination, "ttl": message.ttl,
                     # microseconds as an integer: the AMQP timestamp has whole seconds, and pamqp
                     # sends a Python float header as a 32-bit float (1.8e9 s then loses ~a minute)
                     "sent_at_us": round(message.timestamp * 1_000_000)},
        )
        try:
            await asyncio.wait_for(
                self._exchange.publish(amqp, routing_key=f"{message.destination}.{message.source}", mandatory=True),
                timeout)
        except asyncio.TimeoutError as exc:
            raise ConfirmTimeout(f"no confirm for message {message.message_id} within {timeout} s") from exc
        except (DeliveryError, PublishError) as exc:
            raise DeliveryFailed(f"RabbitMQ refused message {message.message_id}: {exc}") from exc
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError) as exc:
            # the frames may have reached the broker before the connection went: outcome unknown
            raise ConfirmTimeout(f"connection lost before the confirm of message {message.message_id}: {exc}") from exc

    async def _inbox(self, destination: str) -> asyncio.Queue[AbstractIncomingMessage]:
        inbox = self._inboxes.get(destination)
        if inbox is not None:
            return inbox
        async with self._lock:
            if destination not in self._inboxes:
                if self._consumer is None:
                    raise QueueUnavailable("message queue client is not connected")
                inbox = asyncio.Queue()
                queue = await self._declare(self._consumer, destination)
                tag = await queue.consume(inbox.put, no_ack=False)
                self._inboxes[destination] = inbox
                self._consumers[destination] = (queue, tag)
        return self._inboxes[destination]

    async def get(self, destination: str, *, timeout: float = 5.0) -> Delivery | None:
        await self._ensure_connected()
        try:
            inbox = await self._inbox(destination)
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError) as exc:
            raise self._unavailable(exc) from exc
        deadline = asyncio.get_running_loop().time() + max(timeout, 0.0)
        while True:
            try:
                incoming = await asyncio.wait_for(inbox.get(), max(deadline - asyncio.get_running_loop().time(), 0.0))
            except asyncio.TimeoutError:
                return None
            message = _decode(incoming)
            if message.ttl and message.timestamp > 0 and message.timestamp + message.ttl <= time.time():
                # it expired in this client's prefetch buffer: RabbitMQ only drops it while it is queued,
                # and the interface promises an expired message is never delivered
                try:
                    await incoming.reject(requeue=False)
                except (AMQPError, ChannelInvalidStateError, ConnectionError):
                    pass
                continue
            return _RabbitDelivery(incoming, message)
