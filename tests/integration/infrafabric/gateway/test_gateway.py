"""IF.gateway through the official OpenAI and Anthropic SDKs, on a real etcd ledger, against a local
provider answering with those APIs' real shapes (``tests/fixtures/llm_upstream.py``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import KeyValueStore, open_kv
from backends.servers.ports import free_port
from infrafabric.coordinator.credentials import CredentialAuthority, CredentialVerifier, revoke
from infrafabric.gateway.app import MeteringGateway, create_app
from infrafabric.gateway.config import GatewayConfig
from infrafabric.gateway.reservations import HOLDS
from infrafabric.governor import IFGovernor, SwarmProfile
from tests.fixtures.llm_upstream import ANTHROPIC_KEY, OPENAI_KEY, start_upstream, stop

pytestmark = pytest.mark.etcd


def gateway_config(upstream_url: str, **swarms: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "test-2026-12",
        "models": {
            "gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075, "max_output_tokens": 1000,
                            "provider": "openai"},
            "gpt-4o": {"input": 2.5, "output": 10, "max_output_tokens": 1000, "provider": "openai"},
            "text-embedding-3-small": {"input": 0.02, "output": 0, "max_output_tokens": 1, "provider": "openai"},
            "claude-haiku": {"input": 0.8, "output": 4, "max_output_tokens": 1000, "provider": "anthropic",
                             "upstream_model": "claude-3-5-haiku-latest"},
        },
        "providers": {"openai": {"kind": "openai", "base_url": f"{upstream_url}/v1", "api_key_env": "T_OPENAI"},
                      "anthropic": {"kind": "anthropic", "base_url": upstream_url, "api_key_env": "T_ANTHROPIC"}},
        "swarms": swarms,
        "policy": {"cheaper_unless_allowed": {"gpt-4o": "gpt-4o-mini"}},
        "ledger": {"allowance_idle": 0.1},  # allowances go back quickly, so a test sees the ledger settle
    }


@dataclass
class Stack:
    url: str
    kv: KeyValueStore
    gateway: MeteringGateway
    authority: CredentialAuthority
    upstream: Any
    audit: list[tuple[str, dict[str, Any]]]
    costs: list[tuple[str, Decimal, dict[str, Any]]]

    async def swarm(self, budget: float) -> tuple[str, str]:
        name = f"gw-{uuid.uuid4().hex[:8]}"
        governor = IFGovernor(kv=self.kv, audit=None, cost_sink=None)
        governor.register_swarm(SwarmProfile(name, ["code:python"], 1.0, 1.0, budget))
        await governor.close()
        return name, self.authority.issue("swarm", name, 600)

    async def ledger(self, swarm: str) -> tuple[Decimal, dict[str, str]]:
        holds = await self.kv.get(f"{HOLDS}{swarm}")  # first: a settlement writes both at once, so no hold
        # seen gone here has its charge missing from the budget read next
        budget = json.loads((await self.kv.get(f"/governor/budgets/{swarm}")).value)  # type: ignore[union-attr]
        return Decimal(budget["spent"]), (json.loads(holds.value)["holds"] if holds else {})

    def openai(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20)

    def anthropic(self, key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=key, max_retries=0, timeout=20)

    async def settled(self, swarm: str) -> Decimal:
        """The spent total once every hold of the swarm is settled (a stream settles on its own task)."""
        for _ in range(500):
            spent, holds = await self.ledger(swarm)
            if not holds:
                return spent
            await asyncio.sleep(0.01)
        raise AssertionError(f"holds of {swarm} never settled: {holds}")


@pytest.fixture
async def stack(etcd_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setenv("T_OPENAI", OPENAI_KEY)
    monkeypatch.setenv("T_ANTHROPIC", ANTHROPIC_KEY)
    upstream = start_upstream()
    authority = CredentialAuthority.load_or_create(tmp_path / "authority")
    audit: list[tuple[str, dict[str, Any]]] = []
    costs: list[tuple[str, Decimal, dict[str, Any]]] = []
    async with open_kv(etcd_server.url) as kv:
        config = GatewayConfig.from_dict(gateway_config(upstream.url, **{"policy-bound": {
            "models": ["gpt-4o-mini"], "default_model": "gpt-4o-mini", "requests_per_minute": 2}}))
        gateway = await MeteringGateway(
            config, kv, CredentialVerifier(authority.public_key, kv),
            audit=lambda component, op, params, severity="INFO": audit.append((op, params)),
            cost_sink=lambda swarm, op, cost, **meta: costs.append((swarm, cost, meta)),
            upstream_timeout=1.5).start()
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(gateway), host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        yield Stack(f"http://127.0.0.1:{port}", kv, gateway, authority, upstream, audit, costs)
        server.should_exit = True
        await task
        await gateway.close()
    stop(upstream.server, upstream.thread)


def price(rate_in: str, rate_out: str, tokens_in: int, tokens_out: int) -> Decimal:
    return (Decimal(rate_in) * tokens_in + Decimal(rate_out) * tokens_out) / Decimal(1_000_000)


async def test_openai_chat_is_reserved_then_settled_to_its_usage(stack: Stack) -> None:
    swarm, key = await stack.swarm(1.0)
    reply = await stack.openai(key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "say something"}], max_tokens=50)
    assert reply.choices[0].message.content and reply.usage is not None
    expected = price("0.15", "0.6", reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert await stack.settled(swarm) == expected
    reserved = next(p for op, p in stack.audit if op == "model_call_reserved" and p["swarm_id"] == swarm)
    settled = next(p for op, p in stack.audit if op == "model_call_settled" and p["swarm_id"] == swarm)
    assert Decimal(reserved["amount"]) >= expected and settled["charged"] == str(expected)
    assert settled["tokens_in"] == reply.usage.prompt_tokens and settled["price_version"] == "test-2026-12"
    assert [(s, c) for s, c, _ in stack.costs] == [(swarm, expected)]
    assert stack.upstream.seen[-1]["body"]["max_tokens"] == 50  # the provider is held to what was reserved


async def test_openai_streaming_settles_on_the_final_usage_event(stack: Stack) -> None:
    swarm, key = await stack.swarm(1.0)
    stream = await stack.openai(key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream it"}], stream=True)
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text and usage is not None  # include_usage was asked for on the swarm's behalf
    assert await stack.settled(swarm) == price("0.15", "0.6", usage.prompt_tokens, usage.completion_tokens)


async def test_anthropic_messages_plain_and_streaming(stack: Stack) -> None:
    swarm, key = await stack.swarm(1.0)
    client = stack.anthropic(key)
    message = await client.messages.create(model="claude-haiku", max_tokens=20,
                                           messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text and message.model == "claude-3-5-haiku-latest"
    first = price("0.8", "4", message.usage.input_tokens, message.usage.output_tokens)
    assert await stack.settled(swarm) == first
    async with client.messages.stream(model="claude-haiku", max_tokens=20,
                                      messages=[{"role": "user", "content": "hello again"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text
    second = price("0.8", "4", final.usage.input_tokens, final.usage.output_tokens)
    assert await stack.settled(swarm) == first + second
    sent = stack.upstream.seen[-1]["headers"]
    assert sent["x-api-key"] == ANTHROPIC_KEY and key not in json.dumps(sent)


async def test_embeddings_and_models(stack: Stack) -> None:
    swarm, key = await stack.swarm(1.0)
    client = stack.openai(key)
    result = await client.embeddings.create(model="text-embedding-3-small", input=["one", "two two"])
    assert len(result.data) == 2
    assert await stack.settled(swarm) == price("0.02", "0", result.usage.prompt_tokens, 0)
    models = await client.models.list()
    assert {m.id for m in models.data} >= {"gpt-4o-mini", "claude-haiku"}


async def test_unknown_routes_and_methods_answer_the_error_envelope(stack: Stack) -> None:
    _, key = await stack.swarm(1.0)
    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}) as http:
        for method, path, status, code in (("GET", "/v1/chat/completions", 405, "IF_ERR_METHOD_NOT_ALLOWED"),
                                           ("POST", "/v1/models", 405, "IF_ERR_METHOD_NOT_ALLOWED"),
                                           ("POST", "/v1/completions", 404, "IF_ERR_NOT_FOUND"),
                                           ("GET", "/", 404, "IF_ERR_NOT_FOUND")):
            answer = await http.request(method, path)
            assert answer.status_code == status and answer.json()["error"]["code"] == code, (method, path)


async def test_a_call_that_does_not_fit_is_refused_before_it_is_sent(stack: Stack) -> None:
    swarm, key = await stack.swarm(0.0001)
    before = len(stack.upstream.seen)
    with pytest.raises(openai.RateLimitError) as caught:
        await stack.openai(key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 2000}], max_tokens=500)
    error = caught.value.body
    assert error["code"] == "IF_ERR_BUDGET_EXCEEDED" and Decimal(error["remaining"]) == Decimal("0.0001")
    assert len(stack.upstream.seen) == before  # nothing reached the provider
    assert await stack.ledger(swarm) == (Decimal(0), {})
    assert any(op == "model_call_refused" and p["swarm_id"] == swarm for op, p in stack.audit)


@pytest.mark.parametrize("mode, settled_by", [("error500", "release"), ("nousage", "reservation"),
                                               ("hang", "release"), ("forge", "usage")])
async def test_upstream_failures_settle_as_specified(stack: Stack, mode: str, settled_by: str) -> None:
    swarm, key = await stack.swarm(1.0)
    client = stack.openai(key)
    call = client.chat.completions.create(model="gpt-4o-mini", max_tokens=100,
                                          messages=[{"role": "user", "content": f"MODE:{mode}"}])
    if settled_by == "release":
        with pytest.raises(openai.APIStatusError):
            await call
    else:
        await call
    spent = await stack.settled(swarm)
    reserved = Decimal(next(p["amount"] for op, p in stack.audit
                            if op == "model_call_reserved" and p["swarm_id"] == swarm))
    assert spent == {"release": Decimal(0), "reservation": reserved, "usage": reserved}[settled_by]
    # a forged usage block (10^9 tokens each way) is bounded by the reservation


@pytest.mark.parametrize("mode", ["cut", "nousage"])
async def test_a_stream_cut_or_without_usage_is_charged_the_reservation(stack: Stack, mode: str) -> None:
    swarm, key = await stack.swarm(1.0)
    with pytest.raises(Exception) if mode == "cut" else _nothing():
        stream = await stack.openai(key).chat.completions.create(
            model="gpt-4o-mini", max_tokens=100, stream=True, messages=[{"role": "user", "content": f"MODE:{mode}"}])
        async for _ in stream:
            pass
    reserved = Decimal(next(p["amount"] for op, p in stack.audit
                            if op == "model_call_reserved" and p["swarm_id"] == swarm))
    assert await stack.settled(swarm) == reserved


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


async def test_the_swarm_is_who_its_credential_says_and_nothing_of_it_reaches_the_provider(stack: Stack) -> None:
    victim, _ = await stack.swarm(1.0)
    thief, key = await stack.swarm(1.0)
    async with httpx.AsyncClient(base_url=stack.url) as http:
        # naming another swarm anywhere in the request changes nothing: the credential decides who pays
        answer = await http.post("/v1/chat/completions", headers={
            "Authorization": f"Bearer {key}", "X-Swarm-Id": victim, "Cookie": "session=abc",
            "X-Forwarded-Host": "api.evil.example", "OpenAI-Organization": "org-other", "Host": "api.openai.com"},
            json={"model": "gpt-4o-mini", "user": victim, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        assert (await stack.settled(victim)) == 0 and (await stack.settled(thief)) > 0
        sent = stack.upstream.seen[-1]["headers"]
        assert sent["authorization"] == f"Bearer {OPENAI_KEY}"
        assert not {"cookie", "x-forwarded-host", "openai-organization", "x-swarm-id"} & set(sent)
        assert key not in json.dumps(sent)
        for bad in ({"Authorization": "Bearer not-a-credential"}, {"x-api-key": stack.authority.issue("operator", "op")},
                    {}):
            refused = await http.post("/v1/chat/completions", headers=bad,
                                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            assert refused.status_code in (401, 403) and refused.json()["error"]["code"].startswith("IF_ERR_")
        await revoke(stack.kv, role="swarm", name=thief)
        await asyncio.sleep(stack.gateway.verifier.refresh + 0.1)  # the verifier re-reads revocations this often
        revoked = await http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "IF_ERR_AUTH_REVOKED"


@pytest.mark.parametrize("content", [
    [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
    [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
    {"type": "text", "text": "a dict, not a list"},
])
async def test_content_the_byte_bound_cannot_price_is_refused(stack: Stack, content: Any) -> None:
    swarm, key = await stack.swarm(1.0)
    with pytest.raises(openai.BadRequestError) as caught:
        await stack.openai(key).chat.completions.create(model="gpt-4o-mini",
                                                        messages=[{"role": "user", "content": content}])
    assert caught.value.body["code"] == "IF_ERR_UNSUPPORTED_CONTENT"
    assert await stack.ledger(swarm) == (Decimal(0), {})


async def test_n_choices_and_max_tokens_are_in_the_bound(stack: Stack) -> None:
    swarm, key = await stack.swarm(1.0)
    await stack.openai(key).chat.completions.create(model="gpt-4o-mini", n=3, max_tokens=10_000,
                                                    messages=[{"role": "user", "content": "hi"}])
    reserved = next(p for op, p in stack.audit if op == "model_call_reserved" and p["swarm_id"] == swarm)
    body = stack.upstream.seen[-1]["body"]
    assert body["max_tokens"] == 1000  # clamped to the model's limit, and sent so
    payload = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    assert Decimal(reserved["amount"]) == price("0.15", "0.6", payload, 3 * 1000)


async def test_both_output_limits_are_checked_and_held_to_the_reservation(stack: Stack) -> None:
    """A call giving max_completion_tokens (small: a small hold) and max_tokens (large, or not a number) must
    not have the provider honour the unchecked one: each limit given is checked, and both are sent as the
    reserved bound (hypothesis found max_tokens=":" reaching the provider beside a valid max_completion_tokens)."""
    swarm, key = await stack.swarm(1.0)
    async with httpx.AsyncClient(base_url=stack.url) as http:
        bad = await http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                    "max_completion_tokens": 1, "max_tokens": ":"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "IF_ERR_VALIDATION"
        assert await stack.settled(swarm) == 0
        ok = await http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                   "max_completion_tokens": 2, "max_tokens": 5000})
        assert ok.status_code == 200, ok.text
    body = stack.upstream.seen[-1]["body"]
    assert body["max_completion_tokens"] == body["max_tokens"] == 1000  # one bound, the reserved one


async def test_model_policy_default_allowed_cheaper_and_rate(stack: Stack) -> None:
    bound_key = stack.authority.issue("swarm", "policy-bound", 600)
    governor = IFGovernor(kv=stack.kv, audit=None, cost_sink=None)
    governor.register_swarm(SwarmProfile("policy-bound", ["code:python"], 1.0, 1.0, 1.0))
    await governor.close()
    client = stack.openai(bound_key)
    async with httpx.AsyncClient(base_url=stack.url) as http:  # no model: the swarm's default
        answer = await http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {bound_key}"},
                                 json={"messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200 and stack.upstream.seen[-1]["body"]["model"] == "gpt-4o-mini"
    # gpt-4o routes to the cheaper model (the swarm may not use the larger): allowed; then the rate limit
    await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert stack.upstream.seen[-1]["body"]["model"] == "gpt-4o-mini"
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "IF_ERR_RATE_LIMITED"
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": "hi"}])



_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
_models = st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-haiku", "text-embedding-3-small"])
_good_messages = st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=60)}),
                          min_size=1, max_size=3)
_hostile_messages = st.one_of(_json_leaf, st.lists(st.one_of(_json_leaf, st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"])},
    optional={"content": st.one_of(_json_leaf, st.lists(st.dictionaries(st.sampled_from(["type", "text"]),
                                                                        _json_leaf, max_size=2), max_size=3))})),
    max_size=4))


def _mostly(good: Any, hostile: Any) -> Any:
    """Each field valid most of the time, so the hostile one reaches the bound, the ledger and the provider."""
    return st.integers(0, 9).flatmap(lambda i: good if i < 7 else hostile)


_hostile_body = st.fixed_dictionaries(
    {"model": _mostly(_models, _json_leaf), "messages": _mostly(_good_messages, _hostile_messages)},
    optional={"max_tokens": _mostly(st.integers(1, 2000), _json_leaf),
              "max_completion_tokens": _mostly(st.integers(1, 2000), _json_leaf),
              "n": _mostly(st.integers(1, 3), _json_leaf), "stream": _mostly(st.booleans(), _json_leaf),
              "stream_options": st.one_of(_json_leaf, st.dictionaries(st.text(max_size=8), _json_leaf, max_size=2))})


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_hostile_body)
async def test_hostile_bodies_never_break_the_gateway_or_leak_a_hold(stack: Stack, body: dict[str, Any]) -> None:
    """Any value in any field: a clear 4xx (or a normal answer), never a 5xx of ours, and no hold left held
    or money charged beyond the budget."""
    swarm, key = await stack.swarm(0.01)
    async with httpx.AsyncClient(base_url=stack.url, timeout=20) as http:
        r = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        if body.get("stream") and r.status_code == 200:
            await r.aread()
    assert r.status_code in (200, 400, 403, 429), (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json()["error"]["code"].startswith("IF_ERR_")
    spent = await stack.settled(swarm)
    assert Decimal(0) <= spent <= Decimal("0.01")
    if r.status_code != 200:
        assert spent == 0


async def test_a_swarm_that_hangs_up_mid_stream_stops_the_relay_and_is_charged_once(stack: Stack) -> None:
    """The gateway stops reading the provider when the swarm goes away (the provider sees the hang-up), and
    the call is settled once: output was relayed and no usage came, so the reservation is charged."""
    swarm, key = await stack.swarm(1.0)
    async with httpx.AsyncClient(base_url=stack.url, timeout=20) as http:
        async with http.stream("POST", "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "gpt-4o-mini", "max_tokens": 100, "stream": True,
                                     "messages": [{"role": "user", "content": "MODE:slow"}]}) as answer:
            assert answer.status_code == 200
            async for _ in answer.aiter_raw():
                break  # the swarm hangs up after the first piece (the whole stream takes 4.5 s)
    reserved = Decimal(next(p["amount"] for op, p in stack.audit
                            if op == "model_call_reserved" and p["swarm_id"] == swarm))
    assert await stack.settled(swarm) == reserved
    slow = next(s for s in reversed(stack.upstream.seen) if "MODE:slow" in json.dumps(s.get("body")))
    for _ in range(300):  # the provider hears of it when the gateway closes its side
        if slow.get("streamed") != "started":
            break
        await asyncio.sleep(0.01)
    assert slow["streamed"] == "hung up on"
    assert [op for op, p in stack.audit if p.get("swarm_id") == swarm].count("model_call_settled") == 1
