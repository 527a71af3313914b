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
