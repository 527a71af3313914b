"""Task-scoped, short-lived credentials and the canonical endpoint check.

The allow-list compares canonical absolute URLs: (scheme, host, port, path prefix at a segment
boundary). Anything that would need normalising first is refused rather than normalised, because the
classic bypasses (userinfo, percent-encoding, trailing dots, IDN look-alikes, ``..`` segments, mixed
case) all live in differences between how a checker and an HTTP client normalise a URL. A dot
segment carrying path parameters (``/api/..;/admin``) is refused too: Tomcat and Spring drop the
``;...`` part and then resolve the ``..``.

A credential's lifetime is checked when it is made: ``created_at`` (caller-supplied) must be a finite
time no later than now plus a small clock skew, because a future, infinite or NaN one made a
"short-lived" credential that never expired.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

from backends.errors import PlatformError

from .contracts import validate_swarm_id
from .errors import InvalidContractError

MAX_TTL_SECONDS = 3600  # "short-lived": an hour at most
CLOCK_SKEW_SECONDS = 5.0  # how far in the future created_at may be (another host's clock)
DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\Z")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*\Z")
_QUERY_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*\Z")


class CanonicalURL(NamedTuple):
    """The parts of a URL the allow-list compares."""

    scheme: str
    host: str
    port: int
    path: str


class URLRejected(PlatformError, ValueError):
    """Why a URL is not in canonical form (kept internal: callers see a bool or a PermissionError)."""

    error_code = "IF_ERR_CHASSIS_URL_REJECTED"
    http_status = 400


def canonicalize(url: str) -> CanonicalURL:
    """Parse an absolute http(s) URL that is already canonical, or raise URLRejected."""
    if not isinstance(url, str) or not url:
        raise URLRejected("URL must be a non-empty string")
    if len(url) > 4096:
        raise URLRejected("URL too long")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise URLRejected("URL contains whitespace, control or non-ASCII characters (IDN look-alike?)")
    if "\\" in url or "#" in url:
        raise URLRejected("URL contains a backslash or a fragment")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise URLRejected(f"unparseable URL: {exc}") from exc
    if parts.scheme not in DEFAULT_PORTS:
        raise URLRejected("scheme must be lowercase http or https")
    if not url.startswith(parts.scheme + "://"):
        raise URLRejected("URL must be absolute (scheme://host)")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise URLRejected("userinfo is not allowed in URLs")
    host = parts.hostname or ""
    netloc_host = parts.netloc.rsplit(":", 1)[0] if parts.port is not None else parts.netloc
    if not host or netloc_host != host:
        raise URLRejected("host must be lowercase and plain")
    if "%" in parts.netloc:
        raise URLRejected("percent-encoding is not allowed in the host")
    if host.endswith("."):
        raise URLRejected("trailing dot in host")
    if not _IPV4.match(host):
        labels = host.split(".")
        if len(labels) < 1 or not all(_HOST_LABEL.match(label) for label in labels):
            raise URLRejected("host is not a canonical DNS name")
        if all(label.isdigit() for label in labels):
            raise URLRejected("numeric host that is not a dotted IPv4 address")
    if port is None:
        port = DEFAULT_PORTS[parts.scheme]
    elif not 0 < port < 65536:
        raise URLRejected("invalid port")
    path = parts.path or "/"
    if not path.startswith("/"):
        raise URLRejected("path must be absolute")
    if "%" in path:
        raise URLRejected("percent-encoding is not allowed in the path")
    if not _PATH_CHARS.match(path):
        raise URLRejected("path contains characters that need encoding")
    segments = path.split("/")[1:]
    # "..;x" is ".." to servers that strip path parameters (Tomcat, Spring) before resolving dots
    if any(seg.split(";", 1)[0] in (".", "..") for seg in segments):
        raise URLRejected("dot segments (with or without ;parameters) are not allowed in the path")
    if "//" in path:
        raise URLRejected("empty path segments are not allowed")
    if parts.query and not _QUERY_CHARS.match(parts.query):
        raise URLRejected("query contains characters that need encoding")
    return CanonicalURL(parts.scheme, host, port, path)


def _path_matches(allowed: str, path: str) -> bool:
    """Prefix match on whole segments: /v1/chat matches /v1/chat and /v1/chat/x, not /v1/chatx."""
    if allowed.endswith("/"):
        return path.startswith(allowed)
    return path == allowed or path.startswith(allowed + "/")


def endpoint_allowed(url: str, allowed_endpoints: list[CanonicalURL]) -> bool:
    """True when ``url`` is canonical and under one of the allowed canonical endpoints."""
    try:
        target = canonicalize(url)
    except URLRejected:
        return False
    return any(
        target.scheme == a.scheme and target.host == a.host and target.port == a.port
        and _path_matches(a.path, target.path)
        for a in allowed_endpoints
    )


@dataclass
class ScopedCredentials:
    """A temporary token for one swarm and one task, usable only on allow-listed endpoints.

    The token never enters guest memory: the chassis injects it into the outbound request itself.
    ``repr`` hides it so it cannot leak into logs.
    """

    swarm_id: str
    task_id: str
    api_token: str | None = field(repr=False)
    ttl_seconds: float
    allowed_endpoints: list[str]
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        validate_swarm_id(self.swarm_id)
        if not isinstance(self.task_id, str) or not self.task_id:
            raise InvalidContractError("task_id must be a non-empty string", field="task_id")
        if self.api_token is not None and not isinstance(self.api_token, str):
            raise InvalidContractError("api_token must be a string", field="api_token")
        if (isinstance(self.ttl_seconds, bool) or not isinstance(self.ttl_seconds, (int, float))
                or not math.isfinite(self.ttl_seconds) or not 0 < self.ttl_seconds <= MAX_TTL_SECONDS):
            raise InvalidContractError(
                f"ttl_seconds must be in (0, {MAX_TTL_SECONDS}] (short-lived credentials)", field="ttl_seconds")
        # a future, infinite or NaN created_at would make is_expired never true: refuse it
        if (isinstance(self.created_at, bool) or not isinstance(self.created_at, (int, float))
                or not math.isfinite(self.created_at)
                or self.created_at > time.time() + CLOCK_SKEW_SECONDS):
            raise InvalidContractError(
                f"created_at must be a finite time no later than now + {CLOCK_SKEW_SECONDS:g} s "
                "(a credential must not outlive its ttl)", field="created_at")
        if not isinstance(self.allowed_endpoints, (list, tuple)) or not self.allowed_endpoints:
            raise InvalidContractError("allowed_endpoints must be a non-empty list", field="allowed_endpoints")
        canonical: list[CanonicalURL] = []
        for endpoint in self.allowed_endpoints:
            try:
                canonical.append(canonicalize(endpoint))
            except URLRejected as exc:
                raise InvalidContractError(f"allowed endpoint {endpoint!r} is not canonical: {exc}",
                                           field="allowed_endpoints") from exc
        self.allowed_endpoints = list(self.allowed_endpoints)
        self._canonical = canonical

    @property
    def expires_at(self) -> float:
        return self.created_at + self.ttl_seconds

    @property
    def is_expired(self) -> bool:
        return time.time() > self.expires_at

    @property
    def remaining_seconds(self) -> float:
        return max(0.0, self.expires_at - time.time())

    def is_endpoint_allowed(self, url: str) -> bool:
        """Canonical absolute URL match: scheme, host, port and path prefix."""
        return endpoint_allowed(url, self._canonical)

    def summary(self) -> dict[str, object]:
        """Loggable view: never the token."""
        return {
            "swarm_id": self.swarm_id,
            "task_id": self.task_id,
            "ttl_seconds": self.ttl_seconds,
            "allowed_endpoints": list(self.allowed_endpoints),
            "has_token": bool(self.api_token),
        }
