"""The platform's HTTP/1.1 server (``backends.http_server``) as a hostile client meets it: raw bytes on a
real loopback socket, pipelined and smuggled requests, heads that never end, bodies nobody reads, hang-ups
in the middle of a stream."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.http_server import _READ_HIGH_WATER, HttpServer

Scope = dict[str, Any]


class Recorder:
    """An ASGI app that answers what it was asked, and remembers how many of its calls ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.paths: list[str] = []
        self.gate: asyncio.Event | None = None
        self.disconnects = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            self.paths.append(scope["path"])
            if scope["path"] == "/hold" and self.gate is not None:
                await self.gate.wait()
            if scope["path"] == "/ignore-body":
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
                await send({"type": "http.response.body", "body": b"ok"})
                return
            if scope["path"] == "/boom":
                raise RuntimeError("a bug in the app")
            if scope["path"] == "/boom-late":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                raise RuntimeError("a bug after the head")
            if scope["path"] == "/inject":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"x-a", b"1\r\nset-cookie: stolen=1")]})
                return
            if scope["path"] == "/stream":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                for i in range(3):
                    await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if scope["path"] == "/forever":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self.disconnects += 1
                        return
            body = b""
            while True:
                message = await receive()
                assert message["type"] == "http.request"
                body += message["body"]
                if not message["more_body"]:
                    break
            answer = json.dumps({"method": scope["method"], "path": scope["path"],
                                 "query": scope["query_string"].decode(), "body": len(body),
                                 "headers": {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
            await send({"type": "http.response.body", "body": answer})
        finally:
            self.running -= 1


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, Recorder]]:
    app = Recorder()
    server = await HttpServer(app, "127.0.0.1", 0, head_timeout=0.5, keep_alive_timeout=0.5).start()
    yield server, app
    await server.stop()


async def _exchange(port: int, raw: bytes, *, timeout: float = 3.0) -> bytes:
    """Send ``raw`` and read until the server closes the connection (or ``timeout``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    """Split a byte stream of content-length responses into (status, body) pairs."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (line.partition(b": ") for line in lines[1:]) if k == b"content-length")
        out.append((status, rest[:length]))
        data = rest[length:]
    return out


async def test_answers_json_and_keeps_the_connection_alive(served: tuple[HttpServer, Recorder]) -> None:
    server, app = served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}") as client:
        first = await client.post("/a%20b?x=1", content=b"hello")
        second = await client.get("/c")
    assert first.status_code == 200 and first.json()["path"] == "/a b" and first.json()["query"] == "x=1"
    assert first.json()["body"] == 5 and second.json()["method"] == "GET"
    assert len(server.connections) <= 1  # one connection carried both


async def test_pipelined_requests_run_one_at_a_time_and_answer_in_order(served: tuple[HttpServer, Recorder]) -> None:
    server, app = served
    raw = b"".join(b"POST /p%d HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc" % i for i in range(5))
    data = await _exchange(server.bound_port, raw + b"GET /last HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    answers = _responses(data)
    assert [json.loads(body)["path"] for _, body in answers] == ["/p0", "/p1", "/p2", "/p3", "/p4", "/last"]
    assert app.most == 1


async def test_an_unread_body_is_never_taken_for_the_next_request(served: tuple[HttpServer, Recorder]) -> None:
    """Request smuggling: a body the app did not read holds a second request; it must not run."""
    server, app = served
    hidden = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
    raw = b"POST /ignore-body HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(hidden) + hidden
    data = await _exchange(server.bound_port, raw)
    assert _responses(data) == [(200, b"ok")]
    assert "/smuggled" not in app.paths


async def test_an_answer_given_before_the_body_arrived_closes_the_connection() -> None:
    """An upload nobody wants (the app refused it from its head): the server hangs up instead of reading the
    rest of it only to throw it away."""
    server = await HttpServer(Recorder(), "127.0.0.1", 0, keep_alive_timeout=30).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"POST /ignore-body HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (10 * 1024 * 1024)
                     + b"x" * 100)
        answer = await asyncio.wait_for(reader.read(-1), 3)  # the answer, then the close: not 30 s later
        assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer
        writer.close()
    finally:
        await server.stop()


@pytest.mark.parametrize("raw", [
    # both framings at once: which one ends the body is the smuggler's choice, so neither is taken
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 40\r\n\r\nabcd",
    b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\nhost: x\r\n\r\n",
    b"NOT-A-METHOD / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
])
async def test_malformed_and_ambiguous_requests_get_400_and_a_closed_connection(
        served: tuple[HttpServer, Recorder], raw: bytes) -> None:
    server, app = served
    data = await _exchange(server.bound_port, raw)
    assert data.startswith(b"HTTP/1.1 400 "), data[:80]
    assert b"connection: close" in data
    assert "/smuggled" not in app.paths


async def test_a_head_too_large_or_a_target_too_long_is_refused(served: tuple[HttpServer, Recorder]) -> None:
    server, _ = served
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(200))
    assert (await _exchange(server.bound_port, b"GET / HTTP/1.1\r\n" + many + b"\r\n")).startswith(b"HTTP/1.1 431 ")
    big = b"x-big: " + b"a" * (70 * 1024) + b"\r\n"
    assert (await _exchange(server.bound_port, b"GET / HTTP/1.1\r\n" + big + b"\r\n")).startswith(b"HTTP/1.1 431 ")
    long = b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\n\r\n"
    assert (await _exchange(server.bound_port, long)).startswith(b"HTTP/1.1 414 ")


async def test_a_head_that_never_ends_is_cut_off(served: tuple[HttpServer, Recorder]) -> None:
    """Slowloris: a byte now and then never finishes a head; the server closes at ``head_timeout``."""
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for piece in (b"GET / HTTP/1.1\r\n", b"x-a: 1\r\n", b"x-b: 2\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.15)
    assert await asyncio.wait_for(reader.read(-1), 3) == b""
    assert loop.time() - started < 2.0
    writer.close()


async def test_a_body_that_never_ends_is_cut_off() -> None:
    app = Recorder()
    server = await HttpServer(app, "127.0.0.1", 0, body_timeout=0.3).start()
    try:
        data = await _exchange(server.bound_port, b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        assert data == b"" and app.running == 0
    finally:
        await server.stop()


async def test_an_idle_keep_alive_connection_is_closed(served: tuple[HttpServer, Recorder]) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    writer.write(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.read(-1), 3)  # the answer, then the close at keep_alive_timeout
    assert first.startswith(b"HTTP/1.1 200 ") and len(server.connections) == 0
    writer.close()


async def test_an_app_that_fails_answers_500_and_one_that_fails_midway_closes(
        served: tuple[HttpServer, Recorder], caplog: pytest.LogCaptureFixture) -> None:
    server, _ = served
    data = await _exchange(server.bound_port, b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500 ") and b"a bug in the app" not in data
    assert "a bug in the app" in caplog.text  # logged for the operator, never shown to the client
    late = await _exchange(server.bound_port, b"GET /boom-late HTTP/1.1\r\nhost: x\r\n\r\n")
    assert not late.endswith(b"0\r\n\r\n")  # the client sees a cut response, not a complete one


async def test_a_line_break_in_a_response_header_never_reaches_the_wire(served: tuple[HttpServer, Recorder]) -> None:
    server, _ = served
    data = await _exchange(server.bound_port, b"GET /inject HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"stolen" not in data and data.startswith(b"HTTP/1.1 500 ")


async def test_streamed_answers_are_chunked_and_head_answers_have_no_body(served: tuple[HttpServer, Recorder]) -> None:
    server, _ = served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}") as client:
        streamed = await client.get("/stream")
        assert streamed.headers["transfer-encoding"] == "chunked" and streamed.content == b"part0;part1;part2;"
        head = await client.head("/x")
        assert head.status_code == 200 and head.content == b""
        assert (await client.get("/after-head")).json()["path"] == "/after-head"  # framing intact after HEAD


async def test_a_chunked_request_body_and_expect_continue(served: tuple[HttpServer, Recorder]) -> None:
    server, _ = served
    raw = (b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
           b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert json.loads(_responses(await _exchange(server.bound_port, raw))[0][1])["body"] == 7
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    writer.write(b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n"
                 b"connection: close\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"xyz")
    assert json.loads(_responses(await asyncio.wait_for(reader.read(-1), 3))[0][1])["body"] == 3
    writer.close()


async def test_http_1_0_closes_after_its_answer(served: tuple[HttpServer, Recorder]) -> None:
    server, _ = served
    data = await _exchange(server.bound_port, b"GET /old HTTP/1.0\r\n\r\n")
    assert _responses(data)[0][0] == 200 and b"connection: close" in data


async def test_a_body_nobody_reads_is_not_buffered_without_bound() -> None:
    """A client pushing megabytes at an app that is busy elsewhere: the server stops reading the socket."""
    gate = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    server = await HttpServer(app, "127.0.0.1", 0).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (64 * 1024 * 1024))
        chunk = b"x" * (1024 * 1024)
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(2.0):
                for _ in range(64):
                    writer.write(chunk)
                    await writer.drain()  # blocks for good once the server stops reading
        (conn,) = server.connections
        assert conn.cycle is not None and len(conn.cycle.body) <= _READ_HIGH_WATER + 1024 * 1024
        gate.set()
        writer.close()
    finally:
        await server.stop()


async def test_a_hang_up_reaches_the_app_as_disconnect(served: tuple[HttpServer, Recorder]) -> None:
    server, app = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    writer.write(b"GET /forever HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    writer.close()
    async with asyncio.timeout(3):
        while app.disconnects == 0:
            await asyncio.sleep(0.01)
    assert app.running == 0


async def test_stop_lets_a_running_request_finish_and_refuses_new_connections() -> None:
    app = Recorder()
    app.gate = asyncio.Event()
    server = await HttpServer(app, "127.0.0.1", 0).start()
    port = server.bound_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
    async with asyncio.timeout(3):
        while app.running == 0:
            await asyncio.sleep(0.01)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.05)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    app.gate.set()
    answer = await asyncio.wait_for(reader.read(-1), 3)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer
    await asyncio.wait_for(stopping, 5)
    writer.close()


async def test_tls(tmp_path: Path) -> None:
    from backends.servers.tls import generate_tls_bundle

    tls = generate_tls_bundle(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    server = await HttpServer(Recorder(), "127.0.0.1", 0, ssl=context).start()
    try:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(tls.ca_cert))) as client:
            answer = await client.get(f"https://127.0.0.1:{server.bound_port}/secure")
        assert answer.json()["path"] == "/secure"
    finally:
        await server.stop()


_ASCII_LINE = st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(
    st.binary(max_size=400),
    st.builds(lambda m, t, h: m + b" " + t + b" HTTP/1.1\r\n" + h + b"\r\n\r\n",
              st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS"]), _ASCII_LINE, _ASCII_LINE),
))
def test_hostile_bytes_never_break_the_server(junk: bytes) -> None:
    """Whatever arrives, the server answers it or closes it, and the next honest client is served."""

    async def run() -> None:
        server = await HttpServer(Recorder(), "127.0.0.1", 0, head_timeout=0.3, keep_alive_timeout=0.3,
                                  body_timeout=0.3).start()
        try:
            data = await _exchange(server.bound_port, junk, timeout=3)
            assert data == b"" or data.startswith(b"HTTP/1.1 ")
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{server.bound_port}/honest")
            assert answer.json()["path"] == "/honest"
        finally:
            await server.stop()

    asyncio.run(run())


async def test_a_full_pipeline_keeps_the_socket_unread_while_its_requests_run() -> None:
    """Requests queued behind a running one up to the pipeline's depth stop the socket being read; answering
    them one by one must not resume reading while the queue is still full (nor may a running request reading
    its own body reopen it)."""
    from backends.http_server import _PIPELINE_DEPTH

    releases: list[asyncio.Event] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()  # its own body: reading it must not reopen a socket held for a full queue
        release = asyncio.Event()
        releases.append(release)
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    server = await HttpServer(app, "127.0.0.1", 0).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"POST /q HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nq" * (_PIPELINE_DEPTH + 4)
                     + b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        async with asyncio.timeout(3):
            while not server.connections or next(iter(server.connections)).parsing is None or not releases:
                await asyncio.sleep(0.01)
        (conn,) = server.connections
        for answered in range(3):  # the queue is still over its depth after each of these answers
            assert conn.read_paused and len(conn.pipeline) > _PIPELINE_DEPTH, (answered, len(conn.pipeline))
            waiting = len(releases)
            releases[-1].set()
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            async with asyncio.timeout(3):
                while len(releases) == waiting:  # the next queued request is running (and read its body)
                    await asyncio.sleep(0.01)
        writer.close()
    finally:
        await server.stop()
