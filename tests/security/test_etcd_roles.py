"""etcd as deployed: TLS with client-certificate auth and roles, the control plane's user only.

Every client must present a certificate of the platform CA; the control plane logs in by its certificate
(CN ``control-plane``, no password anywhere) with read-write on the coordination keyspace; root is only
for the administrator; any other user sees only the prefixes its role grants."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from backends.errors import AuthenticationError as BackendAuthError
from backends.errors import BackendUnavailable
from backends.kv import open_kv
from backends.servers.etcd import EtcdServer, EtcdUser
from infrafabric.coordinator import IFCoordinator

pytestmark = [pytest.mark.security, pytest.mark.etcd]


@pytest.fixture(scope="module")
def deployed_etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(tls=True, auth_password=secrets.token_urlsafe(16), client_cert_auth=True,
                        client_cn="control-plane", users=[
                            EtcdUser("control-plane", None, readwrite=("/",)),
                            EtcdUser("auditor", "auditor-pw-1", read=("/swarms/",)),
                        ]).start()
    try:
        yield server
    finally:
        server.stop()


def _url(server: EtcdServer, *, cert: bool = True, username: str | None = None) -> str:
    url = f"{server.url}?ca={server.ca_cert}"
    if cert:
        url += f"&cert={server.client_cert}&key={server.client_key}"
    if username:
        url += f"&username={username}"
    return url


async def test_the_control_plane_works_by_its_certificate_alone(deployed_etcd: EtcdServer, monkeypatch) -> None:
    monkeypatch.delenv("INFRAFABRIC_ETCD_PASSWORD", raising=False)
    coordinator = IFCoordinator(kv_url=_url(deployed_etcd), audit=None)
    async with coordinator:
        await coordinator.register_swarm("cp-swarm", ["code:python"])
        claim = await coordinator.claim("cp-swarm", "cp-task-1")  # a lease and a CAS
        assert claim is not None
        await coordinator.complete_task("cp-swarm", "cp-task-1", {"ok": True}, claim)
        assert await coordinator.task_owner("cp-task-1") == "completed:cp-swarm"


async def test_a_client_without_a_certificate_is_refused(deployed_etcd: EtcdServer) -> None:
    store = open_kv(_url(deployed_etcd, cert=False))
    with pytest.raises(BackendUnavailable) as caught:  # the TLS handshake itself is refused
        async with store:
            await store.get("/tasks/x/owner")
    assert not isinstance(caught.value, BackendAuthError)


async def test_a_user_reads_only_what_its_role_grants(deployed_etcd: EtcdServer, monkeypatch) -> None:
    monkeypatch.setenv("INFRAFABRIC_ETCD_PASSWORD", "auditor-pw-1")
    store = open_kv(_url(deployed_etcd, username="auditor"))
    async with store:
        await store.get_prefix("/swarms/")  # granted
        with pytest.raises(BackendAuthError):
            await store.get("/tasks/cp-task-1/owner")  # not granted
        with pytest.raises(BackendAuthError):
            await store.put("/swarms/x/profile", b"{}")  # read only
    monkeypatch.setenv("INFRAFABRIC_ETCD_PASSWORD", "wrong")
    store = open_kv(_url(deployed_etcd, username="auditor"))
    with pytest.raises(BackendAuthError):
        async with store:
            await store.get_prefix("/swarms/")
