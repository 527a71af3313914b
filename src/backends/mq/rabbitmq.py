"""RabbitMQ through aio-pika: the topology of SPEC.md, persistent messages, publisher confirms.

Topology: one durable topic exchange ``lucid.inter-service``; each destination service has a durable
queue ``lucid.<destination>`` (``x-max-priority`` 10) bound with ``<destination>.*``; a message is
routed with ``<destination>.<source>``, so a tap can bind ``#`` or ``*.<source>``. The sender declares
the destination's queue before its first message to it (idempotent), so nothing sent before the
destination's first consumer is dropped. Publishes go on a channel with publisher confirms and the
``mandatory`` flag: ``publish`` returns after the broker's ack, and raises when it nacks or cannot
route.

Receiving (``_Receiver``, one per destination, on a channel of its own): a consumer with a prefetch
window exists only while the client is receiving. The window keeps a receive loop as fast as a raw
consumer, but messages in it sit in this client: so they are handed out highest priority first (a
critical message that arrives behind buffered low ones goes first), an expired one is dropped, and once
no ``get`` has asked for ``linger`` seconds the consumer is cancelled and every message not handed out
is returned to the queue at its place (RabbitMQ requeues in position), where competing instances of the
destination take it. Unsettled deliveries return to their queue when the connection closes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

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
    def __init__(self, incoming: AbstractIncomingMessage, message: QueueMessage,
                 receiver: "_Receiver | None" = None) -> None:
        self._incoming = incoming
        self._receiver = receiver
        self.message = message
        self.redelivered = bool(incoming.redelivered)
        self._acked = False

    def _first_settlement(self) -> None:
        if self._acked or self._incoming.processed:
            raise AlreadySettled(f"message {self.message.message_id} was already acknowledged or rejected")

    async def ack(self) -> None:
        self._first_settlement()
        tag = self._incoming.delivery_tag
        try:
            # queued for the connection's writer without waiting for it to drain: basic.ack has no reply in
            # AMQP, so waiting proves nothing about the broker, and it cost a loop turn per message; an ack
            # the broker never gets (connection lost) means a redelivery, as with any ack
            if tag is not None:
                await self._incoming.channel.basic_ack(delivery_tag=tag, wait=False)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise QueueUnavailable(f"ack failed, the message will be redelivered: {exc}") from exc
        self._acked = True
        if self._receiver is not None:
            self._receiver.unflushed_acks = True  # close() makes sure the broker has them

    async def reject(self, requeue: bool = True) -> None:
        self._first_settlement()
        try:
            await self._incoming.reject(requeue=requeue)
            if requeue and self._receiver is not None:
                # it goes back to its place in the queue; so does the window behind it, or the window's
                # later messages would overtake it
                await self._receiver.give_back()
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise QueueUnavailable(f"reject failed, the message will be redelivered: {exc}") from exc


def _decode(incoming: AbstractIncomingMessage) -> QueueMessage:
    """The message as this client sent it. Headers come from any account that may publish to the queue,
    so anything not as ``publish`` writes it is ValueError (the receiver sends it to the dead end) rather
    than a TypeError/OverflowError escaping with the message unsettled."""
    headers: dict[str, Any] = dict(incoming.headers or {})
    ts = incoming.timestamp
    sent_us = headers.get("sent_at_us")
    ttl = headers.get("ttl", 0)
    if ttl is None:  # sent without a TTL
        ttl = 0
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise ValueError(f"message {incoming.message_id}: ttl header {ttl!r} is not a whole number of seconds")
    try:
        if isinstance(sent_us, int) and not isinstance(sent_us, bool):
            stamp = sent_us / 1_000_000
        else:
            stamp = ts.timestamp() if isinstance(ts, dt.datetime) else float(ts or 0)
        priority = int(incoming.priority or 0)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"message {incoming.message_id}: unreadable timestamp or priority ({exc})") from exc
    return QueueMessage(
        message_id=str(incoming.message_id), source=str(headers.get("source", "")),
        destination=str(headers.get("destination", "")), body=bytes(incoming.body),
        priority=priority, ttl=ttl, timestamp=stamp,
        correlation_id=incoming.correlation_id, sender_account=incoming.user_id,
    )


class RabbitMQBroker(MessageBroker):
    backend = "rabbitmq"

    def __init__(self, url: str, *, prefetch: int = 64, linger: float = 0.05, connect_timeout: float = 10.0) -> None:
        self.url = url
        self._login = unquote(urlsplit(url).username or "guest")
        self._prefetch = prefetch
        self._linger = linger
        self._connect_timeout = connect_timeout
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._declared: set[str] = set()
        self._receivers: dict[str, _Receiver] = {}
        self._lock = asyncio.Lock()
        self._closed_by_user = True  # until connect()

    def __repr__(self) -> str:
        return f"RabbitMQBroker({_redact(self.url)!r})"

    @property
    def account(self) -> str | None:
        return self._login

    async def connect(self) -> None:
        self._closed_by_user = False
        try:
            self._connection = await aio_pika.connect(self.url, timeout=self._connect_timeout)
            self._publisher = await self._connection.channel(publisher_confirms=True)
            # a passive declare first: it needs no permission, so an account that may only watch (the
            # operator console: queue depths) connects too; the exchange is created only when it is missing
            try:
                self._exchange = await self._publisher.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                                        passive=True)
            except ChannelNotFoundEntity:
                self._publisher = await self._connection.channel(publisher_confirms=True)
                self._exchange = await self._publisher.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                                        durable=True)
        except (AMQPConnectionError, AMQPError, OSError, asyncio.TimeoutError) as exc:
            await self._drop()
            raise QueueUnavailable(f"cannot reach RabbitMQ at {_redact(self.url)}: {exc}") from exc

    async def close(self) -> None:
        self._closed_by_user = True
        for receiver in list(self._receivers.values()):
            await receiver.flush_acks()
        await self._drop()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._publisher = self._exchange = None
        self._declared.clear()
        for receiver in self._receivers.values():
            receiver.forget()
        self._receivers.clear()
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
                    or self._publisher.is_closed)

    async def _declare(self, channel: AbstractChannel, destination: str) -> AbstractQueue:
        queue = await channel.declare_queue(queue_name(destination), durable=True,
                                            arguments={"x-max-priority": MAX_PRIORITY})
        await queue.bind(EXCHANGE, routing_key=f"{destination}.*")
        return queue

    def _unavailable(self, exc: BaseException) -> QueueUnavailable:
        return QueueUnavailable(f"RabbitMQ at {_redact(self.url)} is unavailable: {exc}")

    async def depth(self, destination: str) -> int:
        await self._ensure_connected()
        assert self._connection is not None
        try:  # a channel of its own: a declare that fails closes its channel, never the publisher's
            async with self._connection.channel() as channel:
                # passive: reading a depth creates nothing and needs no permission on the queue
                queue = await channel.declare_queue(queue_name(destination), passive=True)
                return int(queue.declaration_result.message_count or 0)
        except ChannelNotFoundEntity:
            return 0  # no queue yet: nothing was ever sent there, nothing waits
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError) as exc:
            raise self._unavailable(exc) from exc

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
        # the properties aio-pika's Message would build, handed straight to its channel (aiormq): the same
        # frames, without a Message object per send (benchmarks/RESULTS.md, issue 19)
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json", delivery_mode=2, priority=message.priority,
            expiration=None if message.ttl is None else str(int(message.ttl * 1000)),
            message_id=message.message_id,
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
            channel = await self._publisher.get_underlay_channel()
            # aiormq bounds the whole publish (lock, write, confirm) by this timeout in the caller's task
            await channel.basic_publish(message.body, exchange=EXCHANGE,
                                        routing_key=f"{message.destination}.{message.source}",
                                        properties=properties, mandatory=True, timeout=timeout)
        except asyncio.TimeoutError as exc:
            raise ConfirmTimeout(f"no confirm for message {message.message_id} within {timeout} s") from exc
        except (DeliveryError, PublishError) as exc:
            raise DeliveryFailed(f"RabbitMQ refused message {message.message_id}: {exc}") from exc
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError) as exc:
            # the frames may have reached the broker before the connection went: outcome unknown
            raise ConfirmTimeout(f"connection lost before the confirm of message {message.message_id}: {exc}") from exc

    async def publish_many(self, messages: list[QueueMessage], *, timeout: float = 5.0) -> None:
        """All at once on the confirm channel (written in order: the channel's publish lock is FIFO), then
        every confirm awaited."""
        if not messages:
            return
        await self.publish(messages[0], timeout=timeout)  # declares the destination once, checks the channel
        results = await asyncio.gather(*(self.publish(m, timeout=timeout) for m in messages[1:]),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def get_many(self, destination: str, limit: int, *, timeout: float = 5.0) -> list[Delivery]:
        await self._ensure_connected()
        try:
            receiver = await self._receiver(destination)
            first = await receiver.get(timeout)
            if first is None:
                return []
            out = [first]
            while len(out) < limit and receiver.buffer and (more := await receiver.get(0)) is not None:
                out.append(more)
            return out
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError) as exc:
            raise self._unavailable(exc) from exc

    async def _receiver(self, destination: str) -> "_Receiver":
        receiver = self._receivers.get(destination)
        if receiver is not None and not receiver.channel.is_closed:
            return receiver
        async with self._lock:
            receiver = self._receivers.get(destination)
            if receiver is None or receiver.channel.is_closed:
                if self._connection is None:
                    raise QueueUnavailable("message queue client is not connected")
                channel = await self._connection.channel()
                await channel.set_qos(prefetch_count=self._prefetch)
                queue = await self._declare(channel, destination)
                receiver = _Receiver(queue, channel, self._linger)
                receiver.prefetch = self._prefetch
                self._receivers[destination] = receiver
        return receiver

    async def get(self, destination: str, *, timeout: float = 5.0) -> Delivery | None:
        await self._ensure_connected()
        try:
            receiver = await self._receiver(destination)
            return await receiver.get(timeout)
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError) as exc:
            raise self._unavailable(exc) from exc


class _Receiver:
    """One destination's consumer: subscribed while the client receives, cancelled when it stops."""

    def __init__(self, queue: AbstractQueue, channel: AbstractChannel, linger: float) -> None:
        self.queue, self.channel, self.linger = queue, channel, linger
        self.buffer: list[tuple[int, int, AbstractIncomingMessage]] = []  # (-priority, arrival, message)
        self.arrival = itertools.count()
        self.arrived = asyncio.Event()
        self.tag: str | None = None
        self.active = False  # deliveries are wanted (between consume and cancel)
        self.waiting = 0
        self.last_get = 0.0
        self.lock = asyncio.Lock()  # subscribe and cancel one at a time
        self.idle_check: asyncio.TimerHandle | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.unflushed_acks = False
        self.prefetch = 0

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        if not self.active:  # sent before the broker saw our cancel, handled after it: give it back
            try:
                await incoming.reject(requeue=True)
            except (AMQPError, ChannelInvalidStateError, ConnectionError):
                pass
            return
        heapq.heappush(self.buffer, (-(incoming.priority or 0), next(self.arrival), incoming))
        self.arrived.set()

    async def _subscribe(self) -> None:
        async with self.lock:
            if self.tag is None:
                self.active = True
                try:
                    self.tag = await self.queue.consume(self._on_message, no_ack=False)
                except BaseException:
                    self.active = False
                    raise

    async def get(self, timeout: float) -> Delivery | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        self.waiting += 1
        try:
            while True:
                if self.tag is None:
                    await self._subscribe()
                while self.buffer:
                    incoming = heapq.heappop(self.buffer)[2]
                    try:
                        message = _decode(incoming)
                    except ValueError:
                        # a publisher that does not use this client (hostile headers): to the dead end, never
                        # left unsettled here nor raised at every get (a poison message)
                        try:
                            await incoming.reject(requeue=False)
                        except (AMQPError, ChannelInvalidStateError, ConnectionError):
                            pass
                        continue
                    if message.ttl and message.timestamp > 0 and message.timestamp + message.ttl <= time.time():
                        # expired while in this client: RabbitMQ drops expired messages only while they are
                        # queued, and the interface promises an expired message is never delivered
                        try:
                            await incoming.reject(requeue=False)
                        except (AMQPError, ChannelInvalidStateError, ConnectionError):
                            pass
                        continue
                    return _RabbitDelivery(incoming, message, self)
                self.arrived.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                        await self.arrived.wait()
                except asyncio.TimeoutError:
                    if not self.buffer:
                        return None
        finally:
            self.waiting -= 1
            self.last_get = loop.time()
            if self.idle_check is None and not self.channel.is_closed:
                self.idle_check = loop.call_later(self.linger, self._maybe_idle)

    def _maybe_idle(self) -> None:
        self.idle_check = None
        loop = asyncio.get_running_loop()
        if self.waiting or self.tag is None:
            return
        if loop.time() - self.last_get < self.linger:  # asked again meanwhile: look later
            self.idle_check = loop.call_at(self.last_get + self.linger, self._maybe_idle)
            return
        task = loop.create_task(self._go_idle())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _go_idle(self) -> None:
        """Nobody is receiving: stop the consumer and give back what was not handed out."""
        async with self.lock:
            if self.waiting or self.tag is None or self.channel.is_closed:
                return
            tag, self.tag = self.tag, None
            self.active = False
            try:
                await self.queue.cancel(tag)
                # after cancel-ok nothing more arrives for this consumer; give back the buffer, and whatever
                # a get() that comes now would have taken arrives again through a new consumer
                while self.buffer and not self.waiting:
                    await heapq.heappop(self.buffer)[2].reject(requeue=True)
            except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError):
                pass  # the channel is going: the broker requeues every unsettled message itself

    async def give_back(self) -> None:
        """Return every message not handed out to the queue. The consumer is cancelled first: after
        cancel-ok nothing more arrives for it, so no message the broker pushed meanwhile stays behind in
        this client to overtake the ones given back. The next get() subscribes again."""
        async with self.lock:
            tag, self.tag = self.tag, None
            self.active = False  # what still arrives before cancel-ok goes straight back (_on_message)
            if tag is not None:
                await self.queue.cancel(tag)
            window = sorted(self.buffer, key=lambda item: item[1])
            self.buffer.clear()
            for _, _, incoming in window:
                await incoming.reject(requeue=True)
        self.arrived.set()  # a get() waiting meanwhile looks again, and subscribes

    async def flush_acks(self, timeout: float = 5.0) -> None:
        """Wait until the broker has processed every ack sent on this channel: a basic.qos round trip, answered
        only after the frames before it (acks are sent without waiting, see ``_RabbitDelivery.ack``)."""
        if not self.unflushed_acks or self.channel.is_closed:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.channel.set_qos(prefetch_count=self.prefetch)
            self.unflushed_acks = False
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError, asyncio.TimeoutError):
            pass  # the connection is going: unacknowledged messages come back to the queue (at least once)

    def forget(self) -> None:
        if self.idle_check is not None:
            self.idle_check.cancel()
            self.idle_check = None
        self.buffer.clear()
