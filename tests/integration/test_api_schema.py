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
    for op in ops:
        @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=node_server.url, headers=headers, timeout=10)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
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
