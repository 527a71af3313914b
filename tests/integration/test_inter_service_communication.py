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
