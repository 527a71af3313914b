"""Security boundaries of the coordination state (seed 002 level 4): etcd auth and TLS, injection, budgets."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from infrafabric.coordinator.credentials import Identity
from infrafabric.errors import PermissionDeniedError

from backends.errors import BackendUnavailable
from infrafabric.coordinator import AuthenticationError, IFCoordinator
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile

pytestmark = [pytest.mark.security]


def _endpoint(server) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    host, port = server.endpoint.split(":")
    return host, int(port)


def _tls(server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"etcd_ca_cert": str(server.ca_cert), "etcd_client_cert": str(server.client_cert),
            "etcd_client_key": str(server.client_key)}


@pytest.mark.etcd
async def test_etcd_authentication(etcd_secure) -> None:  # type: ignore[no-untyped-def]
    """CRITICAL: etcd must require authentication: no credentials, or wrong ones, are refused."""
    host, port = _endpoint(etcd_secure)
    with pytest.raises(AuthenticationError):
        coordinator = IFCoordinator(etcd_host=host, etcd_port=port, etcd_username=None, etcd_password=None,
                                    **_tls(etcd_secure))
        coordinator.etcd.status()
    coordinator.etcd.close()
    wrong = IFCoordinator(etcd_host=host, etcd_port=port, etcd_username="root", etcd_password="guess",
                          **_tls(etcd_secure))
    with pytest.raises(AuthenticationError):
        wrong.etcd.status()
    wrong.etcd.close()
    with pytest.raises(AuthenticationError):
        await wrong.claim_task("s", "t-1")
    right = IFCoordinator(etcd_host=host, etcd_port=port, etcd_username="root",
                          etcd_password=etcd_secure.root_password, **_tls(etcd_secure))
    try:
        assert right.etcd.status()["healthy"] is True
        assert await right.claim_task("s", "secure-task-1") is True
    finally:
        await right.close()


@pytest.mark.etcd
async def test_etcd_tls(etcd_secure) -> None:  # type: ignore[no-untyped-def]
    """Unencrypted connections to the TLS port are rejected, and the server proves its identity."""
    host, port = _endpoint(etcd_secure)
    from urllib.parse import quote

    plain = IFCoordinator(kv_url=f"etcd://{host}:{port}?username=root&timeout=2"
                                 f"&password={quote(etcd_secure.root_password)}")
    with pytest.raises(BackendUnavailable):  # the right password, but over plaintext: refused
        await plain.kv.status()
    await plain.close()
    import asyncio

    reader, writer = await asyncio.open_connection(host, port, ssl=etcd_secure.ssl_context,
                                                   server_hostname="127.0.0.1")
    peer = writer.get_extra_info("peercert")
    assert peer is not None and peer["subjectAltName"]
    writer.close()
    stranger = ssl.create_default_context()  # system CAs only: our CA is not trusted there
    with pytest.raises(ssl.SSLError):
        await asyncio.open_connection(host, port, ssl=stranger, server_hostname="127.0.0.1")
    assert Path(etcd_secure.ca_cert).exists()


async def test_task_injection_prevention() -> None:
    """CRITICAL: malicious task ids are refused before anything is written or delivered."""
    coordinator = IFCoordinator()
    queue = await coordinator.register_swarm("swarm-1", [])
    before = coordinator.etcd.status()["revision"]
    for evil in ["task-123; rm -rf /", "task`id`", "task|cat /etc/passwd", "../../tasks/x", "task\x00",
                 "task&&reboot", "a/b", "*", ">"]:
        with pytest.raises(ValueError):
            await coordinator.push_task_to_swarm("swarm-1", {"id": evil, "action": "execute"})
        with pytest.raises(ValueError):
            await coordinator.claim_task("swarm-1", evil)
    for evil_swarm in ["swarm-1.*", "swarm >", "../x"]:
        with pytest.raises(ValueError):
            await coordinator.push_task_to_swarm(evil_swarm, {"id": "ok"})
    assert queue.empty()
    assert coordinator.etcd.status()["revision"] == before
    await coordinator.close()


async def test_budget_manipulation_prevention() -> None:
    """CRITICAL: a swarm holding its profile cannot raise its own budget or reputation."""
    governor = IFGovernor(coordinator=None, policy=ResourcePolicy())
    profile = SwarmProfile(swarm_id="swarm-test", capabilities=[], cost_per_hour=2.0, reputation_score=1.0,
                           current_budget_remaining=10.0)
    governor.register_swarm(profile)
    governor.track_cost("swarm-test", "operation", 5.0)
    assert profile.current_budget_remaining == 5.0
    for attempt in (lambda: setattr(profile, "current_budget_remaining", 1e9),
                    lambda: setattr(profile, "reputation_score", 1.0),
                    lambda: governor.track_cost("swarm-test", "refund", -100.0)):
        with pytest.raises((AttributeError, ValueError)):
            attempt()
    assert profile.current_budget_remaining == 5.0
    object.__setattr__(profile, "_budget", 1e9)  # poking the private starting value changes nothing:
    assert profile.current_budget_remaining == 5.0  # the ledger in the governor is the only truth
    assert governor.budget_remaining("swarm-test") == 5
    for forged in ("", "ops", Identity("swarm", "swarm-test", "j", 0, 2**31)):  # the swarm's own identity too
        with pytest.raises(PermissionDeniedError):
            governor.set_budget("swarm-test", 100, operator=forged)
    assert governor.budget_remaining("swarm-test") == 5
