"""One ``/metrics`` endpoint per service process, on prometheus-client's own HTTP server.

Why a separate port: a scrape must not queue behind a service's long polls or count against its rate
limits, and a service that speaks only mTLS keeps doing so here (``MetricsTLS`` requires a client
certificate from the platform CA, which Prometheus presents). The server runs on its own thread, so a
busy event loop still answers scrapes; the answer is a snapshot of the registry, never a write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

__all__ = ["MetricsEndpoint", "MetricsTLS", "parse_listen", "serve_metrics"]


@dataclass(frozen=True, slots=True)
class MetricsTLS:
    """Serve over TLS with this certificate and require a client certificate signed by ``client_ca``."""

    cert_file: Path
    key_file: Path
    client_ca: Path


class MetricsEndpoint:
    def __init__(self, server: Any, thread: Any, host: str, port: int, tls: bool) -> None:
        self._server, self._thread = server, thread
        self.host, self.port, self.tls = host, port, tls

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0 = any free port) → (host, port); a clear ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host or "127.0.0.1", int(port)


def serve_metrics(registry: CollectorRegistry, listen: str, tls: MetricsTLS | None = None) -> MetricsEndpoint:
    """Start serving ``registry`` on ``listen``; returns the endpoint (its real port when 0 was asked)."""
    host, port = parse_listen(listen)
    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs = {"certfile": str(tls.cert_file), "keyfile": str(tls.key_file),
                  "client_cafile": str(tls.client_ca), "client_auth_required": True}
    server, thread = start_http_server(port, addr=host, registry=registry, **kwargs)
    return MetricsEndpoint(server, thread, host, server.server_address[1], tls is not None)
