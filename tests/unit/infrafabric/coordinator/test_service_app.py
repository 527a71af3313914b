"""The swarm API's dispatcher (in process, httpx's ASGI transport): every answer is the error envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from infrafabric.coordinator import IFCoordinator
from infrafabric.coordinator.credentials import CredentialAuthority, CredentialVerifier, Identity
from infrafabric.coordinator.service import SwarmGateway, create_app


class _BrokenVerifier(CredentialVerifier):
    """A bug inside a handler (here: identity checking), as an unexpected exception."""

    async def verify(self, token: object, role: str | None = None) -> Identity:  # type: ignore[override]
        raise RuntimeError("secret-internal-detail")


@pytest.fixture
async def service(tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, CredentialAuthority, IFCoordinator]]:
    authority = CredentialAuthority.load_or_create(tmp_path / "authority")
    coordinator = IFCoordinator(kv_url="memory://", bus_url="memory://", audit=None)
    async with coordinator:
        gateway = SwarmGateway(coordinator, CredentialVerifier(authority.public_key, coordinator.kv))
        transport = httpx.ASGITransport(app=create_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client, authority, coordinator
        await gateway.close()


async def _envelope(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


async def test_unknown_routes_and_methods_answer_the_envelope(service) -> None:
    client, authority, _ = service
    await _envelope(await client.get("/v1/tasks/anything"), 404, "IF_ERR_NOT_FOUND")
    await _envelope(await client.get("/"), 404, "IF_ERR_NOT_FOUND")
    await _envelope(await client.get("/v1/claims"), 405, "IF_ERR_METHOD_NOT_ALLOWED")
    await _envelope(await client.put("/v1/session"), 405, "IF_ERR_METHOD_NOT_ALLOWED")
    await _envelope(await client.post("/v1/claims", json={"task_ids": ["t"]}), 401, "IF_ERR_AUTH_INVALID")


async def test_a_route_works_end_to_end_through_the_dispatcher(service) -> None:
    client, authority, coordinator = service
    auth = {"Authorization": f"Bearer {authority.issue('swarm', 'swarm-a')}"}
    opened = (await client.post("/v1/session", json={"capabilities": ["code"]}, headers=auth)).json()
    headers = {**auth, "X-Session": opened["session"]}
    claims = (await client.post("/v1/claims", json={"task_ids": ["t1"]}, headers=headers)).json()["claims"]
    assert claims == [{"task_id": "t1", "won": True, "revision": claims[0]["revision"]}]
    done = await client.post("/v1/complete", json={"task_id": "t1", "result": {"ok": 1}}, headers=headers)
    assert done.status_code == 200 and isinstance(done.json()["revision"], int)


async def test_a_bug_in_a_handler_answers_500_without_its_details(tmp_path) -> None:
    authority = CredentialAuthority.load_or_create(tmp_path / "authority")
    coordinator = IFCoordinator(kv_url="memory://", bus_url="memory://", audit=None)
    async with coordinator:
        gateway = SwarmGateway(coordinator, _BrokenVerifier(authority.public_key))
        transport = httpx.ASGITransport(app=create_app(gateway), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            response = await client.post("/v1/heartbeat", headers={"Authorization": "Bearer x"})
        await _envelope(response, 500, "IF_ERR_INTERNAL")
        assert "secret-internal-detail" not in response.text
