"""The hot routes (hot_routes.py) answer exactly as FastAPI does.

Every request below is sent to two apps on their own SQLite files, one with the hot routes and one
without; the answers must agree (status, error code, the body's stable fields, Retry-After), and the hot
app must have served or handed over each request as the module's rule says: served only when FastAPI
would have accepted it past authentication, permissions and validation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lucid.node.api.hot_routes import HotRouteMiddleware
from lucid.node.api.settings import RateLimits
from lucid.node.models.node_models import Node
from lucid.node.models.pool_models import NodePool
from tests.fixtures.node_fixtures import sample_hardware_info

VOLATILE = {"node_id", "created_at", "updated_at", "last_heartbeat", "validation_id", "validation_time_ms",
            "request_id", "timestamp", "confidence"}


def _hot(app: Any) -> HotRouteMiddleware | None:
    layer = app.middleware_stack
    while layer is not None:
        if isinstance(layer, HotRouteMiddleware):
            return layer
        layer = getattr(layer, "app", None)
    return None


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _answer(r: httpx.Response) -> tuple[Any, ...]:
    try:
        body = _stable(r.json())
    except ValueError:
        body = r.text
    return r.status_code, body, r.headers.get("retry-after"), bool(r.headers.get("x-request-id"))


@pytest.fixture
async def pair(node_app_factory: Callable[..., Any], tmp_path: Path) -> AsyncIterator[list[tuple[Any, httpx.AsyncClient]]]:
    """[(hot app, client), (FastAPI-only app, client)], each with pool_workers and an active node."""
    out: list[tuple[Any, httpx.AsyncClient]] = []
    clients: list[httpx.AsyncClient] = []
    for hot in (True, False):
        app = await node_app_factory(db_url=f"sqlite+aiosqlite:///{tmp_path / f'hot-{hot}.db'}", hot_routes=hot)
        c = app.state.container
        await c.pool_repo.create(NodePool(pool_id="pool_workers", name="workers", max_nodes=100))
        await c.node_repo.create(Node(node_id="node_hot_0001", name="hot-node-1", status="active"))
        await c.node_repo.create(Node(node_id="node_hot_0002", name="hot-node-2", status="inactive"))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node-mgmt")
        clients.append(client)
        await client.get("/health")  # builds the middleware stack
        out.append((app, client))
    yield out
    for client in clients:
        await client.aclose()


def _create_body(name: str = "hot-created-1", **kw: Any) -> dict[str, Any]:
    body = {"name": name, "node_type": "worker", "hardware_info": sample_hardware_info(),
            "location": {"country": "US", "region": "CA"}, "initial_pool_id": "pool_workers"}
    body.update(kw)
    return body


def _proof(nonce: str = "hot-nonce-0123456789", **kw: Any) -> dict[str, Any]:
    body = {"output_data": "aGVsbG8gd29ybGQ=", "nonce": nonce, "timestamp": datetime.now(UTC).isoformat()}
    body.update(kw)
    return body


# (case, path, token role (None: none, "bad": garbage, "worker:<id>": a worker token bound to a node), body,
#  content type (None: application/json when there is a body),
#  expected status, served by the hot path?)
CASES: list[tuple[str, str, str | None, Any, str | None, int, bool]] = [
    ("create", "/api/v1/nodes", "admin", _create_body(), None, 201, True),
    ("create-duplicate-name", "/api/v1/nodes", "admin", _create_body("hot-node-1"), None, 409, True),
    ("create-missing-pool", "/api/v1/nodes", "admin", _create_body("hot-created-2", initial_pool_id="pool_nowhere"),
     None, 404, True),
    ("create-no-token", "/api/v1/nodes", None, _create_body("hot-created-3"), None, 401, False),
    ("create-bad-token", "/api/v1/nodes", "bad", _create_body("hot-created-4"), None, 401, False),
    ("create-wrong-role", "/api/v1/nodes", "validator", _create_body("hot-created-5"), None, 403, False),
    ("create-invalid-name", "/api/v1/nodes", "admin", _create_body("x"), None, 400, False),
    ("create-extra-field", "/api/v1/nodes", "admin", _create_body("hot-created-6", owner="me"), None, 400, False),
    ("create-not-json", "/api/v1/nodes", "admin", b'{"name": "hot-created-7", ', None, 400, False),
    ("create-text-plain", "/api/v1/nodes", "admin", json.dumps(_create_body("hot-created-8")).encode(),
     "text/plain", 400, False),
    ("create-empty-body", "/api/v1/nodes", "admin", b"", None, 400, False),
    ("create-json-array", "/api/v1/nodes", "admin", [1, 2], None, 400, False),
    ("create-vendor-json", "/api/v1/nodes", "admin", json.dumps(_create_body("hot-created-9")).encode(),
     "application/vnd.lucid+json; charset=utf-8", 201, True),
    ("poot", "/api/v1/nodes/node_hot_0001/poot/validate", "validator", _proof(), None, 200, True),
    ("poot-replay", "/api/v1/nodes/node_hot_0001/poot/validate", "validator", _proof(), None, 409, True),
    ("poot-inactive-node", "/api/v1/nodes/node_hot_0002/poot/validate", "validator", _proof("hot-nonce-b"), None,
     400, True),
    ("poot-future", "/api/v1/nodes/node_hot_0001/poot/validate", "validator",
     _proof("hot-nonce-c", timestamp=(datetime.now(UTC) + timedelta(hours=1)).isoformat()), None, 400, True),
    ("poot-own-node-token", "/api/v1/nodes/node_hot_0001/poot/validate", "worker:node_hot_0001",
     _proof("hot-nonce-d"), None, 200, True),
    ("poot-other-node-token", "/api/v1/nodes/node_hot_0001/poot/validate", "worker:node_hot_0002",
     _proof("hot-nonce-e"), None, 403, False),
    ("poot-missing-nonce", "/api/v1/nodes/node_hot_0001/poot/validate", "validator",
     {"output_data": "aGk=", "timestamp": datetime.now(UTC).isoformat()}, None, 400, False),
    ("poot-admin-lacks-permission", "/api/v1/nodes/node_hot_0001/poot/validate", "admin", _proof("hot-nonce-f"),
     None, 403, False),
    ("poot-bad-node-id", "/api/v1/nodes/node_x/poot/validate", "validator", _proof("hot-nonce-g"), None, 400, False),
]


async def test_hot_and_fastapi_answers_agree(pair: list[tuple[Any, httpx.AsyncClient]],
                                             mint: Callable[..., str]) -> None:
    answers: list[list[tuple[Any, ...]]] = [[], []]
    for case, path, role, body, content_type, status, served in CASES:
        headers: dict[str, str] = {}
        if role == "bad":
            headers["Authorization"] = "Bearer not.a.token"
        elif role is not None and role.startswith("worker:"):
            headers["Authorization"] = f"Bearer {mint('worker', node_id=role[7:])}"
        elif role is not None:
            headers["Authorization"] = f"Bearer {mint(role)}"
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if content_type is not None:
            headers["Content-Type"] = content_type
        elif not isinstance(body, bytes) or body:
            headers["Content-Type"] = "application/json"
        for side, (app, client) in enumerate(pair):
            hot = _hot(app)
            before = (hot.served, hot.handed_over) if hot is not None else None
            r = await client.post(path, content=raw, headers=headers)
            answers[side].append(_answer(r))
            assert r.status_code == status, (case, side, r.text)
            if side == 0:
                assert hot is not None and before is not None, "the hot app has no HotRouteMiddleware"
                # a path the hot route does not match (a bad node id) is neither served nor read
                expected = (1, 0) if served else (0, 0) if case == "poot-bad-node-id" else (0, 1)
                assert (hot.served - before[0], hot.handed_over - before[1]) == expected, case
        assert answers[0][-1] == answers[1][-1], (case, answers[0][-1], answers[1][-1])
    assert _hot(pair[1][0]) is None  # the other app really went through FastAPI only


async def test_hot_path_counts_each_request_once_against_the_rate_limit(
        node_app_factory: Callable[..., Any], tmp_path: Path, mint: Callable[..., str]) -> None:
    """A request FastAPI answers after the hot path looked at it is charged once: with 3 per minute, an
    invalid body and two creations pass and the fourth request is the one refused."""
    token = {"Authorization": f"Bearer {mint('admin', subject='limited-admin')}"}
    limits = RateLimits(public=100, node=100, admin=3, poot=100, payout=100)
    results = []
    for hot in (True, False):
        app = await node_app_factory(db_url=f"sqlite+aiosqlite:///{tmp_path / f'limit-{hot}.db'}", hot_routes=hot,
                                     rate_limits=limits)
        await app.state.container.pool_repo.create(NodePool(pool_id="pool_workers", name="workers"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
            codes = [(await client.post("/api/v1/nodes", json=_create_body("x"), headers=token)).status_code]
            for i in range(2):
                codes.append((await client.post("/api/v1/nodes", json=_create_body(f"limited-{i}"),
                                                headers=token)).status_code)
            refused = await client.post("/api/v1/nodes", json=_create_body("limited-9"), headers=token)
            codes.append(refused.status_code)
            assert refused.json()["error"]["code"] == "LUCID_ERR_4291"
            assert int(refused.headers["retry-after"]) >= 1
        results.append(codes)
    assert results == [[400, 201, 201, 429]] * 2


async def test_hot_path_reads_a_chunked_body_and_keeps_request_ids_and_metrics(
        pair: list[tuple[Any, httpx.AsyncClient]], auth_headers: dict[str, str]) -> None:
    app, client = pair[0]
    payload = json.dumps(_create_body("chunked-node")).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 64):
            yield payload[i:i + 64]

    hot = _hot(app)
    assert hot is not None
    served = hot.served
    r = await client.post("/api/v1/nodes", content=chunks(),
                          headers={**auth_headers, "Content-Type": "application/json", "X-Request-ID": "req-hot-0001"})
    assert r.status_code == 201, r.text
    assert hot.served == served + 1
    assert r.headers["x-request-id"] == "req-hot-0001"
    assert r.json()["name"] == "chunked-node"
    registry = app.state.container.metrics.registry
    assert registry.get_sample_value("lucid_node_http_requests_total",
                                     {"method": "POST", "route": "/api/v1/nodes", "status": "201"}) == 1.0
    listed = await client.get("/api/v1/nodes", params={"name": "chunked-node"}, headers=auth_headers)
    assert [n["name"] for n in listed.json()["nodes"]] == ["chunked-node"]


@pytest.mark.parametrize("hot_routes", [True, False])
async def test_a_chunked_body_past_the_limit_is_refused_on_both_paths(
        node_app_factory: Callable[..., Any], tmp_path: Path, auth_headers: dict[str, str], hot_routes: bool) -> None:
    """A body without Content-Length is counted as it arrives: past max_body_bytes the answer is 413
    with the envelope, and nothing is created."""
    app = await node_app_factory(db_url=f"sqlite+aiosqlite:///{tmp_path / 'big.db'}", max_body_bytes=256,
                                 hot_routes=hot_routes)
    await app.state.container.pool_repo.create(NodePool(pool_id="pool_workers", name="workers"))
    payload = json.dumps(_create_body("big-node")).encode()
    assert len(payload) > 256

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 100):
            yield payload[i:i + 100]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        r = await client.post("/api/v1/nodes", content=chunks(),
                              headers={**auth_headers, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "LUCID_ERR_5000" and r.headers["x-request-id"]
        small = await client.post("/api/v1/nodes", content=b"{}",
                                  headers={**auth_headers, "Content-Type": "application/json"})
        assert small.status_code == 400  # under the limit: read and validated as usual
        listed = await client.get("/api/v1/nodes", headers=auth_headers)
    assert listed.json()["nodes"] == []


async def test_the_app_leaves_the_collector_alone_and_the_entry_point_tunes_and_restores_it(
        tmp_path: Path, node_jwt_secret: str) -> None:
    """An app built inside a longer-lived process must not change that process's collector; ``lucid
    serve`` (which owns its process) tunes it around the server and restores it afterwards."""
    import gc

    from lucid.node.api import create_app
    from lucid.node.api.gc_tuning import GC_THRESHOLDS, tuned_collector
    from tests.fixtures.node_fixtures import node_api_settings

    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    app = create_app(node_api_settings(tmp_path, node_jwt_secret))
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    with tuned_collector():
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_a_repeated_header_is_read_as_fastapi_reads_it(pair: list[tuple[Any, httpx.AsyncClient]],
                                                             mint: Callable[..., str]) -> None:
    """Starlette takes the first of a repeated header; so does the hot path."""
    good, bad = f"Bearer {mint('admin')}", "Bearer not.a.token"
    for i, (first, second, status) in enumerate(((good, bad, 201), (bad, good, 401))):
        statuses = []
        for _, client in pair:
            headers = [("Authorization", first), ("Authorization", second), ("Content-Type", "application/json")]
            r = await client.post("/api/v1/nodes", content=json.dumps(_create_body(f"repeated-{i}")).encode(),
                                  headers=headers)
            statuses.append(r.status_code)
        assert statuses == [status, status]
