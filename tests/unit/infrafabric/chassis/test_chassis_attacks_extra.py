"""Extra attacks on IF.chassis: token redaction gaps, credential lifetimes, guest-supplied headers, URL and
redirect tricks not covered elsewhere, and two swarms sharing one chassis concurrently.

Upstreams are in process (``httpx.MockTransport``) except where the real HTTP/1.1 encoder matters (CRLF),
where the project's own ``LocalUpstream`` on 127.0.0.1 is used."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote, urlencode

import httpx
import pytest

from infrafabric.chassis import IFChassis, ResourceLimits
from infrafabric.chassis.credentials import MAX_TTL_SECONDS, ScopedCredentials
from infrafabric.chassis.errors import (
    ChassisError,
    EndpointNotAllowedError,
    InvalidContractError,
    SandboxPermissionError,
)
from infrafabric.chassis.outbound import OutboundHTTP
from infrafabric.chassis.ratelimit import GCRALimiter
from infrafabric.chassis.sandbox import HTTP_ERR_BAD_REQUEST, HTTP_ERR_NETWORK, TaskContext, _HostAbort
from infrafabric.chassis.upstream import LocalUpstream

API = "http://api.example.com"


# ------------------------------------------------------------------------------------------ helpers
class Recorder:
    """An in-process upstream: records every request (url, authorization, cookie) and answers via ``reply``."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response]) -> None:
        self.reply = reply
        self.seen: list[tuple[str, str | None, str | None]] = []
        self._lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.seen.append((str(request.url), request.headers.get("authorization"), request.headers.get("cookie")))
        return self.reply(request)

    def factory(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))


def _response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def _ctx(creds: ScopedCredentials, outbound: OutboundHTTP, seconds: float = 5) -> TaskContext:
    return TaskContext(swarm_id=creds.swarm_id, task_id=creds.task_id, limits=ResourceLimits(), credentials=creds,
                       deadline=time.monotonic() + seconds, limiter=GCRALimiter(1000, 100), outbound=outbound)


def _token_of(request: httpx.Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


@pytest.fixture
def chassis_with() -> Iterator[Callable[[Recorder], IFChassis]]:
    made: list[IFChassis] = []

    def make(recorder: Recorder) -> IFChassis:
        chassis = IFChassis(audit=None, reputation_sink=None, http_client_factory=recorder.factory)
        made.append(chassis)
        return chassis

    yield make
    for chassis in made:
        chassis.close()


async def _guest_http(chassis: IFChassis, swarm: str, task: str, token: str, url: str) -> dict[str, Any]:
    """The reference guest makes one http_request; returns what the guest saw (its own result)."""
    creds = ScopedCredentials(swarm, task, token, 60, [API + "/"])
    return await chassis.execute_task(swarm, {"id": task, "action": "http_request", "url": url}, creds)


# ------------------------------------------------------------------------------------------ token redaction gaps
async def test_a_short_token_echoed_by_the_upstream_never_reaches_the_guest(chassis_with) -> None:
    token = "s3cr3t7"  # 7 characters: accepted by ScopedCredentials
    upstream = Recorder(lambda r: _response(json.dumps({"you_sent": _token_of(r)}).encode()))
    result = await _guest_http(chassis_with(upstream), "swarm-short", "t-short", token, API + "/echo")
    assert upstream.seen and upstream.seen[0][1] == f"Bearer {token}"  # the host did inject it
    assert token not in json.dumps(result), result


async def test_a_token_echoed_with_escaped_slashes_never_reaches_the_guest(chassis_with) -> None:
    token = "sk-live/AbCdEf/GhIjKl+MnOpQr=="  # base64-style tokens contain '/'
    upstream = Recorder(lambda r: _response(json.dumps(_token_of(r)).replace("/", "\\/").encode()))
    result = await _guest_http(chassis_with(upstream), "swarm-slash", "t-slash", token, API + "/echo")
    seen = json.loads(result["response"]["body"]).replace("\\/", "/") if result.get("response") else ""
    assert token not in seen, result


async def test_a_token_echoed_lowercase_percent_encoded_never_reaches_the_guest(chassis_with) -> None:
    token = "sk-live/AbCdEf/GhIjKl+MnOpQr=="
    import re

    def lower_escapes(text: str) -> str:  # %2F -> %2f, the token's own letters untouched
        return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(text, safe=""))

    upstream = Recorder(lambda r: _response(lower_escapes(_token_of(r)).encode()))
    result = await _guest_http(chassis_with(upstream), "swarm-pct", "t-pct", token, API + "/echo")
    from urllib.parse import unquote

    assert token not in unquote(json.dumps(result)), result


async def test_a_long_token_in_the_documented_forms_is_redacted_end_to_end(chassis_with) -> None:
    """Control for the three above: the forms the module does cover stay covered through a real guest."""
    token = "sk-live-" + "Zq9" * 12
    forms = [lambda t: t, lambda t: quote(t, safe=""), lambda t: t.encode().hex(),
             lambda t: "".join(f"\\u{ord(c):04x}" for c in t)]
    for i, form in enumerate(forms):
        upstream = Recorder(lambda r, f=form: _response(("<" + f(_token_of(r)) + ">").encode()))
        result = await _guest_http(chassis_with(upstream), f"swarm-form{i}", "t", token, API + "/echo")
        assert result["status"] == "success" and "[REDACTED]" in result["response"]["body"]
        assert token[:10] not in json.dumps(result)


def _echo_through_outbound(token: str, encode: Callable[[str], str]) -> str:
    """One call whose upstream echoes ``encode(token)`` between markers; returns the body the guest gets."""
    upstream = Recorder(lambda r: _response(("<" + encode(_token_of(r)) + ">").encode()))
    outbound = OutboundHTTP(upstream.factory)
    ctx = _ctx(ScopedCredentials("swarm-enc", "t-enc", token, 60, [API + "/"]), outbound)
    try:
        reply = outbound.perform(ctx, json.dumps({"url": API + "/echo"}).encode())
    finally:
        outbound.close()
    assert isinstance(reply, bytes) and upstream.seen, reply
    return json.loads(reply)["body"]


_B64_TOKEN = "sk-live/Ab?Cd~Ef/Gh>Ij+Kl~MnOpQr=="  # its base64 has '/' and '+' at every alignment


@pytest.mark.parametrize("encode", [
    lambda t: base64.b64encode(("Bearer " + t).encode()).decode().replace("/", "\\/"),  # JSON-escaped base64
    lambda t: quote(base64.b64encode(("x" + t).encode()).decode(), safe=""),  # base64 in a query string
    lambda t: base64.urlsafe_b64encode(("ab" + t).encode()).decode().rstrip("="),
    lambda t: "".join(f"\\u{ord(c):04X}" for c in t),  # upper-case \u escapes
    lambda t: "".join(f"\\u{ord(c):04x}" if c in "/+=" else c for c in t),  # only some characters escaped
    lambda t: quote(t, safe="/"),  # some characters percent-encoded, some not
    lambda t: "".join(f"&#{ord(c)};" if c in "/+=" else c for c in t),  # HTML character references
    lambda t: "".join(f"&#x{ord(c):X};" for c in t),
    lambda t: t.encode().hex().upper(),
    lambda t: t.encode().hex()[:20] + t.encode().hex()[20:].upper(),  # mixed-case hex
], ids=["b64-json-slash", "b64-pct", "b64url-nopad", "json-U", "json-some", "pct-some", "html-dec", "html-hex",
        "HEX", "hex-mixed"])
def test_other_encodings_an_upstream_echoes_are_redacted(encode: Callable[[str], str]) -> None:
    body = _echo_through_outbound(_B64_TOKEN, encode)
    assert "[REDACTED]" in body, body
    echoed = encode(_B64_TOKEN)
    assert echoed[len(echoed) // 3:2 * len(echoed) // 3] not in body, body
    views = [body, unquote(body), html.unescape(body), body.replace("\\/", "/")]
    with contextlib.suppress(ValueError):
        views.append(json.loads(f'"{body}"'))
    for view in views:
        for i in range(len(_B64_TOKEN) - 8):
            assert _B64_TOKEN[i:i + 9] not in view, (view, body)


def test_a_token_with_a_space_is_redacted_in_form_encoding() -> None:
    token = "pass phrase+with/odd chars"
    body = _echo_through_outbound(token, lambda t: urlencode({"t": t}))  # ' ' -> '+', '+' -> '%2B'
    assert body == "<t=[REDACTED]>", body


def test_a_one_character_token_is_still_redacted() -> None:
    """Short tokens cost the guest false redactions, never the token."""
    body = _echo_through_outbound("Q", lambda t: f"{t}-{t.lower()}-%{ord(t):x}")
    assert "Q" not in body.replace("[REDACTED]", ""), body


# ------------------------------------------------------------------------------------------ credential lifetime
@pytest.mark.parametrize("created_at", [time.time() + 10 * 365 * 86400, math.inf, math.nan],
                         ids=["future", "inf", "nan"])
def test_credentials_cannot_outlive_the_maximum_ttl(created_at: float) -> None:
    try:
        creds = ScopedCredentials("swarm-ttl", "t-ttl", "tok-ttl-123456789", 60, [API + "/"], created_at=created_at)
    except InvalidContractError:
        return  # refused: fine
    assert math.isfinite(creds.expires_at) and creds.expires_at <= time.time() + MAX_TTL_SECONDS + 1, \
        f"expires_at={creds.expires_at}, is_expired={creds.is_expired}"


@pytest.mark.parametrize("created_at", [time.time() + 3600, -math.inf, "now", True], ids=["hour-ahead", "-inf", "str",
                                                                                         "bool"])
def test_a_malformed_created_at_is_refused(created_at: Any) -> None:
    with pytest.raises(InvalidContractError):
        ScopedCredentials("swarm-ttl", "t-ttl", "tok-ttl-123456789", 60, [API + "/"], created_at=created_at)


def test_a_past_or_slightly_skewed_created_at_is_accepted_and_bounded() -> None:
    past = ScopedCredentials("swarm-ttl", "t-ttl", "tok-ttl-123456789", 60, [API + "/"], created_at=time.time() - 120)
    assert past.is_expired and past.remaining_seconds == 0
    skewed = ScopedCredentials("swarm-ttl", "t-ttl", "tok-ttl-123456789", MAX_TTL_SECONDS, [API + "/"],
                               created_at=time.time() + 2)
    assert not skewed.is_expired and skewed.expires_at <= time.time() + MAX_TTL_SECONDS + 5


# ------------------------------------------------------------------------------------------ guest-supplied headers
def test_a_non_ascii_header_value_is_a_bad_request_not_a_host_exception() -> None:
    upstream = Recorder(lambda r: _response(b"{}"))
    outbound = OutboundHTTP(upstream.factory)
    creds = ScopedCredentials("swarm-hdr", "t-hdr", "tok-hdr-123456789", 60, [API + "/"])
    ctx = _ctx(creds, outbound)
    raw = json.dumps({"url": API + "/x", "headers": {"content-type": "text/caf\u00e9"}}).encode()
    try:
        try:
            reply = outbound.perform(ctx, raw)
        except _HostAbort:
            reply = None
            assert isinstance(ctx.violation, ChassisError)
        else:
            assert reply in (HTTP_ERR_BAD_REQUEST, HTTP_ERR_NETWORK)
        assert upstream.seen == []
    finally:
        outbound.close()


@pytest.mark.parametrize("name,value", [("content-type", "text/plain\x00x"), ("content-type", "\u2028"),
                                        ("content-type", "a\x7fb"), ("caf\u00e9", "1"), ("content type", "1"),
                                        ("content-type:", "1"), ("", "1"), ("accept\r\nx-api-key", "1")])
def test_a_malformed_header_is_exactly_a_bad_request(name: str, value: str) -> None:
    upstream = Recorder(lambda r: _response(b"{}"))
    outbound = OutboundHTTP(upstream.factory)
    ctx = _ctx(ScopedCredentials("swarm-hdr", "t-hdr", "tok-hdr-123456789", 60, [API + "/"]), outbound)
    try:
        assert outbound.perform(ctx, json.dumps({"url": API + "/x", "headers": {name: value}}).encode()) \
            == HTTP_ERR_BAD_REQUEST
    finally:
        outbound.close()
    assert upstream.seen == [] and ctx.violation is None


def test_a_well_formed_header_still_goes_through() -> None:
    upstream = Recorder(lambda r: _response(json.dumps({"ct": r.headers.get("content-type")}).encode()))
    outbound = OutboundHTTP(upstream.factory)
    ctx = _ctx(ScopedCredentials("swarm-hdr", "t-hdr", "tok-hdr-123456789", 60, [API + "/"]), outbound)
    try:
        reply = outbound.perform(ctx, json.dumps({"url": API + "/x",
                                                  "headers": {"Content-Type": "text/plain; charset=utf-8\t"}}).encode())
    finally:
        outbound.close()
    assert isinstance(reply, bytes) and json.loads(json.loads(reply)["body"])["ct"].startswith("text/plain")


@pytest.mark.parametrize("value", ["text/plain\r\nAuthorization: Bearer stolen", "text/plain\nHost: evil.com",
                                   "text/plain\r\n\r\nGET /admin HTTP/1.1"])
def test_crlf_in_a_guest_header_value_never_reaches_the_wire(value: str) -> None:
    with LocalUpstream() as upstream:
        outbound = OutboundHTTP()
        creds = ScopedCredentials("swarm-crlf", "t-crlf", "tok-crlf-123456789", 60, [upstream.url("/")])
        ctx = _ctx(creds, outbound)
        raw = json.dumps({"url": upstream.url("/x"), "headers": {"Content-Type": value}}).encode()
        try:
            reply = outbound.perform(ctx, raw)
        except _HostAbort:
            reply = None
        outbound.close()
        assert reply in (None, HTTP_ERR_BAD_REQUEST, HTTP_ERR_NETWORK)
        assert upstream.seen() == [], "a request with an injected header line reached the upstream"


@pytest.mark.parametrize("header", ["accept-encoding", "Transfer-Encoding", "content-length", "X-Forwarded-For",
                                    "Forwarded", "Set-Cookie", "x-api-key", "Connection", "te"])
def test_other_hop_and_auth_headers_are_refused(header: str) -> None:
    upstream = Recorder(lambda r: _response(b"{}"))
    outbound = OutboundHTTP(upstream.factory)
    creds = ScopedCredentials("swarm-h2", "t-h2", "tok-h2-123456789", 60, [API + "/"])
    ctx = _ctx(creds, outbound)
    with pytest.raises(_HostAbort):
        outbound.perform(ctx, json.dumps({"url": API + "/x", "headers": {header: "1"}}).encode())
    outbound.close()
    assert isinstance(ctx.violation, SandboxPermissionError) and upstream.seen == []


# ------------------------------------------------------------------------------------------ URL tricks
ALLOWED = ["https://api.example.com/v1/", "http://127.0.0.1:8080/api/"]


@pytest.mark.parametrize("url", [
    "http://[::1]:8080/api/", "http://[::ffff:127.0.0.1]:8080/api/", "http://@127.0.0.1:8080/api/x",
    "http://127.0.0.1:8080@evil.com/api/", "http:/127.0.0.1:8080/api/", "http:127.0.0.1:8080/api/",
    "http://127.0.0.1:8080/api/%2e%2e/admin", "http://127.0.0.1:8080/api/..%2fadmin", "http://127.0.0.1:8080/API/",
    "http://127.0.0.1:80800/api/", "http://127.0.0.1:0/api/", "http://127.0.0.1:+8080/api/",
    "http://127.0.0.1:8080/api/\u00e9", "https://127.0.0.1:8080/api/", "http://127.000.000.001:8080/api/",
    "http://0x7f000001:8080/api/", "http://0177.0.0.1:8080/api/", "http://127.0.0.1%3A8080/api/",
    "http://localhost:8080/api/", "http://127.0.0.1.:8080/api/", "http://127.0.0.1:8080/api",
    "https://api.example.com:444/v1/x", "https://api.example.com.evil.com/v1/x", "https://evil.com/api.example.com/v1/",
    "https://api.example.com/v1\\..\\admin", "https://api.example.com/v1/%0d%0aHost:evil", "https://XN--api.example.com/v1/",
    "https://api.example.com/v1/x\r\n", "https://api.example.com:443:443/v1/x", "https://api.example.com/v1/../admin",
    "https://api.example.com/v1/x/./../../admin", "http://api.example.com/v1/x",
])
def test_more_url_tricks_are_refused(url: str) -> None:
    creds = ScopedCredentials("swarm-u2", "t-u2", "tok", 60, ALLOWED)
    assert not creds.is_endpoint_allowed(url), url


@pytest.mark.parametrize("url", ["https://api.example.com/v1/..;/admin", "https://api.example.com/v1/x/..;/../admin",
                                 "https://api.example.com/v1/..;jsessionid=1/admin", "https://api.example.com/v1/.;/x",
                                 "http://127.0.0.1:8080/api/..;/admin"])
def test_dot_segments_with_path_parameters_are_refused(url: str) -> None:
    """Tomcat and Spring strip ';...' from a segment and then resolve the '..' it leaves."""
    assert not ScopedCredentials("swarm-u5", "t-u5", "tok", 60, ALLOWED).is_endpoint_allowed(url), url


def test_an_allow_list_entry_with_a_parameterised_dot_segment_is_refused() -> None:
    with pytest.raises(InvalidContractError):
        ScopedCredentials("swarm-u6", "t-u6", "tok", 60, ["https://api.example.com/v1/..;/"])


@pytest.mark.parametrize("url", ["https://api.example.com:443/v1/x", "https://api.example.com/v1/x?a=b&c=%20",
                                 "http://127.0.0.1:8080/api/x;y", "http://127.0.0.1:08080/api/x"])
def test_equivalent_canonical_forms_are_allowed(url: str) -> None:
    assert ScopedCredentials("swarm-u3", "t-u3", "tok", 60, ALLOWED).is_endpoint_allowed(url)


@pytest.mark.parametrize("endpoint", ["http://user@api.example.com/", "http://API.example.com/", "api.example.com/",
                                      "http://api.example.com/%2e%2e/", "http://api.example.com./"])
def test_a_non_canonical_allow_list_entry_is_refused(endpoint: str) -> None:
    with pytest.raises(InvalidContractError):
        ScopedCredentials("swarm-u4", "t-u4", "tok", 60, [endpoint])


# ------------------------------------------------------------------------------------------ redirects
@pytest.mark.parametrize("location", [
    "http://api.example.com@evil.com/v1/x", "http://evil.com/", "//evil.com/v1/x", "http://api.example.com:81/v1/x",
    "https://api.example.com/v1/x", "../admin", "/admin", "http://api.example.com/v1/%2e%2e/admin",
    "http://127.0.0.1/v1/x",
])
def test_a_redirect_off_the_allow_list_is_refused_and_never_followed(location: str) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/start":
            return _response(b"", 307, {"Location": location})
        return _response(b'{"leak":true}')

    upstream = Recorder(reply)
    outbound = OutboundHTTP(upstream.factory)
    creds = ScopedCredentials("swarm-r", "t-r", "tok-r-123456789", 60, [API + "/v1/"])
    ctx = _ctx(creds, outbound)
    with pytest.raises(_HostAbort):
        outbound.perform(ctx, json.dumps({"url": API + "/v1/start"}).encode())
    outbound.close()
    assert isinstance(ctx.violation, EndpointNotAllowedError)
    assert [u for u, _, _ in upstream.seen] == [API + "/v1/start"], "the redirect target was contacted"


def test_an_endless_redirect_chain_inside_the_allow_list_is_cut() -> None:
    upstream = Recorder(lambda r: _response(b"", 302, {"Location": f"/v1/hop{len(upstream.seen)}"}))
    outbound = OutboundHTTP(upstream.factory)
    creds = ScopedCredentials("swarm-loop", "t-loop", "tok-loop-123456789", 60, [API + "/v1/"])
    ctx = _ctx(creds, outbound)
    with pytest.raises(_HostAbort):
        outbound.perform(ctx, json.dumps({"url": API + "/v1/start"}).encode())
    outbound.close()
    assert isinstance(ctx.violation, EndpointNotAllowedError) and len(upstream.seen) == 4


# ------------------------------------------------------------------------------------------ two swarms, one chassis
async def test_concurrent_swarms_never_see_each_others_tokens_or_cookies(chassis_with) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        who = _token_of(request)
        return _response(json.dumps({"cookie": request.headers.get("cookie")}).encode(),
                         headers={"Set-Cookie": f"session={who}; Path=/", "X-Token": who})

    upstream = Recorder(reply)
    chassis = chassis_with(upstream)
    tokens = {f"swarm-c{i}": f"tok-swarm-c{i}-{'k' * 20}" for i in range(4)}

    async def run(swarm: str, n: int) -> dict[str, Any]:
        return await _guest_http(chassis, swarm, f"t-{n}", tokens[swarm], API + f"/v1/{swarm}")

    results = await asyncio.gather(*(run(s, n) for n in range(3) for s in tokens))
    for result in results:
        assert result["status"] == "success" and json.loads(result["response"]["body"])["cookie"] is None
        assert not any(t in json.dumps(result) for t in tokens.values())
    assert len(upstream.seen) == 12
    for url, auth, cookie in upstream.seen:
        swarm = url.rsplit("/", 1)[1]
        assert auth == f"Bearer {tokens[swarm]}" and cookie is None, (url, auth, cookie)
