"""More attacks on the swarm API (in process: embedded memory:// store, httpx's ASGI transport).

Each test names the promise it attacks. Ten of them failed when written (swarm ids naming task states, a
close racing a reopen or a claim, a bus error or a reaper failure during a close, a body read whole before
its cap, NaN accepted, a remote session over an in-process swarm); the fixes are in the same commit.
Interleavings that a networked store would produce are forced with small gates on the store's calls
(the embedded store never suspends, so without them every request would run to its end alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.errors import BackendUnavailable
from infrafabric.coordinator import IFCoordinator
from infrafabric.coordinator import credentials as credentials_module
from infrafabric.coordinator.credentials import AUDIENCE, ISSUER, CredentialAuthority, CredentialVerifier, revoke
from infrafabric.coordinator.service import SwarmGateway, create_app, session_key
from infrafabric.errors import InvalidIdentifierError


# ---------------------------------------------------------------------------------------------- fixtures


@dataclass
class Svc:
    client: httpx.AsyncClient
    authority: CredentialAuthority
    coordinator: IFCoordinator
    gateway: SwarmGateway

    def auth(self, name: str, role: str = "swarm", ttl: int = 600) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.authority.issue(role, name, ttl)}"}  # type: ignore[arg-type]

    async def open(self, name: str, client: httpx.AsyncClient | None = None) -> dict[str, str]:
        auth = self.auth(name)
        r = await (client or self.client).post("/v1/session", json={"capabilities": ["code:python"]}, headers=auth)
        assert r.status_code == 200, r.text
        return {**auth, "X-Session": r.json()["session"]}


@contextlib.asynccontextmanager
async def _service(tmp_path: Any, *, claim_ttl: int = 10, session_ttl: float | None = None,
                   authority: CredentialAuthority | None = None, coordinator: IFCoordinator | None = None,
                   refresh: float = 1.0) -> AsyncIterator[Svc]:
    authority = authority or CredentialAuthority.load_or_create(tmp_path / f"authority-{uuid.uuid4().hex[:6]}")
    own = coordinator is None
    coordinator = coordinator or IFCoordinator(kv_url="memory://", bus_url="memory://", audit=None,
                                               claim_ttl=claim_ttl)
    async with contextlib.AsyncExitStack() as stack:
        if own:
            await stack.enter_async_context(coordinator)
        gateway = SwarmGateway(coordinator, CredentialVerifier(authority.public_key, coordinator.kv, refresh=refresh),
                               session_ttl=session_ttl)
        transport = httpx.ASGITransport(app=create_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            try:
                yield Svc(client, authority, coordinator, gateway)
            finally:
                await gateway.close()


@pytest.fixture
async def svc(tmp_path: Any) -> AsyncIterator[Svc]:
    async with _service(tmp_path) as s:
        yield s


def _envelope(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, r.text


async def _owner(coordinator: IFCoordinator, task_id: str) -> bytes | None:
    kv = await coordinator.kv.get(f"/tasks/{task_id}/owner")
    return None if kv is None else kv.value


async def _result(coordinator: IFCoordinator, task_id: str) -> Any:
    kv = await coordinator.kv.get(f"/tasks/{task_id}/result")
    return None if kv is None else json.loads(kv.value)


# ---------------------------------------------------------------------------------------------- identity


async def test_roles_other_than_swarm_are_refused_on_swarm_routes_and_vice_versa(svc: Svc) -> None:
    """Operator and viewer credentials get 403 on every swarm route; a swarm or viewer gets 403 on the push
    route; nothing is opened or pushed."""
    for role in ("operator", "viewer"):
        headers = svc.auth("alice", role)
        for method, path in (("POST", "/v1/session"), ("DELETE", "/v1/session"), ("GET", "/v1/inbox"),
                             ("POST", "/v1/heartbeat"), ("POST", "/v1/claims"), ("POST", "/v1/complete"),
                             ("POST", "/v1/progress"), ("POST", "/v1/blockers")):
            r = await svc.client.request(method, path, headers=headers, json={"task_ids": ["t"]})
            _envelope(r, 403, "IF_ERR_FORBIDDEN")
    assert await svc.coordinator.kv.get(session_key("alice")) is None
    victim = await svc.open("victim")
    for role, name in (("swarm", "victim"), ("swarm", "mallory"), ("viewer", "alice")):
        r = await svc.client.post("/v1/tasks", json={"swarm_id": "victim", "tasks": [{"id": "forged"}]},
                                  headers=svc.auth(name, role))
        _envelope(r, 403, "IF_ERR_FORBIDDEN")
    assert (await svc.client.get("/v1/inbox", headers=victim)).json() == {"tasks": []}


@pytest.mark.parametrize("sub", ["../x", "a b", "", "x" * 129, ".", "a/b", "a\nb", "unclaimed", "completed:x"])
async def test_a_signed_credential_whose_subject_is_no_swarm_id_is_refused(svc: Svc, sub: str) -> None:
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "role": "swarm", "iat": now, "nbf": now - 5,
                        "exp": now + 600, "jti": uuid.uuid4().hex, "issued_ms": now * 1000},
                       svc.authority._key, algorithm="EdDSA")
    r = await svc.client.post("/v1/session", json={}, headers={"Authorization": f"Bearer {token}"})
    _envelope(r, 401, "IF_ERR_AUTH_INVALID")
    assert not await svc.coordinator.kv.get_prefix("/swarms/")


async def test_a_credential_expires_exactly_at_its_exp_fresh_and_cached(svc: Svc, monkeypatch: pytest.MonkeyPatch) -> None:
    """At exp - 1 ms the credential works (and is cached); at exp it is refused, both from the cache and
    when checked afresh (PyJWT's clock and the cache's clock agree on the boundary)."""
    exp = int(time.time()) + 100

    def token() -> str:
        return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "role": "swarm", "iat": exp - 200,
                           "nbf": exp - 205, "exp": exp, "jti": uuid.uuid4().hex, "issued_ms": (exp - 200) * 1000},
                          svc.authority._key, algorithm="EdDSA")

    cached, fresh = token(), token()
    clock = {"now": exp - 0.001}

    fake_time = SimpleNamespace(time=lambda: clock["now"], monotonic=time.monotonic, time_ns=time.time_ns)

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(clock["now"], tz or timezone.utc)

    monkeypatch.setattr(credentials_module, "time", fake_time)
    monkeypatch.setattr(jwt.api_jwt, "datetime", FakeDatetime)
    r = await svc.client.post("/v1/session", json={}, headers={"Authorization": f"Bearer {cached}"})
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {cached}", "X-Session": r.json()["session"]}
    assert (await svc.client.post("/v1/heartbeat", headers=headers)).status_code == 200
    clock["now"] = float(exp)
    _envelope(await svc.client.post("/v1/heartbeat", headers=headers), 401, "IF_ERR_AUTH_EXPIRED")
    _envelope(await svc.client.post("/v1/claims", json={"task_ids": ["t"]},
                                    headers={**headers, "Authorization": f"Bearer {fresh}"}), 401, "IF_ERR_AUTH_EXPIRED")
    assert await _owner(svc.coordinator, "t") is None


async def test_a_revoked_credential_stops_at_the_next_call_and_writes_nothing(tmp_path: Any) -> None:
    async with _service(tmp_path, refresh=0) as s:
        headers = await s.open("alice")
        assert (await s.client.post("/v1/claims", json={"task_ids": ["t1"]}, headers=headers)).status_code == 200
        await revoke(s.coordinator.kv, jti=s.gateway.verifier.decode(headers["Authorization"][7:]).jti)
        for path, body in (("/v1/claims", {"task_ids": ["t2"]}), ("/v1/complete", {"task_id": "t1", "result": 1}),
                           ("/v1/progress", {"task_id": "t1", "progress": 1}), ("/v1/blockers", {"blocker_info": {}})):
            _envelope(await s.client.post(path, json=body, headers=headers), 401, "IF_ERR_AUTH_REVOKED")
        assert await _owner(s.coordinator, "t2") is None and await _result(s.coordinator, "t1") is None
        assert not await s.coordinator.kv.get_prefix("/blockers/")


async def test_another_swarms_session_id_and_header_tricks_get_no_session(svc: Svc) -> None:
    alice, bob = await svc.open("alice"), await svc.open("bob")
    assert (await svc.client.post("/v1/claims", json={"task_ids": ["t1"]}, headers=alice)).status_code == 200
    for session in (bob["X-Session"], alice["X-Session"] + "x", alice["X-Session"][:-1], "", " " + alice["X-Session"],
                    alice["X-Session"] + ", " + alice["X-Session"]):
        headers = {"Authorization": alice["Authorization"], "X-Session": session}  # bob's id: still alice
        r = await svc.client.post("/v1/complete", json={"task_id": "t1", "result": "forged"}, headers=headers)
        _envelope(r, 409, "IF_ERR_NO_SESSION")
    for raw in (b"\xe9\xff", b"\x00", b"a\x7fb"):  # non-ASCII and control bytes in the header
        r = await svc.client.post("/v1/complete", json={"task_id": "t1", "result": "forged"},
                                  headers={"Authorization": alice["Authorization"], "X-Session": raw})  # type: ignore[dict-item]
        assert r.status_code in (400, 409), r.text
        _envelope(r, r.status_code)
    r = await svc.client.post("/v1/complete", json={"task_id": "t1", "result": "forged"}, headers=bob)
    _envelope(r, 403, "IF_ERR_NOT_OWNER")  # bob's own session cannot touch alice's claim
    assert await _result(svc.coordinator, "t1") is None and await _owner(svc.coordinator, "t1") == b"alice"


def _forged(svc: Svc, sub: str) -> dict[str, str]:
    """A credential for ``sub`` signed with the authority's real key, bypassing ``issue``'s checks."""
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "role": "swarm", "iat": now, "nbf": now - 5,
                        "exp": now + 600, "jti": uuid.uuid4().hex, "issued_ms": now * 1000},
                       svc.authority._key, algorithm="EdDSA")
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("name", ["completed:alice", "unclaimed", "completed:"])
async def test_a_swarm_id_that_names_a_task_state_is_never_a_swarm(svc: Svc, name: str) -> None:
    """An owner key holds a swarm id, ``unclaimed`` or ``completed:<swarm>``: a swarm named like a state would
    own alice's finished tasks (and overwrite her result) or win a task while leaving it looking unclaimed."""
    alice = await svc.open("alice")
    assert (await svc.client.post("/v1/claims", json={"task_ids": ["t1"]}, headers=alice)).status_code == 200
    assert (await svc.client.post("/v1/complete", json={"task_id": "t1", "result": {"by": "alice"}},
                                  headers=alice)).status_code == 200
    await svc.coordinator.announce_task("t2")
    with pytest.raises(InvalidIdentifierError):
        svc.authority.issue("swarm", name)
    _envelope(await svc.client.post("/v1/session", json={}, headers=_forged(svc, name)), 401, "IF_ERR_AUTH_INVALID")
    with pytest.raises(InvalidIdentifierError):  # nor in process
        await svc.coordinator.claim(name, "t2")
    assert await _result(svc.coordinator, "t1") == {"by": "alice"}
    assert await _owner(svc.coordinator, "t2") == b"unclaimed"
    assert await svc.coordinator.kv.get_prefix(f"/swarms/{name}") == []


async def test_a_swarm_credential_named_orchestrator_is_refused(svc: Svc) -> None:
    """The orchestrator's inbox also hears every swarm's blocker events: no remote swarm may be it."""
    _envelope(await svc.client.post("/v1/session", json={}, headers=svc.auth("orchestrator")), 403,
              "IF_ERR_FORBIDDEN")
    assert "orchestrator" not in svc.coordinator.swarm_connections
    assert await svc.coordinator.kv.get_prefix("/swarms/orchestrator") == []


# ---------------------------------------------------------------------------------------------- sessions


async def test_two_opens_at_once_here_and_on_another_replica_give_one_session(tmp_path: Any) -> None:
    async with _service(tmp_path) as one:
        other = IFCoordinator(kv=one.coordinator.kv, bus=one.coordinator.bus, audit=None)
        async with _service(tmp_path, authority=one.authority, coordinator=other) as two:
            auth = one.auth("alice")
            answers = await asyncio.gather(*(c.post("/v1/session", json={}, headers=auth)
                                             for c in (one.client, two.client, one.client, two.client)))
            assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
            for a in answers:
                if a.status_code == 409:
                    _envelope(a, 409, "IF_ERR_SWARM_ALREADY_CONNECTED")
            winner = next(a for a in answers if a.status_code == 200).json()["session"]
            stored = await one.coordinator.kv.get(session_key("alice"))
            assert stored is not None and stored.value.decode() == winner


async def test_a_close_racing_a_reopen_still_leaves_exactly_one_live_session(tmp_path: Any) -> None:
    async with _service(tmp_path) as one:
        other = IFCoordinator(kv=one.coordinator.kv, bus=one.coordinator.bus, audit=None)
        async with _service(tmp_path, authority=one.authority, coordinator=other) as two:
            old = await one.open("alice")
            kv = one.coordinator.kv
            reopened = asyncio.Event()
            real_delete = kv.delete

            async def slow_delete(key: str, *args: Any, **kwargs: Any) -> Any:  # the close's deletes lag
                if key.startswith("/swarms/alice/"):
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(reopened.wait(), 1.0)
                return await real_delete(key, *args, **kwargs)

            kv.delete = slow_delete  # type: ignore[method-assign]
            close = asyncio.create_task(one.client.delete("/v1/session", headers=old))
            await asyncio.sleep(0.05)  # the close is inside its store calls now
            again = await one.client.post("/v1/session", json={}, headers=one.auth("alice"))
            reopened.set()
            assert (await close).status_code == 200
            kv.delete = real_delete  # type: ignore[method-assign]
            if again.status_code == 200:  # the reopen won: it must stay the only live session
                stored = await kv.get(session_key("alice"))
                assert stored is not None and stored.value.decode() == again.json()["session"]
                assert await kv.get("/swarms/alice/capabilities") is not None
            twin = await two.client.post("/v1/session", json={}, headers=one.auth("alice"))
            assert twin.status_code == 409 or again.status_code != 200, "two live sessions of alice"


async def test_a_claim_racing_the_close_of_its_session_leaves_no_orphan_owner(tmp_path: Any) -> None:
    async with _service(tmp_path, claim_ttl=1) as s:
        alice = await s.open("alice")
        kv = s.coordinator.kv
        revoked = asyncio.Event()
        real_create, real_revoke = kv.create_many, kv.revoke_lease

        async def slow_create(items: Any) -> Any:  # the claim's transaction is still on the wire ...
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(revoked.wait(), 1.0)
            return await real_create(items)

        async def revoke_lease(lease: int) -> None:  # ... when the close revokes the session's lease
            await real_revoke(lease)
            revoked.set()

        kv.create_many, kv.revoke_lease = slow_create, revoke_lease  # type: ignore[method-assign]
        claim = asyncio.create_task(s.client.post("/v1/claims", json={"task_ids": ["x1", "x2"]}, headers=alice))
        await asyncio.sleep(0.05)
        assert (await s.client.delete("/v1/session", headers=alice)).status_code == 200
        await claim
        deadline = time.monotonic() + 3.5  # 3x the lease's TTL: a lease nobody keeps is gone by then
        while await _owner(s.coordinator, "x1") is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await _owner(s.coordinator, "x1") is None, "a closed swarm still owns x1"


async def test_a_transient_bus_error_while_closing_does_not_pin_the_swarms_lease(tmp_path: Any) -> None:
    async with _service(tmp_path, claim_ttl=1) as s:
        alice = await s.open("alice")
        assert (await s.client.post("/v1/claims", json={"task_ids": ["t1"]}, headers=alice)).status_code == 200
        failed = False
        for sub in s.coordinator._subscriptions["alice"]:
            real = sub.unsubscribe

            async def flaky(real: Any = real) -> None:  # NATS drops the connection once
                nonlocal failed
                if not failed:
                    failed = True
                    raise BackendUnavailable("bus connection dropped")
                await real()

            sub.unsubscribe = flaky  # type: ignore[method-assign]
        r = await s.client.delete("/v1/session", headers=alice)
        _envelope(r, 503)
        retry = await s.client.delete("/v1/session", headers=alice)  # the swarm retries its close
        assert retry.status_code in (200, 409), retry.text
        deadline = time.monotonic() + 3.5
        while await _owner(s.coordinator, "t1") is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await _owner(s.coordinator, "t1") is None, "the closed swarm's claim is kept alive"
        assert await s.coordinator.kv.get("/swarms/alice/capabilities") is None


async def test_the_reaper_survives_a_failed_abandon(tmp_path: Any) -> None:
    async with _service(tmp_path, session_ttl=0.2) as s:
        await s.open("alice")
        for sub in s.coordinator._subscriptions["alice"]:
            async def broken() -> None:
                raise BackendUnavailable("bus connection dropped")

            sub.unsubscribe = broken  # type: ignore[method-assign]
        deadline = time.monotonic() + 3
        while "alice" in s.gateway._sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "alice" not in s.gateway._sessions
        bob = await s.open("bob")
        await asyncio.sleep(1.0)  # five TTLs of silence from bob
        _envelope(await s.client.post("/v1/heartbeat", headers=bob), 409, "IF_ERR_NO_SESSION")


# ---------------------------------------------------------------------------------------------- fencing and doubles


async def test_a_stale_claim_cannot_complete_or_report_progress(svc: Svc) -> None:
    alice, bob = await svc.open("alice"), await svc.open("bob")
    assert (await svc.client.post("/v1/claims", json={"task_ids": ["t1"]}, headers=alice)).json()["claims"][0]["won"]
    owner = await svc.coordinator.kv.get("/tasks/t1/owner")
    assert owner is not None
    await svc.coordinator.kv.delete("/tasks/t1/owner")  # alice's claim lapsed (as a lease expiry does) ...
    assert (await svc.client.post("/v1/claims", json={"task_ids": ["t1"]}, headers=bob)).json()["claims"][0]["won"]
    for path, body in (("/v1/complete", {"task_id": "t1", "result": "late"}),
                       ("/v1/progress", {"task_id": "t1", "progress": 99})):
        _envelope(await svc.client.post(path, json=body, headers=alice), 409, "IF_ERR_STALE_CLAIM")
    r = await svc.client.post("/v1/complete", json={"results": [{"task_id": "t1", "result": "late"}]}, headers=alice)
    assert r.json()["outcomes"][0]["error"]["code"] == "IF_ERR_STALE_CLAIM"
    assert await _result(svc.coordinator, "t1") is None and await svc.coordinator.kv.get("/tasks/t1/progress") is None
    assert (await svc.client.post("/v1/complete", json={"task_id": "t1", "result": "bob"}, headers=bob)).status_code == 200
    assert await _result(svc.coordinator, "t1") == "bob"


@contextlib.contextmanager
def _store_latency(coordinator: IFCoordinator) -> Iterator[None]:
    """Every transaction yields to the loop first, as a round trip to etcd does."""
    kv = coordinator.kv
    real = kv.txn

    async def txn(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await real(*args, **kwargs)

    kv.txn = txn  # type: ignore[method-assign]
    try:
        yield
    finally:
        kv.txn = real  # type: ignore[method-assign]


async def test_conflicting_completions_of_one_claim_at_once_have_one_effect(svc: Svc) -> None:
    alice = await svc.open("alice")
    assert (await svc.client.post("/v1/claims", json={"task_ids": ["t1", "t2"]}, headers=alice)).status_code == 200
    with _store_latency(svc.coordinator):
        answers = await asyncio.gather(*(svc.client.post("/v1/complete", json={"task_id": "t1", "result": n},
                                                         headers=alice) for n in range(4)))
        batch = await svc.client.post("/v1/complete", json={"results": [{"task_id": "t2", "result": "a"},
                                                                        {"task_id": "t2", "result": "b"}]},
                                      headers=alice)
    won = [i for i, a in enumerate(answers) if a.status_code == 200]
    assert len(won) == 1, [a.text for a in answers]
    for a in answers:
        if a.status_code != 200:
            assert a.status_code in (403, 409) and a.json()["error"]["code"] in ("IF_ERR_STALE_CLAIM", "IF_ERR_NOT_OWNER")
    assert await _result(svc.coordinator, "t1") == won[0]
    outcomes = batch.json()["outcomes"]
    ok = [o for o in outcomes if "revision" in o]
    assert len(ok) == 1 and len(outcomes) == 2
    assert await _result(svc.coordinator, "t2") == ("a" if outcomes[0] is ok[0] else "b")
    assert await _owner(svc.coordinator, "t2") == b"completed:alice"


async def test_duplicate_ids_in_one_batch_of_claims_win_once_and_lose_to_nobody(svc: Svc) -> None:
    alice, bob = await svc.open("alice"), await svc.open("bob")
    await svc.coordinator.announce_task("ann")
    r = await svc.client.post("/v1/claims", json={"task_ids": ["d1", "d1", "ann", "ann", "d1"]}, headers=alice)
    claims = r.json()["claims"]
    assert [c["won"] for c in claims] == [True] * 5
    assert claims[0]["revision"] == claims[1]["revision"] == claims[4]["revision"]
    assert claims[2]["revision"] == claims[3]["revision"]
    r = await svc.client.post("/v1/claims", json={"task_ids": ["d1", "ann", "d1"]}, headers=bob)
    assert [c["won"] for c in r.json()["claims"]] == [False] * 3
    assert await _owner(svc.coordinator, "d1") == b"alice" and await _owner(svc.coordinator, "ann") == b"alice"


async def test_a_bad_item_in_a_batch_of_completions_writes_nothing(svc: Svc) -> None:
    alice = await svc.open("alice")
    await svc.client.post("/v1/claims", json={"task_ids": ["t1", "t2"]}, headers=alice)
    for results in ([{"task_id": "t1", "result": 1}, {"task_id": "../t2", "result": 2}],
                    [{"task_id": "t1", "result": 1}, {"result": 2}], [{"task_id": "t1", "result": 1}, "t2"],
                    [{"task_id": "t1", "result": 1}] * 1001, [{"task_id": "t1", "result": 1}, {"task_id": ["t2"]}]):
        r = await svc.client.post("/v1/complete", json={"results": results}, headers=alice)
        assert r.status_code == 400, r.text
        _envelope(r, 400)
    assert await _result(svc.coordinator, "t1") is None and await _owner(svc.coordinator, "t1") == b"alice"


# ---------------------------------------------------------------------------------------------- bodies


@pytest.mark.parametrize("body", [
    b"[" * 70 + b"]" * 70, b'{"task_ids":' + b"[" * 70 + b"]" * 70 + b"}", b"1" * 5000, b'{"task_ids":[' + b"1" * 5000 + b"]}",
    b"\xff\xfe{\x00}\x00", b"\xef\xbb\xbf{}", b"\x80\x81", b"null", b"true", b'"task_ids"', b"{" * 3,
    b'{"task_ids":["t1"],"task_ids":"x"}', b'{"task_ids":[null]}', b'{"task_ids":["t1\\u0000"]}',
    b'{"task_ids":["t\\n1"]}', b'{"task_ids":["a","b\\nc"]}', b'{"task_ids":["."]}', b'{"task_ids":[".."]}',
    b'{"task_ids":["' + b"x" * 129 + b'"]}', b'{"task_ids":{"0":"t1"}}', b'{"task_ids":[1.5]}'])
async def test_hostile_claim_bodies_are_refused_with_the_envelope_and_write_nothing(svc: Svc, body: bytes) -> None:
    alice = await svc.open("alice")
    r = await svc.client.post("/v1/claims", content=body, headers={**alice, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("IF_ERR_VALIDATION", "IF_ERR_INVALID_ID"), r.text
    assert not [kv for kv in await svc.coordinator.kv.get_prefix("/tasks/")]


async def test_an_oversized_body_is_refused_without_reading_it_all(svc: Svc) -> None:
    alice = await svc.open("alice")
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(64):  # 16 MiB in 256 KiB pieces
            pulled += 1
            yield b" " * (256 << 10)

    r = await svc.client.post("/v1/claims", content=body(), headers=alice)
    _envelope(r, 400)
    assert pulled <= 6, f"read {pulled * 256} KiB of a body capped at 1 MiB"


async def test_a_blocker_the_service_cannot_answer_is_not_recorded(svc: Svc) -> None:
    alice = await svc.open("alice")
    r = await svc.client.post("/v1/blockers", content=b'{"blocker_info": {"score": NaN, "reason": "x"}}',
                              headers={**alice, "Content-Type": "application/json"})
    recorded = await svc.coordinator.kv.get_prefix("/blockers/alice/")
    assert (r.status_code == 200) == (len(recorded) == 1), (r.text, recorded)


async def test_a_push_the_inbox_cannot_deliver_loses_no_task(svc: Svc) -> None:
    alice = await svc.open("alice")
    r = await svc.client.post("/v1/tasks", content=b'{"swarm_id":"alice","tasks":[{"id":"good"},'
                                                   b'{"id":"bad","weight":Infinity}]}',
                              headers={**svc.auth("ops", "operator"), "Content-Type": "application/json"})
    got: list[str] = []
    for _ in range(2):
        answer = await svc.client.get("/v1/inbox", headers=alice)
        assert answer.status_code == 200, answer.text
        got += [t["id"] for t in answer.json()["tasks"]]
    assert r.status_code == 400 or got == ["good", "bad"], (r.text, got)
    assert "good" in got or r.status_code == 400


# ---------------------------------------------------------------------------------------------- fuzz


_IDS = st.sampled_from(["t1", "held", "", ".", "..", "a/b", "a\nb", "x" * 129, "*", ">", "a b", "é", "t1\x00",
                        "help-", "help-abc-alice", "completed:x", "unclaimed"])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=12), _IDS)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["task_id", "task_ids", "result", "results", "progress", "blocker_info", "capabilities",
                     "swarm_id", "tasks", "id"]) | st.text(max_size=6), inner, max_size=4), max_leaves=16)
_BODIES = st.one_of(
    st.dictionaries(st.sampled_from(["task_id", "task_ids", "result", "results", "progress", "blocker_info",
                                     "capabilities", "swarm_id", "tasks"]), _JSON, max_size=4),
    st.fixed_dictionaries({"task_ids": st.lists(_IDS, min_size=0, max_size=5)}),
    st.fixed_dictionaries({"results": st.lists(st.fixed_dictionaries({"task_id": _IDS, "result": _JSON}), max_size=4)}),
    st.fixed_dictionaries({"swarm_id": st.sampled_from(["fuzz-a", "nobody", "../x", ""]),
                           "tasks": st.lists(st.fixed_dictionaries({"id": _IDS}), max_size=3)}),
    _JSON)
_ROUTES = [("POST", "/v1/session"), ("GET", "/v1/inbox"), ("POST", "/v1/heartbeat"), ("POST", "/v1/claims"),
           ("POST", "/v1/complete"), ("POST", "/v1/progress"), ("POST", "/v1/blockers"), ("POST", "/v1/tasks")]


class _LoopService:
    """One service on one private loop for every example of a hypothesis test (state carries over: the
    service must keep serving whatever came before)."""

    def __init__(self, tmp_path: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._cm = _service(tmp_path, session_ttl=600)
        self.svc: Svc = self.loop.run_until_complete(self._cm.__aenter__())
        self.swarm = self.run(self.svc.open("fuzz-a"))
        self.operator = self.svc.auth("ops", "operator")
        self.run(self.svc.client.post("/v1/claims", json={"task_ids": ["held"]}, headers=self.swarm))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self._cm.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture
def loop_service(tmp_path: Any) -> Iterator[_LoopService]:
    service = _LoopService(tmp_path)
    yield service
    service.close()


def _never_a_500(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and error["code"].startswith("IF_ERR_"), r.text
        assert "Traceback" not in r.text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(route=st.sampled_from(_ROUTES), body=_BODIES,
       params=st.dictionaries(st.sampled_from(["wait", "max", "release"]),
                              st.sampled_from(["0", "-1", "nan", "inf", "1e9", "0.01", "1001", "x", "", "1_0"]),
                              max_size=2))
def test_fuzzed_bodies_on_every_route_answer_the_envelope_and_the_service_keeps_serving(
        loop_service: _LoopService, route: tuple[str, str], body: Any, params: dict[str, str]) -> None:
    method, path = route
    headers = loop_service.operator if path == "/v1/tasks" else loop_service.swarm
    svc = loop_service.svc

    async def go() -> None:
        r = await svc.client.request(method, path, content=json.dumps(body).encode(), params=params,
                                     headers={**headers, "Content-Type": "application/json"})
        _never_a_500(r)
        if path == "/v1/session" and method == "POST":
            assert r.status_code != 200, "a second session of fuzz-a"
        alive = await svc.client.post("/v1/heartbeat", headers=loop_service.swarm)
        assert alive.status_code == 200, alive.text
        owners = await svc.coordinator.kv.get_prefix("/tasks/")
        for kv in owners:  # whatever was written, it was written as fuzz-a and under a valid id
            if kv.key.endswith("/owner"):
                assert kv.value in (b"fuzz-a", b"completed:fuzz-a"), kv

    loop_service.run(go())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(authorization=st.one_of(st.text(max_size=60), st.binary(max_size=40),
                               st.text(max_size=40).map(lambda t: "Bearer " + t),
                               st.sampled_from(["Bearer", "Bearer ", "bearer x.y.z", "Basic Zm9vOmJhcg==",
                                                "Bearer " + "a" * 5000, "Bearer a.b.c", "Bearer ..", "Bearer e30.e30."])),
       session=st.one_of(st.none(), st.text(max_size=40), st.binary(max_size=40)),
       path=st.sampled_from(["/v1/heartbeat", "/v1/claims", "/v1/complete", "/v1/session", "/v1/tasks"]))
def test_fuzzed_authorization_and_session_headers_never_get_in(
        loop_service: _LoopService, authorization: str | bytes, session: str | bytes | None, path: str) -> None:
    svc = loop_service.svc

    def header(value: str | bytes) -> bytes:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        return bytes(b for b in raw if b not in b"\r\n\x00") or b"x"

    headers = {"Authorization": header(authorization)}
    if session is not None:
        headers["X-Session"] = header(session)

    async def go() -> None:
        r = await svc.client.post(path, json={"task_ids": ["held"], "task_id": "held", "result": "forged"},
                                  headers=headers)  # type: ignore[arg-type]
        _never_a_500(r)
        assert r.status_code in (400, 401, 403), r.text
        assert await _result(svc.coordinator, "held") is None

    loop_service.run(go())


async def test_a_remote_session_cannot_take_over_a_swarm_live_in_process(svc: Svc) -> None:
    inbox = await svc.coordinator.register_swarm("local", ["code:python"])  # as console/embedded.py does
    assert await svc.coordinator.claim("local", "t1") is not None
    r = await svc.client.post("/v1/session", json={}, headers=svc.auth("local"))
    if r.status_code == 200:  # taken over: what the impostor's clean close does to the live swarm
        await svc.client.delete("/v1/session", headers={**svc.auth("local"), "X-Session": r.json()["session"]})
    assert await _owner(svc.coordinator, "t1") == b"local", "the in-process swarm lost its claim"
    assert svc.coordinator.swarm_connections.get("local") is inbox
    _envelope(r, 409, "IF_ERR_SWARM_ALREADY_CONNECTED")
