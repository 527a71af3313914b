"""The FastAPI app factory. Routers with fixed path segments (pools, payouts, poot batch) are included
before ``/nodes/{node_id}`` so "pools" is never taken for a node id; the hot routes come first of all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..tron.base import TwoPhaseTronClient
from . import routes_nodes, routes_payouts, routes_pools, routes_poot, routes_system
from .container import NodeContainer
from .errors import install_error_handlers
from .hot_routes import HotRouteMiddleware
from .openapi import install_openapi
from .observability import RequestContextMiddleware, install_log_record_factory
from .settings import NodeAPISettings

__all__ = ["create_app"]


def create_app(settings: NodeAPISettings | None = None, *, tron_client: TwoPhaseTronClient | None = None) -> FastAPI:
    settings = settings or NodeAPISettings()
    container = NodeContainer(settings, tron_client=tron_client)
    install_log_record_factory()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.stop()

    # FastAPI's native OpenTelemetry hooks asked on every request whether a provider is configured
    # (a measurable cost per request); this app reports through its own Prometheus metrics and request-id logs.
    app = FastAPI(title="Lucid node management", version="1.0.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})
    app.state.container = container
    install_error_handlers(app)
    install_openapi(app)
    # FastAPI tries included routers in order, each costing a match: the hot paths (a proof, a node
    # creation) come first. Their templates cannot capture another route's path ("poot" is a literal
    # segment, /api/v1/nodes an exact path); /api/v1/nodes/{node_id} must stay after pools and payouts.
    for r in (routes_poot.router, routes_nodes.collection_router, routes_system.router, routes_pools.router,
              routes_payouts.router, routes_poot.batch_router, routes_payouts.node_router, routes_nodes.router):
        app.include_router(r)
    if settings.hot_routes:  # inside RequestContextMiddleware: both paths get request ids, metrics and logs
        app.add_middleware(HotRouteMiddleware, container=container)
    app.add_middleware(RequestContextMiddleware, metrics=container.metrics, max_body_bytes=settings.max_body_bytes)
    return app
