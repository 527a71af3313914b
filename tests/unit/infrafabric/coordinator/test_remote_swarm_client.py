"""RemoteSwarmClient's inbox poller: passing failures are retried, final ones stop it (httpx mock transport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from infrafabric import errors
from infrafabric.coordinator.remote import RemoteSwarmClient, raise_for_envelope
from infrafabric.errors import CredentialError


def _service(inbox_answers: list[tuple[int, dict[str, object]]]) -> tuple[httpx.MockTransport, list[str]]:
    calls: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/session" and request.method == "POST":
            return httpx.Response(200, json={"swarm_id": "s1", "session": "abc", "ttl": 2})
        if request.url.path == "/v1/inbox":
            if inbox_answers:
                status, body = inbox_answers.pop(0)
                return httpx.Response(status, content=json.dumps(body).encode())
            await asyncio.sleep(float(request.url.params["wait"]))  # a long poll with nothing to give
            return httpx.Response(200, json={"tasks": []})
        return httpx.Response(200, json={"closed": True})

    return httpx.MockTransport(handle), calls


async def test_a_replica_briefly_without_its_engines_does_not_end_the_session() -> None:
    unavailable = {"error": {"code": "BACKEND_UNAVAILABLE", "message": "etcd unreachable"}}
    transport, calls = _service([(503, unavailable), (503, unavailable), (502, {}),
                                 (200, {"tasks": [{"id": "t1"}]})])
    client = await RemoteSwarmClient("http://svc", [], credential="x", transport=transport, poll_wait=0.01).start()
    assert (await client.next_task(5))["id"] == "t1"
    assert client.transient_errors == 3 and client.error is None
    await client.stop()
    assert calls.count("GET /v1/inbox") >= 4


@pytest.mark.parametrize("code", ["IF_ERR_AUTH_REVOKED", "IF_ERR_NO_SESSION"])
async def test_a_final_error_stops_polling_and_is_raised(code: str) -> None:
    transport, calls = _service([(401 if "AUTH" in code else 409, {"error": {"code": code, "message": "gone"}})])
    client = await RemoteSwarmClient("http://svc", [], credential="x", transport=transport, poll_wait=0.01).start()
    with pytest.raises(Exception) as info:
        await client.next_task(5)
    assert getattr(info.value, "error_code", None) == code
    assert calls.count("GET /v1/inbox") == 1  # not polled again
    if "AUTH" in code:
        assert isinstance(info.value, CredentialError)
    client._session = None  # the service holds no session to close
    await client.stop()


@pytest.mark.parametrize("cls", [c for c in vars(errors).values() if isinstance(c, type)
                                 and issubclass(c, errors.InfraFabricError)])
def test_every_error_envelope_comes_back_as_its_class(cls: type[errors.InfraFabricError]) -> None:
    body = json.dumps({"error": {"code": cls.error_code, "message": "said by the service"}}).encode()
    with pytest.raises(cls) as caught:
        raise_for_envelope(cls.http_status, body)
    assert type(caught.value) is cls
    assert (caught.value.error_code, caught.value.message) == (cls.error_code, "said by the service")


@pytest.mark.parametrize("code,status,expected", [
    ("IF_ERR_AUTH_EXPIRED", 401, errors.CredentialError), ("IF_ERR_AUTH_REVOKED", 401, errors.CredentialError),
    ("IF_ERR_NO_SESSION", 400, errors.ValidationError), ("IF_ERR_UNAVAILABLE", 503, errors.InfraFabricError)])
def test_codes_without_a_class_of_their_own_keep_their_code(code: str, status: int, expected: type) -> None:
    with pytest.raises(expected) as caught:
        raise_for_envelope(status, json.dumps({"error": {"code": code, "message": "m"}}).encode())
    assert type(caught.value) is expected and caught.value.error_code == code


def test_an_answer_that_is_no_envelope_is_unavailable_not_a_crash() -> None:
    with pytest.raises(errors.InfraFabricError) as caught:
        raise_for_envelope(502, b"<html>bad gateway</html>")
    assert caught.value.error_code == "IF_ERR_UNAVAILABLE"
    raise_for_envelope(200, b"not even json")  # a success is not read here


async def test_a_success_whose_body_is_not_json_or_no_inbox_is_a_passing_error_not_a_crash() -> None:
    """A 200 that is no JSON (a proxy's page, a cut answer) or no inbox answer is retried as the service
    unavailable: the poller goes on and gets the next task, and a direct call raises the platform's error."""
    inbox = [b"<html>proxy</html>", b"{}", b'{"tasks": [1]}', b'{"tasks": [{"id": "t1"}]}']

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/session" and request.method == "POST":
            return httpx.Response(200, json={"swarm_id": "s1", "session": "abc", "ttl": 2})
        if request.url.path == "/v1/inbox":
            if not inbox:
                await asyncio.sleep(float(request.url.params["wait"]))  # a long poll with nothing to give
            return httpx.Response(200, content=inbox.pop(0) if inbox else b'{"tasks": []}')
        if request.url.path == "/v1/heartbeat":
            return httpx.Response(200, content=b"<html>proxy</html>")
        return httpx.Response(200, json={"closed": True})

    client = await RemoteSwarmClient("http://svc", [], credential="x", transport=httpx.MockTransport(handle),
                                     poll_wait=0.01).start()
    with pytest.raises(errors.InfraFabricError) as caught:
        await client._call("POST", "/v1/heartbeat")
    assert caught.value.error_code == "IF_ERR_UNAVAILABLE"
    assert (await client.next_task(5))["id"] == "t1"
    assert client.transient_errors == 3 and client.error is None
    await client.stop()
