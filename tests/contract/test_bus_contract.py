"""One contract for every bus implementation (embedded and real NATS)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from backends.bus import Message, MessageBus, open_bus
from backends.errors import InvalidBackendURL, NoResponders, RemoteError


class Boom(Exception):
    error_code = "IF_ERR_TEST"


def subject() -> str:
    return f"t.{uuid.uuid4().hex[:10]}"


async def test_request_reaches_the_subscriber_and_returns_its_reply(bus: MessageBus) -> None:
    s = subject()
    seen: list[bytes] = []

    def handler(msg: Message) -> bytes:
        seen.append(msg.data)
        return b"ack:" + msg.data

    await bus.subscribe(s + ".inbox", handler)
    assert await bus.request(s + ".inbox", b"hello") == b"ack:hello"
    assert seen == [b"hello"]


async def test_async_handlers_are_awaited(bus: MessageBus) -> None:
    s = subject()

    async def handler(msg: Message) -> bytes:
        await asyncio.sleep(0)
        return msg.data.upper()

    await bus.subscribe(s, handler)
    assert await bus.request(s, b"abc") == b"ABC"


async def test_request_without_subscriber_is_no_responders(bus: MessageBus) -> None:
    with pytest.raises(NoResponders):
        await bus.request(subject(), b"x", timeout=1)


async def test_handler_error_travels_back_with_its_code(bus: MessageBus) -> None:
    s = subject()

    def handler(msg: Message) -> bytes:
        raise Boom("queue full")

    await bus.subscribe(s, handler)
    with pytest.raises(RemoteError) as info:
        await bus.request(s, b"x")
    assert info.value.remote_code == "IF_ERR_TEST"
    assert "queue full" in info.value.message


async def test_publish_reaches_every_subscriber_and_wildcards(bus: MessageBus) -> None:
    s = subject()
    got: dict[str, list[bytes]] = {"a": [], "b": [], "star": [], "tail": []}
    done = asyncio.Event()

    def collector(name: str):  # type: ignore[no-untyped-def]
        def handler(msg: Message) -> None:
            got[name].append(msg.data)
            if all(len(v) == 1 for v in got.values()):
                done.set()

        return handler

    await bus.subscribe(s + ".events.x", collector("a"))
    await bus.subscribe(s + ".events.x", collector("b"))
    await bus.subscribe(s + ".events.*", collector("star"))
    await bus.subscribe(s + ".>", collector("tail"))
    await bus.publish(s + ".events.x", b"e1")
    await bus.flush()
    await asyncio.wait_for(done.wait(), 5)
    assert got == {"a": [b"e1"], "b": [b"e1"], "star": [b"e1"], "tail": [b"e1"]}


async def test_queue_group_delivers_each_message_once(bus: MessageBus) -> None:
    s = subject()
    counts = {"w1": 0, "w2": 0}
    total = asyncio.Event()

    def worker(name: str):  # type: ignore[no-untyped-def]
        def handler(msg: Message) -> None:
            counts[name] += 1
            if sum(counts.values()) == 50:
                total.set()

        return handler

    await bus.subscribe(s, worker("w1"), queue="workers")
    await bus.subscribe(s, worker("w2"), queue="workers")
    for i in range(50):
        await bus.publish(s, str(i).encode())
    await bus.flush()
    await asyncio.wait_for(total.wait(), 5)
    await asyncio.sleep(0.05)  # let any duplicate arrive before counting
    assert sum(counts.values()) == 50


async def test_unsubscribe_stops_delivery(bus: MessageBus) -> None:
    s = subject()
    sub = await bus.subscribe(s, lambda m: b"ok")
    assert await bus.request(s, b"1") == b"ok"
    await sub.unsubscribe()
    await bus.flush()
    with pytest.raises(NoResponders):
        await bus.request(s, b"2", timeout=1)


async def test_invalid_subjects_are_refused(bus: MessageBus) -> None:
    for bad in ("", "a..b", "has space", "a.*"):
        with pytest.raises(InvalidBackendURL):
            await bus.publish(bad, b"x")


def test_bad_bus_urls_are_refused() -> None:
    for url in ("nats", "kafka://x", "nats://"):
        with pytest.raises(InvalidBackendURL):
            open_bus(url)


async def test_a_flood_of_requests_all_get_their_replies(bus: MessageBus) -> None:
    """Thousands of requests started at once each get their reply within their own timeout: a request's
    clock must not run while the requester's event loop is still busy starting the others."""
    s = subject()

    def handler(msg: Message) -> bytes:
        return msg.data

    await bus.subscribe(s, handler)
    n = 8000
    replies = await asyncio.gather(*(bus.request(s, str(i).encode(), timeout=0.75) for i in range(n)))
    assert replies == [str(i).encode() for i in range(n)]
