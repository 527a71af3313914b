"""Outbound HTTP made by the host on a guest's behalf (the ``env.http_request`` host function).

The guest sends a JSON request; the host checks credentials (present, same swarm, not expired), the
canonical endpoint allow-list (every redirect hop too), the swarm's rate limit, then calls with httpx
and injects the token itself. The token is never written to guest memory: every encoding of it the
response may echo (``token_forms`` lists them; any mix, any token length, percent and hex escapes in
either case) is redacted *before* the body is cut to its cap (a cut first left most of a token that
straddled it). Guest header names and values must be plain ASCII without CR, LF or NUL: anything else
is a bad request, never a host exception (httpx's UnicodeEncodeError) or an injected header line.
Bodies are decoded by the host, bounded as they stream (a gzip bomb cannot expand past the cap), and
the whole call, trickle included, ends at the task's deadline.

Nothing outbound is shared between tasks: each task gets its own client (connections, and no cookie
jar at all), closed when the task ends. One shared client carried swarm A's cookies to swarm B.
"""

from __future__ import annotations

import base64
import bisect
import http.cookiejar
import json
import re
import threading
import time
import zlib
from collections.abc import Callable
from urllib.parse import urljoin

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
# RFC 9110 field names (tokens) and values (visible ASCII, space, tab): no CR, LF, NUL or non-ASCII.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
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


# The escapes an echo may spell a character with: decoded (one level) into views of the body that are
# searched for the token's forms, so any mix of them, in either hex case, is found.
_ESCAPE_PARTS = (rb"%([0-9A-Fa-f]{2})"  # percent-encoding, %2f or %2F
                 rb"|\\u([dD][89abAB][0-9A-Fa-f]{2})\\u([dD][c-fC-F][0-9A-Fa-f]{2})"  # JSON surrogate pair
                 rb"|\\u([0-9A-Fa-f]{4})|\\([\"\\/bfnrt])"  # JSON \u00e9, \/ \" \\ \n ...
                 rb"|&#([0-9]{1,7});|&#[xX]([0-9A-Fa-f]{1,6});|&(amp|lt|gt|quot|apos);")  # HTML references
_ESCAPE = re.compile(_ESCAPE_PARTS)
_ESCAPE_OR_PLUS = re.compile(_ESCAPE_PARTS + rb"|(\+)")  # form encoding: a raw '+' is a space
_JSON_SHORT = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r",
               b"t": b"\t"}
_HTML_NAMED = {b"amp": b"&", b"lt": b"<", b"gt": b">", b"quot": b'"', b"apos": b"'"}


def _unescape(match: re.Match[bytes]) -> bytes:
    """The bytes one escape stands for (itself when it stands for no character, e.g. a lone surrogate)."""
    pct, high, low, u16, short, dec, hexa, named, plus = (match.groups() + (None,))[:9]
    if pct is not None:
        return bytes([int(pct, 16)])
    if short is not None:
        return _JSON_SHORT[short]
    if named is not None:
        return _HTML_NAMED[named]
    if plus is not None:
        return b" "
    if high is not None:
        cp = 0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00)
    else:
        cp = int(u16, 16) if u16 is not None else int(dec) if dec is not None else int(hexa, 16)
    try:
        return chr(cp).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return match.group()


def _longest_spelling(ch: str) -> int:
    """Bytes of the longest escape of ``ch`` a view decodes (for the read-ahead past the cap)."""
    cp = ord(ch)
    return max(6 if cp < 0x10000 else 12, 3 * len(ch.encode("utf-8")), len(f"&#{cp};"), len(f"&#x{cp:x};"), 6)


class _View:
    """The body with one level of escapes decoded, and the way back to the body's offsets."""

    def __init__(self, data: bytes, escape: re.Pattern[bytes]) -> None:
        self._data, self._escape = data, escape
        memo: dict[bytes, bytes] = {}  # per body: a hot loop of dict look-ups, not of int() parsing

        def decode(match: re.Match[bytes]) -> bytes:
            out = memo.get(match[0])
            if out is None:
                out = memo[match[0]] = _unescape(match)
            return out

        self.text = escape.sub(decode, data)
        self._edits: list[tuple[int, int, int, int]] = []  # view start, body start, body end, decoded length

    def to_body(self, start: int, end: int) -> tuple[int, int]:
        """The body span a view span came from (an escape partly in the span counts whole)."""
        if not self._edits:  # only once a form was found: the decoding pass keeps no offsets (speed)
            shift = 0
            for match in self._escape.finditer(self._data):
                size = len(_unescape(match))
                self._edits.append((match.start() - shift, match.start(), match.end(), size))
                shift += match.end() - match.start() - size
            self._view_starts = [edit[0] for edit in self._edits]
        return self._offset(start, False), self._offset(end - 1, True)

    def _offset(self, at: int, after: bool) -> int:
        i = bisect.bisect_right(self._view_starts, at) - 1
        if i < 0:
            return at + after
        view_start, begin, stop, size = self._edits[i]
        if at < view_start + size:  # inside what this escape decoded to
            return stop if after else begin
        return stop + (at - view_start - size) + after


class TokenForms:
    """Everything an echo of one token may look like (see token_forms), prepared once per call."""

    def __init__(self, token: str) -> None:
        raw = token.encode("utf-8")
        # the token, and its base64 (standard and URL-safe) at each of the three alignments: a token inside
        # a longer base64 string may start anywhere in a 3-byte group, and the characters of groups made
        # only of token bytes are the same whatever surrounds them. "Bearer <token>" needs no forms of its
        # own: each of its encodings contains one of these. Hex is searched in lower-cased text.
        forms = {raw}
        for pad in range(3):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                fragment = encode(b"\0" * pad + raw)[4 if pad else 0:-4]
                if fragment:
                    forms.add(fragment)
        self.forms = sorted(forms)
        self.hex = raw.hex().encode("ascii")
        # a token holding an escape itself ('%41') may come back with that escape decoded too
        self.decoded = sorted({_ESCAPE.sub(_unescape, f) for f in forms} - forms)
        self.plus_is_space = " " in token
        self.max_len = max(sum(_longest_spelling(c) for c in text.decode("utf-8", "replace"))
                           for text in (*forms, self.hex))
        # a form can straddle or sit inside an inserted marker only if it has a bracket or fits in one
        marker = REDACTED.encode()
        self.recheck = any(b"[" in f or b"]" in f or f.lower() in marker.lower() for f in (*forms, self.hex))

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        """Every (start, end) of a form in ``data``, overlapping ones included, unsorted."""
        found = [*_find_all(data, self.forms), *_find_all(data.lower(), [self.hex])]
        escapes = [_ESCAPE] + ([_ESCAPE_OR_PLUS] if self.plus_is_space else [])
        if not (b"%" in data or b"\\" in data or b"&" in data or (self.plus_is_space and b"+" in data)):
            return found
        for escape in escapes:
            view = _View(data, escape)
            if view.text == data:
                continue
            hits = [*_find_all(view.text, self.forms + self.decoded), *_find_all(view.text.lower(), [self.hex])]
            found.extend(view.to_body(start, end) for start, end in hits)
        return found


def _find_all(haystack: bytes, needles: list[bytes]) -> list[tuple[int, int]]:
    """Every occurrence of every needle, overlapping ones included (bytes.find runs at C speed)."""
    spans: list[tuple[int, int]] = []
    for needle in needles:
        at = haystack.find(needle)
        while at >= 0:
            spans.append((at, at + len(needle)))
            at = haystack.find(needle, at + 1)
    return spans


def token_forms(token: str) -> TokenForms:
    """The ways a server may echo the token (or the Authorization header made of it), any mix of them
    within one echo: the raw token; percent-encoding of any of its characters (either hex case, ``+``
    for a space); JSON escapes (``\\uXXXX`` in either case, surrogate pairs, ``\\/``, ``\\"``, ``\\\\``...);
    HTML character references (``&#47;``, ``&#x2F;``, ``&amp;``...); hex of its UTF-8 bytes (either case);
    base64, standard and URL-safe, at any alignment inside a longer encoded string, itself possibly
    escaped as above (``\\/`` in JSON, ``%2F`` in a URL). Every length of token, however short: a short
    token costs the guest some false redactions, never the token. Not covered: encodings a reasonable
    echo does not produce (double percent-encoding, base32, compression, encryption, ...): an upstream
    that transforms the token on purpose can leak it, which is why the allow-list trusts upstreams."""
    return TokenForms(token)


def redact(data: bytes, forms: TokenForms) -> bytes:
    """``data`` with every form of the token replaced by the marker (overlapping forms merged)."""
    for _pass in range(3):
        spans = sorted(forms.spans(data))
        if not spans:
            return data
        out = bytearray()
        kept = 0
        for start, end in spans:
            if start > kept or not out:
                out += data[kept:start] + REDACTED.encode()
            kept = max(kept, end)
        out += data[kept:]
        data = bytes(out)
        if not forms.recheck:
            return data
    # a token that lives inside the marker itself: nothing of the body can be shown safely
    return b"" if forms.spans(data) else data


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
        forms = token_forms(token) if token else None  # well under a millisecond, even for long tokens
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
        if not all(isinstance(k, str) and isinstance(v, str) and _HEADER_NAME.match(k) and _HEADER_VALUE.match(v)
                   for k, v in headers.items()):
            return None  # httpx would raise UnicodeEncodeError (non-ASCII) or send an injected line (CR/LF)
        return method, req["url"], body.encode("utf-8"), headers

    def _send(self, ctx: TaskContext, method: str, url: str, body: bytes, headers: dict[str, str],
              forms: TokenForms | None) -> tuple[int, bytes, bool]:
        creds = ctx.credentials
        assert creds is not None
        client = self.client_for(ctx)
        cap = ctx.limits.max_response_bytes
        # read past the cap by the longest token form, redact, then cut: a token straddling the cut is
        # whole when it is redacted, so no prefix of it reaches the guest
        lookahead = forms.max_len if forms is not None else 0
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
                clean = redact(bytes(data), forms) if forms is not None else bytes(data)
                truncated = more or len(clean) > cap
                return response.status_code, clean[:cap], truncated
            finally:
                response.close()
        raise ctx.fail(EndpointNotAllowedError(f"more than {MAX_REDIRECTS} redirects", swarm_id=ctx.swarm_id))
