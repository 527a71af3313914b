"""The bus, secured: users with subject permissions, TLS with the platform's CA, credentials from the
environment or files (never the URL), and a refused login reported at once instead of retried for ever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from backends.bus import open_bus
from backends.errors import AuthenticationError as BackendAuthError
from backends.errors import InvalidBackendURL, UntrustedServerError
from backends.servers.nats import NatsServer, NatsUser

pytestmark = [pytest.mark.security, pytest.mark.nats]


@pytest.fixture(scope="module")
def secured_nats() -> Iterator[NatsServer]:
    server = NatsServer(jetstream=False, tls=True, users=[
        NatsUser("control-plane", "cp-secret-1"),
        NatsUser("swarm-a", "a-secret-1", publish=("_INBOX.>",), subscribe=("if.swarm.swarm-a.tasks",)),
    ]).start()
    try:
        yield server
    finally:
        server.stop()


def _as(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str | None) -> None:
    for name in ("INFRAFABRIC_NATS_USER", "INFRAFABRIC_NATS_PASSWORD", "INFRAFABRIC_NATS_PASSWORD_FILE",
                 "INFRAFABRIC_NATS_CREDS"):
        monkeypatch.delenv(name, raising=False)
    if user is not None:
        monkeypatch.setenv("INFRAFABRIC_NATS_USER", user)
    if password is not None:
        monkeypatch.setenv("INFRAFABRIC_NATS_PASSWORD", password)


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(InvalidBackendURL) as caught:
        open_bus("nats://user:secret@127.0.0.1:4222")
    assert "INFRAFABRIC_NATS_USER" in caught.value.message
    with pytest.raises(InvalidBackendURL):
        open_bus("nats://127.0.0.1:4222?password=x")


@pytest.mark.parametrize("user, password", [("control-plane", "wrong"), (None, None), ("nobody", "x")])
async def test_a_refused_login_fails_fast_with_its_code(secured_nats: NatsServer, monkeypatch, user, password) -> None:
    _as(monkeypatch, user, password)
    bus = open_bus(secured_nats.url)
    started = time.monotonic()
    with pytest.raises(BackendAuthError) as caught:
        await asyncio.wait_for(bus.connect(), 10)  # (nats-py alone retries a refused login for ever)
    assert caught.value.error_code == "BACKEND_AUTH_FAILED"
    assert time.monotonic() - started < 5
    await bus.close()


async def test_without_the_ca_the_server_is_not_trusted(secured_nats: NatsServer, monkeypatch) -> None:
    _as(monkeypatch, "control-plane", "cp-secret-1")
    bus = open_bus(secured_nats.url.split("?")[0])  # tls:// without the platform's CA
    started = time.monotonic()
    with pytest.raises(UntrustedServerError) as caught:
        await asyncio.wait_for(bus.connect(), 10)
    assert caught.value.error_code == "BACKEND_TLS_UNTRUSTED" and time.monotonic() - started < 5
    await bus.close()


async def test_a_user_reads_and_writes_only_its_subjects(secured_nats: NatsServer, monkeypatch, tmp_path) -> None:
    _as(monkeypatch, "control-plane", None)
    secret = tmp_path / "cp.password"
    secret.write_text("cp-secret-1\n")
    monkeypatch.setenv("INFRAFABRIC_NATS_PASSWORD_FILE", str(secret))  # from a file
    platform = open_bus(secured_nats.url)
    await platform.connect()
    _as(monkeypatch, "swarm-a", "a-secret-1")
    swarm = open_bus(secured_nats.url)
    await swarm.connect()
    try:
        own: list[bytes] = []
        other: list[bytes] = []
        events: list[bytes] = []
        await swarm.subscribe("if.swarm.swarm-a.tasks", lambda m: own.append(m.data))
        await swarm.subscribe("if.swarm.swarm-b.tasks", lambda m: other.append(m.data))  # not allowed
        await swarm.subscribe("if.events.blocker_detected", lambda m: events.append(m.data))  # not allowed
        seen: list[bytes] = []
        await platform.subscribe("if.events.blocker_detected", lambda m: seen.append(m.data))
        await swarm.publish("if.events.blocker_detected", b'{"forged": true}')  # not allowed to publish
        for subject in ("if.swarm.swarm-a.tasks", "if.swarm.swarm-b.tasks", "if.events.blocker_detected"):
            await platform.publish(subject, b"m")
        deadline = time.monotonic() + 5
        while not own and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await platform.publish("if.events.blocker_detected", b"fence")
        while len(seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert own == [b"m"]
        assert other == [] and events == []
        assert b'{"forged": true}' not in seen and seen == [b"m", b"fence"]
    finally:
        await swarm.close()
        await platform.close()
