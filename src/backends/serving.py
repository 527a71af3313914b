"""Serving plumbing shared by every service command: an ASGI app on uvicorn inside the caller's loop, and
waiting for the signal that stops a service (a supervisor's SIGTERM, an operator's Ctrl-C)."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["AsgiServer", "until_signalled"]


async def until_signalled() -> None:
    """Return at SIGINT or SIGTERM (how a supervisor or an operator stops a service)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class AsgiServer:
    """An ASGI app served by uvicorn inside the caller's event loop; ``start`` returns once it listens
    (or raises why it could not: port taken, bad certificate)."""

    def __init__(self, app: Any, host: str, port: int, *, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                                    proxy_headers=False,  # no proxy in front is trusted
                                                    ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> "AsgiServer":
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
