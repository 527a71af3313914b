"""The app matches its hot routes first (app.py); every documented route must still be reached by its own
paths, so that no template included earlier captures another route's requests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lucid.node.api import NodeAPISettings, create_app

SAMPLES = {"node_id": "node_route_0001", "pool_id": "pool_route_01", "batch_id": "batch_route_01"}


async def _route_of(app: Any, method: str, path: str) -> tuple[str | None, int]:
    scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                             "root_path": "", "headers": [], "client": ("127.0.0.1", 5000),
                             "server": ("127.0.0.1", 8083)}
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    route = scope.get("route")
    return getattr(route, "path", None), status[0]


async def test_every_route_is_reached_by_its_own_paths(tmp_path: Path) -> None:
    app = create_app(NodeAPISettings(db_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}",
                                     ledger_url=f"sqlite+aiosqlite:///{tmp_path / 'l.db'}", jwt_secret="s" * 32))
    routes = [(method, path) for path, ops in app.openapi()["paths"].items() for method in ops]
    assert len(routes) >= 30
    async with app.router.lifespan_context(app):
        for method, template in routes:
            path = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m[1]], template)
            matched, status = await _route_of(app, method.upper(), path)
            assert matched == template, (method, path, matched)
            assert status in (200, 401), (method, path, status)  # public health, else the auth wall
