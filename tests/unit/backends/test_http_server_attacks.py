"""More attacks on ``backends.http_server``: a hostile client or a careless app against the server on a real
loopback socket. Each test names the promise it checks; those after the marked section are attacks that
succeeded against the first version of the server (each was seen to fail, then fixed)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.http_server import HttpServer

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Echo:
    """Answers each request with a JSON account of it (after reading its whole body); a few paths misbehave."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.calls = 0
        self.disconnects = 0
        self.headers_after_body: list[list[tuple[bytes, bytes]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        path = scope["path"]
        self.paths.append(path)
        if path == "/watch":  # a stream that says nothing for a while and watches for the hang-up
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"hello", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnects += 1
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            body += message["body"]
            if not message["more_body"]:
                break
        self.headers_after_body.append(list(scope["headers"]))
        answer = json.dumps({"method": scope["method"], "path": path, "body": body.decode("latin-1"),
                             "query": scope["query_string"].decode()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[HttpServer]:
    options.setdefault("head_timeout", 1.0)
    options.setdefault("keep_alive_timeout", 1.0)
    options.setdefault("body_timeout", 1.0)
    options.setdefault("grace", 1.0)
    server = await HttpServer(app, "127.0.0.1", 0, **options).start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 10)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; returns whether it held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def exchange(port: int, raw: bytes, *, timeout: float = 3.0) -> bytes:
    """Send ``raw`` and read until the server closes the connection (or ``timeout``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()


def responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Split a byte stream of content-length framed responses into (status, headers, body)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
        length = int(headers.get(b"content-length", b"0"))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def request(path: str, body: bytes = b"", *, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n" % (path.encode(), len(body)) + extra
            + b"\r\n" + body)


# -- framing and smuggling that the server withstands (regression tests) --------------------------------------


@pytest.mark.parametrize("raw", [
    # Transfer-Encoding that is not exactly "chunked" last: the body's end is ambiguous
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    # Content-Length that a lenient parser would read differently
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: identity\r\ncontent-length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0x5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999999999999999\r\n\r\nabcde",
    # obs-fold, bare CR, NUL and whitespace before the colon
    b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded: in\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\rcontent-length: 40\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length : 5\r\n\r\nabcde",
])
async def test_ambiguous_framing_is_refused_with_400_and_nothing_is_smuggled(raw: bytes) -> None:
    """A body whose end two parsers could disagree on is refused as a whole: a 400, a closed connection, and
    no request hidden inside it runs."""
    app = Echo()
    async with serving(app) as server:
        data = await exchange(server.bound_port, raw)
    assert data.startswith(b"HTTP/1.1 400 "), data[:120]
    assert b"connection: close" in data.lower()
    assert "/smuggled" not in app.paths


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"
    b"GET /smuggled HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\n0\n\nGET /smuggled HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3 ;x\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n",
])
async def test_a_malformed_chunked_body_is_never_delivered_as_complete(raw: bytes) -> None:
    """A chunked body with a bad chunk size or chunk framing: the app (already running, it had a good head) never
    sees it as a complete body, the connection is closed (with a 400 if nothing was answered), and nothing
    after it runs."""
    app = Echo()
    async with serving(app) as server:
        data = await exchange(server.bound_port, raw)
        assert await until(lambda: not server.tasks and not server.connections)
    assert data == b"" or data.startswith(b"HTTP/1.1 400 "), data[:120]
    assert app.headers_after_body == [] and "/smuggled" not in app.paths


async def test_bare_lf_heads_are_refused_or_framed_the_same_way() -> None:
    """A head ended by bare LFs is refused, or parsed exactly as its CRLF twin: never a second framing."""
    app = Echo()
    async with serving(app) as server:
        data = await exchange(server.bound_port, b"POST /lf HTTP/1.1\nhost: x\ncontent-length: 3\n\nabcGET /smuggled"
                                                 b" HTTP/1.1\r\nhost: x\r\n\r\n")
    assert "/smuggled" not in app.paths
    assert data.startswith(b"HTTP/1.1 400 ") or json.loads(responses(data)[0][2])["body"] == "abc"


async def test_chunk_extensions_and_trailers_do_not_change_the_body() -> None:
    """Chunk extensions (quoted, odd) and a trailer section are framing only: the body the app reads is the
    chunks' data, and the next pipelined request is answered on its own."""
    app = Echo()
    raw = (b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
           b"3;name=\"q;x\"\r\nabc\r\n2;a;b=c\r\nde\r\n0;last\r\nx-trailer: 1\r\n\r\n"
           + request("/next", b"zz", extra=b"connection: close\r\n"))
    async with serving(app) as server:
        data = await exchange(server.bound_port, raw)
    got = [json.loads(body) for _, _, body in responses(data)]
    assert [(g["path"], g["body"]) for g in got] == [("/c", "abcde"), ("/next", "zz")]


async def test_one_byte_writes_parse_exactly_like_one_write() -> None:
    """A request stream split into 1-byte writes gives the same answers as the same bytes in one write."""
    raw = (request("/a", b"hello", extra=b"x-h: v\r\n")
           + b"POST /b?q=1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
           + b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    app = Echo()
    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        for i in range(len(raw)):
            writer.write(raw[i:i + 1])
            await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
    got = [json.loads(body) for _, _, body in responses(data)]
    assert [(g["path"], g["body"], g["query"]) for g in got] == [("/a", "hello", ""), ("/b", "hi", "q=1"),
                                                                  ("/c", "", "")]


@settings(max_examples=40, deadline=None)
@given(bodies=st.lists(st.binary(max_size=40), min_size=1, max_size=5),
       chunked=st.lists(st.booleans(), min_size=5, max_size=5),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_any_split_of_a_pipelined_stream_gives_the_same_answers(bodies: list[bytes], chunked: list[bool],
                                                                cuts: list[int]) -> None:
    """Pipelined requests (content-length and chunked, mixed), cut into arbitrary writes: each answer matches
    its own request, in order, and the connection's tasks drain afterwards."""
    parts = []
    for i, body in enumerate(bodies):
        if chunked[i]:
            encoded = b"".join(b"%x\r\n%s\r\n" % (len(body[j:j + 7]), body[j:j + 7]) for j in range(0, len(body), 7))
            parts.append(b"POST /p%d HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" % i + encoded
                         + b"0\r\n\r\n")
        else:
            parts.append(request("/p%d" % i, body))
    raw = b"".join(parts) + b"GET /end HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    pieces = [raw[a:b] for a, b in zip(points, points[1:])]

    async def run() -> None:
        app = Echo()
        async with serving(app) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            data = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
            got = [json.loads(body) for _, _, body in responses(data)]
            assert [(g["path"], g["body"].encode("latin-1")) for g in got] == (
                [("/p%d" % i, b) for i, b in enumerate(bodies)] + [("/end", b"")])
            assert await until(lambda: not server.connections and not server.tasks)

    asyncio.run(run())


async def test_hundreds_of_concurrent_connections_each_get_their_own_answer() -> None:
    """300 connections at once, each with its own body and keep-alive follow-up, answered after random delays:
    every answer matches its own request, and nothing is left behind."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await asyncio.sleep(random.random() * 0.05)
        answer = scope["path"].encode() + b"|" + body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(answer))]})
        for i in range(0, len(answer), 1000):  # some answers in several pieces
            await send({"type": "http.response.body", "body": answer[i:i + 1000],
                        "more_body": i + 1000 < len(answer)})

    async with serving(app) as server:
        async def one(i: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
            mine = (b"%d-" % i) * random.randint(1, 800)
            writer.write(request("/c%d" % i, mine))
            writer.write(b"GET /again%d HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % i)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(-1), 15)
            writer.close()
            assert [body for _, _, body in responses(data)] == [b"/c%d|" % i + mine, b"/again%d|" % i]

        await asyncio.gather(*(one(i) for i in range(300)))
        assert await until(lambda: not server.connections and not server.tasks)


# -- hang-ups, timeouts and stop() that the server withstands ------------------------------------------------------


@pytest.mark.parametrize("raw", [
    request("/mid-body", b"x" * 10)[:-5],  # a hang-up mid-body
    request("/a", b"1") + request("/b", b"2") + request("/c", b"3")[:-1],  # mid-pipeline
    b"POST /d HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",  # mid-chunk
    b"GET /watch HTTP/1.1\r\nhost: x\r\n\r\n",  # mid-stream
])
async def test_a_hang_up_releases_connection_and_tasks(raw: bytes) -> None:
    """Whatever the client was in the middle of, once it hangs up ``server.connections`` and ``server.tasks``
    drain (well before any timeout)."""
    app = Echo()
    async with serving(app, head_timeout=30, keep_alive_timeout=30, body_timeout=30) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(raw)
        await writer.drain()
        assert await until(lambda: app.calls > 0)
        writer.close()
        assert await until(lambda: not server.connections and not server.tasks, 3), (server.connections,
                                                                                       server.tasks)


async def test_receive_after_a_hang_up_keeps_answering_disconnect() -> None:
    """After the hang-up every further ``receive()`` returns ``http.disconnect`` at once: it never hangs."""
    seen: list[str] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        seen.append(first["type"])
        for _ in range(3):
            seen.append((await asyncio.wait_for(receive(), 2))["type"])
        done.set()

    async with serving(app, body_timeout=30) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(request("/x", b"a" * 10)[:-5])
        await writer.drain()
        writer.close()
        await asyncio.wait_for(done.wait(), 3)
    assert seen[-3:] == ["http.disconnect"] * 3


async def test_stop_returns_while_an_app_never_answers_and_never_reads() -> None:
    """An app stuck forever (never reads, never answers, even ignores a first cancel) cannot keep ``stop()``
    from returning within ``grace`` plus its short cancel wait, and the client is hung up on."""
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # careless: swallows the first cancellation and keeps waiting

    server = await HttpServer(app, "127.0.0.1", 0, grace=0.3).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    writer.write(request("/stuck", b"abc"))
    await writer.drain()
    assert await until(lambda: bool(server.tasks))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(server.stop(), 5)
    assert loop.time() - started < 2.5
    assert await asyncio.wait_for(reader.read(-1), 2) == b""
    release.set()
    writer.close()


async def test_stop_during_pipelining_answers_the_running_request_and_drains() -> None:
    """``stop()`` while requests are queued behind a running one: the running one is answered (with
    ``connection: close``), the queued ones never run, and nothing is left behind."""
    gate = asyncio.Event()
    ran: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(scope["path"])
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = await HttpServer(app, "127.0.0.1", 0, grace=3).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    writer.write(b"".join(b"GET /q%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(4)))
    await writer.drain()
    assert await until(lambda: ran == ["/q0"])
    stopping = asyncio.create_task(server.stop())
    assert await until(lambda: server.stopping)
    gate.set()
    data = await asyncio.wait_for(reader.read(-1), 3)
    await asyncio.wait_for(stopping, 5)
    writer.close()
    assert [(s, h.get(b"connection"), b) for s, h, b in responses(data)] == [(200, b"close", b"ok")]
    assert ran == ["/q0"] and not server.connections and not server.tasks


# -- careless apps the server withstands ------------------------------------------------------------------------------


async def _misbehave(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    if path == "/nothing":
        return
    if path == "/body-first":
        await send({"type": "http.response.body", "body": b"x"})
    if path == "/start-twice":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
    if path == "/body-after-end":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
        await send({"type": "http.response.body", "body": b"a"})
        await send({"type": "http.response.body", "body": b"EVIL"})
    if path == "/unknown-message":
        await send({"type": "websocket.send", "text": "hi"})
    if path == "/late-sender":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
        await send({"type": "http.response.body", "body": b"a"})

        async def later() -> None:  # a background task that keeps a dead response's send
            try:
                await send({"type": "http.response.body", "body": b"EVIL"})
            except RuntimeError:
                pass

        await asyncio.ensure_future(later())
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(("path", "status"), [
    ("/nothing", 500), ("/body-first", 500), ("/unknown-message", 500), ("/start-twice", None),
    ("/body-after-end", 200), ("/late-sender", 200),
])
async def test_an_app_sending_messages_in_the_wrong_order_never_corrupts_the_wire(path: str,
                                                                                   status: int | None) -> None:
    """An app that answers nothing, sends a body before its head, a head twice, a body after its end, or a
    message of another protocol: the client gets a 500 or a clean answer, never stray bytes, and no exception
    reaches the event loop's handler."""
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    try:
        async with serving(_misbehave) as server:
            data = await exchange(server.bound_port, b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path.encode()
                                  + b"GET /next HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert await until(lambda: not server.tasks)
    finally:
        loop.set_exception_handler(previous)
    assert b"EVIL" not in data
    if status is None:
        assert data == b"" or data.startswith(b"HTTP/1.1 500 ")
    else:
        got = responses(data)
        assert got[0][0] == status
        assert all(s == 200 and b == b"ok" for s, _, b in got[1:])
    assert escaped == []


async def test_head_answers_keep_the_framing_of_the_next_answer() -> None:
    """HEAD answers with a content-length (and with a streamed body) carry no body bytes: the next answer on
    the connection parses."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/len":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
            await send({"type": "http.response.body", "body": b"hello"})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"streamed", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serving(app) as server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}") as client:
        for _ in range(2):
            head = await client.head("/len")
            assert head.content == b"" and head.headers["content-length"] == "5"
            head = await client.head("/stream")
            assert head.content == b"" and "transfer-encoding" not in head.headers
            assert (await client.get("/stream")).content == b"streamed"
            assert (await client.get("/len")).content == b"hello"


# -- attacks that succeeded before the fixes in the same commit -------------------------------------------------


async def test_a_hang_up_after_pipelining_reaches_a_streaming_app() -> None:
    """An app streaming a response and watching ``receive()`` for the hang-up (RelayResponse's pattern) learns of
    it even if the client had pipelined another request before hanging up."""
    app = Echo()
    async with serving(app, head_timeout=30, keep_alive_timeout=30, body_timeout=30, grace=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /watch HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"hello"), 3)  # the app is now waiting in receive()
        writer.write(b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n")  # queued behind the stream
        await writer.drain()
        assert await until(lambda: bool(next(iter(server.connections)).pipeline))
        writer.close()
        assert await until(lambda: app.disconnects == 1, 2)
        assert await until(lambda: not server.connections and not server.tasks)


async def test_trailers_never_become_request_headers() -> None:
    """A chunked body's trailer section is not part of the request head: it must not be added to the scope's
    headers that the app (or its auth middleware) reads."""
    app = Echo()
    raw = (b"POST /t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
           b"3\r\nabc\r\n0\r\nauthorization: Bearer forged\r\n\r\n")
    async with serving(app) as server:
        data = await exchange(server.bound_port, raw)
    assert data.startswith(b"HTTP/1.1 200 ") or data.startswith(b"HTTP/1.1 400 ")
    for headers in app.headers_after_body:
        assert b"authorization" not in dict(headers)


async def test_a_header_value_that_never_ends_is_cut_off_at_max_head_bytes() -> None:
    """A header value streamed without ever ending is refused once the head passes ``max_head_bytes``, not
    buffered until ``head_timeout``."""
    app = Echo()
    async with serving(app, head_timeout=20, max_head_bytes=4096) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ")
            for _ in range(32):
                writer.write(b"a" * (128 * 1024))  # 4 MiB of one header value, no line end
                await asyncio.wait_for(writer.drain(), 2)
        except ConnectionError:
            pass  # refused while we were still sending: what is checked below
        answer = b""
        try:
            answer = await asyncio.wait_for(reader.read(-1), 1.5)
            ended = True
        except ConnectionError:
            ended = True
        except TimeoutError:
            ended = False
        finally:
            writer.close()
        assert ended, "the connection is still open, its head buffered far past max_head_bytes"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]


async def test_a_client_that_never_reads_cannot_make_the_server_buffer_every_answer() -> None:
    """Backpressure: pipelined requests for large answers from a client that reads nothing stop being
    answered once the socket's write buffer is full; the server does not buffer them all."""
    big = b"x" * (1024 * 1024)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(big))]})
        await send({"type": "http.response.body", "body": big})

    calls = 0

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        await app(scope, receive, send)

    async with serving(counting, grace=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port, limit=1024)
        writer.transport.pause_reading()
        writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n" * 64)
        await writer.drain()
        await until(lambda: calls == 64, 2)
        (conn,) = server.connections
        buffered = conn.transport.get_write_buffer_size()
        writer.transport.abort()
        assert buffered <= 8 * 1024 * 1024, f"{buffered} bytes buffered for a client that reads nothing"


async def _never_read(server: HttpServer) -> asyncio.StreamWriter:
    """A client that asks for a 32 MiB answer and never reads a byte of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port, limit=1024)
    writer.transport.pause_reading()
    writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    return writer


async def _big_answer(scope: Scope, receive: Receive, send: Send) -> None:
    big = b"x" * (32 * 1024 * 1024)  # more than the kernel's socket buffers take
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(big))]})
    await send({"type": "http.response.body", "body": big})


async def test_a_client_that_never_reads_is_released_by_the_send_timeout() -> None:
    """A client that reads nothing of its answer is dropped once the write buffer has not moved for
    ``send_timeout`` (before, ``close()`` waited for a buffer that never drained: the connection and its tens
    of MiB stayed for as long as the client liked). A slow reader that does read is never cut off by it."""
    server = await HttpServer(_big_answer, "127.0.0.1", 0, keep_alive_timeout=30, send_timeout=0.2,
                              grace=0.2).start()
    writer = await _never_read(server)
    try:
        assert await until(lambda: any(conn.transport.get_write_buffer_size() for conn in server.connections))
        assert await until(lambda: not server.connections, 1.5), server.connections
    finally:
        writer.transport.abort()
        await server.stop()


async def test_stop_releases_a_client_that_never_reads() -> None:
    """After ``stop()`` returns no connection is left open, even one whose client reads nothing."""
    server = await HttpServer(_big_answer, "127.0.0.1", 0, keep_alive_timeout=30, grace=0.2).start()
    writer = await _never_read(server)
    try:
        assert await until(lambda: any(conn.transport.get_write_buffer_size() for conn in server.connections))
        assert await until(lambda: not server.tasks)
        await asyncio.wait_for(server.stop(), 5)
        left = [conn.transport.get_write_buffer_size() for conn in server.connections]
        assert not left, f"connections left open after stop(), with these bytes unsent: {left}"
    finally:
        writer.transport.abort()


@pytest.mark.parametrize(("declared", "body"), [(2, b"okHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"),
                                                 (60, b"ok")])
async def test_a_body_that_disagrees_with_its_content_length_never_desyncs_the_connection(declared: int,
                                                                                            body: bytes) -> None:
    """An app whose body is longer or shorter than the content-length it declared: the client never takes the
    extra bytes, or the next answer, for something else (the server cuts or closes the connection)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/wrong":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % declared)]})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"real"})

    async with serving(app) as server:
        data = await exchange(server.bound_port, b"GET /wrong HTTP/1.1\r\nhost: x\r\n\r\n"
                              b"GET /next HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    try:
        got = responses(data)
    except (IndexError, ValueError, StopIteration):
        pytest.fail(f"the answers no longer parse: {data!r}")
    assert all(b"HTTP/1.1" not in body and body != b"forged" for _, _, body in got), got
    assert len(got) == 1 or got[1][2] == b"real", got


@pytest.mark.parametrize("status", [204, 304])
async def test_a_body_on_204_or_304_never_reaches_the_wire(status: int) -> None:
    """A 204/304 answer has no body by definition: body bytes an app sends with one are dropped, so the next
    answer on the connection is the real one."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/empty":
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"real"})

    async with serving(app) as server:
        data = await exchange(server.bound_port, b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n"
                              b"GET /next HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert [(s, b) for s, _, b in responses(data)] == [(status, b""), (200, b"real")]


async def test_a_streamed_answer_to_http_1_0_is_not_chunked() -> None:
    """An HTTP/1.0 client gets a streamed answer delimited by the connection's close, not chunked."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2;", "more_body": False})

    async with serving(app) as server:
        data = await exchange(server.bound_port, b"GET /s HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and body == b"part1;part2;", data


async def test_expect_continue_from_http_1_0_is_ignored() -> None:
    """An HTTP/1.0 request with ``expect: 100-continue`` gets its final answer only, no interim 100."""
    app = Echo()
    async with serving(app) as server:
        data = await exchange(server.bound_port, b"POST /e HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 3"
                                                 b"\r\n\r\nabc")
    assert data.startswith(b"HTTP/1.1 200 "), data[:60]


@pytest.mark.parametrize(("extra", "after"), [
    (b"", b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),  # a malformed request behind a good one
    (b"connection: close\r\n", b"GET /ignored HTTP/1.1\r\nhost: x\r\n\r\n"),  # anything after a 'close' request
])
async def test_a_valid_request_before_a_bad_one_is_still_answered(extra: bytes, after: bytes) -> None:
    """The answer to a valid request is not lost because of what the client pipelined after it (RFC 9112 9.6:
    a server answers the 'close' request and ignores what follows)."""
    app = Echo()
    async with serving(app) as server:
        data = await exchange(server.bound_port, request("/first", b"abc", extra=extra)
                              + after)
    assert app.paths[:1] == ["/first"]
    assert data.startswith(b"HTTP/1.1 200 "), data[:60]
    assert json.loads(responses(data)[0][2])["path"] == "/first"


@pytest.mark.parametrize("coding", [b"xchunked", b"identity", b"gzip"])
async def test_a_request_with_an_invalid_transfer_encoding_gets_400_and_never_reaches_the_app(coding: bytes) -> None:
    """A request whose body framing is invalid is refused with a 400 before the app sees any of it."""
    app = Echo()
    async with serving(app) as server:
        data = await exchange(server.bound_port, b"DELETE /account HTTP/1.1\r\nhost: x\r\ntransfer-encoding: "
                              + coding + b"\r\n\r\n0\r\n\r\n")
        assert await until(lambda: not server.tasks)
    assert app.paths == []
    assert data.startswith(b"HTTP/1.1 400 "), data[:60]


async def test_a_relay_response_stops_its_source_when_the_client_hangs_up() -> None:
    """The model gateway's ``RelayResponse`` on this server: a client hanging up mid-stream stops the relay (its
    source is closed and ``on_close`` runs) and the server's connection and task drain."""
    from backends.serving import RelayResponse

    closed: list[str] = []
    sent = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal sent
        try:
            while True:
                sent += 1
                yield b"data: %d\n\n" % sent
                await asyncio.sleep(0.01)
        finally:
            closed.append("source")

    async def on_close() -> None:
        closed.append("on_close")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await RelayResponse(source(), media_type="text/event-stream", on_close=on_close)(scope, receive, send)

    async with serving(app, body_timeout=30, keep_alive_timeout=30) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"data: 3\n\n"), 3)
        writer.close()
        assert await until(lambda: closed == ["source", "on_close"])
        assert await until(lambda: not server.connections and not server.tasks)


async def test_an_app_transfer_encoding_header_is_not_doubled() -> None:
    """An app that declares ``transfer-encoding: chunked`` itself gets the body chunked once, with one such
    header."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"transfer-encoding", b"chunked")]})
        await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serving(app) as server:
        data = await exchange(server.bound_port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.lower().count(b"transfer-encoding") == 1, head
    assert body == b"6\r\npart1;\r\n0\r\n\r\n"


async def test_the_swarm_api_under_many_concurrent_connections_answers_each_its_own(tmp_path: Any) -> None:
    """The swarm API (``infrafabric.coordinator.service``) served by this server: 100 swarms at once, each on its
    own connection, open a session and claim their own task; each answer belongs to its own request (a
    response crossing connections would hand a swarm another's session or claim)."""
    from infrafabric.coordinator import IFCoordinator
    from infrafabric.coordinator.credentials import CredentialAuthority, CredentialVerifier
    from infrafabric.coordinator.service import SwarmGateway, create_app

    authority = CredentialAuthority.load_or_create(tmp_path / "authority")
    coordinator = IFCoordinator(kv_url="memory://", bus_url="memory://", audit=None)
    async with coordinator:
        gateway = SwarmGateway(coordinator, CredentialVerifier(authority.public_key, coordinator.kv))
        try:
            async with serving(create_app(gateway)) as server:
                async def swarm(i: int) -> tuple[str, str]:
                    auth = {"Authorization": f"Bearer {authority.issue('swarm', f'swarm-{i}')}"}
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}") as client:
                        opened = await client.post("/v1/session", json={"capabilities": ["code"]}, headers=auth)
                        session = opened.json()["session"]
                        claimed = await client.post("/v1/claims", json={"task_ids": [f"t{i}"]},
                                                    headers={**auth, "X-Session": session})
                    assert claimed.status_code == 200, claimed.text
                    (claim,) = claimed.json()["claims"]
                    assert claim["task_id"] == f"t{i}" and claim["won"] is True
                    return session, claim["task_id"]

                results = await asyncio.gather(*(swarm(i) for i in range(100)))
                assert len({session for session, _ in results}) == 100
                assert await until(lambda: not server.connections and not server.tasks)
        finally:
            await gateway.close()


async def test_expect_continue_refused_from_the_head_sends_no_100_and_closes() -> None:
    """An app that refuses an upload from its head (never reading it, then calling ``receive()`` only to watch
    for the hang-up) sends no interim 100; the client waiting for it gets the final answer and a closed
    connection, so the body it may still send is never parsed as a request."""
    ran: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(scope["path"])
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        assert (await receive())["type"] == "http.disconnect"

    async with serving(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"POST /up HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 40\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(-1), 3)
        try:
            writer.write(b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n".ljust(40, b"x"))
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
        assert await until(lambda: not server.tasks and not server.connections)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer
    assert b"connection: close" in answer and ran == ["/up"]


async def test_an_app_failing_after_its_answer_does_not_take_the_next_request_with_it() -> None:
    """An app that raises after its answer is complete: the answer stands, and a request pipelined behind it
    is either answered or never run (it is not run and then cut off unanswered)."""
    ran: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        if scope["path"] == "/fails-after":
            raise RuntimeError("a bug after the answer")

    async with serving(app) as server:
        data = await exchange(server.bound_port, b"GET /fails-after HTTP/1.1\r\nhost: x\r\n\r\n"
                              b"GET /next HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    got = [(status, body) for status, _, body in responses(data)]
    assert got[:1] == [(200, b"ok")]
    assert got == [(200, b"ok"), (200, b"ok")] or ran == ["/fails-after"], (got, ran)
