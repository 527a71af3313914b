"""Serving plumbing shared by every service command: an ASGI app on our HTTP/1.1 server inside the caller's loop, and
waiting for the signal that stops a service (a supervisor's SIGTERM, an operator's Ctrl-C)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["AsgiServer", "RelayResponse", "fixed_routes", "until_signalled"]

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorResponse = Callable[[int, str, str], Response]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def fixed_routes(routes: Mapping[tuple[str, str], Endpoint], error: ErrorResponse) -> AsgiApp:
    """An ASGI app for a fixed set of ``(path, method)`` routes: one dictionary lookup per request.

    Why not Starlette's router: its layers (error and exception middleware, a regex match per route, the
    request/response wrappers) ran on every request of services whose routes never change, a sixth of
    their CPU per call. ``error(status, code, message)`` builds the service's error envelope: for an
    unknown path (404), a known path with another method (405), and an exception an endpoint did not turn
    into an answer itself (500, logged here, never shown to the client)."""
    table = dict(routes)
    paths = {path for path, _ in table}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket protocol here
        endpoint = table.get((scope["path"], scope["method"]))
        if endpoint is None:
            response = error(405, "IF_ERR_METHOD_NOT_ALLOWED", "method not allowed on this route") \
                if scope["path"] in paths else error(404, "IF_ERR_NOT_FOUND", "no such route")
        else:
            try:
                response = await endpoint(Request(scope, receive))
            except Exception:  # noqa: BLE001 - a bug answers the envelope, never a traceback
                logger.exception("%s %s failed", scope["method"], scope["path"])
                response = error(500, "IF_ERR_INTERNAL", "internal error")
        await response(scope, receive, send)

    return app


class RelayResponse(Response):
    """Relays an async iterator of chunks as the response body, and stops reading it (closing it, so its
    ``finally`` runs) when the client hangs up.

    Why not Starlette's StreamingResponse: it runs each response in an anyio task group with a cancel scope
    (a task, a scope and their bookkeeping per stream: a fifth of the model gateway's CPU per streamed
    call); this watches for the hang-up with one plain task and cancels the relay itself."""

    def __init__(self, chunks: AsyncIterator[bytes], status_code: int = 200, media_type: str | None = None,
                 on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """``on_close`` runs once the response is over, however it ended, after ``chunks`` is closed: closing an
        async generator that never started runs none of its ``finally`` blocks, so cleanup that must happen
        (a connection to give back, a charge to settle) goes here too."""
        self.chunks = chunks
        self.status_code = status_code
        self.media_type = media_type
        self.on_close = on_close
        self.init_headers(None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        state = {"finished": False, "hung_up": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass  # a body the endpoint did not read
            if not state["finished"]:
                state["hung_up"] = True
                relay.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            state["finished"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["hung_up"]:
                raise
            relay.uncancel()  # our own cancellation, done with: the server's task goes on
        finally:
            state["finished"] = True
            watcher.cancel()
            try:
                aclose = getattr(self.chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                if self.on_close is not None:
                    await self.on_close()


async def until_signalled() -> None:
    """Return at SIGINT or SIGTERM (how a supervisor or an operator stops a service)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class AsgiServer:
    """An ASGI app served by the platform's HTTP/1.1 server (``backends.http_server``) inside the caller's
    event loop; ``start`` returns once it listens (or raises why it could not: port taken, bad certificate)."""

    def __init__(self, app: Any, host: str, port: int, *, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None) -> None:
        from backends.http_server import HttpServer

        context = None
        if ssl_certfile:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(ssl_certfile, ssl_keyfile)
        self.http = HttpServer(app, host, port, ssl=context)

    @property
    def port(self) -> int:
        return self.http.bound_port

    async def start(self) -> "AsgiServer":
        await self.http.start()
        return self

    async def stop(self) -> None:
        await self.http.stop()
