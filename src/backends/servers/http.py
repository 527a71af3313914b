"""Tiny sync HTTP probe used by readiness checks (stdlib urllib: launchers must not depend on an event loop)."""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

__all__ = ["http_get", "http_json"]


def http_get(url: str, *, timeout: float = 1.0, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET ``url``; returns (status, body). HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(
    url: str, body: Any | None = None, *, timeout: float = 1.0, context: ssl.SSLContext | None = None
) -> Any:
    """GET (body None) or POST JSON to ``url`` and decode the JSON reply; raises on non-2xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())
