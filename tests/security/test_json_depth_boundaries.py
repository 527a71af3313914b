"""Closing the class of 'JSON nested past the parser's recursion limit': every boundary that parses JSON
from another party refuses it with its own error, never a RecursionError far from the boundary.

The same hole was found on the node API's hot path and in discovery metadata; these are the other places
that read JSON someone else wrote: a JWT header, a mesh request body, a guest's HTTP request, a queued
message (both ends), events on the bus."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from backends.jsonsafe import JSONTooDeepError
from backends.mq import QueueMessage
from infrafabric.chassis.outbound import OutboundHTTP
from lucid.service_mesh.communication.message_queue import (
    MAX_PAYLOAD_DEPTH,
    AsyncMessageQueueClient,
    InvalidServiceConfigError,
    MessageDeliveryError,
)
from lucid.service_mesh.errors import AuthenticationError
from lucid.service_mesh.policy.mesh_server import MeshRequest
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider

pytestmark = pytest.mark.security
DEPTHS = [65, 999, 3000, 100_000]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [1000, 2500])
def test_a_jwt_header_nested_deep_is_an_authentication_error(depth: int) -> None:
    provider = ServiceAuthProvider()
    head = base64.urlsafe_b64encode(b'{"a":' + _nested(depth) + b"}").rstrip(b"=").decode()
    token = f"{head}.e30.c2ln"
    assert len(token) <= 8192
    with pytest.raises(AuthenticationError):
        provider.verify_service_token(token)


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_mesh_request_body_nested_deep_is_a_value_error(depth: int) -> None:
    request = MeshRequest.__new__(MeshRequest)
    request.body = _nested(depth)
    with pytest.raises(JSONTooDeepError):
        request.json()


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_guest_http_request_nested_deep_is_malformed(depth: int) -> None:
    raw = b'{"url":"https://api.example/x","headers":' + _nested(depth) + b"}"
    assert OutboundHTTP._parse(raw) is None  # the import answers -1: malformed request


async def test_a_queued_payload_nested_past_the_limit_is_refused_at_send_and_rejected_at_receive() -> None:
    client = AsyncMessageQueueClient("memory://depth-test")
    await client.connect()
    try:
        deep: dict = {}
        node = deep
        for _ in range(MAX_PAYLOAD_DEPTH):
            node["x"] = {}
            node = node["x"]
        with pytest.raises(InvalidServiceConfigError):
            await client.send_message("svc-a", "svc-b", deep)
        # a message another client wrote (any bytes reach the queue): rejected with an error, not raised deep
        await client._broker.publish(QueueMessage("m-deep", "svc-a", "svc-b", b'{"a":' + _nested(100_000) + b"}",
                                                  5, 60, time.time()))
        with pytest.raises(MessageDeliveryError):
            await client.receive("svc-b", timeout=2)
        assert await client.receive("svc-b", timeout=0.2) is None  # rejected, not redelivered forever
        message_id = await client.send_message("svc-a", "svc-b", {"ok": [[[1]]]})
        received = await client.receive_message("svc-b", timeout=2)
        assert received is not None and received["message_id"] == message_id
    finally:
        await client.close()
