"""Outbound HTTP made by the host on a guest's behalf (the ``env.http_request`` host function).

The guest sends a JSON request; the host checks credentials (present, same swarm, not expired), the
canonical endpoint allow-list (every redirect hop too), the swarm's rate limit, then calls with httpx
and injects the token itself. The token is never written to guest memory; a response that echoes it
is redacted. Response bodies are capped.
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urljoin

import httpx

from .errors import (
    CredentialError,
    CredentialExpiredError,
    EndpointNotAllowedError,
    RateLimitExceeded,
    SandboxPermissionError,
)
from .sandbox import HTTP_ERR_BAD_REQUEST, HTTP_ERR_NETWORK, TaskContext

ALLOWED_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
# Headers a guest may set. Host, Authorization, Cookie, proxy and forwarding headers stay with the host.
ALLOWED_HEADERS = {"content-type", "accept", "accept-language", "x-request-id"}
MAX_REDIRECTS = 3
REDIRECT_CODES = {301, 302, 303, 307, 308}
REDACTED = "[REDACTED]"


class OutboundHTTP:
    """One keep-alive httpx client per chassis, used from the worker threads that run guests."""

    def __init__(self, client: httpx.Client | None = None, *, max_call_seconds: float = 30.0) -> None:
        self._client = client
        self._own_client = client is None
        self._lock = threading.Lock()
        self.max_call_seconds = max_call_seconds
        self.calls_made = 0

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # trust_env=False: no proxy or netrc from the host environment; redirects are checked by hand.
                self._client = httpx.Client(follow_redirects=False, trust_env=False)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._own_client:
                self._client.close()
            self._client = None

    # ---------------------------------------------------------------------------------------------
    def perform(self, ctx: TaskContext, raw: bytes) -> bytes | int:
        """Run one guest request. Refusals end the task (ctx.fail); bad input returns an error code."""
        request = self._parse(raw)
        if request is None:
            return HTTP_ERR_BAD_REQUEST
        method, url, body, headers = request
        creds = ctx.credentials
        if creds is None:
            raise ctx.fail(SandboxPermissionError(
                f"swarm {ctx.swarm_id!r} tried a network call to {url!r} without scoped credentials; the sandbox "
                "has no network access", swarm_id=ctx.swarm_id, url=url))
        if creds.swarm_id != ctx.swarm_id:
            raise ctx.fail(CredentialError("credentials belong to another swarm", swarm_id=ctx.swarm_id))
        if creds.is_expired:
            raise ctx.fail(CredentialExpiredError(
                f"credentials for task {creds.task_id!r} expired", swarm_id=ctx.swarm_id))
        for name in headers:
            if name.lower() not in ALLOWED_HEADERS:
                raise ctx.fail(SandboxPermissionError(
                    f"guest may not set the {name!r} header", swarm_id=ctx.swarm_id, header=name))
        if not creds.is_endpoint_allowed(url):
            raise ctx.fail(EndpointNotAllowedError(
                f"endpoint {url!r} is not allowed for task {creds.task_id!r}", swarm_id=ctx.swarm_id, url=url))
        try:
            ctx.limiter.acquire_blocking(ctx.swarm_id, ctx.deadline)
        except RateLimitExceeded as exc:
            raise ctx.fail(exc) from None
        token = creds.api_token
        send_headers = {k.lower(): v for k, v in headers.items()}
        if token:
            send_headers["authorization"] = f"Bearer {token}"
        try:
            status, payload, truncated = self._send(ctx, method, url, body, send_headers)
        except httpx.HTTPError:
            return HTTP_ERR_NETWORK
        self.calls_made += 1
        text = payload.decode("utf-8", "replace")
        if token and token in text:
            text = text.replace(token, REDACTED)
        return json.dumps({"status": status, "body": text, "truncated": truncated},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @staticmethod
    def _parse(raw: bytes) -> tuple[str, str, bytes, dict[str, str]] | None:
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(req, dict) or not isinstance(req.get("url"), str):
            return None
        method = str(req.get("method", "GET")).upper()
        body = req.get("body", "")
        headers = req.get("headers", {}) or {}
        if method not in ALLOWED_METHODS or not isinstance(body, str) or not isinstance(headers, dict):
            return None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            return None
        return method, req["url"], body.encode("utf-8"), headers

    def _send(self, ctx: TaskContext, method: str, url: str, body: bytes,
              headers: dict[str, str]) -> tuple[int, bytes, bool]:
        creds = ctx.credentials
        assert creds is not None
        cap = ctx.limits.max_response_bytes
        for _hop in range(MAX_REDIRECTS + 1):
            remaining = ctx.deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.TimeoutException("task deadline reached")
            timeout = httpx.Timeout(min(remaining, self.max_call_seconds))
            request = self.client.build_request(method, url, content=body or None, headers=headers,
                                                timeout=timeout)
            response = self.client.send(request, stream=True)
            try:
                if response.status_code in REDIRECT_CODES and "location" in response.headers:
                    target = urljoin(url, response.headers["location"])
                    if not creds.is_endpoint_allowed(target):
                        raise ctx.fail(EndpointNotAllowedError(
                            f"redirect from {url!r} to {target!r} is not allowed", swarm_id=ctx.swarm_id,
                            url=target))
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method, body = "GET", b""
                    url = target
                    continue
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) <= cap:
                    return response.status_code, response.read()[:cap], False  # fast path: known small body
                data = bytearray()
                truncated = False
                for chunk in response.iter_bytes():
                    room = cap - len(data)
                    if len(chunk) > room:
                        data += chunk[:room]
                        truncated = True
                        break
                    data += chunk
                return response.status_code, bytes(data), truncated
            finally:
                response.close()
        raise ctx.fail(EndpointNotAllowedError(f"more than {MAX_REDIRECTS} redirects", swarm_id=ctx.swarm_id))
