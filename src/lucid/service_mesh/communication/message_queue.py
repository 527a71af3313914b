"""MessageQueueClient: messages between Lucid services, as seed 000 uses it, on the embedded broker or RabbitMQ.

``send_message(source, destination, payload, priority, ttl)`` validates everything at the boundary
(service names, priority low / normal / high / critical = 1 / 5 / 8 / 10, TTL 1–86,400 s, a JSON object
payload of at most 1 MiB) and returns the message id only once the broker has confirmed the message;
a broker that is down or refuses is an error (1303 / 1301), a confirm that does not come in time is
1305 (the message may be queued), so nothing is ever reported sent that was not. ``receive`` hands out
one message at a time with ``ack`` / ``reject``; an unsettled message returns to its queue when the
client closes.

The broker is chosen by URL: ``memory://[NAME]`` (embedded, the default) or ``amqp(s)://…``; the seed's
``rabbitmq_host`` / ``rabbitmq_port`` / ``rabbitmq_user`` / ``rabbitmq_password`` / ``enable_ssl`` build
an AMQP URL. ``LUCID_MQ_URL`` sets the default. The password is never logged or shown in a repr.
``MessageQueueClient`` is the sync face (a private event loop thread, so it works inside async code too).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from backends.jsonsafe import loads_bounded
from backends.errors import AlreadySettled, ConfirmTimeout, DeliveryFailed, QueueUnavailable
from backends.loop_thread import LoopThread
from backends.seed_urls import amqp_url
from backends.mq import (
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    PRIORITIES,
    Delivery,
    MessageBroker,
    QueueMessage,
    open_broker,
)

from ..audit import AUDIT_COMPONENT, AuditSink
from .outbox import Outbox
from ..errors import (
    InvalidServiceConfigError,
    LucidMeshError,
    MessageDeliveryError,
    MessageQueueUnavailableError,
    MessageTimeoutError,
    SecurityPolicyViolation,
)
from ..policy.plane_policy import decide_message

MAX_PAYLOAD_BYTES = 1 << 20
_SERVICE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")  # no dots: they separate routing-key words
_PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


def _service(field: str, value: object) -> str:
    if not isinstance(value, str) or not _SERVICE.match(value):
        raise InvalidServiceConfigError(f"{field} must be a service name (lowercase letters, digits, '-'; 1-63)",
                                        details={"field": field})
    return value


def _priority(value: object) -> int:
    if isinstance(value, str) and value.lower() in PRIORITIES:
        return PRIORITIES[value.lower()]
    if type(value) is int and value in _PRIORITY_NAMES:
        return value
    raise InvalidServiceConfigError("priority must be low, normal, high or critical", details={"field": "priority"})


def _ttl(value: object) -> int:
    if type(value) is not int or not MIN_TTL_SECONDS <= value <= MAX_TTL_SECONDS:
        raise InvalidServiceConfigError(f"ttl must be whole seconds from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}",
                                        details={"field": "ttl"})
    return value


MAX_PAYLOAD_DEPTH = 64  # nesting levels of a payload: what a receiver parses without recursion trouble


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
if json.encoder.c_make_encoder is not None:
    # the C encoder JSONEncoder.encode builds anew on every call, built once (a payload is a dict, and
    # _walk has refused cycles and depth before anything is encoded, so no circular-reference markers)
    _c_encode = json.encoder.c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
                                            False, False, False)

    def _dumps(payload: dict[str, Any]) -> str:
        return "".join(_c_encode(payload, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _dumps = _ENCODER.encode


def _body(payload: object) -> bytes:
    if not isinstance(payload, dict):
        raise InvalidServiceConfigError("payload must be a JSON object", details={"field": "payload"})
    bound = _walk(payload)
    if bound < 0:  # a receiver could not parse it back
        raise InvalidServiceConfigError(f"payload nests deeper than {MAX_PAYLOAD_DEPTH} levels",
                                        details={"field": "payload"})
    if bound > MAX_PAYLOAD_BYTES:  # too big before anything is encoded
        raise InvalidServiceConfigError(f"payload is over {MAX_PAYLOAD_BYTES} bytes", details={"field": "payload"})
    try:  # the bound counts a byte per value and every string character: the encoding is at most a few
        body = _dumps(payload).encode("utf-8")  # times the limit, never the 200 MB a payload could be
    except (TypeError, ValueError) as exc:
        raise InvalidServiceConfigError(f"payload is not JSON: {exc}", details={"field": "payload"}) from None
    if len(body) > MAX_PAYLOAD_BYTES:
        raise InvalidServiceConfigError(f"payload is over {MAX_PAYLOAD_BYTES} bytes", details={"field": "payload"})
    return body


_FLAT = frozenset({int, float, bool, type(None)})


def _walk(payload: dict[str, Any]) -> int:
    """One pass over the payload: -1 if it nests deeper than MAX_PAYLOAD_DEPTH, otherwise a lower bound of
    its JSON size (a byte per value plus the characters of every key and string), stopping past the limit."""
    total = 0
    for key, value in payload.items():  # most payloads are one level of scalars: no stack for those
        kind = type(value)
        if kind is str:
            total += len(value) + 1
        elif kind not in _FLAT:
            return _walk_nested(payload)
        else:
            total += 1
        total += (len(key) if type(key) is str else 1) + 1
        if total > MAX_PAYLOAD_BYTES:
            return total
    return total


def _walk_nested(payload: dict[str, Any]) -> int:
    total = 0
    stack: list[tuple[Any, int]] = [(payload, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str:
            total += len(item) + 1
        elif kind is dict or isinstance(item, dict):
            if depth > MAX_PAYLOAD_DEPTH:
                return -1
            for key, value in item.items():
                total += (len(key) if type(key) is str else 1) + 1
                push((value, depth + 1))
        elif kind is list or isinstance(item, (list, tuple)):
            if depth > MAX_PAYLOAD_DEPTH:
                return -1
            total += 1
            for value in item:
                push((value, depth + 1))
        else:
            total += 1
        if total > MAX_PAYLOAD_BYTES:
            return total
    return total


def _correlation_id(value: object) -> str | None:
    """At most 255 bytes of UTF-8 (the AMQP short-string limit), refused rather than cut."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > 255 or \
            not value.isprintable():
        raise InvalidServiceConfigError("correlation_id must be printable text of 1-255 UTF-8 bytes",
                                        details={"field": "correlation_id"})
    return value


_MESSAGE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


def _message_id(value: object) -> str:
    if value is None:
        return str(uuid.uuid4())
    if not isinstance(value, str) or not _MESSAGE_ID.match(value):
        raise InvalidServiceConfigError("message_id must be 1-128 of letters, digits, '.', '_', ':', '-'",
                                        details={"field": "message_id"})
    return value


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is the slow kind, and this is per message
class ReceivedMessage:
    """A message taken from a destination's queue; settle it with ``ack`` or ``reject``."""

    message_id: str
    source: str
    destination: str
    payload: dict[str, Any]
    priority: str
    ttl: int
    timestamp: float
    correlation_id: str | None
    redelivered: bool
    _delivery: Delivery
    #: the broker account that published it, as checked by the broker (RabbitMQ); with one account per
    #: service this, not ``source``, is who sent it. None on the embedded broker.
    sender_account: str | None = None

    async def ack(self) -> None:
        try:  # inline rather than through _translated: one coroutine less per message on the hot path
            await self._delivery.ack()
        except (QueueUnavailable, AlreadySettled) as exc:
            raise _translate(exc) from exc

    async def reject(self, requeue: bool = True) -> None:
        await _translated(self._delivery.reject(requeue))

    def to_dict(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "source": self.source, "destination": self.destination,
                "payload": self.payload, "priority": self.priority, "ttl": self.ttl, "timestamp": self.timestamp,
                "correlation_id": self.correlation_id, "redelivered": self.redelivered,
                "sender_account": self.sender_account}


_TRANSLATED: dict[type[Exception], type[LucidMeshError]] = {
    QueueUnavailable: MessageQueueUnavailableError, DeliveryFailed: MessageDeliveryError,
    ConfirmTimeout: MessageTimeoutError, AlreadySettled: MessageDeliveryError}


def _translate(exc: Exception) -> Exception:
    """The mesh's error for a broker's (backends) error; anything else as it is."""
    for kind, mesh in _TRANSLATED.items():
        if isinstance(exc, kind):
            return mesh(exc.message)  # type: ignore[attr-defined]
    return exc


async def _translated(coro: Any) -> Any:
    try:
        return await coro
    except (QueueUnavailable, DeliveryFailed, ConfirmTimeout, AlreadySettled) as exc:
        raise _translate(exc) from exc


class AsyncMessageQueueClient:
    def __init__(self, url: str | None = None, *, rabbitmq_host: str | None = None, rabbitmq_port: int = 5672,
                 rabbitmq_user: str = "guest", rabbitmq_password: str | None = None, rabbitmq_vhost: str = "/",
                 enable_ssl: bool = False, confirm_timeout: float = 5.0, accept_unsigned: bool = False,
                 audit: AuditSink | None = None, outbox: str | os.PathLike[str] | None = None) -> None:
        """``accept_unsigned``: on RabbitMQ, also hand out messages that carry no broker-checked sender
        account (published without the AMQP user-id, so ``source`` is only what the sender claims); by
        default they are rejected to the dead end with 1301. ``audit``: where refused sends are recorded
        (a witness); every send is held to the plane rules (``decide_message``) before it leaves.
        ``outbox``: a file for messages accepted while the broker is away (``outbox.py``); with it, a send
        the broker cannot take now is kept there and delivered, in order, once the broker is back."""
        if url is None:
            url = amqp_url(rabbitmq_host, rabbitmq_port, rabbitmq_user, rabbitmq_password, rabbitmq_vhost,
                           enable_ssl) if rabbitmq_host else os.environ.get("LUCID_MQ_URL", "memory://")
        try:
            self._broker: MessageBroker = open_broker(url)
        except ValueError as exc:
            raise InvalidServiceConfigError(str(exc), details={"field": "url"}) from None
        self.backend = self._broker.backend
        self.confirm_timeout = confirm_timeout
        self.accept_unsigned = accept_unsigned
        self.audit = audit
        self.policy_denials = 0
        self._allowed: set[tuple[str, str]] = set()  # (source, destination) pairs that passed _check_pair
        self._outbox = Outbox(outbox) if outbox is not None else None
        self._outbox_waiting = 0  # messages in the outbox not yet confirmed by the broker
        self._outbox_wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        # plain counters by destination (a dict increment, not a metric object, on the send path); a
        # Prometheus collector reads them at scrape time (``communication/metrics.py``)
        self.sent: collections.Counter[str] = collections.Counter()
        self.confirmed: collections.Counter[str] = collections.Counter()
        self.received: collections.Counter[str] = collections.Counter()
        self.redelivered: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"AsyncMessageQueueClient(backend={self.backend!r})"

    async def depth(self, destination: str) -> int:
        """Messages waiting for ``destination`` (ready, not yet handed to a consumer)."""
        _service("destination", destination)
        return int(await _translated(self._broker.depth(destination)))

    async def connect(self) -> None:
        if self._outbox is None:
            await _translated(self._broker.connect())
            return
        await self._outbox.open()
        self._outbox_waiting = await self._outbox.count()
        try:
            await _translated(self._broker.connect())
        except MessageQueueUnavailableError:
            pass  # with an outbox a broker that is away is not an error: sends wait on disk for it
        self._flusher = asyncio.create_task(self._flush_forever())
        self._outbox_wake.set()

    async def close(self) -> None:
        """Disconnect. Messages still in the outbox stay in its file for the next client that opens it."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self._broker.close()
        if self._outbox is not None:
            await self._outbox.close()

    @property
    def outbox_waiting(self) -> int:
        """Messages accepted into the outbox and not yet confirmed by the broker."""
        return self._outbox_waiting

    async def flush_outbox(self, timeout: float = 30.0) -> None:
        """Wait until the broker has confirmed everything in the outbox; MessageTimeoutError (1305) if not
        within ``timeout`` (the messages stay in the outbox)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._outbox_waiting:
            if loop.time() >= deadline:
                raise MessageTimeoutError(f"{self._outbox_waiting} message(s) still in the outbox after {timeout} s")
            self._outbox_wake.set()
            await asyncio.sleep(0.02)

    async def _flush_forever(self) -> None:
        """Publish the outbox oldest first, one confirmed message at a time; back off while the broker is away."""
        assert self._outbox is not None
        pause = 0.05
        while True:
            await self._outbox_wake.wait()
            self._outbox_wake.clear()
            while True:
                batch = await self._outbox.pending()
                if not batch:
                    self._outbox_waiting = 0
                    break
                try:
                    for seq, message in batch:
                        try:
                            await self._broker.publish(message, timeout=self.confirm_timeout)
                        except DeliveryFailed as exc:  # refused outright: kept in the file for the operator
                            await self._outbox.refuse(seq, exc.message)
                        else:
                            await self._outbox.remove(seq)
                            self.confirmed[message.destination] += 1
                        self._outbox_waiting = max(self._outbox_waiting - 1, 0)
                    pause = 0.05
                except (QueueUnavailable, ConfirmTimeout):
                    await asyncio.sleep(pause)  # the broker is away (or the outcome unknown): same message again
                    pause = min(pause * 2, 2.0)

    async def __aenter__(self) -> "AsyncMessageQueueClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send_message(self, source: str, destination: str, payload: dict[str, Any], priority: str | int = "normal",
                           ttl: int = DEFAULT_TTL_SECONDS, correlation_id: str | None = None,
                           message_id: str | None = None, *, via_outbox: bool | None = None) -> str:
        """Queue ``payload`` for ``destination``; the message id, once the broker confirmed it.

        After a 1305 (outcome unknown) send again with the same ``message_id``: consumers can then
        recognise a second copy. With an outbox (and ``via_outbox`` not False), a message the broker cannot
        take now is written to the outbox and its id returned: it is delivered once the broker is back,
        after everything accepted before it."""
        if not (type(source) is str and type(destination) is str and (source, destination) in self._allowed):
            self._check_pair(source, destination)
        message = QueueMessage(
            message_id=_message_id(message_id), source=source,
            destination=destination, body=_body(payload), priority=_priority(priority),
            ttl=_ttl(ttl), timestamp=time.time(),
            correlation_id=_correlation_id(correlation_id),
        )
        return await self._send(message, via_outbox)

    def _check_pair(self, source: str, destination: str) -> None:
        """Names and plane rules, once per (source, destination): both checks are pure, and a client sends
        under one broker account. Refusals are not remembered (each is audited)."""
        _service("source", source)
        _service("destination", destination)
        self._check_planes(source, destination)
        if len(self._allowed) >= 4096:
            self._allowed.clear()
        self._allowed.add((source, destination))

    def _check_planes(self, source: str, destination: str) -> None:
        decision = decide_message(source, destination, self._broker.account)
        if not decision.allowed:
            self.policy_denials += 1
            if self.audit is not None:
                self.audit.log(AUDIT_COMPONENT, "message_refused", {
                    "source": source, "destination": destination, "account": self._broker.account,
                    "reason": decision.reason, "error_code": SecurityPolicyViolation.error_code}, severity="WARN")
            raise SecurityPolicyViolation(f"message {source} -> {destination} refused: {decision.reason}",
                                          details={"source": source, "destination": destination})

    async def _send(self, message: QueueMessage, via_outbox: bool | None) -> str:
        self.sent[message.destination] += 1
        if self._outbox is None or via_outbox is False:
            try:
                await self._broker.publish(message, timeout=self.confirm_timeout)
            except (QueueUnavailable, DeliveryFailed, ConfirmTimeout) as exc:
                raise _translate(exc) from exc
            self.confirmed[message.destination] += 1
            return message.message_id
        if self._flusher is None:
            raise MessageQueueUnavailableError("message queue client is not connected")
        if not self._outbox_waiting:
            try:
                await self._broker.publish(message, timeout=self.confirm_timeout)
                self.confirmed[message.destination] += 1
                return message.message_id
            except (QueueUnavailable, ConfirmTimeout):
                pass  # nothing sent, or the outcome unknown: the outbox keeps it (a resend keeps its id)
            except DeliveryFailed as exc:  # refused outright: the outbox cannot help
                raise MessageDeliveryError(exc.message) from exc
        if await self._outbox.add(message):  # type: ignore[union-attr]
            self._outbox_waiting += 1  # a resend of a waiting message is not a second one to wait for
        self._outbox_wake.set()
        return message.message_id

    async def send_messages(self, source: str, destination: str, payloads: list[dict[str, Any]],
                            priority: str | int = "normal", ttl: int = DEFAULT_TTL_SECONDS) -> list[str]:
        """Queue several payloads for one destination, in order; their message ids, once the broker
        confirmed them all. Every payload is validated before any is sent. The ids share a random prefix
        (a uuid4 per batch) and end with the message's index."""
        if not isinstance(payloads, list) or not payloads:
            raise InvalidServiceConfigError("payloads must be a non-empty list", details={"field": "payloads"})
        if self._outbox is not None:  # each through the outbox's rules, in order
            return [await self.send_message(source, destination, p, priority, ttl) for p in payloads]
        self._check_pair(source, destination)
        level, seconds, now = _priority(priority), _ttl(ttl), time.time()
        prefix = uuid.uuid4().hex
        messages = [QueueMessage(f"{prefix}-{i}", source, destination, _body(p), level, seconds, now)
                    for i, p in enumerate(payloads)]
        self.sent[destination] += len(messages)
        await _translated(self._broker.publish_many(messages, timeout=self.confirm_timeout))
        self.confirmed[destination] += len(messages)
        return [m.message_id for m in messages]

    async def receive_many(self, destination: str, max_messages: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Up to ``max_messages`` (highest priority first): waits up to ``timeout`` for the first, then
        takes what is already there. At least once, as ``receive``: settle each (or ``ack_many``)."""
        _service("destination", destination)
        if type(max_messages) is not int or not 1 <= max_messages <= 10_000:
            raise InvalidServiceConfigError("max_messages must be 1 to 10000", details={"field": "max_messages"})
        deliveries = await _translated(self._broker.get_many(destination, max_messages, timeout=timeout))
        out: list[ReceivedMessage] = []
        failed: MessageDeliveryError | None = None
        accept = self._accept
        for delivery in deliveries:
            accepted = accept(destination, delivery)
            if accepted is not None:
                out.append(accepted)
            else:  # rejected to the dead end; the rest are still handed out
                refused = await self._refuse(destination, delivery)
                failed = failed or refused
        if failed is not None and not out:
            raise failed
        return out

    async def ack_many(self, messages: list[ReceivedMessage]) -> None:
        """Acknowledge each, in order (the broker settles a batch at once where it can); a message already
        settled stops the batch there with 1301, as acknowledging them one by one would."""
        try:
            await self._broker.ack_many([m._delivery for m in messages])
        except (QueueUnavailable, AlreadySettled) as exc:
            raise _translate(exc) from exc

    async def receive(self, destination: str, timeout: float = 5.0) -> ReceivedMessage | None:
        """The next message for ``destination`` (highest priority first), or None after ``timeout`` seconds.

        At least once: the message stays the caller's until it calls ``ack`` (or ``reject``); if the
        caller dies first it is delivered again. A broker that is down is 1303, as on send."""
        _service("destination", destination)
        delivery = await _translated(self._broker.get(destination, timeout=timeout))
        if delivery is None:
            return None
        return await self._received(destination, delivery)

    def _accept(self, destination: str, delivery: Delivery) -> ReceivedMessage | None:
        """The message to hand out, or None when it must go to the dead end (``_refuse``): no awaits, so a
        batch is taken without a coroutine per message."""
        m = delivery.message
        self.received[destination] += 1
        if delivery.redelivered:
            self.redelivered[destination] += 1
        if m.sender_account is None and self.backend == "rabbitmq" and not self.accept_unsigned:
            return None
        try:
            payload = loads_bounded(m.body, MAX_PAYLOAD_DEPTH)
        except ValueError:  # not sent by this client: to the queue's dead end, not to the caller
            return None
        if not isinstance(payload, dict):  # this client sends objects only; a consumer may rely on a dict
            return None
        return ReceivedMessage(m.message_id, m.source, m.destination, payload,
                               _PRIORITY_NAMES.get(m.priority, str(m.priority)), m.ttl, m.timestamp,
                               m.correlation_id, delivery.redelivered, delivery, m.sender_account)

    async def _refuse(self, destination: str, delivery: Delivery) -> MessageDeliveryError:
        """Reject a message ``_accept`` would not hand out (to the dead end); the error to report."""
        m = delivery.message
        await _translated(delivery.reject(requeue=False))
        if m.sender_account is None and self.backend == "rabbitmq" and not self.accept_unsigned:
            return MessageDeliveryError(f"message {m.message_id} on {destination} carries no broker-checked sender "
                                        f"(its source {m.source!r} is only a claim); rejected")
        return MessageDeliveryError(f"message {m.message_id} on {destination} is not a JSON object; rejected")

    async def _received(self, destination: str, delivery: Delivery) -> ReceivedMessage:
        accepted = self._accept(destination, delivery)
        if accepted is None:
            raise await self._refuse(destination, delivery)
        return accepted

    async def receive_message(self, destination: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """Receive and acknowledge one message: **at most once** (a crash after it returns loses the
        message; use ``receive`` and ``ack`` for at least once). None after ``timeout``."""
        received = await self.receive(destination, timeout)
        if received is None:
            return None
        await received.ack()
        return received.to_dict()


class SyncReceivedMessage:
    """A received message for the sync client: the same fields, and ``ack``/``reject`` that block."""

    def __init__(self, received: ReceivedMessage, client: "MessageQueueClient") -> None:
        self._received = received
        self._client = client
        self.settled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._received, name)

    def ack(self) -> None:
        self._client._run(self._received.ack())
        self.settled = True

    def reject(self, requeue: bool = True) -> None:
        self._client._run(self._received.reject(requeue))
        self.settled = True

    def to_dict(self) -> dict[str, Any]:
        return self._received.to_dict()


class MessageQueueClient:
    """The sync client of seed 000: ``connect``, ``send_message``, ``receive_message``, ``close``."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        self._client = AsyncMessageQueueClient(url, **options)
        self.backend = self._client.backend
        self._loop: LoopThread | None = None

    def __repr__(self) -> str:
        return f"MessageQueueClient(backend={self.backend!r})"

    def _run(self, coro: Any, timeout: float | None = 60.0) -> Any:
        if self._loop is None:
            coro.close()
            raise MessageQueueUnavailableError("message queue client is not connected")
        return self._loop.run(coro, timeout)

    def connect(self) -> None:
        if self._loop is None:
            self._loop = LoopThread("lucid-mq")
        try:
            self._run(self._client.connect())
        except LucidMeshError:
            self.close()
            raise

    def send_message(self, source: str, destination: str, payload: dict[str, Any], priority: str | int = "normal",
                     ttl: int = DEFAULT_TTL_SECONDS, correlation_id: str | None = None,
                     message_id: str | None = None) -> str:
        return self._run(self._client.send_message(source, destination, payload, priority, ttl, correlation_id,
                                                   message_id))

    def receive_message(self, destination: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """One message, acknowledged before it returns: **at most once**. For at least once use
        ``receive`` (then ``ack``) or ``with client.receiving(destination) as message:``."""
        return self._run(self._client.receive_message(destination, timeout), timeout + 30.0)

    def receive(self, destination: str, timeout: float = 5.0) -> "SyncReceivedMessage | None":
        """**At least once**: the message is redelivered unless ``ack`` is called (a crash before it, or
        ``reject(requeue=True)``, gives it back)."""
        received = self._run(self._client.receive(destination, timeout), timeout + 30.0)
        return None if received is None else SyncReceivedMessage(received, self)

    @contextlib.contextmanager
    def receiving(self, destination: str, timeout: float = 5.0) -> Iterator["SyncReceivedMessage | None"]:
        """At least once, as a block: acknowledged when the block ends normally, returned to the queue
        (requeued) when it raises."""
        message = self.receive(destination, timeout)
        try:
            yield message
        except BaseException:
            if message is not None and not message.settled:
                message.reject(requeue=True)
            raise
        if message is not None and not message.settled:
            message.ack()

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            try:
                loop.run(self._client.close())
            finally:
                loop.stop()

    def __enter__(self) -> "MessageQueueClient":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
