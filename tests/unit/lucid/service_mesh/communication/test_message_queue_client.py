"""MessageQueueClient configuration: URL building, broker choice, secrets kept out of reprs."""

from __future__ import annotations

import pytest

from backends.mq.memory import MemoryBroker
from backends.mq.rabbitmq import RabbitMQBroker
from backends.seed_urls import amqp_url
from lucid.service_mesh.communication import AsyncMessageQueueClient, MessageQueueClient
from lucid.service_mesh.errors import InvalidServiceConfigError, MessageQueueUnavailableError


def test_amqp_url_quotes_credentials_and_vhost() -> None:
    assert amqp_url("10.0.0.5", 5671, "svc", "p@ss:w/rd", "/", ssl=True) == "amqps://svc:p%40ss%3Aw%2Frd@10.0.0.5:5671/%2F"
    assert amqp_url("h", user="guest", password=None, vhost="lucid") == "amqp://guest@h:5672/lucid"


def test_seed_arguments_choose_rabbitmq_and_the_password_stays_out_of_reprs() -> None:
    client = AsyncMessageQueueClient(rabbitmq_host="127.0.0.1", rabbitmq_port=5999, rabbitmq_user="guest",
                                     rabbitmq_password="hunter2-secret", enable_ssl=False)
    assert client.backend == "rabbitmq" and isinstance(client._broker, RabbitMQBroker)
    assert "hunter2-secret" not in repr(client) and "hunter2-secret" not in repr(client._broker)
    assert "guest:***@127.0.0.1:5999" in repr(client._broker)


def test_default_is_the_embedded_broker_and_the_environment_can_change_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUCID_MQ_URL", raising=False)
    assert isinstance(AsyncMessageQueueClient()._broker, MemoryBroker)
    monkeypatch.setenv("LUCID_MQ_URL", "amqp://guest:guest@127.0.0.1:1/")
    assert AsyncMessageQueueClient().backend == "rabbitmq"


@pytest.mark.parametrize("url", ["kafka://h:9092", "no-scheme", "amqp://"])
def test_unknown_urls_are_invalid_config(url: str) -> None:
    with pytest.raises(InvalidServiceConfigError) as err:
        AsyncMessageQueueClient(url)
    assert err.value.error_code == "LUCID_ERR_1004"


def test_unreachable_broker_is_1303_and_the_sync_client_can_be_closed_after() -> None:
    client = MessageQueueClient(rabbitmq_host="127.0.0.1", rabbitmq_port=1, rabbitmq_password="x")
    with pytest.raises(MessageQueueUnavailableError) as err:
        client.connect()
    assert err.value.error_code == "LUCID_ERR_1303"
    with pytest.raises(MessageQueueUnavailableError):
        client.send_message("api-gateway", "blockchain-core", {"a": 1})  # never reported sent
    client.close()


def test_sync_embedded_round_trip_with_a_caller_chosen_message_id() -> None:
    with MessageQueueClient("memory://unit-sync") as c:
        assert c.send_message("api-gateway", "blockchain-core", {"a": 1}, message_id="retry-42") == "retry-42"
        got = c.receive_message("blockchain-core", timeout=1)
        assert got is not None and got["message_id"] == "retry-42" and got["payload"] == {"a": 1}
        with pytest.raises(InvalidServiceConfigError):
            c.send_message("api-gateway", "blockchain-core", {"a": 1}, message_id="has space")


async def test_the_outbox_on_the_embedded_broker_orders_resends_and_keeps_refusals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The outbox's rules with a broker made to fail on purpose: accepted while down, in order after,
    behind anything waiting, each id once; a refused message stays in the file."""
    import uuid

    from backends.errors import DeliveryFailed, QueueUnavailable

    url = f"memory://outbox-{uuid.uuid4().hex}"
    client = AsyncMessageQueueClient(url, outbox=tmp_path / "o.db")
    await client.connect()
    real_publish = client._broker.publish
    state = {"down": True, "refuse": None}

    async def publish(message, *, timeout=5.0):  # type: ignore[no-untyped-def]
        if state["down"]:
            raise QueueUnavailable("down on purpose")
        if message.message_id == state["refuse"]:
            raise DeliveryFailed("unroutable on purpose")
        await real_publish(message, timeout=timeout)

    client._broker.publish = publish  # type: ignore[method-assign]
    ids = [await client.send_message("api-gateway", "svc-a", {"n": i}) for i in range(5)]
    state["refuse"] = ids[2]
    assert client.outbox_waiting == 5
    state["down"] = False
    ids.append(await client.send_message("api-gateway", "svc-a", {"n": 5}))  # behind the five, not before
    await client.flush_outbox(10)
    got = []
    while (m := await client.receive("svc-a", timeout=0.2)) is not None:
        got.append(m.payload["n"])
        await m.ack()
    assert got == [0, 1, 3, 4, 5]
    assert await client._outbox.count("refused") == 1  # type: ignore[union-attr]
    # with nothing waiting, sends go straight to the broker again
    await client.send_message("api-gateway", "svc-a", {"n": 6})
    assert client.outbox_waiting == 0
    await client.close()
