"""One path for sandboxed code: a guest's model call through the chassis is metered by the gateway."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from infrafabric.chassis import EndpointNotAllowedError, IFChassis
from infrafabric.gateway.sandbox import model_call_credentials
from tests.integration.infrafabric.gateway.test_gateway import Stack, price, stack  # noqa: F401 - the fixture

pytestmark = [pytest.mark.etcd, pytest.mark.wasm]


async def test_a_guest_model_call_goes_through_the_gateway_and_is_charged(stack: Stack, chassis: IFChassis) -> None:  # noqa: F811
    swarm, _ = await stack.swarm(1.0)
    endpoint = f"{stack.url}/v1/chat/completions"
    creds = model_call_credentials(stack.authority, swarm, "t-llm", stack.url)
    key = creds.api_token
    assert key is not None
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "from the sandbox"}]})
    result = await chassis.execute_task(swarm, {"action": "call_llm", "prompt": body, "url": endpoint}, creds)
    assert result["status"] == "success", result
    answer = json.loads(result["response"]["body"])
    usage = answer["usage"]
    assert await stack.settled(swarm) == price("0.15", "0.6", usage["prompt_tokens"], usage["completion_tokens"])
    sent = stack.upstream.seen[-1]["headers"]
    assert key not in json.dumps(sent) and "sk-upstream" not in json.dumps(result)  # no key either way
    with pytest.raises(EndpointNotAllowedError):  # the provider itself is not on the task's allow-list
        await chassis.execute_task(swarm, {"action": "call_llm", "prompt": body,
                                           "url": f"{stack.upstream.url}/v1/chat/completions"}, creds)
