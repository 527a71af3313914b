"""One contract for the inter-service message queue: the embedded broker and a real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from lucid.service_mesh.communication import AsyncMessageQueueClient
from lucid.service_mesh.errors import (
    InvalidServiceConfigError,
    MessageDeliveryError,
    MessageQueueUnavailableError,
    SecurityPolicyViolation,
)


async def test_a_message_arrives_whole(mq_clients, service: str) -> None:
    sender, receiver = await mq_clients(), await mq_clients()
    before = time.time()
    mid = await sender.send_message("api-gateway", service, {"action": "create_session", "n": [1, 2.5, None],
                                                             "text": "naïve ✓"},
                                    priority="high", ttl=120, correlation_id="corr-1")
    got = await receiver.receive(service, timeout=10)
    assert got is not None
    assert (got.message_id, got.source, got.destination) == (mid, "api-gateway", service)
    assert got.payload == {"action": "create_session", "n": [1, 2.5, None], "text": "naïve ✓"}
    assert (got.priority, got.ttl, got.correlation_id, got.redelivered) == ("high", 120, "corr-1", False)
    assert before - 1 <= got.timestamp <= time.time() + 1
    # who published it, as the broker checked it: the login on RabbitMQ, nothing on the embedded broker
    assert got.sender_account == ("guest" if sender.backend == "rabbitmq" else None)
    await got.ack()
    assert await receiver.receive(service, timeout=0.3) is None


async def test_higher_priority_first_and_fifo_within_a_priority(mq_clients, service: str) -> None:
    sender = await mq_clients()
    order = [("low", 1), ("normal", 1), ("critical", 1), ("normal", 2), ("high", 1), ("low", 2), ("critical", 2)]
    for priority, n in order:
        await sender.send_message("node-management", service, {"p": priority, "n": n}, priority=priority)
    receiver = await mq_clients()
    got = []
    for _ in order:
        m = await receiver.receive(service, timeout=10)
        assert m is not None
        got.append((m.payload["p"], m.payload["n"]))
        await m.ack()
    assert got == [("critical", 1), ("critical", 2), ("high", 1), ("normal", 1), ("normal", 2), ("low", 1), ("low", 2)]


async def test_an_expired_message_is_never_delivered(mq_clients, service: str) -> None:
    sender = await mq_clients()
    await sender.send_message("api-gateway", service, {"short": True}, ttl=1)
    await sender.send_message("api-gateway", service, {"short": False}, ttl=3600)
    await asyncio.sleep(1.5)  # the first message's TTL passes while it waits in the queue
    receiver = await mq_clients()
    got = await receiver.receive(service, timeout=10)
    assert got is not None and got.payload == {"short": False}
    await got.ack()
    assert await receiver.receive(service, timeout=0.3) is None


async def test_an_unsettled_message_returns_when_its_consumer_closes(mq_clients, service: str) -> None:
    sender, first = await mq_clients(), await mq_clients()
    mid = await sender.send_message("api-gateway", service, {"job": 1})
    taken = await first.receive(service, timeout=10)
    assert taken is not None and taken.message_id == mid
    await first.close()  # crashed before acknowledging
    second = await mq_clients()
    again = await second.receive(service, timeout=10)
    assert again is not None and again.message_id == mid and again.redelivered
    await again.ack()
    assert await second.receive(service, timeout=0.3) is None


async def test_acknowledged_messages_stay_acknowledged_when_the_consumer_closes_at_once(mq_clients,
                                                                                       service: str) -> None:
    """An ack returns before its frame has left the client: closing the client right after the last ack
    must still deliver every ack (nothing acknowledged comes back), and what was not acked comes back."""
    sender, consumer = await mq_clients(), await mq_clients()
    for n in range(200):
        await sender.send_message("api-gateway", service, {"n": n})
    for _ in range(150):
        m = await consumer.receive(service, timeout=10)
        assert m is not None
        await m.ack()
    await consumer.close()  # at once: no await between the last ack and the close
    reader = await mq_clients()
    rest = []
    while (m := await reader.receive(service, timeout=2)) is not None:
        rest.append(m.payload["n"])
        await m.ack()
    assert rest == list(range(150, 200))


async def test_reject_requeues_or_drops(mq_clients, service: str) -> None:
    sender, receiver = await mq_clients(), await mq_clients()
    await sender.send_message("api-gateway", service, {"k": "requeued"})
    m = await receiver.receive(service, timeout=10)
    await m.reject(requeue=True)
    again = await receiver.receive(service, timeout=10)
    assert again is not None and again.payload == {"k": "requeued"} and again.redelivered
    await again.reject(requeue=False)
    assert await receiver.receive(service, timeout=0.3) is None


async def test_destinations_are_separate_queues(mq_clients, service: str) -> None:
    sender, receiver = await mq_clients(), await mq_clients()
    other = service + "-b"
    await sender.send_message("api-gateway", other, {"to": "b"})
    await sender.send_message("api-gateway", service, {"to": "a"})
    a = await receiver.receive(service, timeout=10)
    b = await receiver.receive(other, timeout=10)
    assert (a.payload, b.payload) == ({"to": "a"}, {"to": "b"})
    await a.ack()
    await b.ack()


async def test_concurrent_senders_lose_and_duplicate_nothing(mq_clients, service: str) -> None:
    senders = [await mq_clients() for _ in range(3)]
    ids = await asyncio.gather(*(s.send_message("api-gateway", service, {"i": i, "s": k})
                                 for k, s in enumerate(senders) for i in range(100)))
    assert len(set(ids)) == 300
    receiver = await mq_clients()
    seen = []
    while (m := await receiver.receive(service, timeout=1.0)) is not None:
        seen.append(m.message_id)
        await m.ack()
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize("args, field", [
    (("api-gateway", "Blockchain_Core", {}), "destination"),
    (("api gateway", "blockchain-core", {}), "source"),
    (("api-gateway", "a.b", {}), "destination"),
    (("api-gateway", "blockchain-core", ["not", "an", "object"]), "payload"),
    (("api-gateway", "blockchain-core", {"x": float("nan")}), "payload"),
    (("api-gateway", "blockchain-core", {"x": object()}), "payload"),
    (("api-gateway", "blockchain-core", {"x": "y" * (1 << 20)}), "payload"),
])
async def test_invalid_messages_are_refused_before_anything_is_sent(mq_clients, args, field: str) -> None:
    client = await mq_clients()
    with pytest.raises(InvalidServiceConfigError) as err:
        await client.send_message(*args)
    assert err.value.error_code == "LUCID_ERR_1004" and err.value.details["field"] == field


@pytest.mark.parametrize("kw", [{"priority": "urgent"}, {"priority": 3}, {"priority": True}, {"ttl": 0},
                                {"ttl": 86_401}, {"ttl": 1.5}, {"ttl": "60"}])
async def test_priority_and_ttl_are_checked(mq_clients, service: str, kw: dict) -> None:
    client = await mq_clients()
    with pytest.raises(InvalidServiceConfigError):
        await client.send_message("api-gateway", service, {"ok": True}, **kw)
    assert await client.receive(service, timeout=0.2) is None  # nothing was queued


async def test_a_closed_client_reports_the_queue_unavailable_not_sent(mq_url: str, service: str) -> None:
    client = AsyncMessageQueueClient(mq_url)
    with pytest.raises(MessageQueueUnavailableError) as err:
        await client.send_message("api-gateway", service, {"x": 1})
    assert err.value.error_code == "LUCID_ERR_1303"
    await client.connect()
    await client.close()
    with pytest.raises(MessageQueueUnavailableError):
        await client.send_message("api-gateway", service, {"x": 1})


# ---------------------------------------------------------------- the message-queue issue's items, both engines
async def test_requeued_messages_keep_their_place(mq_clients, service: str) -> None:
    """A consumer that held messages 0-3 closes, and one of 4-11 is rejected with requeue: the next
    consumer still gets 0..11 in order (the embedded broker put them at the end, in set order)."""
    sender, holder = await mq_clients(), await mq_clients()
    for n in range(12):
        await sender.send_message("api-gateway", service, {"n": n})
    held = [await holder.receive(service, timeout=10) for _ in range(4)]
    assert [m.payload["n"] for m in held if m] == [0, 1, 2, 3]
    await holder.close()  # unsettled: all four go back
    reader = await mq_clients()
    got = []
    rejected = False
    while len(got) < 12:
        m = await reader.receive(service, timeout=10)
        assert m is not None
        if m.payload["n"] == 5 and not rejected:
            rejected = True
            await m.reject(requeue=True)  # back to its place, not to the end
            continue
        got.append(m.payload["n"])
        await m.ack()
    assert got == list(range(12))


async def test_a_critical_message_overtakes_low_ones_for_a_subscribed_consumer(mq_clients, service: str) -> None:
    """Ten low messages, then a critical one, sent to a destination whose consumer subscribed before."""
    receiver, sender = await mq_clients(), await mq_clients()
    assert await receiver.receive(service, timeout=0.2) is None  # subscribed: RabbitMQ would push to it now
    for n in range(10):
        await sender.send_message("api-gateway", service, {"n": n}, priority="low")
    await sender.send_message("api-gateway", service, {"n": "critical"}, priority="critical")
    got = []
    for _ in range(11):
        m = await receiver.receive(service, timeout=10)
        assert m is not None
        got.append(m.payload["n"])
        await m.ack()
    assert got == ["critical", *range(10)]


async def test_a_critical_message_overtakes_low_ones_for_a_consumer_taking_them(mq_clients, service: str) -> None:
    """A consumer is busy with the first of ten low messages when a critical one arrives: it is next."""
    receiver, sender = await mq_clients(), await mq_clients()
    for n in range(10):
        await sender.send_message("api-gateway", service, {"n": n}, priority="low")
    first = await receiver.receive(service, timeout=10)  # the window may now hold the other nine
    assert first is not None and first.payload["n"] == 0
    await sender.send_message("api-gateway", service, {"n": "critical"}, priority="critical")
    await first.ack()
    nxt = await receiver.receive(service, timeout=10)
    assert nxt is not None and nxt.payload["n"] == "critical"
    await nxt.ack()


async def test_an_idle_instance_does_not_hoard_its_destinations_messages(mq_clients, service: str) -> None:
    """Two instances of one service: the first takes one message and then does nothing; the second,
    receiving, gets every other message (the first holds only the one it took)."""
    sender, idle, busy = await mq_clients(), await mq_clients(), await mq_clients()
    for n in range(99):
        await sender.send_message("api-gateway", service, {"n": n})
    taken = await idle.receive(service, timeout=10)
    assert taken is not None
    got = []
    while (m := await busy.receive(service, timeout=3)) is not None:
        got.append(m.payload["n"])
        await m.ack()
    assert len(got) == 98 and taken.payload["n"] not in got
    assert sorted(got + [taken.payload["n"]]) == list(range(99))


async def test_a_message_that_expires_in_a_waiting_consumers_buffer_is_not_delivered(mq_clients, service: str) -> None:
    receiver = await mq_clients()
    assert await receiver.receive(service, timeout=0.2) is None  # subscribed now: messages are pushed to it
    sender = await mq_clients()
    await sender.send_message("api-gateway", service, {"short": True}, ttl=1)
    await sender.send_message("api-gateway", service, {"short": False}, ttl=3600)
    await asyncio.sleep(1.5)  # the condition under test: the first message's TTL passes before it is taken
    got = await receiver.receive(service, timeout=10)
    assert got is not None and got.payload == {"short": False}
    await got.ack()


async def test_a_second_settlement_is_refused_with_a_code(mq_clients, service: str) -> None:
    sender, receiver = await mq_clients(), await mq_clients()
    await sender.send_message("api-gateway", service, {"x": 1})
    got = await receiver.receive(service, timeout=10)
    assert got is not None
    await got.ack()
    for settle in (got.ack(), got.reject(requeue=True)):
        with pytest.raises(MessageDeliveryError) as caught:
            await settle
        assert "already" in caught.value.message and "redelivered" not in caught.value.message


@pytest.mark.parametrize("cid, ok", [("é" * 127, True), ("é" * 128, False), ("", False), ("a\nb", False), (7, False)])
async def test_correlation_ids_are_bounded_in_bytes_not_cut(mq_clients, service: str, cid, ok: bool) -> None:
    client = await mq_clients()
    if not ok:
        with pytest.raises(InvalidServiceConfigError):
            await client.send_message("api-gateway", service, {"x": 1}, correlation_id=cid)
        assert await client.receive(service, timeout=0.2) is None
        return
    await client.send_message("api-gateway", service, {"x": 1}, correlation_id=cid)
    got = await client.receive(service, timeout=10)
    assert got is not None and got.correlation_id == cid
    await got.ack()


async def test_a_huge_payload_is_refused_without_being_encoded(mq_clients, service: str) -> None:
    import tracemalloc

    client = await mq_clients()
    huge = {"blob": "x" * (64 << 20)}
    tracemalloc.start()
    try:
        with pytest.raises(InvalidServiceConfigError):
            await client.send_message("api-gateway", service, huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes allocated to refuse it"
    many = {"items": ["y" * 1000] * 2000}  # over the limit only once encoded
    with pytest.raises(InvalidServiceConfigError):
        await client.send_message("api-gateway", service, many)


async def test_a_down_broker_is_the_same_code_on_receive_as_on_send(mq_url: str, service: str) -> None:
    client = AsyncMessageQueueClient(mq_url)
    for call in (client.send_message("api-gateway", service, {"x": 1}), client.receive(service, timeout=0.1)):
        with pytest.raises(MessageQueueUnavailableError) as caught:
            await call
        assert caught.value.error_code == "LUCID_ERR_1303"


def test_the_sync_client_offers_at_least_once(mq_url: str, service: str) -> None:
    from lucid.service_mesh.communication.message_queue import MessageQueueClient

    with MessageQueueClient(mq_url) as sender:
        sender.send_message("api-gateway", service, {"n": 1})
    crashed = MessageQueueClient(mq_url)
    crashed.connect()
    got = crashed.receive(service, timeout=10)
    assert got is not None and got.payload == {"n": 1}
    crashed.close()  # never acknowledged: back to the queue
    with MessageQueueClient(mq_url) as worker:
        with pytest.raises(RuntimeError):
            with worker.receiving(service, timeout=10) as message:
                assert message is not None and message.redelivered
                raise RuntimeError("the work failed")  # requeued
        with worker.receiving(service, timeout=10) as message:
            assert message is not None and message.payload == {"n": 1}
        assert worker.receive_message(service, timeout=0.3) is None  # acknowledged when the block ended


# ---------------------------------------------------------------- plane policy on messages (SPEC's plane rules)
PLANE_CASES = [
    ("api-gateway", "tron-payment", True),  # the one way into the wallet plane
    ("node-management", "tron-payment", False),
    ("api-gateway", "blockchain-core", True),  # ops may address chain (seed 000's create_session)
    ("blockchain-core", "api-gateway", False),
    ("tron-payment", "blockchain-core", False),
    ("tron-payment", "api-gateway", False),
    ("storage-database", "session-management", False),
    ("blockchain-core", "storage-database", True),  # same plane
    ("node-management", "session-management", True),
    ("OWN", "tron-payment", False),  # a service outside the plane map never reaches wallet or chain
    ("blockchain-core", "OWN", False),
    ("api-gateway", "OWN", True),
]


class _Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict]] = []

    def log(self, component: str, operation: str, params: dict | None = None, severity: str = "INFO",
            trace_id: str | None = None) -> None:
        self.entries.append((component, operation, params or {}))


@pytest.mark.parametrize("source, destination, allowed", PLANE_CASES)
async def test_plane_rules_decide_who_may_message_whom(mq_url: str, service: str, source: str, destination: str,
                                                        allowed: bool) -> None:
    source, destination = (service if s == "OWN" else s for s in (source, destination))
    audit = _Audit()
    async with AsyncMessageQueueClient(mq_url, confirm_timeout=10.0, audit=audit) as client:
        marker = uuid.uuid4().hex
        if allowed:
            await client.send_message(source, destination, {"marker": marker})
            while (m := await client.receive(destination, timeout=10)) is not None:  # a shared broker: find ours
                await m.ack()
                if m.payload.get("marker") == marker:
                    break
            assert m is not None and m.source == source
            assert audit.entries == []
            return
        for _ in range(2):  # a refusal is not remembered as a decision: each attempt is decided and audited
            with pytest.raises(SecurityPolicyViolation) as caught:
                await client.send_message(source, destination, {"marker": marker})
            assert caught.value.error_code == "LUCID_ERR_1203"
        with pytest.raises(SecurityPolicyViolation):  # nor is a batch let through by an earlier allowed send
            await client.send_messages(source, destination, [{"marker": marker}])
        assert [(c, op, p["source"], p["destination"], p["error_code"]) for c, op, p in audit.entries] == [
            ("lucid.service_mesh", "message_refused", source, destination, "LUCID_ERR_1203")] * 3
        while (m := await client.receive(destination, timeout=0.3)) is not None:  # nothing of ours was queued
            await m.ack()
            assert m.payload.get("marker") != marker


@pytest.mark.rabbitmq
async def test_a_service_account_may_send_only_as_itself(rabbitmq_server) -> None:
    """node-management's broker account cannot put api-gateway's name on a message to tron-payment."""
    import secrets

    password = secrets.token_urlsafe(16)
    try:
        base = rabbitmq_server.add_service_user("node-management", password)
    except Exception:  # noqa: BLE001 - the session's broker already has the account from an earlier run
        rabbitmq_server.rabbitmqctl("change_password", "node-management", stdin=password + "\n")
        base = f"amqp://node-management@127.0.0.1:{rabbitmq_server.port}/"
    url = base.replace("node-management@", f"node-management:{password}@")
    audit = _Audit()
    async with AsyncMessageQueueClient(url, audit=audit) as forger:
        with pytest.raises(SecurityPolicyViolation) as caught:
            await forger.send_message("api-gateway", "tron-payment", {"pay": 1})
        assert "may not send as" in caught.value.message
        with pytest.raises(SecurityPolicyViolation):  # and as itself the rule still holds
            await forger.send_message("node-management", "tron-payment", {"pay": 1})
    assert [op for _, op, _ in audit.entries] == ["message_refused", "message_refused"]


async def test_batches_keep_order_validate_first_and_settle_each(mq_clients, service: str) -> None:
    sender, receiver = await mq_clients(), await mq_clients()
    with pytest.raises(InvalidServiceConfigError):  # one bad payload: nothing of the batch is sent
        await sender.send_messages("api-gateway", service, [{"n": 0}, ["not", "an", "object"]])
    ids = await sender.send_messages("api-gateway", service, [{"n": i} for i in range(200)], priority="high")
    assert len(set(ids)) == 200
    got = []
    while len(got) < 200:
        batch = await receiver.receive_many(service, 64, timeout=10)
        assert batch and len(batch) <= 64
        got.extend(batch)
        if len(got) == 64:  # one of them is given back: it comes again, in its place
            await batch[-1].reject(requeue=True)
            got.pop()
            await receiver.ack_many(batch[:-1])
        else:
            await receiver.ack_many(batch)
    assert [m.payload["n"] for m in got] == list(range(200)) and [m.message_id for m in got] == ids
    assert await receiver.receive_many(service, 10, timeout=0.3) == []


async def test_depth_counts_waiting_messages_and_the_counters_follow(mq_clients, service: str) -> None:
    """What the metrics read: queue depth (ready messages, not those handed out) and per-destination
    counts of sent, confirmed, received and redelivered messages, the same on both engines."""
    sender, receiver = await mq_clients(), await mq_clients()
    assert await receiver.depth(service) == 0
    for i in range(3):
        await sender.send_message("api-gateway", service, {"i": i})
    assert await receiver.depth(service) == 3
    got = await receiver.receive(service, timeout=10)
    assert got is not None
    # handed out: no longer waiting (RabbitMQ's receiver gives back its prefetch window within 50 ms)
    assert await _eventually(lambda: receiver.depth(service), 2)
    await receiver.close()  # unsettled: back to the queue, then delivered again
    again = await mq_clients()
    back = await again.receive(service, timeout=10)
    assert back is not None and back.redelivered
    await back.ack()
    assert (sender.sent[service], sender.confirmed[service]) == (3, 3)
    assert (again.received[service], again.redelivered[service]) == (1, 1)
    assert await _eventually(lambda: again.depth(service), 2)


async def _eventually(read, want: int, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (got := await read()) != want and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return got == want
