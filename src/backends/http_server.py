"""A small HTTP/1.1 server for ASGI apps: llhttp (httptools) parsing on an asyncio protocol.

Why our own and not uvicorn: the swarm API's and the model gateway's requests are tiny and their latency
goals are set against the raw engine, so the server's own CPU per request is on the critical path.
uvicorn spends it on a ``RequestResponseCycle`` and a flow-control object per request, header handling and
scope building in Python, and separate writes for a response's head and body (what that cost, and what
this server saves, is in benchmarks/RESULTS.md, "Figures behind the code"). This server keeps what the
platform's apps use of ASGI 3 (``http`` scopes, streamed request bodies, streamed responses,
``http.disconnect`` on a hang-up) and nothing else: no lifespan, no websockets, no proxy headers. The
parsing is llhttp's, the same as uvicorn's.

What it guarantees a client cannot do to the process (each held by a test in
``tests/unit/backends/test_http_server.py``): hold a connection open without finishing a request head
(``head_timeout``) or a body (``body_timeout``), send a head larger than ``max_head_bytes``, make the
server buffer more than ``_READ_HIGH_WATER`` of a body the app has not read, pipeline requests that run
concurrently, or smuggle a request inside a body the app did not read (or behind two framings); a
malformed request gets a 400 and the connection is closed; an app that fails before answering gets a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import httptools

__all__ = ["HttpServer"]

logger = logging.getLogger(__name__)

Message = dict[str, Any]
AsgiApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

_READ_HIGH_WATER = 256 * 1024  # body bytes buffered for an app before the socket stops being read
_PIPELINE_DEPTH = 8  # requests queued behind the running one before the socket stops being read
_STATUS_LINES: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE_HEADER = b"connection: close\r\n"


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


def _plain(status: int, text: str) -> bytes:
    body = text.encode()
    return (_status_line(status) + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(body) + body)


class _Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of one call of the app."""

    __slots__ = ("conn", "scope", "body", "body_done", "event", "started", "finished", "chunked", "expect_continue",
                 "keep_alive", "disconnected", "head", "delivered", "no_body", "length_left", "http11")

    def __init__(self, conn: _Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.body = bytearray()
        self.body_done = False
        self.event = asyncio.Event()
        self.started = False
        self.finished = False
        self.chunked = False
        self.expect_continue = expect_continue
        self.keep_alive = keep_alive
        self.disconnected = False
        self.head = b""
        self.delivered = False  # the whole body went to the app
        self.no_body = scope["method"] == "HEAD"  # and 1xx, 204, 304 answers: framing says there is none
        self.length_left: int | None = None  # body bytes the answer's content-length still allows
        self.http11 = scope["http_version"] == "1.1"

    async def receive(self) -> Message:
        conn = self.conn
        if self.expect_continue and not self.started and not self.disconnected:
            self.expect_continue = False
            conn.transport.write(_CONTINUE)
        while not (self.body or self.body_done or self.disconnected or self.finished):
            self.event.clear()
            conn.resume_reading()
            try:
                async with asyncio.timeout(conn.server.body_timeout):
                    await self.event.wait()
            except TimeoutError:  # a body trickled slower than this is a held connection, not a request
                conn.abort()
                self.disconnected = True
        if self.disconnected or (self.finished and not self.body):
            return {"type": "http.disconnect"}
        if self.delivered:
            # the whole body was delivered: what is left to say is a hang-up (or the end of this response)
            while not (self.disconnected or self.finished):
                self.event.clear()
                await self.event.wait()
            return {"type": "http.disconnect"}
        body = bytes(self.body)
        self.body.clear()
        more = not self.body_done
        self.delivered = not more
        conn.resume_reading()
        return {"type": "http.request", "body": body, "more_body": more}

    def _flush_head(self) -> None:
        if self.head and not self.disconnected:
            self.conn.transport.write(self.head)
        self.head = b""

    def _start(self, message: Message) -> None:
        if self.started:
            raise RuntimeError("http.response.start sent twice")
        status = int(message["status"])
        head = [_status_line(status)]
        length: int | None = None
        for name, value in message.get("headers", ()):
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name or b":" in name:
                raise RuntimeError("a response header may not contain a line break")  # before anything is sent
            lowered = name.lower()
            if lowered == b"content-length":
                if length is not None or not value.isdigit():
                    raise RuntimeError(f"content-length {value!r} is not one whole number")
                length = int(value)
            elif lowered == b"transfer-encoding":
                continue  # the framing is the server's to choose, once (an app's or a relayed header would double it)
            elif lowered == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            head.append(name + b": " + value + b"\r\n")
        self.started = True
        if status < 200 or status in (204, 304):
            self.no_body = True
        if length is not None:
            self.length_left = length
        elif not self.no_body:
            if self.http11:
                self.chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
            else:  # HTTP/1.0 knows no chunks: the body ends where the connection does
                self.keep_alive = False
        if self.conn.server.stopping or not self.body_done:
            # an answer before the whole body came: the rest is not read only to be thrown away
            self.keep_alive = False
        if not self.keep_alive:
            head.append(_CLOSE_HEADER)
        head.append(b"\r\n")
        # written with the first piece of the body (one write, one segment) if it comes before the loop
        # runs again; else on its own, so a stream's client sees the head before its first event
        self.head = b"".join(head)
        self.conn.loop.call_soon(self._flush_head)

    async def send(self, message: Message) -> None:
        if self.disconnected:
            return  # as uvicorn: a response to nobody is dropped; the app learns of the hang-up from receive
        kind = message["type"]
        if kind == "http.response.start":
            self._start(message)
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started or self.finished:
            raise RuntimeError("http.response.body outside a response")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.no_body:
            piece = b""
        elif self.chunked:
            piece = (b"%x\r\n" % len(body) + body + b"\r\n") if body else b""
            if not more:
                piece += b"0\r\n\r\n"
        elif self.length_left is not None:
            if len(body) > self.length_left:  # more than it declared: never sent, or the client would take
                logger.error("%s %s: the app's body is longer than its content-length; cut, connection closed",
                             self.scope["method"], self.scope["path"])  # the rest for the next answer
                body = body[:self.length_left]
                self.keep_alive = False
                more = False
            self.length_left -= len(body)
            if not more and self.length_left:  # shorter than declared: the client waits for bytes that
                self.keep_alive = False  # never come; closing is the only end it can tell
            piece = body
        else:
            piece = body
        conn = self.conn
        if self.head:
            piece = self.head + piece
            self.head = b""
        if piece:
            conn.transport.write(piece)
        if not more:
            self.finished = True
            self.event.set()
            conn.response_done(self)
        elif conn.write_paused:
            await conn.drained()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as they arrive, runs them one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.in_head = True  # between requests, or inside a request's head (not its body or trailers)
        self.began_now = False  # a message began in the data being fed
        self.head_fed = 0  # bytes fed since, while the head went on (the first piece not counted)
        self.cycle: _Cycle | None = None  # the one running
        self.parsing: _Cycle | None = None  # the one whose body is arriving (may be queued behind ``cycle``)
        self.pipeline: deque[_Cycle] = deque()
        self.read_paused = False
        self.write_paused = False
        self.next_when_drained = False  # a queued request waits for the last answer to leave the buffer
        self.drain_waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.stall: asyncio.TimerHandle | None = None
        self.closed = False
        self.ignoring = False  # the client sent something we refused: finish what runs, read no more
        self.base_scope: dict[str, Any] = {}

    # -- transport -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        server = self.server
        self.base_scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "root_path": "",
            "scheme": "https" if transport.get_extra_info("sslcontext") else "http",
            "server": server.bound, "client": transport.get_extra_info("peername"),
        }
        self._arm(server.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server.connections.discard(self)
        if server._all_gone is not None and not server.connections:
            server._all_gone.set()
        self._disarm()
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        for cycle in (self.cycle, self.parsing, *self.pipeline):
            if cycle is not None:
                cycle.disconnected = True
                cycle.event.set()
        self.pipeline.clear()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def close(self) -> None:
        """Close once what is written has gone."""
        self.closed = True
        self.transport.close()

    def abort(self) -> None:
        """Close now, dropping what is not sent (a client that reads nothing cannot hold us by it)."""
        self.closed = True
        self.transport.abort()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.stall is None:
            self.stall = self.loop.call_later(self.server.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        if self.next_when_drained:
            self.next_when_drained = False
            self._next()

    def _stalled(self) -> None:
        self.stall = None
        logger.info("a client read nothing of its answer for %.0f s: connection dropped", self.server.send_timeout)
        self.abort()

    async def drained(self) -> None:
        if self.write_paused and not self.closed:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    def resume_reading(self) -> None:
        """Read again, unless the queue is full, a queued body is at its bound, or we read no more."""
        if not self.read_paused or self.closed or self.ignoring or len(self.pipeline) >= _PIPELINE_DEPTH:
            return
        parsing = self.parsing
        if parsing is not None and parsing is not self.cycle and len(parsing.body) > _READ_HIGH_WATER:
            return
        self.read_paused = False
        self.transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.cycle is None and not self.closed:
            self.abort()  # idle, or a request head that never finished

    def _refuse(self, status: int, text: str) -> None:
        """A request we will not run. With nothing running: answer it and close. Behind a running request
        (pipelined, or bytes after a ``connection: close`` request): let what was asked before it be
        answered, read nothing more, then close."""
        broken = self.parsing  # a request whose head was taken but whose body failed: it never runs
        if broken is not None:
            broken.disconnected = True
            broken.event.set()
            if broken in self.pipeline:
                self.pipeline.remove(broken)
            self.parsing = None
        if self.cycle is None or self.cycle is broken:
            if not self.closed:
                if self.cycle is None:
                    self.transport.write(_plain(status, text))
                self.close()
            return
        self.ignoring = True
        self._pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.ignoring:
            return
        self.began_now = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not served here")
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__  # an exception in a callback comes back as the parser's, with it as context
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.text)
            else:
                self._refuse(400, "malformed HTTP request")
            return
        if self.in_head and not self.began_now:  # a head still going on after a whole read: llhttp buffers
            self.head_fed += len(data)  # an unfinished line without bound, so the limit is counted here
            if self.head_fed > self.server.max_head_bytes:
                self._refuse(431, "request head too large")

    # -- parser callbacks --------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.in_head = True
        self.began_now = True
        self.head_fed = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.server.max_head_bytes:
            raise _Refused(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a chunked body's trailer section: not request headers, never shown to the app
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.server.max_head_bytes or len(self.headers) >= self.server.max_headers:
            raise _Refused(431, "request head too large")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.cycle is None:
            self._disarm()
        parser = self.parser
        try:
            url = httptools.parse_url(self.url)
            raw_path: bytes = url.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            raise _Refused(400, "malformed request target") from None
        if "%" in path:
            path = unquote(path)
        version = parser.get_http_version()
        http11 = version == "1.1"
        keep_alive = http11 and parser.should_keep_alive()
        expect_continue = False
        upgrade = False
        codings: list[bytes] = []
        for name, value in self.headers:
            if name == b"expect" and value.lower() == b"100-continue":
                expect_continue = http11  # RFC 9110 10.1.1: a 1.0 client's expectation is ignored
            elif name == b"upgrade":
                upgrade = True
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
        if upgrade:  # websockets, h2c: not served here, and not to be half-run before the parser gives up
            raise _Refused(400, "protocol upgrades are not served here")
        if codings and codings[-1] != b"chunked":  # a body whose end nobody can tell (llhttp says so too,
            raise _Refused(400, "a request's transfer-encoding must end in chunked")  # but after this call)
        scope = dict(self.base_scope)
        scope["http_version"] = version
        scope["method"] = parser.get_method().decode("ascii")
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = url.query or b""
        scope["headers"] = self.headers
        cycle = _Cycle(self, scope, keep_alive, expect_continue)
        self.parsing = cycle
        if self.cycle is None and not self.pipeline and not self.next_when_drained:
            self._run(cycle)
        else:
            self.pipeline.append(cycle)  # in order, after the one running
            if len(self.pipeline) >= _PIPELINE_DEPTH:
                self._pause_reading()  # read on (a hang-up must be seen) until this many wait

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.finished or cycle.disconnected:
            return  # the app answered without reading: this body is discarded (the connection closes)
        cycle.body += body
        if len(cycle.body) > _READ_HIGH_WATER:
            self._pause_reading()
        cycle.event.set()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is not None:
            cycle.body_done = True
            cycle.event.set()
        self.parsing = None
        self.in_head = True

    # -- running ------------------------------------------------------------------------------------------
    def _run(self, cycle: _Cycle) -> None:
        self.cycle = cycle
        task = self.loop.create_task(self._call(cycle))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _call(self, cycle: _Cycle) -> None:
        if cycle.disconnected:
            self._after_unfinished()
            return  # refused (or hung up) before the app was called: it never sees the request
        try:
            await self.app(cycle.scope, cycle.receive, cycle.send)
        except BaseException as exc:
            if cycle.finished:  # its answer is complete (and the next request may be running): log only
                if isinstance(exc, Exception):
                    logger.exception("%s %s failed after its answer", cycle.scope["method"], cycle.scope["path"])
                    return
                raise
            if not isinstance(exc, Exception):
                self.abort()
                raise
            logger.exception("%s %s failed in the app", cycle.scope["method"], cycle.scope["path"])
            if not cycle.started and not cycle.disconnected and not self.closed:
                self.transport.write(_plain(500, "internal error"))
                cycle.finished = True
            self._after_unfinished()
            return
        if not cycle.finished:
            if not cycle.disconnected:
                logger.error("%s %s returned without finishing its response", cycle.scope["method"],
                             cycle.scope["path"])
                if not cycle.started and not self.closed:
                    self.transport.write(_plain(500, "internal error"))
            self._after_unfinished()

    def _after_unfinished(self) -> None:
        """A request that ended without a whole answer: the connection's framing is lost, so it closes."""
        if not self.closed:
            self.close()

    def response_done(self, cycle: _Cycle) -> None:
        if self.closed:
            return
        if not cycle.keep_alive or not cycle.body_done or self.server.stopping:
            # a body the app did not read would be taken for the next request: close instead
            self.close()
            return
        self.cycle = None
        if self.write_paused:  # the answer is still in the buffer: the next one waits until it has gone
            self.next_when_drained = True
            return
        self._next()

    def _next(self) -> None:
        if self.closed or self.cycle is not None:
            return
        if self.pipeline:
            self._run(self.pipeline.popleft())
            self.resume_reading()
        elif self.ignoring:
            self.close()  # everything asked before what we refused is answered
        else:
            self.resume_reading()
            self._arm(self.server.keep_alive_timeout)


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class HttpServer:
    """Serves an ASGI app on ``host:port`` inside the running loop; ``start`` returns once it listens.

    ``head_timeout``: seconds a connection may stay open without a finished request head (idle after a
    response: ``keep_alive_timeout``); ``body_timeout``: seconds an app waits for the next piece of a body
    before the connection is taken as gone. ``stop`` closes the listener, lets running requests finish (for
    at most ``grace`` seconds), then closes every connection."""

    def __init__(self, app: AsgiApp, host: str, port: int, *, ssl: ssl_module.SSLContext | None = None,
                 head_timeout: float = 10.0, keep_alive_timeout: float = 5.0, max_head_bytes: int = 64 * 1024,
                 max_headers: int = 128, body_timeout: float = 30.0, send_timeout: float = 30.0,
                 grace: float = 10.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.ssl = ssl
        self.head_timeout = head_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.grace = grace
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._all_gone: asyncio.Event | None = None  # set when the last connection goes, while stopping
        self.bound: tuple[str, int] = (host, port)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> HttpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                                                backlog=2048)
        sockname = self._server.sockets[0].getsockname()
        self.bound = (sockname[0], sockname[1])
        return self

    @property
    def bound_port(self) -> int:
        return self.bound[1]

    async def stop(self) -> None:
        """Stop listening; answer what is running (for at most ``grace`` seconds, writes included), then drop
        whatever is left (a client that reads nothing cannot hold the stop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.cycle is None and not conn.pipeline and not conn.closed:
                conn.close()  # idle keep-alive connections
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.grace)
        for conn in list(self.connections):
            if conn.cycle is None and not conn.closed:
                conn.close()  # answered: closed once the answer has left
        remaining = deadline - loop.time()
        if self.connections and remaining > 0:
            self._all_gone = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._all_gone.wait()
        for conn in list(self.connections):
            conn.abort()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()
