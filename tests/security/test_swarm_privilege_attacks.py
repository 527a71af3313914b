"""A malicious swarm in another process, holding only its own credential, against the coordinator service.

The deployment is the secured one: etcd with TLS and a password and a NATS server, both known only to the
``infrafabric coordinator serve`` process (a real process here, auditing into a real SQLite witness).
Swarms get the service's URL and one credential each. Every attack from the least-privilege issue is
tried through the only door a swarm has; each fails with a clear error code, the refusals are audited, and
the honest swarm's work goes on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backends.kv import open_kv
from backends.servers.ports import free_port
from infrafabric.coordinator import IFCoordinator
from infrafabric.coordinator.credentials import PUBLIC_FILE, CredentialAuthority, revoke
from infrafabric.coordinator.remote import RemoteSwarmClient
from infrafabric.errors import (
    CredentialError,
    InfraFabricError,
    NotTaskOwnerError,
    PermissionDeniedError,
    SwarmAlreadyConnectedError,
    ValidationError,
)
from infrafabric.witness import Witness

pytestmark = [pytest.mark.security, pytest.mark.etcd, pytest.mark.nats]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ControlPlane:
    url: str
    kv_url: str
    bus_url: str
    env: dict[str, str]
    authority: CredentialAuthority
    witness_url: str
    witness_keys: Path

    def credential(self, name: str, role: str = "swarm", ttl: int = 600) -> str:
        return self.authority.issue(role, name, ttl)  # type: ignore[arg-type]

    def swarm(self, name: str, caps: list[str] | None = None, **options: object) -> RemoteSwarmClient:
        return RemoteSwarmClient(self.url, caps or ["code:python"], credential=self.credential(name),
                                 poll_wait=0.5, **options)  # type: ignore[arg-type]

    def audited(self, operation: str, match: dict[str, object] | None = None, timeout: float = 10) -> bool:
        """Whether the serve process's audit log holds ``operation`` (with ``match`` in its params); the log
        is group-committed by another process, so it is read again until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            with Witness(self.witness_url, self.witness_keys, publish=(), writer="thread") as w:
                entries = [e for e in w.query(component="IF.coordinator") if e["operation"] == operation]
            if any(all(e["params"].get(k) == v for k, v in (match or {}).items()) for e in entries):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


@pytest.fixture(scope="module")
def control_plane(etcd_secure, nats_server, tmp_path_factory) -> Iterator[ControlPlane]:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("control-plane")
    authority = CredentialAuthority.load_or_create(base / "authority")
    kv_url = (f"{etcd_secure.url}?ca={etcd_secure.ca_cert}&cert={etcd_secure.client_cert}"
              f"&key={etcd_secure.client_key}&username=root")
    port = free_port()
    witness_url, witness_keys = f"sqlite:///{base / 'audit.db'}", base / "audit-keys"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFRAFABRIC_ETCD_PASSWORD": etcd_secure.root_password,
           "INFRAFABRIC_WITNESS_URL": witness_url, "INFRAFABRIC_WITNESS_KEY_DIR": str(witness_keys),
           "INFRAFABRIC_HOME": str(base / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from infrafabric.cli.main import app; app()", "coordinator", "serve",
         "--kv", kv_url, "--bus", nats_server.url, "--listen", f"127.0.0.1:{port}",
         "--authority-key", str(base / "authority" / PUBLIC_FILE), "--claim-ttl", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "swarm API on" in line:
                break
            if not line and proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
        else:
            raise AssertionError("serve did not start")
        yield ControlPlane(f"http://127.0.0.1:{port}", kv_url, nats_server.url,
                           {"INFRAFABRIC_ETCD_PASSWORD": etcd_secure.root_password}, authority,
                           witness_url, witness_keys)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def platform(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[IFCoordinator]:
    """The operator's own view of the engines (the test plays the orchestrator that pushes work)."""
    monkeypatch.setenv("INFRAFABRIC_ETCD_PASSWORD", control_plane.env["INFRAFABRIC_ETCD_PASSWORD"])
    coordinator = IFCoordinator(kv_url=control_plane.kv_url, bus_url=control_plane.bus_url, audit=None)
    async with coordinator:
        yield coordinator


def _ids(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _pushed_and_claimed(platform: IFCoordinator, swarm: RemoteSwarmClient) -> str:
    task_id = _ids("task")
    assert swarm.swarm_id is not None
    await platform.push_task_to_swarm(swarm.swarm_id, {"id": task_id, "work": "honest"})
    task = await swarm.next_task(5)
    assert task["id"] == task_id
    assert await swarm.claim(task_id) is not None
    return task_id


async def test_a_swarm_cannot_complete_touch_or_steal_another_swarms_task(control_plane, platform) -> None:
    honest, attacker = control_plane.swarm(_ids("honest")), control_plane.swarm(_ids("mallory"))
    async with honest, attacker:
        task_id = await _pushed_and_claimed(platform, honest)
        with pytest.raises(NotTaskOwnerError) as caught:
            await attacker.complete(task_id, {"forged": True})
        assert caught.value.error_code == "IF_ERR_NOT_OWNER"
        with pytest.raises(NotTaskOwnerError):
            await attacker.progress(task_id, {"pct": 100})
        assert await attacker.claim(task_id) is None  # owned: the claim is lost, not stolen
        assert await platform.task_owner(task_id) == honest.swarm_id
        await honest.complete(task_id, {"by": "honest"})
        with pytest.raises(NotTaskOwnerError):  # a finished result is not overwritten either
            await attacker.complete(task_id, {"forged": True})
        stored = await platform.kv.get(f"/tasks/{task_id}/result")
        assert stored is not None and json.loads(stored.value) == {"by": "honest"}
    assert control_plane.audited("foreign_task_write_refused", {"task_id": task_id, "swarm_id": attacker.swarm_id})


async def test_forged_expired_edited_and_wrong_role_credentials_are_refused(control_plane) -> None:
    name = _ids("victim")
    own_key = Ed25519PrivateKey.generate()
    genuine = control_plane.credential(name)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    header, payload, signature = genuine.split(".")
    edited_payload = jwt.utils.base64url_encode(json.dumps({**claims, "sub": "someone-else"}).encode()).decode()
    cases = {
        "self-signed": (jwt.encode(claims, own_key, algorithm="EdDSA"), "IF_ERR_AUTH_INVALID"),
        "edited": (f"{header}.{edited_payload}.{signature}", "IF_ERR_AUTH_INVALID"),
        "alg none": (jwt.encode(claims, None, algorithm="none"), "IF_ERR_AUTH_INVALID"),
        "expired": (jwt.encode({**claims, "exp": int(time.time()) - 60}, control_plane.authority._key,
                               algorithm="EdDSA"), "IF_ERR_AUTH_EXPIRED"),
        "garbage": ("a" * 5000, "IF_ERR_AUTH_INVALID"),
    }
    for what, (token, code) in cases.items():
        client = RemoteSwarmClient(control_plane.url, [], credential=token)
        with pytest.raises(CredentialError) as caught:
            await client.start()
        assert caught.value.error_code == code, what
        await client.stop()
    operator = RemoteSwarmClient(control_plane.url, [], credential=control_plane.credential("alice", "operator"))
    with pytest.raises(PermissionDeniedError):
        await operator.start()
    await operator.stop()
    async with httpx.AsyncClient(base_url=control_plane.url) as raw:  # no credential at all
        answer = await raw.post("/v1/session", json={"capabilities": []})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "IF_ERR_AUTH_INVALID"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert control_plane.audited("swarm_call_refused")


async def test_a_second_live_session_of_one_swarm_is_refused_and_gets_nothing(control_plane, platform) -> None:
    name = _ids("alpha")
    first = control_plane.swarm(name)
    async with first:
        twin = control_plane.swarm(name)  # the same swarm id, e.g. a stolen credential or a stale process
        with pytest.raises(SwarmAlreadyConnectedError) as caught:
            await twin.start()
        assert caught.value.error_code == "IF_ERR_SWARM_ALREADY_CONNECTED"
        await twin.stop()
        task_id = await _pushed_and_claimed(platform, first)  # work still goes to the live session
        await first.complete(task_id, {"ok": True})
    again = control_plane.swarm(name)  # after a clean stop the id is free again
    async with again:
        assert again.swarm_id == name


async def test_a_blocker_names_its_reporter_whatever_the_body_says(control_plane, platform) -> None:
    victim, attacker = _ids("victim"), control_plane.swarm(_ids("mallory"))
    async with attacker:
        async with httpx.AsyncClient(base_url=control_plane.url, headers={
                "Authorization": f"Bearer {control_plane.credential(attacker.swarm_id)}"}) as raw:
            answer = await raw.post("/v1/blockers", json={"blocker_info": {"x": 1}, "swarm_id": victim})
            assert answer.status_code == 409  # no session header: not even a blocker without a session
        event = await attacker.report_blocker({"swarm_id": victim, "reason": "forged"})
        assert event["swarm_id"] == attacker.swarm_id
        assert not await platform.kv.get_prefix(f"/blockers/{victim}/")
        assert await platform.kv.get_prefix(f"/blockers/{attacker.swarm_id}/")


async def test_hostile_bodies_are_refused_and_the_service_keeps_serving(control_plane, platform) -> None:
    attacker = control_plane.swarm(_ids("mallory"))
    async with attacker:
        for body in (b"[" * 100_000 + b"]" * 100_000, b"not json", b"[]", json.dumps({"task_ids": "t"}).encode(),
                     json.dumps({"task_ids": ["../../etc"]}).encode(), json.dumps({"task_ids": []}).encode(),
                     b"{" + b'"a":1,' * 300_000 + b'"b":2}'):
            with pytest.raises((ValidationError, InfraFabricError)) as caught:
                await attacker._call("POST", "/v1/claims", content=body)
            assert caught.value.error_code in ("IF_ERR_VALIDATION", "IF_ERR_INVALID_ID"), caught.value
        with pytest.raises(InfraFabricError) as caught:  # there is no route that reads another swarm's state
            await attacker._call("GET", "/v1/tasks/anything")
        assert caught.value.error_code == "IF_ERR_NOT_FOUND"
        honest = control_plane.swarm(_ids("honest"))
        async with honest:
            await honest.complete(await _pushed_and_claimed(platform, honest), {"ok": True})


async def test_a_revoked_credential_stops_working_within_a_second_and_others_do_not(control_plane, platform) -> None:
    attacker, honest = control_plane.swarm(_ids("mallory")), control_plane.swarm(_ids("honest"))
    async with honest:
        await attacker.start()
        store = open_kv(control_plane.kv_url)
        async with store:
            await revoke(store, role="swarm", name=attacker.swarm_id)
        deadline = time.monotonic() + 3
        while True:
            try:
                await attacker._call("POST", "/v1/heartbeat")
            except CredentialError as exc:
                assert exc.error_code == "IF_ERR_AUTH_REVOKED"
                break
            assert time.monotonic() < deadline, "revocation not applied within its refresh interval"
            await asyncio.sleep(0.1)
        fresh = control_plane.swarm(attacker.swarm_id)  # a credential issued after the revocation works
        with pytest.raises(InfraFabricError) as caught:  # ... but the old session is still the revoked one's
            await fresh.start()
        assert caught.value.error_code == "IF_ERR_SWARM_ALREADY_CONNECTED"
        await fresh.stop()
        await honest.complete(await _pushed_and_claimed(platform, honest), {"ok": True})
        attacker._session = None
        await attacker.stop()


async def test_a_silent_swarms_claims_expire_and_go_to_another(control_plane, platform) -> None:
    crashed, other = control_plane.swarm(_ids("crashed")), control_plane.swarm(_ids("other"))
    async with other:
        await crashed.start()
        task_id = await _pushed_and_claimed(platform, crashed)
        crashed._poller.cancel()  # the process hangs: no poll, no heartbeat
        deadline = time.monotonic() + 15
        while await platform.task_owner(task_id) == crashed.swarm_id:
            assert time.monotonic() < deadline, "the silent swarm's claim never expired"
            await asyncio.sleep(0.2)
        assert await other.claim(task_id) is not None
        with pytest.raises(InfraFabricError) as caught:  # the silent swarm's session is gone
            await crashed.complete(task_id, {"late": True})
        assert caught.value.error_code == "IF_ERR_NO_SESSION", caught.value.message
        crashed._session = None
        await crashed.stop()


def test_a_swarm_worker_process_with_only_its_credential_does_its_work(control_plane, tmp_path: Path) -> None:
    from infrafabric.coordinator.credentials import write_credential

    name = _ids("worker")
    credential = tmp_path / "swarm.cred"
    write_credential(credential, control_plane.credential(name))
    env = {k: v for k, v in os.environ.items() if "ETCD" not in k and "NATS" not in k}
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.Popen([sys.executable, "-m", "infrafabric.coordinator.worker", "--service", control_plane.url,
                             "--credential", str(credential), "--capabilities", "code:python"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "ready"

        async def push() -> None:
            os.environ["INFRAFABRIC_ETCD_PASSWORD"] = control_plane.env["INFRAFABRIC_ETCD_PASSWORD"]
            async with IFCoordinator(kv_url=control_plane.kv_url, bus_url=control_plane.bus_url, audit=None) as c:
                await c.push_task_to_swarm(name, {"id": "work-1"})
                await c.push_task_to_swarm(name, {"id": "stop-1", "type": "stop"})

        asyncio.run(push())
        events = [json.loads(line)["event"] for line in proc.stdout]
        assert events[:3] == ["received", "claimed", "completed"] and events[-1] == "stopped"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_swarm_api_over_https_is_trusted_only_with_the_platform_ca(tmp_path: Path) -> None:
    from backends.servers.tls import generate_tls_bundle

    tls = generate_tls_bundle(tmp_path / "tls")
    authority = CredentialAuthority.load_or_create(tmp_path / "authority")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFRAFABRIC_WITNESS_URL": "memory://",
           "INFRAFABRIC_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from infrafabric.cli.main import app; app()", "coordinator", "serve",
         "--kv", "memory://", "--bus", "memory://", "--listen", f"127.0.0.1:{port}",
         "--authority-key", str(tmp_path / "authority" / PUBLIC_FILE),
         "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "https://" in next(line for line in proc.stdout if "swarm API on" in line)

        async def run() -> None:
            trusted = RemoteSwarmClient(f"https://127.0.0.1:{port}", [], credential=authority.issue("swarm", "tls-a"),
                                        ca_file=str(tls.ca_cert))
            async with trusted:
                assert trusted.swarm_id == "tls-a"
            untrusted = RemoteSwarmClient(f"https://127.0.0.1:{port}", [],
                                          credential=authority.issue("swarm", "tls-b"))
            with pytest.raises(InfraFabricError) as caught:
                await untrusted.start()
            assert caught.value.error_code == "IF_ERR_UNAVAILABLE" and "CERTIFICATE_VERIFY_FAILED" in caught.value.message
            await untrusted.stop()

        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)


async def test_only_an_operator_may_push_work_and_the_push_names_them(control_plane) -> None:
    """``POST /v1/tasks`` is the orchestrator's door: a swarm credential (even the target's own) cannot
    push work into any inbox; an operator's push is delivered and audited with the operator's name."""
    victim = control_plane.swarm(_ids("victim"))
    async with victim, httpx.AsyncClient(base_url=control_plane.url, timeout=10) as http:
        assert victim.swarm_id is not None
        forged = {"swarm_id": victim.swarm_id, "tasks": [{"id": _ids("forged"), "type": "stop"}]}
        for token in (control_plane.credential(victim.swarm_id), control_plane.credential(_ids("mallory")),
                      "x" * 40, None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = await http.post("/v1/tasks", json=forged, headers=headers)
            assert r.status_code in (401, 403), r.text
            assert r.json()["error"]["code"].startswith("IF_ERR_AUTH") or r.json()["error"]["code"] == "IF_ERR_FORBIDDEN"
        operator = {"Authorization": f"Bearer {control_plane.credential('alice', role='operator')}"}
        for bad in ({"swarm_id": victim.swarm_id, "tasks": []}, {"swarm_id": victim.swarm_id, "tasks": [1]},
                    {"swarm_id": "../x", "tasks": [{"id": "t"}]}, {"tasks": [{"id": "t"}]},
                    {"swarm_id": victim.swarm_id, "tasks": [{"id": "bad id with spaces"}]}):
            r = await http.post("/v1/tasks", json=bad, headers=operator)
            assert r.status_code == 400, (bad, r.text)
        honest_id = _ids("honest")
        r = await http.post("/v1/tasks", json={"swarm_id": victim.swarm_id, "tasks": [{"id": honest_id}]},
                            headers=operator)
        assert r.status_code == 200 and r.json() == {"pushed": 1}
        task = await victim.next_task(5)
        assert task["id"] == honest_id  # the only thing that reached the inbox
    assert control_plane.audited("tasks_pushed_by_operator", {"operator": "alice", "swarm_id": victim.swarm_id})
