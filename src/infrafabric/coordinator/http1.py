"""A small pooled HTTP/1.1 client for the swarm side of the coordinator service (asyncio streams).

Why our own: httpx's pool locking and per-request machinery cost the swarm more client CPU per request
than the whole request costs the service, and more than the etcd transaction a claim is
(benchmarks/RESULTS.md, "Figures behind the code"). This client does only what the swarm client needs:
keep-alive connections to one origin (TLS optional), JSON bodies, a timeout per request, and a
connection discarded on any error. Answers are parsed by httptools (llhttp, the parser uvicorn serves
with): h11's pure-Python state machine was most of this client's CPU. Requests are written by hand from
headers this module validates (no CR, LF or NUL anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import httptools

from backends.errors import PlatformError
from backends.inflight import InFlightLimit

_MAX_BODY = 64 << 20
# Idle connections are dropped before servers drop them (uvicorn closes idle keep-alive connections after 5 s):
# a request written on a connection the server is closing gets no answer.
IDLE_SECONDS = 4.0
_FORBIDDEN = frozenset("\r\n\0")


class HTTPError(PlatformError, ConnectionError):
    """The request could not be sent or its answer not read (connection refused, reset, timed out)."""

    error_code = "HTTP_CLIENT_UNREACHABLE"
    http_status = 502


class _ProtocolError(Exception):
    """The server's answer broke HTTP/1.1 framing (or was too large): the connection is unusable."""


class _Answer:
    """httptools callbacks collecting one response."""

    __slots__ = ("chunks", "size", "complete", "keep_alive", "parser")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_body(self, data: bytes) -> None:
        self.size += len(data)  # over the limit: checked after each feed (httptools hides callback errors)
        if self.size <= _MAX_BODY:
            self.chunks.append(data)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp resets it once the message is done


class _Connection:
    __slots__ = ("reader", "writer", "idle_since", "answered", "reusable")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0
        self.answered = False  # whether any byte of an answer arrived on it (for the stale keep-alive retry)
        self.reusable = False

    def usable(self, now: float) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing() and now - self.idle_since < IDLE_SECONDS

    def close(self) -> None:
        self.writer.close()


class _StreamAnswer(_Answer):
    """httptools callbacks for an answer whose body is handed on as it arrives."""

    __slots__ = ("headers_done", "content_type")

    def __init__(self) -> None:
        super().__init__()
        self.headers_done = False
        self.content_type = ""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True


async def _feed(conn: _Connection, answer: _Answer) -> None:
    data = await conn.reader.read(65536)
    if not data:
        raise _ProtocolError("connection closed before the answer ended")
    conn.answered = True
    assert answer.parser is not None
    answer.parser.feed_data(data)


class StreamedAnswer:
    """The status and content type of an answer, and its body as it arrives."""

    def __init__(self, conn: _Connection, answer: _StreamAnswer, timeout: float) -> None:
        assert answer.parser is not None
        self.status = answer.parser.get_status_code()
        self.content_type = answer.content_type
        self._conn, self._answer, self._timeout = conn, answer, timeout
        self.finished = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked transfer coding removed): what one read brought, as one piece
        (a relay then writes it once, not once per chunk); HTTPError if the answer is cut or stalls."""
        answer = self._answer
        while True:
            if answer.chunks:
                pieces, answer.chunks = answer.chunks, []
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if answer.complete:
                self.finished = True
                return
            try:
                async with asyncio.timeout(self._timeout):
                    await _feed(self._conn, answer)
                if answer.size > _MAX_BODY:
                    raise _ProtocolError(f"answer too large (over {_MAX_BODY} bytes)")
            except (OSError, asyncio.TimeoutError, _ProtocolError, httptools.HttpParserError) as exc:
                raise HTTPError(f"the answer was cut: {type(exc).__name__}: {exc}") from None


def _check_header(name: str, value: str) -> None:
    if not name or _FORBIDDEN.intersection(name) or _FORBIDDEN.intersection(value) or ":" in name:
        raise ValueError(f"invalid HTTP header {name!r}")


class Http1Pool:
    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, max_connections: int = 64) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported service URL {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl_context if parts.scheme == "https" else None
        if parts.scheme == "https" and self.ssl is None:
            self.ssl = ssl.create_default_context()
        self.authority = parts.netloc.rsplit("@", 1)[-1]
        self.headers = [(k, v) for k, v in (headers or {}).items()]
        for name, value in self.headers:
            _check_header(name, value)
        self.timeout = timeout
        self._idle: deque[_Connection] = deque()
        self._slots = InFlightLimit(max_connections)
        self._closed = False

    def _wire(self, method: str, path: str, params: dict[str, Any] | None, json_body: Any, content: bytes | None,
              headers: dict[str, str] | None) -> bytes:
        if self._closed:
            raise HTTPError("client is closed")
        target = path + ("?" + urlencode(params) if params else "")
        body = content if content is not None else \
            b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        if _FORBIDDEN.intersection(target) or " " in target:
            raise ValueError(f"invalid request target {target!r}")
        extra = list((headers or {}).items())
        for name, value in extra:
            _check_header(name, value)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.authority}",
                 *(f"{k}: {v}" for k, v in (*self.headers, *extra)), f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      json_body: Any = None, content: bytes | None = None, headers: dict[str, str] | None = None,
                      timeout: float | None = None) -> tuple[int, bytes]:
        """Send one request (a JSON body, or raw ``content``); returns (status, body). Raises HTTPError if
        it could not complete."""
        wire = self._wire(method, path, params, json_body, content, headers)
        loop = asyncio.get_running_loop()
        async with self._slots:
            for attempt in (0, 1):
                conn = self._idle_connection(loop.time())
                reused = conn is not None
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(self._connect(), self.timeout)
                    async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                        status, data = await self._exchange(conn, wire)
                except (OSError, asyncio.TimeoutError, _ProtocolError, httptools.HttpParserError) as exc:
                    if conn is not None:
                        conn.close()
                    # a kept-alive connection the server closed before reading our request: nothing was done,
                    # so the request goes once more on a fresh connection
                    if attempt == 0 and reused and conn is not None and not conn.answered \
                            and not isinstance(exc, asyncio.TimeoutError):
                        continue
                    raise HTTPError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
                except BaseException:
                    if conn is not None:
                        conn.close()
                    raise
                if conn.reusable and not self._closed:
                    conn.idle_since, conn.answered = loop.time(), False
                    self._idle.append(conn)
                else:
                    conn.close()
                return status, data
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, *, content: bytes = b"", headers: dict[str, str] | None = None,
                     timeout: float | None = None) -> AsyncIterator["StreamedAnswer"]:
        """Send one request and hand over its answer once the headers are in; the body is read as it
        arrives (``StreamedAnswer.chunks``), each read within ``timeout``. The connection goes back to
        the pool only if the whole answer was read; HTTPError if the answer cannot be read."""
        wire = self._wire(method, path, None, None, content, headers)
        wait = timeout if timeout is not None else self.timeout
        loop = asyncio.get_running_loop()
        async with self._slots:
            for attempt in (0, 1):
                conn = self._idle_connection(loop.time())
                reused = conn is not None
                answer = _StreamAnswer()
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(self._connect(), self.timeout)
                    conn.writer.write(wire)
                    async with asyncio.timeout(wait):
                        while not answer.headers_done:
                            await _feed(conn, answer)
                except (OSError, asyncio.TimeoutError, _ProtocolError, httptools.HttpParserError) as exc:
                    answer.parser = None
                    if conn is not None:
                        conn.close()
                    if attempt == 0 and reused and conn is not None and not conn.answered \
                            and not isinstance(exc, asyncio.TimeoutError):
                        continue  # a kept-alive connection the server had closed: nothing was done
                    raise HTTPError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
                except BaseException:
                    answer.parser = None
                    if conn is not None:
                        conn.close()
                    raise
                streamed = StreamedAnswer(conn, answer, wait)
                try:
                    yield streamed
                finally:
                    answer.parser = None  # no parser <-> callbacks cycle left for the garbage collector
                    if streamed.finished and not self._closed and answer.keep_alive \
                            and not conn.reader._buffer:  # type: ignore[attr-defined]
                        conn.idle_since, conn.answered = loop.time(), False
                        self._idle.append(conn)
                    else:
                        conn.close()
                return

    def _idle_connection(self, now: float) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                                       server_hostname=self.host if self.ssl else None)
        return _Connection(reader, writer)

    async def _exchange(self, conn: _Connection, wire: bytes) -> tuple[int, bytes]:
        conn.writer.write(wire)
        answer = _Answer()
        parser = answer.parser
        try:
            while not answer.complete:
                data = await conn.reader.read(65536)
                if not data:
                    raise _ProtocolError("connection closed before the answer ended")
                conn.answered = True
                parser.feed_data(data)
                if answer.size > _MAX_BODY:
                    raise _ProtocolError(f"answer too large (over {_MAX_BODY} bytes)")
        finally:
            answer.parser = None  # no parser <-> callbacks cycle left for the garbage collector
        # bytes after the answer (there should be none: one request at a time) make the connection unusable
        conn.reusable = answer.keep_alive and not conn.reader._buffer  # type: ignore[attr-defined]
        return parser.get_status_code(), b"".join(answer.chunks)

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
