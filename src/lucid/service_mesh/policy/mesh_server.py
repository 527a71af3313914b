"""A service's inbound mesh listener: HTTP/1.1 over mutual TLS, every request authorised.

HTTP framing is done by ``h11`` (the parser under httpx/httpcore); TLS by the stdlib ``ssl``
through asyncio streams, which lets the server read the peer certificate of each connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import h11

from backends.jsonsafe import loads_bounded
from lucid.service_mesh.audit import AUDIT_COMPONENT, AuditSink
from lucid.service_mesh.errors import LucidMeshError, MTLSVerificationError
from lucid.service_mesh.policy.enforcer import CallerContext, MeshAuthorizer
from lucid.service_mesh.security.mtls_manager import MTLSManager

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20


@dataclass
class MeshRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    caller: CallerContext

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` (``JSONTooDeepError`` past 64 levels) for a body that is not."""
        return loads_bounded(self.body or b"null")


@dataclass
class MeshResponse:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[MeshRequest], Awaitable[MeshResponse]]


def _bodyless(method: bytes, status: int) -> bool:
    """Responses that carry no body whatever the handler returned (RFC 9110 6.4.1)."""
    return method == b"HEAD" or status in (204, 304) or 100 <= status < 200


def error_envelope(err: LucidMeshError) -> dict[str, Any]:
    return {
        "error": {
            "code": err.error_code,
            "message": err.message,
            "details": err.details,
            "request_id": str(uuid.uuid4()),
            "timestamp": datetime.now(timezone.utc).isoformat(),
        }
    }


class MeshServer:
    """Serves ``handler`` on 127.0.0.1 to callers that pass mTLS, JWT and plane policy."""

    def __init__(self, ssl_context: ssl.SSLContext, authorizer: MeshAuthorizer, handler: Handler,
                 *, idle_timeout: float = 60.0, handshake_timeout: float = 10.0, audit: AuditSink | None = None):
        self.audit = audit
        self.handshakes_refused = 0
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.ssl_context = ssl_context
        self.authorizer = authorizer
        self.handler = handler
        self.denied = 0
        self.served = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        # TLS is started per connection (not by start_server), so a refused handshake is ours to log and
        # audit; asyncio's own server-side handshake failures are silent.
        self._server = await asyncio.start_server(self._connection, host, port)
        return self.port

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "MeshServer":
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _deny(self, operation: str, params: dict[str, Any]) -> None:
        """Count, log and audit one denial (the audit is queued: it never blocks the connection)."""
        log.warning("mesh %s: %s", operation, params)
        if self.audit is not None:
            try:
                self.audit.log(AUDIT_COMPONENT, operation, params, severity="WARN")
            except Exception as exc:  # noqa: BLE001 - a closed or failing audit log must not kill serving
                log.error("mesh audit of %s failed: %s", operation, type(exc).__name__)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")
        remote = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        try:
            await writer.start_tls(self.ssl_context, ssl_handshake_timeout=self.handshake_timeout)
        except (ssl.SSLError, ConnectionError, TimeoutError, asyncio.TimeoutError, OSError) as exc:
            self.handshakes_refused += 1
            reason = getattr(exc, "reason", None) or getattr(exc, "verify_message", None) or type(exc).__name__
            self._deny("mesh.handshake_refused", {"remote": remote, "reason": str(reason)[:200],
                                                  "error_code": "LUCID_ERR_1204"})
            writer.close()
            return
        try:
            peer = MTLSManager.peer_identity(writer.get_extra_info("ssl_object"))
        except MTLSVerificationError as exc:
            self.handshakes_refused += 1
            self._deny("mesh.handshake_refused", {"remote": remote, "reason": exc.message[:200],
                                                  "error_code": exc.error_code})
            writer.close()
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self._writers.add(writer)
        try:
            while True:
                request, body = await self._read_request(conn, reader, self.idle_timeout)
                if request is None:
                    break
                response = await self._dispatch(peer, request, body)
                try:
                    payload = json.dumps(response.body).encode() if response.body is not None else b""
                except (TypeError, ValueError):  # a handler's answer that is not JSON: a 500, not a cut connection
                    log.exception("mesh handler answered a body that is not JSON")
                    response = MeshResponse(500, error_envelope(LucidMeshError("internal error",
                                                                               error_code="LUCID_ERR_1105")))
                    payload = json.dumps(response.body).encode()
                headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
                headers += list(response.headers.items())
                writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
                if payload and not _bodyless(request.method, response.status):
                    writer.write(conn.send(h11.Data(data=payload)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.debug("mesh connection from %s ended: %s", peer.spiffe_id, exc)
        except h11.LocalProtocolError as exc:  # a response we could not frame: end this connection, not the server
            log.warning("mesh connection from %s closed: response not framable (%s)", peer.spiffe_id, exc)
        except asyncio.CancelledError:
            pass  # loop shutting down: end this connection quietly
        finally:
            self._writers.discard(writer)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
                pass

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader, idle_timeout: float
    ) -> tuple[h11.Request | None, bytes]:
        """One request; None when the peer closed or stayed silent past ``idle_timeout`` (slow clients
        cannot hold a connection forever)."""
        request: h11.Request | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await asyncio.wait_for(reader.read(65536), idle_timeout)
                except asyncio.TimeoutError:
                    return None, b""
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None, b""
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large")
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks)

    async def _dispatch(self, peer: Any, request: h11.Request, body: bytes) -> MeshResponse:
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        method = request.method.decode("latin-1")
        try:
            caller = self.authorizer.authorize(peer, headers.get("authorization"), method)
        except LucidMeshError as exc:
            self.denied += 1
            self._deny("mesh.call_denied", {
                "source": peer.spiffe_id, "destination": self.authorizer.local.spiffe_id,
                "method": method[:16], "path": request.target.decode("latin-1")[:256],
                "error_code": exc.error_code, "reason": exc.message[:300]})
            return MeshResponse(status=exc.http_status, body=error_envelope(exc))
        self.served += 1
        try:
            return await self.handler(MeshRequest(method=caller.method, path=request.target.decode("latin-1"),
                                                  headers=headers, body=body, caller=caller))
        except LucidMeshError as exc:
            return MeshResponse(status=exc.http_status, body=error_envelope(exc))
        except Exception:  # the handler's bug must not kill the connection loop
            log.exception("mesh handler failed")
            err = LucidMeshError("internal error", error_code="LUCID_ERR_1105")
            return MeshResponse(status=500, body=error_envelope(err))
