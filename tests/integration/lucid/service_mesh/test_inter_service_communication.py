"""Seed 000's inter-service communication test, on a real RabbitMQ started by a fixture (the seed used a
container), and the receiving side it left out."""

from __future__ import annotations

import pytest

from lucid.service_mesh.communication.message_queue import MessageQueueClient
from lucid.service_mesh.errors import MessageQueueUnavailableError

pytestmark = pytest.mark.rabbitmq


class TestInterServiceCommunication:
    """Integration tests for inter-service communication."""

    def test_message_queue_send_and_receive(self, rabbitmq_server) -> None:  # type: ignore[no-untyped-def]
        """Test message queue send and receive."""
        rabbitmq_host = "127.0.0.1"
        rabbitmq_port = rabbitmq_server.port

        sender = MessageQueueClient(
            rabbitmq_host=rabbitmq_host,
            rabbitmq_port=rabbitmq_port,
            rabbitmq_user="guest",
            rabbitmq_password="guest",
            enable_ssl=False,
        )
        sender.connect()

        message_id = sender.send_message(
            source="api-gateway",
            destination="blockchain-core",
            payload={"action": "create_session", "session_id": "test-session-001"},
            priority="normal",
            ttl=3600,
        )

        assert message_id is not None
        sender.close()

        # the part the seed left out: blockchain-core receives exactly that message, once
        with MessageQueueClient(rabbitmq_host=rabbitmq_host, rabbitmq_port=rabbitmq_port, rabbitmq_user="guest",
                                rabbitmq_password="guest") as receiver:
            got = receiver.receive_message("blockchain-core", timeout=10)
            assert got is not None and got["message_id"] == message_id
            assert got["payload"] == {"action": "create_session", "session_id": "test-session-001"}
            assert (got["source"], got["priority"], got["ttl"]) == ("api-gateway", "normal", 3600)
            assert receiver.receive_message("blockchain-core", timeout=0.3) is None

    def test_wrong_password_is_queue_unavailable_and_never_echoed(self, rabbitmq_server) -> None:  # type: ignore[no-untyped-def]
        client = MessageQueueClient(rabbitmq_host="127.0.0.1", rabbitmq_port=rabbitmq_server.port,
                                    rabbitmq_user="guest", rabbitmq_password="s3cret-wrong")
        with pytest.raises(MessageQueueUnavailableError) as err:
            client.connect()
        assert err.value.error_code == "LUCID_ERR_1303"
        assert "s3cret-wrong" not in str(err.value) and "s3cret-wrong" not in repr(client)

    def test_sync_client_works_from_inside_an_event_loop(self, rabbitmq_server) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        async def inside() -> str:
            with MessageQueueClient(rabbitmq_server.amqp_url) as c:
                mid = c.send_message("session-management", "rdp-services", {"open": 1}, priority="critical")
                got = c.receive_message("rdp-services", timeout=10)
                assert got is not None and got["priority"] == "critical"
                return mid if got["message_id"] == mid else ""

        assert asyncio.run(inside())


async def test_the_broker_refuses_a_forged_sender_account(rabbitmq_server) -> None:  # type: ignore[no-untyped-def]
    """``sender_account`` can be trusted because RabbitMQ refuses a user-id other than the publisher's login:
    a client logged in as guest cannot make a message look as if the api-gateway account had sent it."""
    import aio_pika

    from lucid.service_mesh.communication import AsyncMessageQueueClient

    connection = await aio_pika.connect(rabbitmq_server.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(Exception) as err:  # the broker closes the channel: PRECONDITION_FAILED
            await channel.default_exchange.publish(aio_pika.Message(b"{}", user_id="api-gateway"), routing_key="x")
            await channel.declare_queue("probe-after-forgery", auto_delete=True)  # fails if the close raced
        assert "user_id" in str(err.value) or "PRECONDITION" in str(err.value).upper() or "406" in str(err.value)
    finally:
        await connection.close()
    async with AsyncMessageQueueClient(rabbitmq_server.amqp_url) as client:
        await client.send_message("api-gateway", "audit-sink", {"ok": True})
        got = await client.receive("audit-sink", timeout=10)
        assert got is not None and got.sender_account == "guest" and got.source == "api-gateway"
        await got.ack()
