"""The console's HTTP boundary, attacked as a careless operator or a hostile party would: no session, the
wrong credential, a viewer forging actions, a missing or foreign CSRF token, a request from another site,
hostile values in every field an action takes, and script in every untrusted value a page shows.

The app runs on the embedded platform (real SQLite stores, the real node API in process), driven through
httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrafabric.console import create_console_app
from infrafabric.console.app import CSP
from infrafabric.console.embedded import Embedded, embedded_platform, seed_demo

BASE = "http://console.test"
WALLET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
HOSTILE = ['<script>window.__xss=1</script>', '"><img src=x onerror="window.__xss=1">', "javascript:alert(1)",
           "</textarea><svg onload=alert(1)>", "{{7*7}}", "\u202egnp.exe"]


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[Embedded, httpx.AsyncClient]]:
    async with embedded_platform(tmp_path / "state") as e:
        await seed_demo(e)
        app = create_console_app(e.platform, event_interval=0.05)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=BASE, follow_redirects=False) as client:
            yield e, client


async def login(e: Embedded, client: httpx.AsyncClient, role: str = "operator", name: str = "alice") -> str:
    r = await client.post("/login", data={"credential": e.credential(role, name)})
    assert r.status_code == 303, r.text
    page = await client.get("/swarms")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


async def test_every_page_and_the_event_stream_need_a_session(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    _, client = console
    for view in ("swarms", "tasks", "chassis", "cost", "audit", "mesh", "nodes"):
        r = await client.get(f"/{view}")
        assert r.status_code == 303 and r.headers["location"] == "/login"
    r = await client.get("/events")
    assert r.status_code == 401 and r.json()["error"]["code"] == "IF_ERR_AUTH_INVALID"
    r = await client.post("/actions/set-budget", data={"swarm_id": "session-1-ndi", "amount": "1"})
    assert r.status_code == 401 and "IF_ERR_AUTH_INVALID" in r.text


async def test_only_operator_and_viewer_credentials_open_a_session(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    e, client = console
    r = await client.post("/login", data={"credential": e.credential("swarm", "session-1-ndi")})
    assert r.status_code == 403 and "IF_ERR_FORBIDDEN" in r.text and "set-cookie" not in r.headers
    r = await client.post("/login", data={"credential": "not-a-token"})
    assert r.status_code == 401 and "IF_ERR_AUTH_INVALID" in r.text
    forged = e.credential("operator", "mallory")[:-4] + "AAAA"
    r = await client.post("/login", data={"credential": forged})
    assert r.status_code == 401
    r = await client.post("/login", content=b'{"credential": "x"}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "IF_ERR_VALIDATION" in r.text
    await e.platform.witness.aflush()
    refusals = await e.platform.witness.asearch(operation="console_login_refused", limit=10)
    assert len(refusals) == 4


async def test_login_attempts_are_rate_limited(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    _, client = console
    codes = [(await client.post("/login", data={"credential": "guess"})).status_code for _ in range(25)]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}


async def test_a_viewer_sees_everything_and_can_change_nothing(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    e, client = console
    csrf = await login(e, client, "viewer", "victor")
    g = e.platform.governor
    before = (g.budget_limit("session-1-ndi"), g.circuit_breaker_status("session-3-h323")["state"])
    for view in ("swarms", "tasks", "chassis", "cost", "audit", "mesh", "nodes"):
        r = await client.get(f"/{view}")
        assert r.status_code == 200 and "/actions/" not in r.text  # no action form is offered
    forged = [("/actions/reset-breaker", {"swarm_id": "session-3-h323"}),
              ("/actions/set-budget", {"swarm_id": "session-1-ndi", "amount": "999"}),
              ("/actions/deregister-service", {"service_id": "api-gateway-1"}),
              ("/actions/retry-payout", {"payout_id": "payout_x"})]
    for path, form in forged:
        r = await client.post(path, data={**form, "csrf": csrf})
        assert r.status_code == 403 and "IF_ERR_FORBIDDEN" in r.text
    assert (g.budget_limit("session-1-ndi"), g.circuit_breaker_status("session-3-h323")["state"]) == before
    mesh = await client.get("/mesh")
    assert "api-gateway-1" in mesh.text
    await e.platform.witness.aflush()
    refused = await e.platform.witness.asearch(operation="console_action_refused", limit=10)
    assert len(refused) == 4 and all('"role":"viewer"' in x.params_json.replace(" ", "") for x in refused)


async def test_actions_need_this_sessions_csrf_token_and_this_origin(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    e, client = console
    csrf = await login(e, client)
    g = e.platform.governor
    for form, headers in (({}, {}), ({"csrf": "wrong"}, {}), ({"csrf": csrf}, {"origin": "https://evil.example"}),
                          ({"csrf": csrf}, {"referer": "http://evil.example/page"})):
        r = await client.post("/actions/set-budget", data={"swarm_id": "session-1-ndi", "amount": "500", **form},
                              headers=headers)
        assert r.status_code == 403 and "IF_ERR_CSRF" in r.text
    assert g.budget_limit("session-1-ndi") == Decimal("20")
    # another operator's session token does not carry over
    other = httpx.AsyncClient(transport=client._transport, base_url=BASE)
    other_csrf = await login(e, other, "operator", "bob")
    r = await client.post("/actions/set-budget", data={"swarm_id": "session-1-ndi", "amount": "500", "csrf": other_csrf})
    assert r.status_code == 403
    await other.aclose()


async def test_reset_breaker_and_set_budget_are_audited_with_the_operators_name(
        console: tuple[Embedded, httpx.AsyncClient]) -> None:
    e, client = console
    csrf = await login(e, client, name="alice")
    g = e.platform.governor
    assert g.circuit_breaker_status("session-3-h323")["state"] == "open"
    r = await client.post("/actions/reset-breaker", data={"swarm_id": "session-3-h323", "csrf": csrf,
                                                          "reason": "paid the invoice"},
                          headers={"origin": BASE})
    assert r.status_code == 303 and r.headers["location"] == "/swarms"
    assert g.circuit_breaker_status("session-3-h323")["state"] == "closed"
    r = await client.post("/actions/set-budget", data={"swarm_id": "session-2-webrtc", "amount": "42.5", "csrf": csrf})
    assert r.status_code == 303 and g.budget_limit("session-2-webrtc") == Decimal("42.5")
    page = await client.get("/swarms")
    assert "budget of session-2-webrtc set to $42.5" in page.text  # the flash, once
    assert "set to $42.5" not in (await client.get("/swarms")).text
    await e.platform.witness.aflush()
    audit = await client.get("/audit", params={"q": "session-3-h323", "op": "circuit_breaker_reset"})
    assert "alice" in audit.text and "paid the invoice" in audit.text
    entries = await e.platform.witness.asearch(operation="budget_set", limit=5)
    assert entries and '"operator": "alice"' in entries[0].params_json.replace('":"', '": "')


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amount=st.one_of(st.sampled_from(["nan", "NaN", "inf", "-1", "1e309", "1e10", "0.0000001", "", " ", "1,5",
                                          "0x10", "1_000", "١٢", "10**9"]),
                        st.text(max_size=40)),
       swarm=st.one_of(st.sampled_from(["session-1-ndi", "nobody", "../etc", "", "a" * 300]), st.text(max_size=30)))
async def test_hostile_action_fields_change_nothing(console: tuple[Embedded, httpx.AsyncClient], amount: str,
                                                    swarm: str) -> None:
    e, client = console
    if not client.cookies:
        await login(e, client)
    csrf = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/swarms")).text).group(1)  # type: ignore[union-attr]
    g = e.platform.governor
    before = {s: g.budget_limit(s) for s in g.swarm_registry}
    r = await client.post("/actions/set-budget", data={"swarm_id": swarm, "amount": amount, "csrf": csrf})
    if r.status_code == 303:  # accepted: a registered swarm and a valid amount, set exactly
        assert swarm in before and Decimal(amount.strip()) == g.budget_limit(swarm)
        g.set_budget(swarm, float(before[swarm]), operator=e.platform.verifier.decode(e.credential("operator", "t")))
    else:
        assert r.status_code in (400, 403) and re.search(r"IF_ERR_[A-Z_]+", r.text)
        assert {s: g.budget_limit(s) for s in g.swarm_registry} == before


async def test_untrusted_values_are_shown_as_text_never_as_markup(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    e, client = console
    await login(e, client)
    for i, payload in enumerate(HOSTILE):
        await e.coordinator.detect_blocker("session-5-cli", {"description": payload, "required_capabilities": []})
        e.platform.witness.log("lucid.service_mesh", "request_denied", {"source": payload, "destination": "x"})
    await e.platform.witness.aflush()
    pages = [await client.get(f"/{v}") for v in ("tasks", "audit", "mesh")]
    pages.append(await client.get("/audit", params={"q": HOSTILE[0]}))
    pages.append(await client.get("/tasks", params={"fragment": "1"}))
    for r in pages:
        assert r.status_code == 200
        assert "<script>window.__xss" not in r.text and "<img src=x" not in r.text and "<svg onload" not in r.text
        assert r.headers["content-security-policy"] == CSP
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in pages[0].text
    assert "unsafe-inline" not in CSP and "script-src 'self'" in CSP
    assert not re.search(r"<script>(?!</script>)", "".join(r.text for r in pages))  # no inline script at all
    for r in pages:
        assert e.credential("operator", "x")[:20] not in r.text  # no token is ever rendered
        assert "eyJ" not in r.text


async def test_pages_hold_no_secret_and_the_cookie_is_locked_down(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    e, client = console
    token = e.credential("operator", "carol")
    r = await client.post("/login", data={"credential": token})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and token.lower() not in cookie
    for view in ("swarms", "tasks", "chassis", "cost", "audit", "mesh", "nodes"):
        body = (await client.get(f"/{view}")).text
        assert token not in body and "eyJ" not in body and "BEGIN" not in body


async def _settled(e: Embedded, batch_id: str) -> dict:
    for _ in range(200):
        status = await e.platform.nodes.get(f"/api/v1/nodes/payouts/batch/{batch_id}")  # type: ignore[union-attr]
        if status["status"] in ("completed", "partial", "failed"):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not settle: {status}")


async def test_retry_payout_queues_a_failed_payout_once_however_often_it_is_clicked(
        console: tuple[Embedded, httpx.AsyncClient]) -> None:
    e, client = console
    csrf = await login(e, client)
    api = e.platform.nodes
    assert api is not None
    node_id = (await api.get("/api/v1/nodes", limit=1))["nodes"][0]["node_id"]
    # the local ledger's treasury holds 100,000,000 USDT: the 101st payout of 1,000,000 fails on the chain
    r = await api.post("/api/v1/nodes/payouts/batch", {"batch_id": "batch_drain", "payout_requests": [
        {"node_id": node_id, "amount": "1000000", "wallet_address": WALLET, "idempotency_key": f"drain-{i:04d}"}
        for i in range(101)]})
    assert r.status_code == 202, r.text
    await _settled(e, "batch_drain")
    failed = (await api.get("/api/v1/nodes/payouts/history", status="failed", limit=100))["payouts"]
    assert 1 <= len(failed) <= 2  # the demo's seed paid 26.25 of the treasury: one or two fail
    target = failed[0]["payout_id"]
    nodes_page = await client.get("/nodes")
    assert f'name="payout_id" value="{target}"' in nodes_page.text  # the retry button is offered
    drained = re.search(r'<tr data-batch="batch_drain">(.*?)</tr>', nodes_page.text, re.S)
    assert drained is not None
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", drained.group(1), re.S)
    assert cells[2] == "101" and f"failed: {len(failed)}" in cells[3] and f"completed: {101 - len(failed)}" in cells[3]
    results = await asyncio.gather(*(client.post("/actions/retry-payout", data={"payout_id": target, "csrf": csrf})
                                     for _ in range(4)))
    assert all(r.status_code == 303 for r in results)
    retried = await _settled(e, "batch_retry_" + hashlib.sha256(target.encode()).hexdigest()[:40])
    assert retried["total"] == 1  # four clicks, one payout
    history = (await api.get("/api/v1/nodes/payouts/history", limit=100, batch_id=retried["batch_id"]))["payouts"]
    assert len(history) == 1 and history[0]["idempotency_key"] == f"retry:{target}"
    assert history[0]["amount"] == "1000000" and history[0]["node_id"] == node_id
    paid = (await api.get("/api/v1/nodes/payouts/history", status="completed", limit=1))["payouts"][0]["payout_id"]
    for bad, code in (("payout_does_not_exist", 404), ("../../etc", 400), (paid, 404), ("", 400)):
        r = await client.post("/actions/retry-payout", data={"payout_id": bad, "csrf": csrf})
        assert r.status_code == code, (bad, r.status_code)
    await e.platform.witness.aflush()
    audited = await e.platform.witness.asearch(operation="payout_retry_requested", limit=10)
    assert len(audited) == 4 and all(target in a.params_json for a in audited)


async def test_mesh_shows_the_breakers_each_service_published_as_text(console: tuple[Embedded, httpx.AsyncClient]
                                                                      ) -> None:
    """A service's outbound breakers (published by its own process) beside its row; a destination name a
    hostile service wrote is shown as text, and a record for no registered service shows nowhere."""
    from lucid.service_mesh.resilience import BreakerPublisher, BreakerRegistry

    e, client = console
    await login(e, client, role="viewer")
    registry = BreakerRegistry(failure_threshold=1)

    def failing() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        registry.get("tron-payment").call(failing)
    registry.get(HOSTILE[0])
    kv = e.platform.mesh_kv
    assert kv is not None
    gateway = BreakerPublisher(kv, registry, service="api-gateway", service_id="api-gateway-1")
    stray = BreakerPublisher(kv, registry, service="ghost", service_id="ghost-1")
    await gateway.publish()
    await stray.publish()
    page = (await client.get("/mesh")).text
    shown = re.findall(r'<span class="breaker breaker-([a-z-]+)" data-breaker="([^"]*)"', page)
    assert shown == [("closed", "&lt;script&gt;window.__xss=1&lt;/script&gt;"), ("open", "tron-payment")]
    assert "ghost-1" not in page and "<script>window.__xss" not in page
    await gateway.stop()
    await stray.stop()
    page = (await client.get("/mesh")).text
    assert re.findall(r'data-breaker="([^"]*)"', page) == []


async def test_chassis_shows_each_swarms_rate_limit_state(console: tuple[Embedded, httpx.AsyncClient]) -> None:
    """The limit from the swarm's loaded contract, the calls refused, and "held back" while the chassis's
    last refusal told it to wait; forged refusal entries with hostile values do not break the page."""
    from infrafabric.chassis import IFChassis, RateLimitExceeded, ResourceLimits, ServiceContract
    from infrafabric.chassis.modules import reference_module

    e, client = console
    await login(e, client, role="viewer")
    chassis = IFChassis(audit=e.platform.witness.log)
    try:
        chassis.load_swarm("session-2-webrtc", reference_module(), ServiceContract(
            "session-2-webrtc", capabilities=["code-analysis:python"],
            resource_requirements=ResourceLimits(max_api_calls_per_second=0.2, api_burst=1)))
        chassis.check_rate_limit("session-2-webrtc")
        with pytest.raises(RateLimitExceeded):
            chassis.check_rate_limit("session-2-webrtc")
    finally:
        chassis.close()
    for wait in ("soon", float("nan"), 1e308, -5, True, None):
        e.platform.witness.log("IF.chassis", "rate_limited", {"swarm_id": "forged<b>", "retry_after": wait}
                               if not isinstance(wait, float) or wait == wait else {"swarm_id": "forged<b>"})
    await e.platform.witness.aflush()
    page = (await client.get("/chassis")).text
    rows = dict(re.findall(r'<tr data-ratelimit="([^"]+)">(.*?)</tr>', page, re.S))
    webrtc = re.sub(r"<[^>]+>", "|", rows["session-2-webrtc"])
    assert "0.2/s, burst 1" in webrtc and "held back for" in webrtc and "|1|" in webrtc, webrtc
    assert "within its limit" in rows["session-1-ndi"] and "|0|" in re.sub(r"<[^>]+>", "|", rows["session-1-ndi"])
    forged = rows["forged&lt;b&gt;"]
    assert "not recorded" in forged and "forged<b>" not in page


async def test_claim_latency_is_read_from_each_tasks_push_and_claim_entries(console: tuple[Embedded, httpx.AsyncClient]
                                                                            ) -> None:
    from infrafabric.console import readers

    e, client = console
    await login(e, client, role="viewer")
    entries = await e.platform.witness.asearch(component="IF.coordinator", limit=5000, newest_first=False)
    pushed = {json_params(x)["task_id"] for x in entries if x.operation == "task_pushed"}
    claimed = [json_params(x)["task_id"] for x in entries if x.operation == "task_claimed"]
    expected = [t for t in claimed if t in pushed]
    latencies = await readers.claim_latencies(e.platform)
    assert len(latencies) == min(len(expected), 60) > 0 and all(0.0 <= ms < 60_000 for ms in latencies)
    page = (await client.get("/tasks")).text
    [points] = re.findall(r'<polyline points="([^"]+)" class="series s0"><title>push → claim ms', page)
    assert len(points.split()) == len(latencies)


def json_params(entry: object) -> dict[str, object]:
    import json

    return json.loads(entry.params_json)  # type: ignore[attr-defined,no-any-return]
