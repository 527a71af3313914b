"""Outbound calls through the host function ``http_request`` against a real local HTTP server."""

from __future__ import annotations

import json

import pytest

from infrafabric.chassis import (
    EndpointNotAllowedError,
    IFChassis,
    ResourceLimits,
    SandboxPermissionError,
    ScopedCredentials,
    ServiceContract,
)
from infrafabric.chassis.modules import reference_module
from infrafabric.chassis.outbound import OutboundHTTP
from infrafabric.chassis.ratelimit import GCRALimiter
from infrafabric.chassis.sandbox import HTTP_ERR_BAD_REQUEST, TaskContext, _HostAbort

pytestmark = pytest.mark.wasm


async def test_scoped_credentials_with_a_local_llm_api(chassis, local_upstream):
    """The seed's OpenAI test, against a real local OpenAI-shaped server instead of the internet."""
    endpoint = local_upstream.url("/v1/chat/completions")
    creds = ScopedCredentials(swarm_id='test-swarm', task_id='test-task-123', api_token='sk-temp-xyz',
                              ttl_seconds=300, allowed_endpoints=[endpoint])
    result = await chassis.execute_task(
        swarm_id='test-swarm', task={'action': 'call_llm', 'prompt': 'Say "test"', 'url': endpoint},
        credentials=creds)
    assert result['status'] == 'success'
    response = result["response"]
    assert response["status"] == 200 and response["truncated"] is False
    assert json.loads(response["body"])["choices"][0]["message"]["content"] == "test"
    [seen] = local_upstream.seen("/v1/chat/completions")
    assert seen.method == "POST" and seen.authorization == "Bearer sk-temp-xyz"
    assert seen.body == b'Say "test"'  # the guest embeds the escaped prompt in its JSON request


async def test_redirect_within_the_allow_list_is_followed(chassis, local_upstream):
    base = local_upstream.url("/")
    creds = ScopedCredentials("swarm-r", "t-r", "tok-r", 60, [base])
    target = "/v1/chat/completions"
    result = await chassis.execute_task(
        "swarm-r", {"id": "t-r", "action": "http_request", "url": local_upstream.url(f"/redirect?to={target}")},
        creds)
    assert result["response"]["status"] == 200
    assert [r.path for r in local_upstream.seen()] == ["/redirect", "/v1/chat/completions"]
    assert all(r.authorization == "Bearer tok-r" for r in local_upstream.seen())


async def test_redirect_to_another_host_is_refused(chassis, local_upstream, second_upstream):
    creds = ScopedCredentials("swarm-r", "t-r2", "tok-r2", 60, [local_upstream.url("/")])
    evil = second_upstream.url("/collect")
    with pytest.raises(EndpointNotAllowedError, match="redirect"):
        await chassis.execute_task(
            "swarm-r", {"id": "t-r2", "action": "http_request", "url": local_upstream.url(f"/redirect?to={evil}")},
            creds)
    assert second_upstream.seen() == [], "the token followed a redirect to another host"


async def test_response_size_is_capped(chassis, local_upstream):
    chassis.load_swarm("swarm-big", reference_module(), ServiceContract(
        "swarm-big", resource_requirements=ResourceLimits(max_response_bytes=1000)))
    creds = ScopedCredentials("swarm-big", "t-big", "tok", 60, [local_upstream.url("/big")])
    result = await chassis.execute_task(
        "swarm-big", {"id": "t-big", "action": "http_request", "url": local_upstream.url("/big?n=200000")}, creds)
    assert result["response"]["truncated"] is True
    assert len(result["response"]["body"]) == 1000


async def test_small_guest_buffer_gets_an_error_code_not_an_overflow(chassis, local_upstream):
    creds = ScopedCredentials("swarm-buf", "t-buf", "tok", 60, [local_upstream.url("/big")])
    result = await chassis.execute_task(
        "swarm-buf", {"id": "t-buf", "action": "http_request", "url": local_upstream.url("/big?n=5000"),
                      "resp_cap": 100}, creds)
    assert result == {"status": "error", "error": "http_failed", "code": -2}


async def test_network_failure_is_reported_to_the_guest(chassis, second_upstream):
    url = second_upstream.url("/v1/x")
    second_upstream.stop()  # allowed endpoint, but nobody listens any more
    creds = ScopedCredentials("swarm-n", "t-n", "tok", 60, [url])
    result = await chassis.execute_task("swarm-n", {"id": "t-n", "action": "http_request", "url": url}, creds)
    assert result == {"status": "error", "error": "http_failed", "code": -3}


def _ctx(creds: ScopedCredentials, outbound: OutboundHTTP) -> TaskContext:
    import time

    return TaskContext(swarm_id=creds.swarm_id, task_id=creds.task_id, limits=ResourceLimits(),
                       credentials=creds, deadline=time.monotonic() + 5, limiter=GCRALimiter(100, 10),
                       outbound=outbound)


@pytest.mark.security
@pytest.mark.parametrize("header", ["Authorization", "Host", "Cookie", "X-Forwarded-Host", "Proxy-Authorization"])
def test_guest_cannot_set_sensitive_headers(local_upstream, header):
    outbound = OutboundHTTP()
    creds = ScopedCredentials("swarm-h", "t-h", "tok", 60, [local_upstream.url("/")])
    ctx = _ctx(creds, outbound)
    raw = json.dumps({"method": "GET", "url": local_upstream.url("/x"), "headers": {header: "evil.com"}}).encode()
    with pytest.raises(_HostAbort):
        outbound.perform(ctx, raw)
    assert isinstance(ctx.violation, SandboxPermissionError)
    assert local_upstream.seen() == []
    outbound.close()


def test_malformed_guest_requests_get_an_error_code(local_upstream):
    outbound = OutboundHTTP()
    creds = ScopedCredentials("swarm-h", "t-h", "tok", 60, [local_upstream.url("/")])
    ctx = _ctx(creds, outbound)
    for raw in (b"not json", b"[]", b'{"url": 5}', b'{"url": "http://x/", "method": "TRACE"}', b"\xff\xfe"):
        assert outbound.perform(ctx, raw) == HTTP_ERR_BAD_REQUEST
    assert ctx.violation is None and local_upstream.seen() == []
    outbound.close()


async def test_host_function_cannot_be_called_outside_a_task():
    from infrafabric.chassis.sandbox import current_context

    with pytest.raises(RuntimeError):
        current_context()


async def test_chassis_close_is_idempotent_and_refuses_new_work(local_upstream):
    chassis = IFChassis(audit=None, reputation_sink=None)
    assert (await chassis.execute_task("x", {"action": "noop"}))["status"] == "success"
    chassis.close()
    chassis.close()
    with pytest.raises(Exception, match="closed"):
        await chassis.execute_task("x", {"action": "noop"})
