"""Chaos: the node API's PoOT writer process is SIGKILLed while proofs arrive over HTTP, then the API
server itself is SIGKILLed. A real ``lucid serve`` on a real SQLite file.

What must hold: every 200 has its row and its nonce exactly once; every failure is the 500 envelope
(LUCID_ERR_5999) and left nothing, so the same proof sent again succeeds; the server keeps serving
(a new writer process); and a killed server leaves no writer process behind.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from lucid.node.api.auth import mint_token
from lucid.node.api.server import ServerProcess
from tests.fixtures.node_fixtures import sample_node_create_request

pytestmark = [pytest.mark.chaos]

N_NODES = 4
PER_ROUND = 200


def _writer(server_pid: int, timeout: float = 10.0) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(server_pid).children(recursive=True):
            if "lucid.node.sqlite_writer.poot_writer_child" in " ".join(child.cmdline()):
                return child
        time.sleep(0.02)
    raise AssertionError("the server started no PoOT writer process")


async def _validate(client: httpx.AsyncClient, headers: dict[str, str], node: str, nonce: str) -> httpx.Response:
    body = {"output_data": "chaos-output", "timestamp": datetime.now(UTC).isoformat(), "nonce": nonce}
    return await client.post(f"/api/v1/nodes/{node}/poot/validate", json=body, headers=headers)


async def test_writer_killed_under_load_then_server_killed(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(32)
    admin = {"Authorization": f"Bearer {mint_token(secret, role='admin')}"}
    validator = {"Authorization": f"Bearer {mint_token(secret, role='validator')}"}
    env = {k: "10000000" for k in ("LUCID_NODE_RATE_PUBLIC", "LUCID_NODE_RATE_NODE", "LUCID_NODE_RATE_ADMIN",
                                   "LUCID_NODE_RATE_POOT", "LUCID_NODE_RATE_PAYOUT")}
    server = ServerProcess(tmp_path, secret=secret, env=env).start()
    try:
        assert server.proc is not None
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            nodes = []
            for i in range(N_NODES):
                body = dict(sample_node_create_request(), name=f"chaos-{i}")
                body.pop("initial_pool_id", None)
                r = await client.post("/api/v1/nodes", headers=admin, json=body)
                assert r.status_code == 201, r.text
                nodes.append(r.json()["node_id"])
                assert (await client.post(f"/api/v1/nodes/{nodes[-1]}/start", headers=admin)).status_code == 200
            await _validate(client, validator, nodes[0], "warm-up-0001")
            first = _writer(server.proc.pid)

            sent = [(nodes[i % N_NODES], f"chaos-{i:05d}") for i in range(PER_ROUND)]
            calls = [asyncio.ensure_future(_validate(client, validator, n, k)) for n, k in sent]
            await asyncio.sleep(0)  # the requests are on their way
            for _ in range(400):  # stop it once some are answered and more are arriving
                if sum(c.done() for c in calls) >= 10:
                    break
                await asyncio.sleep(0.005)
            # Stopped, it reads nothing more: the server fills its pipeline (two groups) and the rest
            # wait; the kill then takes groups that were sent and never committed.
            first.send_signal(signal.SIGSTOP)
            done = -1
            while done != sum(c.done() for c in calls):
                done = sum(c.done() for c in calls)
                await asyncio.sleep(0.2)
            first.send_signal(signal.SIGKILL)
            answers = await asyncio.gather(*calls)

            ok = [s for s, r in zip(sent, answers) if r.status_code == 200]
            failed = [s for s, r in zip(sent, answers) if r.status_code != 200]
            for r in answers:
                if r.status_code != 200:
                    assert r.status_code == 500 and r.json()["error"]["code"] == "LUCID_ERR_5999", r.text
            assert failed and ok, (len(ok), len(failed))
            # what was refused left nothing behind: the same proofs go through now (a new writer)
            retried = await asyncio.gather(*(_validate(client, validator, n, k) for n, k in failed))
            assert all(r.status_code == 200 for r in retried), [r.text for r in retried if r.status_code != 200]
            # and what was acknowledged is a replay
            again = await _validate(client, validator, *ok[0])
            assert again.status_code == 409
            second = _writer(server.proc.pid)
            assert second.pid != first.pid

        with sqlite3.connect(tmp_path / "server.db") as con:
            nonces = con.execute("SELECT node_id, nonce FROM poot_nonces WHERE nonce LIKE 'chaos-%'").fetchall()
            valid = con.execute("SELECT node_id, nonce FROM poot_validations WHERE nonce LIKE 'chaos-%' "
                                "AND is_valid = 1").fetchall()
        assert sorted(nonces) == sorted(sent)  # each claimed once
        assert sorted(valid) == sorted(sent)  # each stored once as valid (the replay above is a failed attempt)

        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        second.wait(10)  # its stdin closed with the server: it finishes and exits by itself
        assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
    finally:
        server.stop()
        for leftover in (p for p in psutil.process_iter(["cmdline"])
                         if str(tmp_path) in " ".join(p.info["cmdline"] or [])):
            leftover.kill()
