"""Tiny sync HTTP probe used by readiness checks (stdlib urllib: launchers must not depend on an event loop)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

__all__ = ["http_get", "http_json"]


def _open(req: urllib.request.Request, timeout: float, context: ssl.SSLContext | None) -> Any:
    # No ProxyHandler: an http_proxy in the environment must never see loopback probes.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    return opener.open(req, timeout=timeout)


def http_get(url: str, *, timeout: float = 1.0, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET ``url``; returns (status, body). HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url, method="GET")
    try:
        with _open(req, timeout, context) as resp:
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
    with _open(req, timeout, context) as resp:
        return json.loads(resp.read())
