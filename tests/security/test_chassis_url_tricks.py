"""Endpoint allow-list: canonical absolute URL match; every classic bypass is refused."""

from __future__ import annotations

import pytest

from infrafabric.chassis import EndpointNotAllowedError, ScopedCredentials

pytestmark = pytest.mark.security

ALLOWED = "https://api.openai.com/v1/chat/completions"


@pytest.fixture
def creds() -> ScopedCredentials:
    return ScopedCredentials("swarm-u", "t-u", "tok", ttl_seconds=300,
                             allowed_endpoints=[ALLOWED, "http://127.0.0.1:8080/api/"])


@pytest.mark.parametrize("url", [
    ALLOWED,
    ALLOWED + "?stream=false",
    ALLOWED + "/sub-resource",
    "https://api.openai.com:443/v1/chat/completions",  # explicit default port is the same endpoint
    "http://127.0.0.1:8080/api/items",
])
def test_allowed_urls(creds, url):
    assert creds.is_endpoint_allowed(url)


@pytest.mark.parametrize("url,trick", [
    ("https://evil.com/steal", "other host"),
    ("https://api.openai.com@evil.com/v1/chat/completions", "userinfo host confusion"),
    ("https://user:pass@api.openai.com/v1/chat/completions", "userinfo"),
    ("https://api.openai.com:8443/v1/chat/completions", "other port"),
    ("http://api.openai.com/v1/chat/completions", "other scheme"),
    ("https://api.openai.com/v1/chat/%63ompletions", "percent-encoded path"),
    ("https://api.openai.com%2eevil.com/v1/chat/completions", "percent-encoded host"),
    ("https://API.openai.com/v1/chat/completions", "mixed-case host"),
    ("HTTPS://api.openai.com/v1/chat/completions", "mixed-case scheme"),
    ("https://api.openai.com/V1/chat/completions", "mixed-case path"),
    ("https://api.openai.com./v1/chat/completions", "trailing dot"),
    ("https://аpi.openai.com/v1/chat/completions", "IDN look-alike (Cyrillic а)"),
    ("https://xn--pi-7ld.openai.com/v1/chat/completions", "punycode look-alike"),
    ("https://api.openai.com/v1/chat/completions/../../admin", "dot-dot segments"),
    ("https://api.openai.com/v1/chat/./completions", "dot segment"),
    ("https://api.openai.com//v1/chat/completions", "empty segment"),
    ("https://api.openai.com/v1/chat/completionsX", "prefix without a segment boundary"),
    ("https://api.openai.com\\@evil.com/v1/chat/completions", "backslash"),
    ("https://api.openai.com/v1/chat/completions#@evil.com", "fragment"),
    ("https://api.openai.com /v1/chat/completions", "whitespace"),
    ("https://api.openai.com\t/v1/chat/completions", "control character"),
    ("//api.openai.com/v1/chat/completions", "scheme-relative"),
    ("http://2130706433:8080/api/", "decimal IP for 127.0.0.1"),
    ("http://127.0.0.1:8081/api/x", "other port on the allowed IP"),
    ("http://127.0.0.1:8080/apix", "sibling path"),
    ("ftp://api.openai.com/v1/chat/completions", "other protocol"),
    ("", "empty"),
])
def test_url_tricks_are_refused(creds, url, trick):
    assert not creds.is_endpoint_allowed(url), trick


@pytest.mark.parametrize("url", ["https://аpi.openai.com/v1/chat/completions",
                                 "https://api.openai.com@evil.com/v1/chat/completions",
                                 "https://api.openai.com:8443/v1/chat/completions"])
async def test_tricks_are_refused_inside_the_sandbox(chassis, url):
    creds = ScopedCredentials("swarm-t", "t-t", "tok", ttl_seconds=60, allowed_endpoints=[ALLOWED])
    with pytest.raises(EndpointNotAllowedError):
        await chassis.execute_task("swarm-t", {"id": "t-t", "action": "call_llm", "url": url, "prompt": "x"}, creds)
