"""RabbitMQ as deployed: a broker account per service. A service may send to any other (its messages
carry its account, checked by the broker) but can read only its own queue."""

from __future__ import annotations

import uuid

import pytest

from lucid.service_mesh.communication.message_queue import AsyncMessageQueueClient
from lucid.service_mesh.errors import LucidMeshError as LucidError

pytestmark = [pytest.mark.security, pytest.mark.rabbitmq]


async def test_a_service_reads_only_its_own_queue(rabbitmq_server) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:6]
    a, b = f"svc-a-{tag}", f"svc-b-{tag}"
    urls = {}
    for name in (a, b):
        password = f"pw-{uuid.uuid4().hex}"
        url = rabbitmq_server.add_service_user(name, password)
        assert password not in url
        urls[name] = url.replace(f"amqp://{name}@", f"amqp://{name}:{password}@")
    sender, receiver = AsyncMessageQueueClient(urls[a]), AsyncMessageQueueClient(urls[b])
    await sender.connect()
    await receiver.connect()
    try:
        message_id = await sender.send_message(a, b, {"hello": "b"})
        got = await receiver.receive(b, timeout=5)
        assert got is not None and got.message_id == message_id and got.sender_account == a
        await got.ack()
        await sender.send_message(a, b, {"secret": "for b only"})
        with pytest.raises(LucidError) as caught:  # a's account may not consume b's queue
            await sender.receive(b, timeout=2)
        assert "ACCESS_REFUSED" in caught.value.message or "access" in caught.value.message.lower()
        kept = await receiver.receive(b, timeout=5)  # still there for b
        assert kept is not None and kept.payload == {"secret": "for b only"}
        await kept.ack()
    finally:
        await sender.close()
        await receiver.close()
    wrong = AsyncMessageQueueClient(urls[a].replace(":pw-", ":bad-"))
    with pytest.raises(LucidError):
        await wrong.connect()
    await wrong.close()


async def test_a_message_without_a_broker_checked_sender_is_refused_by_default(rabbitmq_server) -> None:  # type: ignore[no-untyped-def]
    """Published without the AMQP user-id, a message's source is only a claim: consumers need not know
    to check, the client rejects it (or hands it out only when asked to accept unsigned messages)."""
    import aio_pika

    from lucid.service_mesh.communication.message_queue import MessageDeliveryError

    service = f"svc-u-{uuid.uuid4().hex[:6]}"
    consumer = AsyncMessageQueueClient(rabbitmq_server.amqp_url)
    lenient = AsyncMessageQueueClient(rabbitmq_server.amqp_url, accept_unsigned=True)
    await consumer.connect()
    await lenient.connect()
    await consumer.send_message("api-gateway", service, {"declare": True})  # declares the queue
    declared = await consumer.receive(service, timeout=5)
    assert declared is not None and declared.sender_account == "guest"
    await declared.ack()
    connection = await aio_pika.connect(rabbitmq_server.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange("lucid.inter-service")
        for n in range(2):
            await exchange.publish(aio_pika.Message(body=b'{"forged": true}', message_id=f"unsigned-{n}",
                                                    headers={"source": "payments", "destination": service,
                                                             "ttl": 60}),
                                   routing_key=f"{service}.payments")
    finally:
        await connection.close()
    try:
        with pytest.raises(MessageDeliveryError) as caught:
            await consumer.receive(service, timeout=5)
        assert "no broker-checked sender" in caught.value.message
        await consumer.close()  # what it had prefetched goes back to the queue
        second = await lenient.receive(service, timeout=5)  # handed out only when asked for
        assert second is not None and second.sender_account is None and second.source == "payments"
        await second.ack()
    finally:
        await consumer.close()
        await lenient.close()


async def test_an_observer_account_reads_depths_and_can_do_nothing_else(rabbitmq_server) -> None:  # type: ignore[no-untyped-def]
    """The console's broker account: it connects and reads how many messages wait for a destination, but
    cannot send, consume, create a queue or delete one; a destination never used reads as 0 and is not
    created by being looked at."""
    import aio_pika

    tag = uuid.uuid4().hex[:6]
    service, observer = f"svc-o-{tag}", f"console-{tag}"
    secrets = {name: f"pw-{uuid.uuid4().hex}" for name in (service, observer)}
    svc_url = rabbitmq_server.add_service_user(service, secrets[service])
    obs_url = rabbitmq_server.add_observer_user(observer, secrets[observer])
    assert secrets[observer] not in obs_url

    def with_secret(url: str, name: str) -> str:
        return url.replace(f"amqp://{name}@", f"amqp://{name}:{secrets[name]}@")

    sender = AsyncMessageQueueClient(with_secret(svc_url, service))
    watcher = AsyncMessageQueueClient(with_secret(obs_url, observer))
    await sender.connect()
    await watcher.connect()
    try:
        for n in range(3):
            await sender.send_message(service, service, {"n": n})
        assert await watcher.depth(service) == 3
        never = f"never-used-{tag}"
        assert await watcher.depth(never) == 0
        with pytest.raises(LucidError):
            await watcher.send_message(observer, service, {"forged": True})
        with pytest.raises(LucidError):
            await watcher.receive(service, timeout=2)
        assert await sender.depth(service) == 3  # nothing was taken or added
    finally:
        await sender.close()
        await watcher.close()
    connection = await aio_pika.connect(with_secret(obs_url, observer))
    try:
        for attempt in ("declare", "delete", "purge"):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.AMQPError) as caught:
                if attempt == "declare":
                    await channel.declare_queue(f"lucid.{never}", durable=True)
                else:
                    queue = await channel.declare_queue(f"lucid.{service}", passive=True)
                    await (queue.delete(if_unused=False, if_empty=False) if attempt == "delete" else queue.purge())
            assert "ACCESS_REFUSED" in str(caught.value), attempt
    finally:
        await connection.close()
    check = AsyncMessageQueueClient(with_secret(svc_url, service))
    await check.connect()
    try:
        assert await check.depth(service) == 3 and await check.depth(never) == 0
    finally:
        await check.close()
