"""The platform as running services (issue: make up / make down), end to end on real engines.

``ifstack up`` starts etcd, NATS, PostgreSQL, RabbitMQ, Prometheus and every service as its own process;
these tests drive it from outside as an operator and the swarms would, and read the outcome back from the
engines, the services and Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backends.servers.base import pid_exists
from backends.servers.ports import port_is_free
from stack.identity import issue_service_certificate, trust_dir
from stack.scenario import Phase0Result, PayoutResult, run_payout, run_phase0
from tests.fixtures.stack_fixtures import RunningStack

pytestmark = [pytest.mark.e2e]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "platform.json"
PRICE = Decimal("0.05")  # the chassis pool's price per execution in the stack's catalog
TASKS_PER_SWARM = 3


def operator_caller(stack: RunningStack) -> Any:
    from lucid.service_mesh.policy.caller import MeshCaller

    state = stack.state
    cert, key = issue_service_certificate(state, "operator", "admin-interface", "ops")
    return MeshCaller(stack.kv(), trust_dir=trust_dir(state), cert=cert, key=key,
                      jwt_key=state.jwt_key("operator"), service_name="operator", cluster="admin-interface",
                      plane="ops", breaker_threshold=100)


@pytest.fixture(scope="module")
def phase0(running_stack: RunningStack) -> Phase0Result:
    return asyncio.run(run_phase0(running_stack.state, tasks_per_swarm=TASKS_PER_SWARM))


@pytest.fixture(scope="module")
def payout(running_stack: RunningStack) -> PayoutResult:
    return asyncio.run(run_payout(running_stack.state))


def test_up_runs_every_service_as_its_own_healthy_process(running_stack: RunningStack) -> None:
    status = running_stack.status()
    names = [s["name"] for s in status["services"]]
    assert {"discovery", "coordinator", "governor", "chassis-pool", "blockchain-core", "tron-payment",
            "api-gateway", "node-management"} <= set(names)
    assert len([n for n in names if n.startswith("swarm-")]) == 7
    pids = [s["pid"] for s in status["services"]] + [e["pid"] for e in status["engines"]["processes"]]
    assert len(set(pids)) == len(pids) and all(pid_exists(p) for p in pids)
    assert all(s["healthy"] for s in status["services"])
    for s in status["services"]:
        assert Path(s["log"]).exists(), s["name"]  # each has its own log file
    listing = running_stack.cli("status")
    assert listing.returncode == 0 and "coordinator" in listing.stdout and "unhealthy" not in listing.stdout

    async def registered() -> dict[str, tuple[str, str]]:
        from backends.kv import open_kv
        from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient

        async with open_kv(running_stack.kv()) as kv, AsyncServiceDiscoveryClient(kv) as discovery:
            return {s["serviceName"]: (s["plane"], s["status"]) for s in await discovery.discover_services()}

    # the Lucid services register themselves with a TTL check (the node API too, over plain HTTP)
    assert asyncio.run(registered()) == {"api-gateway": ("ops", "healthy"), "node-management": ("ops", "healthy"),
                                         "tron-payment": ("wallet", "healthy"),
                                         "blockchain-core": ("chain", "healthy")}


def test_the_engines_answer_only_their_accounts(running_stack: RunningStack, tmp_path: Path) -> None:
    """A process on the machine with only the engines' addresses and the public CA certificate (what a swarm
    could learn) gets nothing: etcd speaks only TLS and wants an account's client certificate (one of
    another CA with the right name does not do; nor does a guessed root password), NATS refuses it; the
    mesh's etcd account reads the registry and nothing of the control plane."""
    from urllib.parse import parse_qs, urlsplit

    from backends.bus import open_bus
    from backends.errors import BackendError
    from backends.kv import open_kv
    from backends.servers.tls import generate_tls_bundle

    engines = running_stack.status()["engines"]
    assert engines["kv"].startswith("etcds://") and "password" not in engines["kv"]
    hosts = urlsplit(engines["kv"]).netloc
    ca = parse_qs(urlsplit(engines["kv"]).query)["ca"][0]
    forged = generate_tls_bundle(tmp_path / "forged", client_cn="control-plane")  # right name, wrong CA
    assert engines["bus"].startswith("tls://")
    bare_bus = f"{engines['bus'].split('&', 1)[0]}"  # the address and the public CA, no user
    assert "user=" not in bare_bus and "?ca=" in bare_bus

    async def attempts() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, url in (("plain", f"etcd://{hosts}"), ("no-certificate", f"etcds://{hosts}?ca={ca}"),
                          ("guessed", f"etcds://{hosts}?ca={ca}&username=root&password=root"),
                          ("forged-certificate",
                           f"etcds://{hosts}?ca={ca}&cert={forged.client_cert}&key={forged.client_key}")):
            try:
                async with open_kv(url) as kv:
                    out[name] = len(await kv.get_prefix("/tasks/"))
            except BackendError as exc:
                out[name] = exc.error_code
        async with open_kv(engines["mesh_kv"]) as mesh:
            out["mesh-registry"] = len(await mesh.get_prefix("/lucid/mesh/"))
            try:
                out["mesh-tasks"] = len(await mesh.get_prefix("/tasks/"))
            except BackendError as exc:
                out["mesh-tasks"] = exc.error_code
            try:
                await mesh.put("/governor/budgets/session-1-ndi", b'{"budget": "1000000"}')
                out["mesh-budget-write"] = "written"
            except BackendError as exc:
                out["mesh-budget-write"] = exc.error_code
        bus_host = urlsplit(engines["bus"]).netloc
        for name, url in (("bus", bare_bus), ("bus-plain", f"nats://{bus_host}?user=control-plane")):
            try:
                bus = open_bus(url)
                await bus.connect()
                out[name] = "connected"
                await bus.close()
            except BackendError as exc:
                out[name] = exc.error_code
        return out

    seen = asyncio.run(attempts())
    assert all(isinstance(seen[k], str) for k in ("plain", "no-certificate", "guessed", "forged-certificate")), seen
    # refused at the TLS handshake, before any login is looked at (a password never gets a try)
    assert seen["no-certificate"] == seen["guessed"] == seen["forged-certificate"] == "BACKEND_UNAVAILABLE", seen
    assert seen["mesh-registry"] > 0, seen
    assert isinstance(seen["mesh-tasks"], str) and isinstance(seen["mesh-budget-write"], str), seen
    assert seen["bus"] == "BACKEND_AUTH_FAILED", seen  # TLS with the right CA, but no password
    assert seen["bus-plain"] != "connected", seen  # NATS speaks only TLS


def test_phase0_runs_across_processes(running_stack: RunningStack, phase0: Phase0Result) -> None:
    assert len(phase0.tasks) == 7 * TASKS_PER_SWARM
    assert sorted(phase0.completed) == sorted(phase0.tasks)  # every task done, and recorded once
    for task_id, swarm in phase0.completed.items():
        assert task_id.startswith(f"phase0-{phase0.run_id}-{swarm}-")  # by the swarm it was pushed to
    assert phase0.blocker_id is not None
    assert phase0.team == ["session-1-ndi", "session-2-webrtc"]  # qualified, not the blocked swarm
    assert phase0.help_completed == phase0.team


def test_budgets_are_charged_for_the_work_the_chassis_ran(running_stack: RunningStack, phase0: Phase0Result) -> None:
    spent = {s: PRICE * sum(1 for owner in phase0.completed.values() if owner == s)
             for s in set(phase0.completed.values())}
    for helper in phase0.help_completed:
        spent[helper] += PRICE
    for swarm in ("session-3-h323", "session-1-ndi"):  # one with help work, one without
        want = float(Decimal("10") - spent[swarm])
        got = running_stack.wait_value(f'if_budget_remaining_dollars{{swarm="{swarm}"}}',
                                       lambda v, w=want: abs(v - w) < 1e-9)
        assert got == pytest.approx(want), swarm


def test_a_payout_leaves_only_through_api_gateway_to_tron_payment(running_stack: RunningStack,
                                                                 payout: PayoutResult) -> None:
    assert payout.batch["status"] == "completed"
    from stack.scenario import NODE_SAMPLE

    assert payout.resources["current"] == {**NODE_SAMPLE, "timestamp": payout.resources["current"]["timestamp"]}
    [paid] = payout.payouts
    assert paid["status"] == "completed" and re.fullmatch(r"[0-9a-f]{64}", paid["transaction_hash"])

    async def look_up() -> tuple[int, Any]:
        caller = operator_caller(running_stack)
        try:  # the transaction is on tron-payment's ledger, read through api-gateway
            return await caller.call("api-gateway", "GET", f"/payments/transactions/{paid['transaction_hash']}")
        finally:
            await caller.close()

    status, body = asyncio.run(look_up())
    assert status == 200 and body["transaction"]["success"] is True, body
    assert running_stack.wait_value('lucid_mesh_payment_broadcasts_total{job="tron-payment",outcome="success"}',
                                    lambda v: v >= 1) >= 1

    async def anchored() -> tuple[tuple[int, Any], tuple[int, Any]]:
        caller = operator_caller(running_stack)
        try:  # api-gateway queued the transfer's anchor over RabbitMQ; blockchain-core stored it
            deadline = time.monotonic() + 20
            while True:
                found = await caller.call("blockchain-core", "GET", f"/anchors/{paid['transaction_hash']}")
                if found[0] == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            return found, await caller.call("blockchain-core", "POST", "/anchors", {"forged": True})
        finally:
            await caller.close()

    (status, body), (post_status, post_body) = asyncio.run(anchored())
    assert status == 200 and body["anchor"]["txid"] == paid["transaction_hash"], body
    assert Decimal(body["anchor"]["amount"]) == Decimal(str(paid["amount"]))
    assert post_status == 403 and post_body["error"]["code"] == "LUCID_ERR_1203"  # ops -> chain: read-only
    sent = 'lucid_mq_messages_confirmed_total{job="api-gateway",destination="blockchain-core"}'
    assert running_stack.wait_value(sent, lambda v: v >= 1) >= 1
    got = 'lucid_mq_messages_received_total{job="blockchain-core",destination="blockchain-core"}'
    assert running_stack.wait_value(got, lambda v: v >= 1) >= 1
    assert running_stack.wait_value('lucid_mq_queue_depth{job="blockchain-core"}', lambda v: v == 0) == 0


def test_a_swarms_model_call_through_the_stacks_gateway_is_charged_to_its_budget(running_stack: RunningStack,
                                                                                  phase0: Phase0Result) -> None:
    """The model gateway runs as a stack service: a swarm points the official OpenAI SDK at it with its own
    credential as the API key; the call is reserved and settled in the governor's ledger, the governor's
    gauge shows the charge, and the provider key stays with the gateway."""
    import openai

    from stack.identity import issue_swarm_credential
    from tests.fixtures.llm_upstream import OPENAI_KEY

    swarm = "session-7-bus"
    before = running_stack.wait_value(f'if_budget_remaining_dollars{{swarm="{swarm}"}}', lambda v: v > 0)
    credential = issue_swarm_credential(running_stack.state, swarm).read_text().strip()
    client = openai.OpenAI(base_url=running_stack.service("model-gateway")["url"] + "/v1", api_key=credential,
                           max_retries=0)
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hello from the stack"}])
    completion = reply.parse()
    assert completion.choices[0].message.content and completion.usage is not None
    assert OPENAI_KEY not in reply.http_response.text and OPENAI_KEY not in str(reply.headers)
    charged = (Decimal(completion.usage.prompt_tokens) * Decimal("0.15")
               + Decimal(completion.usage.completion_tokens) * Decimal("0.60")) / Decimal(1_000_000)
    after = running_stack.wait_value(f'if_budget_remaining_dollars{{swarm="{swarm}"}}',
                                     lambda v: abs(v - (before - float(charged))) < 1e-9)
    assert after == pytest.approx(before - float(charged), abs=1e-9)
    assert running_stack.wait_value('if_gateway_events_total{operation="model_call_settled"}',
                                    lambda v: v >= 1) >= 1
    assert running_stack.wait_value("if_gateway_charged_dollars_total", lambda v: v > 0) == \
        pytest.approx(float(charged))
    assert any(r["headers"].get("authorization") == f"Bearer {OPENAI_KEY}" for r in running_stack.upstream.seen)


def test_node_management_cannot_call_tron_payment_directly(running_stack: RunningStack) -> None:
    from lucid.service_mesh.policy.caller import MeshCaller

    state = running_stack.state
    services = state.root / "pki" / "services"
    caller = MeshCaller(running_stack.kv(), trust_dir=trust_dir(state), cert=services / "node-management.crt",
                        key=services / "node-management.key", jwt_key=state.jwt_key("node-management"),
                        service_name="node-management", cluster="node-management", plane="ops")
    before = running_stack.value('lucid_mesh_denials_total{job="tron-payment",operation="mesh.call_denied"}')

    async def direct() -> tuple[int, Any]:
        try:
            return await caller.call("tron-payment", "POST", "/payments/prepare", {
                "to_address": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "amount": "1000", "reference": "direct"})
        finally:
            await caller.close()

    status, body = asyncio.run(direct())
    assert status == 403 and body["error"]["code"] == "LUCID_ERR_1203"
    assert running_stack.wait_value('lucid_mesh_denials_total{job="tron-payment",operation="mesh.call_denied"}',
                                    lambda v: v > before) == before + 1
    # ... and the refusal is in the platform's audit log (IF.witness on PostgreSQL), naming who tried
    entries = _witness_entries(running_stack, "mesh.call_denied")
    assert any("/node-management/" in e["params"]["source"] and "/tron-payment/" in e["params"]["destination"]
               and e["params"]["error_code"] == "LUCID_ERR_1203" for e in entries), entries[-3:]


def _witness_entries(stack: RunningStack, operation: str) -> list[dict[str, Any]]:
    from infrafabric.witness.witness import Witness

    state = stack.state
    witness_url = stack.status()["engines"]["node_db"].replace("postgresql+asyncpg", "postgresql") \
        .replace("node_management@", "witness@").rsplit("/", 1)[0] + "/witness"
    os.environ["PGPASSFILE"] = str(state.secret_file("pgpass"))  # the operator's own copy of the passwords
    witness = Witness(witness_url, state.root / "pki" / "witness", create_key=False)
    try:
        return witness.query(operation=operation)
    finally:
        witness.close()


def test_prometheus_scrapes_every_service_and_the_counters_moved(running_stack: RunningStack,
                                                                 phase0: Phase0Result, payout: PayoutResult) -> None:
    up = running_stack.query("up")
    jobs = {r["metric"]["job"]: r["value"][1] for r in up}
    assert set(jobs) == {"discovery", "coordinator", "governor", "chassis-pool", "blockchain-core", "tron-payment",
                         "api-gateway", "node-management", "model-gateway"}
    assert set(jobs.values()) == {"1"}
    n = len(phase0.tasks) + len(phase0.help_completed)
    assert running_stack.wait_value("if_tasks_completed_total", lambda v: v >= n) >= n
    assert running_stack.wait_value('if_task_claims_total{outcome="won"}', lambda v: v >= n) >= n
    assert running_stack.wait_value('if_chassis_executions_total{outcome="success"}', lambda v: v >= n) >= n
    assert running_stack.wait_value('if_blockers_answered_total{outcome="team"}', lambda v: v >= 1) >= 1
    assert running_stack.wait_value("if_blockers_reported_total", lambda v: v >= 1) >= 1
    assert running_stack.wait_value('lucid_node_payouts_total{status="completed"}', lambda v: v >= 1) >= 1
    assert running_stack.value('lucid_mesh_service_instances{plane="wallet",status="healthy"}') == 1
    assert running_stack.wait_value('if_witness_appends_total{job="coordinator"}', lambda v: v >= n) >= n
    age = running_stack.wait_value('if_witness_checkpoint_age_seconds{job="coordinator"}', lambda v: v < 120)
    assert 0 <= age < 120  # the log keeps publishing its checkpoint outside the database


def test_every_dashboard_query_names_a_metric_the_stack_exports(running_stack: RunningStack,
                                                               phase0: Phase0Result, payout: PayoutResult) -> None:
    import urllib.request

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    wanted: dict[str, str] = {}
    for expr in exprs:
        names = set(re.findall(r"\b((?:if|lucid)_[a-z0-9_]+|up)\b", expr))
        assert names, expr
        wanted.update({name: expr for name in names})

    def missing() -> list[tuple[str, str]]:
        url = f"{running_stack.status()['prometheus']}/api/v1/label/__name__/values"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            exported = set(json.loads(resp.read())["data"])
        return [(name, expr) for name, expr in wanted.items()
                if not {name, re.sub(r"_(bucket|sum|count)$", "", name), f"{name}_bucket"} & exported]

    deadline = time.monotonic() + 30  # Prometheus's name index lags its first scrapes by a few seconds
    while (absent := missing()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert absent == []


def test_a_killed_service_leaves_discovery_opens_breakers_and_is_restarted(running_stack: RunningStack) -> None:
    from backends.kv import open_kv
    from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
    from lucid.service_mesh.resilience import read_breakers

    victim = running_stack.service("tron-payment")
    treasury = "/payments/balances/TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"

    async def scenario() -> dict[str, Any]:
        caller = operator_caller(running_stack)
        async with open_kv(running_stack.kv()) as kv, AsyncServiceDiscoveryClient(kv) as discovery:
            [old] = await discovery.discover_services(plane="wallet")
            assert (await caller.call("api-gateway", "GET", treasury))[0] == 200
            os.kill(victim["pid"], signal.SIGKILL)
            killed = time.monotonic()
            # callers feel it: api-gateway's calls fail until its breaker for tron-payment opens
            answers = []
            while time.monotonic() - killed < 3.0:
                status, body = await caller.call("api-gateway", "GET", treasury)
                answers.append((status, body.get("error", {}).get("code") if isinstance(body, dict) else None))
                if "LUCID_ERR_1104" in {c for _, c in answers} or len(answers) > 300:
                    break
                await asyncio.sleep(0.02)
            breakers = (await caller.call("api-gateway", "GET", "/breakers"))[1]
            # ... and what an operator sees of it from outside: the gateway's published record (the console)
            published: dict[str, str] = {}
            while time.monotonic() - killed < 8.0 and published.get("tron-payment") != "open":
                published = next((r.breakers for r in (await read_breakers(kv)).values()
                                  if r.service == "api-gateway"), {})
                await asyncio.sleep(0.1)
            # the dead instance leaves discovery within its TTL (2 s) + deregister-after (4 s)
            gone_at = None
            while time.monotonic() - killed < 15.0:
                ids = {s["serviceId"] for s in await discovery.discover_services(status="any")}
                if old["serviceId"] not in ids:
                    gone_at = time.monotonic() - killed
                    break
                await asyncio.sleep(0.1)
            # the supervisor restarted it; traffic resumes once the breaker lets a call through again
            resumed_at = None
            while time.monotonic() - killed < 30.0:
                if (await caller.call("api-gateway", "GET", treasury))[0] == 200:
                    resumed_at = time.monotonic() - killed
                    break
                await asyncio.sleep(0.2)
        await caller.close()
        return {"answers": answers, "breakers": breakers, "published": published, "gone_at": gone_at,
                "resumed_at": resumed_at}

    seen = asyncio.run(scenario())
    assert any(status == 424 for status, _ in seen["answers"]), seen["answers"][:5]
    codes = [code for _, code in seen["answers"]]
    assert "LUCID_ERR_1301" in codes and codes[-1] == "LUCID_ERR_1104", codes[-6:]  # failed calls, then open
    assert seen["breakers"]["tron-payment"] == "open", seen["breakers"]
    assert seen["published"].get("tron-payment") == "open", seen["published"]
    assert seen["gone_at"] is not None and seen["gone_at"] < 2.0 + 4.0 + 2.0, seen["gone_at"]
    assert seen["resumed_at"] is not None, "traffic never resumed"
    restarted = running_stack.service("tron-payment")
    assert restarted["pid"] != victim["pid"] and restarted["restarts"] >= 1
    events = (running_stack.root / "events.log").read_text()
    assert re.search(r"service tron-payment exited with code -9; restart in", events)
    assert re.search(r"service tron-payment restarted \(restart 1,", events)


def test_seven_swarms_in_parallel_against_the_same_work_sequentially(running_stack: RunningStack,
                                                                    record_property: Any) -> None:
    """The seed's test_7_session_parallel_execution: the same 42 tasks run by seven swarm processes at once,
    then by one swarm alone; the speed-up is reported beside the core count (not asserted: 2 cores)."""
    from stack.scenario import run_tasks

    swarms = [s["name"][len("swarm-"):] for s in running_stack.status()["services"] if s["name"].startswith("swarm-")]
    parallel = asyncio.run(run_tasks(running_stack.state, {swarm: 6 for swarm in swarms}))
    sequential = asyncio.run(run_tasks(running_stack.state, {"session-5-cli": 42}))
    assert parallel.done == parallel.pushed == 42 and sequential.done == sequential.pushed == 42
    speedup = sequential.seconds / parallel.seconds
    record_property("seven_swarm_speedup", round(speedup, 2))
    print(f"7 swarms: {parallel.seconds:.2f} s; 1 swarm: {sequential.seconds:.2f} s; speed-up {speedup:.2f}x "
          f"on {os.cpu_count()} cores")


def test_a_second_host_uses_the_engines_by_url_and_runs_only_what_it_is_told(running_stack: RunningStack,
                                                                            tmp_path: Path) -> None:
    """Two machines, simulated as two state directories: host B's topology names host A's engines by URL
    (used, not started) and ``up --only coordinator`` runs a second coordinator replica there. A swarm of
    B gets work an operator pushes through A, over the shared NATS."""
    import shutil
    import subprocess
    import sys

    from infrafabric.coordinator.remote import RemoteSwarmClient
    from stack.identity import issue_swarm_credential

    a = running_stack.status()
    os.chmod(tmp_path, 0o711)
    b_root = tmp_path / "host-b"
    b_root.mkdir()
    for shared in ("pki", "secrets"):  # the operator copies the identities made on the first host
        # while host A runs: its witness replaces published checkpoints (temp file + rename) meanwhile, and a
        # temp file listed but renamed before it is read is not part of what is copied
        shutil.copytree(running_stack.root / shared, b_root / shared, ignore=shutil.ignore_patterns(".*.tmp"))
    engines = a["engines"]
    topology = tmp_path / "host-b.toml"
    topology.write_text(running_stack.topology.read_text().replace(
        "[engines.etcd]\nmembers = 1", f'[engines.etcd]\nurl = "{engines["kv"]}"').replace(
        "[engines.nats]", f'[engines.nats]\nurl = "{engines["bus"]}"').replace(
        "[engines.rabbitmq]", f'[engines.rabbitmq]\nurl = "{engines["amqp"]}"').replace(
        "[engines.postgres]", f'[engines.postgres]\nurl = "{engines["node_db"]}"').replace(
        "[engines.prometheus]\nport = 0", f'[engines.prometheus]\nurl = "{a["prometheus"]}"'))
    cli = [sys.executable, "-m", "stack.cli"]
    up = subprocess.run([*cli, "up", "--state", str(b_root), "--topology", str(topology), "--only", "coordinator"],
                        capture_output=True, text=True, timeout=300, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr + (b_root / "supervisor.log").read_text()[-3000:]
        b = json.loads((b_root / "status.json").read_text())
        assert [s["name"] for s in b["services"]] == ["coordinator"]
        assert b["engines"]["processes"] == [] and b["prometheus"] is None  # nothing started, all used
        assert b["engines"]["kv"] == engines["kv"]
        b_url = b["services"][0]["url"]
        a_url = running_stack.service("coordinator")["url"]
        assert b_url != a_url
        swarm_id = "host-b-swarm"
        token = issue_swarm_credential(running_stack.state, swarm_id).read_text().strip()  # A's authority
        operator = issue_swarm_credential(running_stack.state, "ops-a", role="operator").read_text().strip()

        async def cross() -> dict[str, Any]:
            import httpx

            async with RemoteSwarmClient(b_url, ["code:python"], credential=token) as swarm, \
                    httpx.AsyncClient(base_url=a_url, headers={"Authorization": f"Bearer {operator}"}) as api:
                r = await api.post("/v1/tasks", json={"swarm_id": swarm_id, "tasks": [{"id": "cross-host-1"}]})
                assert r.status_code == 200, r.text
                task = await swarm.next_task(10)
                assert await swarm.claim("cross-host-1") is not None
                return task

        assert asyncio.run(cross())["id"] == "cross-host-1"
    finally:
        down = subprocess.run([*cli, "down", "--state", str(b_root)], capture_output=True, text=True, timeout=120,
                              check=False)
    assert down.returncode == 0, down.stdout
    assert all(pid_exists(p["pid"]) for p in a["engines"]["processes"])  # host B stopped only its own


def test_the_console_shows_the_running_stack(running_stack: RunningStack, phase0: Phase0Result) -> None:
    """make up prints the console's URL; an operator logs in with the credential up wrote and sees the stack's
    swarms (etcd), its audit log (PostgreSQL) and its nodes (the node API); a swarm credential is refused."""
    import httpx

    console = next(s for s in running_stack.status()["services"] if s["name"] == "console")
    assert console["url"].startswith("http://") and console["healthy"], console
    with httpx.Client(base_url=console["url"], timeout=20) as client:
        refused = client.post("/login", data={"credential": running_stack.state.credential(
            "session-1-ndi").read_text().strip()})
        assert refused.status_code == 403
        token = running_stack.state.credential("console-operator").read_text().strip()
        assert client.post("/login", data={"credential": token}).status_code == 303
        swarms = client.get("/swarms")
        assert swarms.status_code == 200
        ids = re.findall(r'<tr data-swarm="([^"]+)"', swarms.text)
        assert {"session-1-ndi", "session-4-sip", "session-7-bus"} <= set(ids)
        audit = client.get("/audit", params={"op": "task_completed"})
        assert audit.status_code == 200 and len(re.findall(r"<tr data-seq=", audit.text)) > 0
        assert client.get("/nodes").status_code == 200
        mesh = client.get("/mesh")
        assert mesh.status_code == 200 and "tron-payment" in mesh.text and "wallet" in mesh.text
        assert 'data-breaker="tron-payment"' in mesh.text  # the gateway's breaker, published by its process
        # queue depths through the console's own broker account, which may only look
        depths = dict(re.findall(r'<tr><th scope="row">([a-z-]+)</th><td>(\d+|unknown)</td></tr>', mesh.text))
        assert depths.keys() == {"blockchain-core", "api-gateway"} and "unknown" not in depths.values(), depths


# (last in this module: it ends with the stack down)
def test_down_stops_everything_and_up_resumes_the_state(running_stack: RunningStack,
                                                        payout: PayoutResult) -> None:
    before = running_stack.status()
    budget = running_stack.value('if_budget_remaining_dollars{swarm="session-3-h323"}')
    pids = [s["pid"] for s in before["services"]] + [e["pid"] for e in before["engines"]["processes"]]
    down = running_stack.cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(pid_exists(p) for p in pids)
    ports = json.loads((running_stack.root / "ports.json").read_text())
    assert ports and all(port_is_free(p) for p in ports.values())
    assert running_stack.cli("status").returncode == 3

    again = running_stack.up()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "governor profiles: 0 registered, 7 kept" in (running_stack.root / "events.log").read_text()
    assert running_stack.wait_value('if_budget_remaining_dollars{swarm="session-3-h323"}',
                                    lambda v: v == budget) == budget
    node = json.loads(json.dumps(payout.payouts[0]))

    async def history() -> list[dict[str, Any]]:
        import httpx

        from lucid.node.api.auth import mint_token

        secret = running_stack.state.secret("node-jwt-secret")
        async with httpx.AsyncClient(base_url=running_stack.service("node-management")["url"]) as api:
            r = await api.get("/api/v1/nodes/payouts/history", params={"node_id": node["node_id"]},
                              headers={"Authorization": f"Bearer {mint_token(secret, role='admin')}"})
            return r.json()["payouts"]  # type: ignore[no-any-return]

    assert [p["transaction_hash"] for p in asyncio.run(history()) if p["node_id"] == node["node_id"]] == \
        [node["transaction_hash"]]

    # a careless operator: the supervisor is killed outright; its services and engines keep running in their
    # own sessions, and `down` must still stop every one of them and free every port
    from stack.reaper import processes_in

    resumed = running_stack.status()
    os.kill(resumed["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_exists(resumed["supervisor_pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_exists(resumed["supervisor_pid"])
    orphans = [p.pid for p in processes_in(running_stack.root)]
    assert len(orphans) >= len(resumed["services"]) + len(resumed["engines"]["processes"])
    down = running_stack.cli("down")
    assert down.returncode == 0 and "left behind" in down.stdout, down.stdout
    assert not any(pid_exists(p) for p in orphans)
    ports = json.loads((running_stack.root / "ports.json").read_text())
    assert all(port_is_free(p) for p in ports.values())
