"""A service's outbound mesh calls: mTLS + service JWT, destination identity checked, breaker per destination.

HTTP/1.1 framing is done by ``h11`` over asyncio TLS streams with a small keep-alive pool. (httpx was
tried first: it hides the TLS object per response and, without ``sniffio`` installed, httpcore retries
a failing import on every request, costing ~0.7 ms a call.)
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import h11
from cryptography import x509

from lucid.service_mesh.errors import (
    AuthenticationError,
    MTLSVerificationError,
    SecurityPolicyViolation,
    UpstreamCallError,
)
from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.identity import ServiceIdentity
from lucid.service_mesh.security.mtls_manager import MTLSManager

log = logging.getLogger(__name__)
MAX_RESPONSE = 4 << 20
#: Methods that may be sent again when a kept-alive connection breaks after the request went out (RFC 9110
#: 9.2.2): running one twice has the effect of running it once. Any other method is not resent then: the
#: server may have processed it, so the caller gets UpstreamCallError (outcome unknown) instead.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class _StaleConnection(Exception):
    """A kept-alive connection found closed before any byte of the request was written: safe to replace."""


class TokenSource:
    """Mints this service's JWT and reuses it until it is close to expiry."""

    def __init__(self, provider: ServiceAuthProvider, service_name: str, service_id: str, cluster: str, plane: str,
                 validity_hours: float = 1.0) -> None:
        self._mint = lambda: provider.generate_service_token(service_name, service_id, cluster, plane, validity_hours)
        self._validity = validity_hours * 3600
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = self._mint()
            self._renew_at = now + self._validity * 0.8
        return self._token


@dataclass
class MeshReply:
    """A response, with the proven identity of the service that sent it."""

    status_code: int
    headers: dict[str, str]
    body: bytes
    peer: ServiceIdentity

    def json(self) -> Any:
        return jsonlib.loads(self.body or b"null")


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: ServiceIdentity
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))

    def close(self) -> None:
        self.writer.close()


# TLS alerts a server sends about the client's certificate (OpenSSL reason names).
_OWN_CERT_ALERTS = ("ALERT_CERTIFICATE_EXPIRED", "ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA",
                    "ALERT_CERTIFICATE_REVOKED", "ALERT_CERTIFICATE_UNKNOWN", "ALERT_UNSUPPORTED_CERTIFICATE",
                    "CERTIFICATE_REQUIRED")


def _refused_our_certificate(exc: ssl.SSLError) -> bool:
    reason = str(getattr(exc, "reason", "") or "")
    return any(alert in reason for alert in _OWN_CERT_ALERTS)


class MeshClient:
    """Calls other services: presents our certificate and token, and checks who answered."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        token_source: Callable[[], str],
        *,
        breakers: BreakerRegistry | None = None,
        timeout: float = 5.0,
        max_idle_per_host: int = 8,
        own_certificate: str | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.token_source = token_source
        self.breakers = breakers or BreakerRegistry(failure_exceptions=(UpstreamCallError,))
        self.timeout = timeout
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        # our certificate file: given, or the one MTLSManager.client_context loaded into the context
        self.own_certificate = own_certificate or getattr(ssl_context, "lucid_certificate_path", None)
        self._own_validity: tuple[float, datetime, datetime] | None = None  # (mtime, not_before, not_after)

    def _check_own_certificate(self) -> None:
        """1204 before any connection when our own certificate is not valid now: the server would refuse
        the handshake, and that is our fault, not the destination's (its breaker must not count it)."""
        if self.own_certificate is None:
            return
        mtime = os.stat(self.own_certificate).st_mtime
        if self._own_validity is None or self._own_validity[0] != mtime:  # re-read after a rotation
            with open(self.own_certificate, "rb") as fh:
                cert = x509.load_pem_x509_certificate(fh.read())
            self._own_validity = (mtime, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _, not_before, not_after = self._own_validity
        now = datetime.now(timezone.utc)
        if not not_before <= now <= not_after:
            raise MTLSVerificationError(f"our own workload certificate is not valid now (valid {not_before.isoformat()}"
                                        f" to {not_after.isoformat()}); renew it", error_code="LUCID_ERR_1204")

    async def call(
        self,
        destination: str,
        host: str,
        port: int,
        method: str,
        path: str,
        *,
        json: Any = None,
    ) -> MeshReply:
        """One call to ``destination`` at host:port, through that destination's circuit breaker.

        Denials (401/403) raise the server's LUCID error and do not count against the breaker;
        connection failures, timeouts and 5xx do (UpstreamCallError). A kept-alive connection that breaks
        after the request went out is retried on a fresh one only for idempotent methods
        (``IDEMPOTENT_METHODS``); a POST/PATCH then raises UpstreamCallError (outcome unknown).
        """
        self._check_own_certificate()
        breaker = self.breakers.get(destination)
        return await breaker.acall(self._call_once, destination, host, port, method.upper(), path, json)

    async def _connect(self, destination: str, host: str, port: int) -> _Conn:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=self.ssl_context, server_hostname=MTLSManager.server_hostname(destination)
        )
        try:
            peer = MTLSManager.peer_identity(writer.get_extra_info("ssl_object"))
        except MTLSVerificationError:
            writer.close()
            raise
        if peer.service_name != destination:
            writer.close()
            raise MTLSVerificationError(f"expected {destination}, connected to {peer.spiffe_id}")
        return _Conn(reader, writer, peer)

    async def _call_once(self, destination: str, host: str, port: int, method: str, path: str, body: Any):
        key = (destination, host, port)
        pool = self._idle.setdefault(key, [])
        conn = pool.pop() if pool else None
        payload = jsonlib.dumps(body).encode() if body is not None else b""
        try:
            async with asyncio.timeout(self.timeout):
                if conn is not None:
                    try:
                        reply = await self._exchange(conn, host, method, path, payload)
                    except _StaleConnection:  # closed while idle, seen before writing: nothing was sent
                        conn.close()
                        conn = None
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        # the request went out and no answer came: usually the server had closed the idle
                        # connection, but it may have processed the request and died before answering.
                        # Only an idempotent request may be sent again; anything else could run twice.
                        conn.close()
                        conn = None
                        if method not in IDEMPOTENT_METHODS:
                            raise UpstreamCallError(
                                f"{destination} at {host}:{port}: connection lost after {method} {path} was sent; "
                                "outcome unknown, not resent", details={"outcome": "unknown"}) from exc
                if conn is None:
                    conn = await self._connect(destination, host, port)
                    reply = await self._exchange(conn, host, method, path, payload)
        except MTLSVerificationError:
            raise
        except ssl.SSLCertVerificationError as exc:  # the server is not who we meant to call
            raise MTLSVerificationError(f"{destination} at {host}:{port}: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            if conn is not None:
                conn.close()
            if _refused_our_certificate(exc):  # the server's alert is about us: 1204, not the breaker's business
                raise MTLSVerificationError(f"{destination} refused our certificate: {exc.reason}") from exc
            raise UpstreamCallError(f"{destination} at {host}:{port} unreachable: {exc!r}") from exc
        except (OSError, ssl.SSLError, h11.ProtocolError, asyncio.IncompleteReadError, TimeoutError,
                _StaleConnection) as exc:
            if conn is not None:
                conn.close()
            raise UpstreamCallError(f"{destination} at {host}:{port} unreachable: {exc!r}") from exc
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE and len(pool) < self.max_idle_per_host:
            conn.h11.start_next_cycle()
            pool.append(conn)
        else:
            conn.close()
        if reply.status_code >= 500:
            raise UpstreamCallError(f"{destination} answered {reply.status_code}")
        if reply.status_code in (401, 403):
            try:
                err = (reply.json() or {}).get("error", {})
            except ValueError:
                err = {}
            cls = AuthenticationError if reply.status_code == 401 else SecurityPolicyViolation
            raise cls(err.get("message", "denied"), error_code=err.get("code"))
        return reply

    async def _exchange(self, conn: _Conn, host: str, method: str, path: str, payload: bytes) -> MeshReply:
        if conn.reader.at_eof() or conn.writer.is_closing():
            raise _StaleConnection()  # the peer's close arrived while the connection sat in the pool
        headers = [("host", host), ("content-length", str(len(payload)))]
        token = self.token_source()
        if token:
            headers.append(("authorization", f"Bearer {token}"))
        if payload:
            headers.append(("content-type", "application/json"))
        out = conn.h11.send(h11.Request(method=method, target=path, headers=headers))
        if payload:
            out += conn.h11.send(h11.Data(data=payload))
        out += conn.h11.send(h11.EndOfMessage())
        conn.writer.write(out)
        await conn.writer.drain()
        status, resp_headers, chunks, size = 0, {}, [], 0
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                data = await conn.reader.read(65536)
                if not data:
                    raise asyncio.IncompleteReadError(b"", None)
                conn.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                resp_headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_RESPONSE:
                    raise h11.RemoteProtocolError("response too large")
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return MeshReply(status, resp_headers, b"".join(chunks), conn.peer)
            elif isinstance(event, h11.ConnectionClosed):
                raise asyncio.IncompleteReadError(b"", None)

    async def aclose(self) -> None:
        pools, self._idle = list(self._idle.values()), {}
        for pool in pools:
            for conn in pool:
                conn.close()

    async def __aenter__(self) -> "MeshClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
