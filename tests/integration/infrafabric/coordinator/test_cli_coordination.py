"""The `infrafabric coordinator` and `infrafabric governor` commands, on a SQLite store and on etcd."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import pytest
from typer.testing import CliRunner

from infrafabric.cli.main import app
from infrafabric.coordinator.client import SwarmClient

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_governor_commands_keep_state_between_invocations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kv = f"sqlite:///{tmp_path}/cli.db"
    invoke("governor", "register", "ndi-1", "--capabilities", "integration:ndi", "--cost-per-hour", "2",
           "--budget", "1.5", "--kv", kv)
    invoke("governor", "register", "web-1", "--capabilities", "integration:webrtc", "--cost-per-hour", "3",
           "--budget", "10", "--kv", kv)
    out = invoke("governor", "find-help", "--capabilities", "integration:ndi,integration:webrtc", "--kv", kv)
    assert "ndi-1" in out and "web-1" in out
    out = invoke("governor", "budgets", "--kv", kv)
    assert "ndi-1" in out and "1.5" in out and "closed" in out
    authority = tmp_path / "authority"
    invoke("coordinator", "issue-credential", "alice", "--role", "operator", "--authority-dir", str(authority),
           "--out", str(tmp_path / "alice.cred"))
    invoke("coordinator", "issue-credential", "ndi-1", "--authority-dir", str(authority),
           "--out", str(tmp_path / "ndi.cred"))
    op = ["--credential", str(tmp_path / "alice.cred"), "--authority-key", str(authority / "authority_key.pub.pem")]
    as_swarm = ["--credential", str(tmp_path / "ndi.cred"), "--authority-key", str(authority / "authority_key.pub.pem")]
    bad = runner.invoke(app, ["governor", "set-budget", "ndi-1", "1000000", *as_swarm, "--kv", kv])
    assert bad.exit_code == 2 and "IF_ERR_FORBIDDEN" in bad.output  # a swarm's own credential cannot do it
    invoke("governor", "set-budget", "ndi-1", "0", *op, "--kv", kv)
    out = invoke("governor", "find-help", "--capabilities", "integration:ndi", "--kv", kv)
    assert "escalated" in out
    assert "reset by operator:alice" in invoke("governor", "reset-breaker", "ndi-1", *op, "--budget", "4", "--kv", kv)
    invoke("coordinator", "revoke-credential", "--operator", "alice", "--kv", kv)
    bad = runner.invoke(app, ["governor", "reset-breaker", "ndi-1", *op, "--budget", "9", "--kv", kv])
    assert bad.exit_code == 2 and "IF_ERR_AUTH_REVOKED" in bad.output
    out = invoke("governor", "budgets", "--kv", kv)
    assert "4" in out
    bad = runner.invoke(app, ["governor", "register", "bad id!", "--cost-per-hour", "1", "--budget", "1", "--kv", kv])
    assert bad.exit_code == 2 and "IF_ERR_INVALID_ID" in bad.output
    invoke("coordinator", "issue-credential", "bob", "--role", "operator", "--authority-dir", str(authority),
           "--out", str(tmp_path / "bob.cred"))
    bob = ["--credential", str(tmp_path / "bob.cred"), "--authority-key", str(authority / "authority_key.pub.pem")]
    bad = runner.invoke(app, ["governor", "reset-breaker", "ghost", *bob, "--kv", kv])
    assert bad.exit_code == 2 and "IF_ERR_UNKNOWN_SWARM" in bad.output


def test_coordinator_status_and_swarms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kv = f"sqlite:///{tmp_path}/cli2.db"

    async def listed_while_running_and_gone_after_a_clean_stop() -> None:
        client = SwarmClient("cli-swarm", ["cli:design"], kv_url=kv)
        await client.start()
        assert "cli-swarm" in await asyncio.to_thread(invoke, "coordinator", "swarms", "--kv", kv)
        await client.stop()  # a clean stop deregisters (the registration lives on the session lease)
        assert "cli-swarm" not in await asyncio.to_thread(invoke, "coordinator", "swarms", "--kv", kv)

    asyncio.run(listed_while_running_and_gone_after_a_clean_stop())
    assert "healthy" in invoke("coordinator", "status", "--kv", kv)


@pytest.mark.etcd
@pytest.mark.nats
async def test_coordinator_serve_answers_blockers(etcd_server, nats_server) -> None:  # type: ignore[no-untyped-def]
    """`coordinator serve` on etcd + NATS assigns a team to a blocker raised by a remote swarm."""
    tag = uuid.uuid4().hex[:6]
    env = {**os.environ, "INFRAFABRIC_KV_URL": etcd_server.url, "INFRAFABRIC_BUS_URL": nats_server.url}
    sip, ndi = f"integration:sip-{tag}", f"integration:ndi-{tag}"  # this test's own: the etcd is shared
    for swarm_id, cap in ((f"sip-{tag}", sip), (f"ndi-{tag}", ndi)):
        subprocess.run([sys.executable, "-m", "infrafabric.cli.main", "governor", "register", swarm_id,
                        "--capabilities", cap, "--cost-per-hour", "2", "--budget", "10"], env=env, check=True,
                       capture_output=True)
    helper = SwarmClient(f"ndi-{tag}", [ndi], kv_url=etcd_server.url, bus_url=nats_server.url)
    blocked = SwarmClient(f"sip-{tag}", [sip], kv_url=etcd_server.url, bus_url=nats_server.url)
    await helper.start()
    await blocked.start()
    serve = subprocess.Popen([sys.executable, "-m", "infrafabric.cli.main", "coordinator", "serve", "--duration", "30"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert serve.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(serve.stdout.readline), 30)
        assert "coordinator serving" in line
        await blocked.report_blocker({"required_capabilities": [sip, ndi]})
        try:
            task = await helper.next_task(15)
        except asyncio.TimeoutError:
            serve.terminate()
            raise AssertionError(f"no help request; serve said: {serve.communicate(timeout=20)[0][-3000:]}") from None
        assert task["type"] == "help_request" and task["blocked_swarm"] == f"sip-{tag}"
    finally:
        serve.terminate()
        serve.wait(20)
        await helper.stop()
        await blocked.stop()
    assert serve.returncode == 0


async def test_blockers_end_with_their_swarm_or_an_operator(etcd_server, nats_server) -> None:  # type: ignore[no-untyped-def]
    """A blocker lives on its reporter's session: a swarm that dies takes its pending blockers with it
    within the lease TTL; an operator resolves one with `coordinator resolve-blocker`."""
    tag = uuid.uuid4().hex[:6]
    dying = SwarmClient(f"dying-{tag}", ["code:python"], kv_url=etcd_server.url, bus_url=nats_server.url, claim_ttl=2)
    living = SwarmClient(f"living-{tag}", ["code:python"], kv_url=etcd_server.url, bus_url=nats_server.url)
    await dying.start()
    await living.start()
    try:
        doomed = await dying.report_blocker({"required_capabilities": [f"none:{tag}"]})
        kept = await living.report_blocker({"required_capabilities": [f"none:{tag}"]})
        store = living.kv
        assert await store.get(f"/blockers/{dying.swarm_id}/{doomed['blocker_id']}") is not None
        await dying.stop(release=False)  # dies: stops refreshing its lease, releases nothing
        deadline = time.monotonic() + 15
        while await store.get(f"/blockers/{dying.swarm_id}/{doomed['blocker_id']}") is not None:
            assert time.monotonic() < deadline, "a dead swarm's blocker stayed pending"
            await asyncio.sleep(0.1)
        out = await asyncio.to_thread(invoke, "coordinator", "resolve-blocker", living.swarm_id, kept["blocker_id"],
                                      "--kv", etcd_server.url)
        assert "resolved" in out
        assert await store.get(f"/blockers/{living.swarm_id}/{kept['blocker_id']}") is None
        again = await asyncio.to_thread(runner.invoke, app, ["coordinator", "resolve-blocker", living.swarm_id,
                                                             kept["blocker_id"], "--kv", etcd_server.url])
        assert again.exit_code == 1
    finally:
        await living.stop()
