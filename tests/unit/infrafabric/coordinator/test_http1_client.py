"""The swarm side's small HTTP/1.1 client (``coordinator/http1.py``) against servers that misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from infrafabric.coordinator.http1 import HTTPError, Http1Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.base_events.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


async def test_keep_alive_reuses_one_connection_and_sends_json() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                seen.append(await _read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server, url = await _serve(handler)
    pool = Http1Pool(url, headers={"Authorization": "Bearer x"})
    for i in range(5):
        assert await pool.request("POST", "/v1/claims", json_body={"i": i}, params={"a": "b c"}) == (200, b"ok")
    await pool.aclose()
    server.close()
    assert connections == 1
    assert seen[0].startswith(b"POST /v1/claims?a=b+c HTTP/1.1") and b'{"i":0}' in seen[0]
    assert b"Authorization: Bearer x" in seen[0]


@pytest.mark.parametrize("answer", [
    b"",  # closed before answering
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # cut inside the body
    b"garbage\r\n\r\n",  # not HTTP
])
async def test_a_broken_answer_is_an_http_error_and_the_connection_is_not_reused(answer: bytes) -> None:
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await _read_request(reader)
        if calls == 1:
            writer.write(answer)
        else:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await _serve(handler)
    pool = Http1Pool(url)
    with pytest.raises(HTTPError):
        await pool.request("GET", "/")
    assert await pool.request("GET", "/") == (204, b"")  # a fresh connection
    await pool.aclose()
    server.close()


async def test_a_server_that_never_answers_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(30)

    server, url = await _serve(handler)
    pool = Http1Pool(url, timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(HTTPError):
        await pool.request("GET", "/")
    assert loop.time() - started < 2
    await pool.aclose()
    server.close()


async def test_refused_connections_and_bad_urls_are_clear_errors() -> None:
    from backends.servers.ports import free_port

    with pytest.raises(HTTPError):
        await Http1Pool(f"http://127.0.0.1:{free_port()}").request("GET", "/")
    with pytest.raises(ValueError):
        Http1Pool("ftp://example")


async def test_a_kept_alive_connection_the_server_closed_is_replaced_not_reported() -> None:
    """The server answers, then closes the idle connection (a keep-alive timeout): the next request must
    go on a new connection, once, instead of failing."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no "Connection: close": the client believes it may keep the connection

    server, url = await _serve(handler)
    pool = Http1Pool(url)
    for _ in range(3):
        assert await pool.request("POST", "/x", json_body={}) == (200, b"ok")
    await pool.aclose()
    server.close()
    assert connections == 3


async def _one_answer_server(answer: bytes) -> tuple[asyncio.base_events.Server, str, list[int]]:
    connections = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            while True:
                await _read_request(reader)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await _serve(handler)
    return server, url, connections


async def test_chunked_answers_are_joined_and_the_connection_kept() -> None:
    server, url, connections = await _one_answer_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    pool = Http1Pool(url)
    for _ in range(3):
        assert await pool.request("GET", "/") == (200, b"abcde")
    await pool.aclose()
    server.close()
    assert connections[0] == 1


async def test_connection_close_is_honoured() -> None:
    server, url, connections = await _one_answer_server(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    pool = Http1Pool(url)
    for _ in range(3):
        assert await pool.request("GET", "/") == (200, b"ok")
    await pool.aclose()
    server.close()
    assert connections[0] == 3  # never reused after the server said close


async def test_an_answer_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from infrafabric.coordinator import http1

    monkeypatch.setattr(http1, "_MAX_BODY", 10)
    server, url, _ = await _one_answer_server(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + b"x" * 11)
    pool = Http1Pool(url)
    with pytest.raises(HTTPError, match="too large"):
        await pool.request("GET", "/")
    await pool.aclose()
    server.close()


@pytest.mark.parametrize("name,value", [("X-Session", "a\r\nX-Evil: 1"), ("X-Bad\r\nName", "v"), ("", "v"),
                                        ("X-Nul", "a\0b"), ("A:B", "v")])
async def test_header_injection_is_refused_before_anything_is_sent(name: str, value: str) -> None:
    server, url, connections = await _one_answer_server(b"HTTP/1.1 204 No Content\r\n\r\n")
    pool = Http1Pool(url)
    with pytest.raises(ValueError, match="invalid HTTP header"):
        await pool.request("GET", "/", headers={name: value})
    with pytest.raises(ValueError, match="invalid HTTP header"):
        Http1Pool(url, headers={name: value})
    with pytest.raises(ValueError, match="invalid request target"):
        await pool.request("GET", "/a b\r\nX: y")
    await pool.aclose()
    server.close()
    assert connections[0] == 0


# ---------------------------------------------------------------------- streamed answers

_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_a_streamed_answer_arrives_piece_by_piece_and_its_connection_is_reused() -> None:
    connections = 0
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await _read_request(reader)
                writer.write(_SSE_HEAD + _chunk(b"data: one\n\n"))
                await writer.drain()
                await release.wait()  # the second piece only once the first was handed on
                writer.write(_chunk(b"data: two\n\n") + b"0\r\n\r\n")
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server, url = await _serve(handler)
    pool = Http1Pool(url, timeout=5)
    for _ in range(2):
        release.clear()
        pieces: list[bytes] = []
        async with pool.stream("POST", "/v1/chat", content=b"{}") as answer:
            assert answer.status == 200 and answer.content_type == "text/event-stream"
            async for piece in answer.chunks():
                pieces.append(piece)
                release.set()
        assert b"".join(pieces) == b"data: one\n\ndata: two\n\n" and pieces[0] == b"data: one\n\n"
    await pool.aclose()
    server.close()
    assert connections == 1


async def test_a_stream_cut_midway_or_stalled_raises_and_its_connection_is_not_reused() -> None:
    connections = 0
    mode = "cut"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(_SSE_HEAD + _chunk(b"data: one\n\n"))
        await writer.drain()
        if mode == "stall":
            await asyncio.sleep(5)
        writer.close()

    server, url = await _serve(handler)
    pool = Http1Pool(url, timeout=0.3)
    for mode in ("cut", "stall"):
        pieces: list[bytes] = []
        with pytest.raises(HTTPError):
            async with pool.stream("POST", "/v1/chat", content=b"{}") as answer:
                async for piece in answer.chunks():
                    pieces.append(piece)
        assert pieces == [b"data: one\n\n"]
    await pool.aclose()
    server.close()
    assert connections == 2  # neither broken connection went back to the pool


async def test_a_stream_left_early_closes_its_connection() -> None:
    server, url, connections = await _one_answer_server(
        _SSE_HEAD + _chunk(b"data: one\n\n") + _chunk(b"data: two\n\n") + b"0\r\n\r\n")
    pool = Http1Pool(url, timeout=5)
    async with pool.stream("POST", "/v1/chat", content=b"{}") as answer:
        async for _ in answer.chunks():
            break  # the client hung up after the first piece
    status, _ = await pool.request("POST", "/v1/chat", content=b"{}")  # a fresh connection, not a half-read one
    assert status == 200
    await pool.aclose()
    server.close()
    assert connections[0] == 2
