"""Request ids, access log lines and Prometheus metrics, as one pure ASGI middleware (cheaper than
BaseHTTPMiddleware on the hot path). The request id is put in a contextvar so every log line carries it."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import envelope_response
from .request_context import request_id_var

__all__ = ["request_id_var", "RequestContextMiddleware", "BodyTooLarge", "NodeMetrics", "install_log_record_factory"]

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}\Z")
_access = logging.getLogger("lucid.node.access")
_installed = False


def install_log_record_factory() -> None:
    """Every LogRecord gets ``request_id`` (``-`` outside a request)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id_var.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


class NodeMetrics:
    """One registry per app, so several apps (tests) never collide on metric names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lucid_node_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("lucid_node_http_request_seconds", "HTTP latency", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                 registry=self.registry)
        self.poot = Counter("lucid_node_poot_validations_total", "PoOT validations", ["result"],
                            registry=self.registry)
        self.payouts = Counter("lucid_node_payouts_total", "Payouts by final status", ["status"],
                               registry=self.registry)
        self.rate_limited = Counter("lucid_node_rate_limited_total", "429 answers", ["tier"], registry=self.registry)
        self.background = Gauge("lucid_node_background_batches", "Payout batches running", registry=self.registry)
        self.nodes = Gauge("lucid_node_nodes", "Registered nodes by state (read at scrape time)", ["state"],
                           registry=self.registry)
        for result in ("valid", "invalid", "rejected", "batch"):  # known series exist (at 0) from the start
            self.poot.labels(result)
        for status in ("completed", "failed"):
            self.payouts.labels(status)


class BodyTooLarge(StarletteHTTPException):
    """A body without Content-Length grew past the limit. An HTTPException, so that FastAPI, reading the
    body for a route, passes it to the app's HTTP error handler (413, the envelope) instead of calling
    it a parse error; a reader outside FastAPI (the hot routes) lets it reach RequestContextMiddleware."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


class RequestContextMiddleware:
    def __init__(self, app: Any, metrics: NodeMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    def _limited(self, receive: Any) -> Any:
        """``receive`` that counts a streamed (chunked) body and raises BodyTooLarge past the limit; a
        body with Content-Length is checked against the header above (the server holds it to it)."""
        size = 0

        async def limited() -> dict[str, Any]:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    raise BodyTooLarge()
            return message  # type: ignore[no-any-return]

        return limited

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        length = 0
        has_length = False
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                incoming = v.decode("latin-1")
            elif k == b"content-length" and v.isdigit():
                length = int(v)
                has_length = True
        rid = incoming if _VALID_ID.match(incoming) else str(uuid.uuid4())
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status_holder = [500]
        started_response = [False]
        started = time.perf_counter()

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started_response[0] = True
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        if not has_length:
            receive = self._limited(receive)
        try:
            if length > self.max_body_bytes:
                resp = envelope_response(413, "LUCID_ERR_5000", "Request body too large", rid)
                await resp(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        except BodyTooLarge:  # raised by _limited's receive while the hot path read the body
            if not started_response[0]:
                await envelope_response(413, "LUCID_ERR_5000", "Request body too large", rid)(
                    scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - answer 500 with the envelope and the request id, then log
            logging.getLogger("lucid.node.api").exception("unhandled error")
            if not started_response[0]:
                await envelope_response(500, "LUCID_ERR_5999", "Internal error", rid)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status_holder[0])).inc()
            self.metrics.latency.labels(template).observe(elapsed)
            _access.info("%s %s %d %.2fms", scope["method"], template, status_holder[0], elapsed * 1000)
            request_id_var.reset(token)
