"""Outbound HTTP made by the host on a guest's behalf (the ``env.http_request`` host function).

The guest sends a JSON request; the host checks credentials (present, same swarm, not expired), the
canonical endpoint allow-list (every redirect hop too), the swarm's rate limit, then calls with httpx
and injects the token itself. The token is never written to guest memory: every encoding of it the
response may echo is redacted *before* the body is cut to its cap (a cut first left most of a token
that straddled it). Bodies are decoded by the host, bounded as they stream (a gzip bomb cannot expand
past the cap), and the whole call, trickle included, ends at the task's deadline.

Nothing outbound is shared between tasks: each task gets its own client (connections, and no cookie
jar at all), closed when the task ends. One shared client carried swarm A's cookies to swarm B.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import threading
import time
import zlib
from collections.abc import Callable
from urllib.parse import quote, urljoin

import httpx

from backends.jsonsafe import loads_bounded

from .errors import (
    OutboundRequestError,
    TaskTimeoutError,
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


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that never stores: a response's Set-Cookie reaches no later request (of any task)."""

    def __init__(self) -> None:
        super().__init__(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:  # noqa: D102 - refuse every cookie
        return None

    def extract_cookies(self, response: object, request: object) -> None:  # noqa: D102
        return None


def token_forms(token: str) -> list[bytes]:
    """The ways a server may echo the token (or the Authorization header made of it): raw, URL-encoded,
    hex, JSON-escaped, and base64 (standard and URL-safe) at any alignment inside a longer encoded
    string. Longest first, so a longer form is redacted before a shorter one inside it."""
    forms: set[bytes] = set()
    for text in (token, f"Bearer {token}"):
        raw = text.encode("utf-8")
        forms.update({raw, quote(text, safe="").encode(), raw.hex().encode(), raw.hex().upper().encode(),
                      "".join(f"\\u{ord(c):04x}" for c in text).encode()})
        for pad in range(3):
            # base64 works in 3-byte groups: the token's bytes may start at any offset in a group; the
            # characters of groups made only of token bytes are the same whatever surrounds them
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                enc = encode(b"\0" * pad + raw)
                forms.add(enc[4 if pad else 0:-4])
    return sorted((f for f in forms if len(f) >= 8), key=len, reverse=True)


def redact(data: bytes, forms: list[bytes]) -> bytes:
    for form in forms:
        if form in data:
            data = data.replace(form, REDACTED.encode())
    return data


class _BoundedDecoder:
    """Content-Encoding decoding that never produces more than asked for (zlib's max_length): the cap
    applies to decoded bytes as they stream, so 200 KiB of gzip cannot become 400 MB in memory."""

    def __init__(self, encoding: str) -> None:
        enc = encoding.strip().lower()
        if enc in ("", "identity"):
            self._z = None
        elif enc in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise OutboundRequestError(f"response content-encoding {encoding!r} is not supported")
        self._pending = b""

    def feed(self, raw: bytes, room: int) -> tuple[bytes, bool]:
        """Decoded bytes (at most ``room``) and whether more output is pending beyond them."""
        if self._z is None:
            return raw[:room], len(raw) > room
        try:
            out = self._z.decompress(self._z.unconsumed_tail + raw, room)
        except zlib.error as exc:
            raise OutboundRequestError(f"response body is not valid {type(self).__name__}: {exc}") from exc
        return out, bool(self._z.unconsumed_tail)


class OutboundHTTP:
    """Makes the guests' calls. One httpx client per task (see the module docstring), built by
    ``client_factory`` (tests pass one with an in-process transport)."""

    def __init__(self, client_factory: "Callable[[], httpx.Client] | httpx.Client | None" = None, *,
                 max_call_seconds: float = 30.0) -> None:
        if isinstance(client_factory, httpx.Client):
            raise TypeError("OutboundHTTP takes a client factory: one shared client would share state "
                            "(cookies, connections) between swarms")
        self._factory = client_factory or self._default_client
        self._lock = threading.Lock()
        self._clients: dict[int, httpx.Client] = {}  # id(TaskContext) -> that task's client
        self.max_call_seconds = max_call_seconds
        self.calls_made = 0
        self.clients_made = 0

    @staticmethod
    def _default_client() -> httpx.Client:
        # trust_env=False: no proxy or netrc from the host environment; redirects are checked by hand.
        return httpx.Client(follow_redirects=False, trust_env=False)

    def client_for(self, ctx: TaskContext) -> httpx.Client:
        with self._lock:
            client = self._clients.get(id(ctx))
            if client is None:
                client = self._factory()
                client._cookies = httpx.Cookies(_NoCookies())  # noqa: SLF001 - httpx has no public setter
                self._clients[id(ctx)] = client
                self.clients_made += 1
            return client

    def release(self, ctx: TaskContext) -> None:
        """Close the task's client (its connections go with it)."""
        with self._lock:
            client = self._clients.pop(id(ctx), None)
        if client is not None:
            client.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

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
        send_headers["accept-encoding"] = "gzip, deflate"  # only what _BoundedDecoder can bound
        if token:
            send_headers["authorization"] = f"Bearer {token}"
        forms = token_forms(token) if token else []
        try:
            status, payload, truncated = self._send(ctx, method, url, body, send_headers, forms)
        except (httpx.HTTPError, OutboundRequestError):
            return HTTP_ERR_NETWORK
        self.calls_made += 1
        text = payload.decode("utf-8", "replace")
        return json.dumps({"status": status, "body": text, "truncated": truncated},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @staticmethod
    def _parse(raw: bytes) -> tuple[str, str, bytes, dict[str, str]] | None:
        try:
            req = loads_bounded(raw.decode("utf-8"))  # guest memory: bounded depth, never RecursionError
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

    def _send(self, ctx: TaskContext, method: str, url: str, body: bytes, headers: dict[str, str],
              forms: list[bytes]) -> tuple[int, bytes, bool]:
        creds = ctx.credentials
        assert creds is not None
        client = self.client_for(ctx)
        cap = ctx.limits.max_response_bytes
        # read past the cap by the longest token form, redact, then cut: a token straddling the cut is
        # whole when it is redacted, so no prefix of it reaches the guest
        lookahead = max((len(f) for f in forms), default=0)
        for _hop in range(MAX_REDIRECTS + 1):
            remaining = ctx.deadline - time.monotonic()
            if remaining <= 0:
                raise ctx.fail(TaskTimeoutError("task deadline reached during an outbound call",
                                                swarm_id=ctx.swarm_id))
            timeout = httpx.Timeout(min(remaining, self.max_call_seconds))
            request = client.build_request(method, url, content=body or None, headers=headers, timeout=timeout)
            response = client.send(request, stream=True)
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
                decoder = _BoundedDecoder(response.headers.get("content-encoding", ""))
                want = cap + lookahead
                data = bytearray()
                more = False
                for raw in response.iter_raw():
                    if time.monotonic() >= ctx.deadline:  # a trickling server cannot outlast the task
                        raise ctx.fail(TaskTimeoutError(
                            f"outbound call to {url!r} still streaming at the task's deadline",
                            swarm_id=ctx.swarm_id))
                    out, more = decoder.feed(raw, want - len(data))
                    data += out
                    if len(data) >= want or more:
                        more = True
                        break
                clean = redact(bytes(data), forms)
                truncated = more or len(clean) > cap
                return response.status_code, clean[:cap], truncated
            finally:
                response.close()
        raise ctx.fail(EndpointNotAllowedError(f"more than {MAX_REDIRECTS} redirects", swarm_id=ctx.swarm_id))
