"""The chassis pool service: swarms in other processes run work in its sandboxes with their own credential.

Attacks: no/forged/revoked/operator credential, another swarm named in the body, hostile bodies; budget:
each execution is charged before it runs, and a swarm whose budget is spent runs nothing.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from infrafabric.chassis import IFChassis
from infrafabric.chassis.service import ChassisMetrics, ChassisPool, create_app
from infrafabric.coordinator.credentials import CredentialAuthority, CredentialVerifier, revoke
from infrafabric.governor import IFGovernor, SwarmProfile


class Pool:
    def __init__(self, tmp: Path, price: str = "0") -> None:
        self.authority = CredentialAuthority.load_or_create(tmp / "authority")
        self.kv = open_kv("memory://")
        self.chassis = IFChassis(reputation_sink=None, audit=None)
        self.governor = IFGovernor(kv=self.kv, audit=None, cost_sink=None)
        self.metrics = ChassisMetrics()
        self.pool = ChassisPool(self.chassis, CredentialVerifier(self.authority.public_key, self.kv, refresh=0.0),
                                self.metrics, charge=self.governor.acharge, price=Decimal(price))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(self.pool)),
                                        base_url="http://pool")

    def token(self, name: str, role: str = "swarm") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.authority.issue(role, name, 600)}"}  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.client.aclose()
        self.chassis.close()
        await self.governor.close()
        await self.kv.close()


def count(metrics: ChassisMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("if_chassis_executions_total", {"outcome": outcome}) or 0.0


def test_a_swarm_runs_its_task_in_its_own_sandbox(tmp_path: Path) -> None:
    async def go() -> None:
        p = Pool(tmp_path)
        try:
            r = await p.client.post("/v1/executions", headers=p.token("swarm-a"), json={
                "task": {"id": "t1", "action": "wordcount", "text": "a b c"}, "swarm_id": "swarm-b"})
            assert r.status_code == 200, r.text
            assert r.json()["result"]["status"] == "success"
            # the body's swarm_id is ignored: the sandbox is the credential's swarm
            assert set(p.chassis.swarm_runtimes) == {"swarm-a"}
            assert count(p.metrics, "success") == 1
        finally:
            await p.close()

    asyncio.run(go())


@pytest.mark.parametrize("who", ["none", "garbage", "operator", "revoked", "other-authority"])
def test_without_a_valid_swarm_credential_nothing_runs(tmp_path: Path, who: str) -> None:
    async def go() -> None:
        p = Pool(tmp_path)
        try:
            headers: dict[str, str] = {}
            if who == "garbage":
                headers = {"Authorization": "Bearer not.a.token"}
            elif who == "operator":
                headers = p.token("alice", "operator")
            elif who == "revoked":
                headers = p.token("swarm-a")
                await revoke(p.kv, role="swarm", name="swarm-a")
            elif who == "other-authority":
                other = CredentialAuthority.load_or_create(tmp_path / "other")
                headers = {"Authorization": f"Bearer {other.issue('swarm', 'swarm-a', 600)}"}
            r = await p.client.post("/v1/executions", headers=headers, json={"task": {"id": "t", "action": "echo"}})
            assert r.status_code in (401, 403), r.text
            assert r.json()["error"]["code"].startswith("IF_ERR_AUTH") or r.json()["error"]["code"] == "IF_ERR_FORBIDDEN"
            assert p.chassis.swarm_runtimes == {} and count(p.metrics, "success") == 0
        finally:
            await p.close()

    asyncio.run(go())


def test_each_execution_is_charged_first_and_a_spent_budget_runs_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        p = Pool(tmp_path, price="0.40")
        try:
            p.governor.register_swarm(SwarmProfile("swarm-a", ["code-analysis:python"], 1.0, 1.0, 1.0))
            await p.governor.flush()
            codes = []
            for i in range(4):
                r = await p.client.post("/v1/executions", headers=p.token("swarm-a"),
                                        json={"task": {"id": f"t{i}", "action": "wordcount", "text": "x"}})
                codes.append(r.status_code if r.status_code == 200 else r.json()["error"]["code"])
            # 0.40 + 0.40 + 0.40 empties $1.00 (the third charge trips the breaker; it ran, being paid for)
            assert codes == [200, 200, 200, "IF_ERR_CIRCUIT_OPEN"]
            assert p.governor.budget_remaining("swarm-a") == Decimal("-0.20")
            assert count(p.metrics, "success") == 3 and count(p.metrics, "refused") == 1
        finally:
            await p.close()

    asyncio.run(go())


def test_an_unknown_swarm_cannot_run_on_a_charging_pool(tmp_path: Path) -> None:
    async def go() -> None:
        p = Pool(tmp_path, price="0.01")
        try:
            r = await p.client.post("/v1/executions", headers=p.token("nobody"),
                                    json={"task": {"id": "t", "action": "echo"}})
            assert r.status_code == 403 and r.json()["error"]["code"] == "IF_ERR_UNKNOWN_SWARM"
            assert count(p.metrics, "success") == 0
        finally:
            await p.close()

    asyncio.run(go())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=200), st.sampled_from([b"[]", b"null", b'{"task": 1}', b'{"task": []}',
                                                                b"[" * 3000, b'{"task": {"action": "../x"}}'])))
def test_hostile_bodies_get_a_coded_answer_never_a_500(tmp_path: Path, body: bytes) -> None:
    async def go() -> None:
        p = Pool(tmp_path)
        try:
            r = await p.client.post("/v1/executions", headers={**p.token("swarm-a"),
                                                               "content-type": "application/json"}, content=body)
            assert r.status_code in (200, 400), r.text
            if r.status_code == 400:
                assert r.json()["error"]["code"].startswith("IF_ERR_")
        finally:
            await p.close()

    asyncio.run(go())
