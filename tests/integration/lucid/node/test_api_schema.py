"""schemathesis against the app's OpenAPI, over a real uvicorn server: no input produces a 5xx, and every
response keeps the contract (request id header; errors in the envelope)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from lucid.node.api.auth import mint_token
from lucid.node.api.server import ServerProcess

_SECRET = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def node_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("schema-server")
    env = {"LUCID_NODE_RATE_PUBLIC": "100000", "LUCID_NODE_RATE_ADMIN": "1000000",
           "LUCID_NODE_RATE_POOT": "1000000", "LUCID_NODE_RATE_PAYOUT": "1000000", "LUCID_NODE_RATE_NODE": "1000000"}
    with ServerProcess(workdir, secret=_SECRET, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def node_schema(node_server: ServerProcess):  # type: ignore[no-untyped-def]
    spec = httpx.get(f"{node_server.url}/openapi.json").json()
    return schemathesis.openapi.from_dict(spec)


def _operations(schema):  # type: ignore[no-untyped-def]
    ops = []
    for result in schema.get_all_operations():
        ops.append(result.ok())
    return ops


def test_no_server_errors(node_schema, node_server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    """Every operation, fuzzed from its schema (schemathesis' pytest plugin does not load under pytest 9,
    so the strategies are driven with hypothesis directly)."""
    token = mint_token(_SECRET, role="super_admin")
    headers = {"Authorization": f"Bearer {token}"}
    ops = _operations(node_schema)
    assert len(ops) >= 30
    seen: dict[int, int] = {}
    spec = httpx.get(f"{node_server.url}/openapi.json").json()
    for op in ops:
        documented = set(spec["paths"][op.path][op.method.lower()]["responses"])
        @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=node_server.url, headers=headers, timeout=10)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
            # the document describes what the server does: every status it answers is documented
            assert str(response.status_code) in documented, (case.method, op.path, response.status_code)
            rid = response.headers.get("x-request-id")
            rid = rid[0] if isinstance(rid, list) else rid
            assert rid
            if response.status_code >= 400:
                err = response.json()["error"]
                assert err["code"].startswith("LUCID_ERR_")
                assert err["request_id"] == rid

        check()
    assert sum(seen.values()) >= len(ops)
    print("status codes seen:", dict(sorted(seen.items())))


def test_openapi_describes_the_envelope_auth_and_limits(node_server: ServerProcess) -> None:
    """No 422 {detail}: 400 with the envelope; the bearer scheme on every protected operation, 401 with
    WWW-Authenticate (and the server really sends it); output_data's documented limit is the real one."""
    from lucid.node.api.openapi import PUBLIC_PATHS
    from lucid.node.models.poot_models import MAX_OUTPUT_BYTES

    spec = httpx.get(f"{node_server.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"]}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    n = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            n += 1
            assert "422" not in op["responses"], (method, path)
            if op.get("requestBody") or op.get("parameters"):
                assert op["responses"]["400"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorEnvelope"}, (method, path)
            if path in PUBLIC_PATHS:
                assert "security" not in op
                continue
            assert op["security"] == [{"bearerAuth": []}], (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"], (method, path)
            assert "Retry-After" in op["responses"]["429"]["headers"], (method, path)
    assert n >= 30
    proof = spec["components"]["schemas"]["PoOTValidationRequest"]["properties"]["output_data"]
    assert proof["maxLength"] == MAX_OUTPUT_BYTES
    r = httpx.get(f"{node_server.url}/api/v1/nodes")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "LUCID_ERR_1203"
    too_long = {"output_data": "a" * (MAX_OUTPUT_BYTES + 1), "timestamp": "2026-01-01T00:00:00Z", "nonce": "n-1"}
    token = mint_token(_SECRET, role="super_admin")
    r = httpx.post(f"{node_server.url}/api/v1/nodes/node_none_001/poot/validate", json=too_long,
                   headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 400  # the documented limit is enforced
