"""MessageQueueClient configuration: URL building, broker choice, secrets kept out of reprs."""

from __future__ import annotations

import pytest

from backends.mq.memory import MemoryBroker
from backends.mq.rabbitmq import RabbitMQBroker
from lucid.service_mesh.communication import AsyncMessageQueueClient, MessageQueueClient
from lucid.service_mesh.communication.message_queue import amqp_url
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
