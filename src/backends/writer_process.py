"""The parent's handle on a single-writer child process: start it, send framed requests, hear the answers.

Both SQLite single writers (the witness's ``writer_child`` and the node database's ``poot_writer_child``)
are driven through this one class; the frame format is ``backends.frames`` and the children's loop is
``backends.frames.serve``-shaped (read a request, answer it, in order, until the input ends).

Why threads and not an asyncio subprocess: the witness drives its child from a private event loop on its
own thread, and flushes a witness nobody closed from an ``atexit`` handler, where executors already refuse
work; plain pipes with a sender thread (so the loop stays free while a large batch goes down the pipe) and
a reader thread (each answer resolves its request's future on the owner's loop) work in every one of those
places.

Requests are transactions of the child, answered in order. When the child ends with requests unanswered,
each of them may or may not have committed (it can die between COMMIT and its answer). The component
finds out from the database, never by sending them again: it stops the child (nothing can commit after
that), asks the owner's ``stored`` callback which of the requests' ids are in the database, and resolves
each unanswered request with ``Lost(exit_code, committed)``: committed if any of its ids is stored (one
transaction: all of it or none), not committed if none is, ``None`` if that could not be read.

Secrets go down the pipe as the first frame (``first``), never in argv or the environment.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from backends.frames import encode_frame, read_frame

__all__ = ["Lost", "StoredIds", "WriterProcess"]

#: the owner's reconciliation: which of these ids are in the database (run on the owner's loop)
StoredIds = Callable[[list[str]], Awaitable[Collection[str]]]


class Lost(NamedTuple):
    """The answer of a request the child never answered."""

    exit_code: int | None
    committed: bool | None  # by its ids in the database; None: unknown (no ids, no callback, unreadable)


class WriterProcess:
    """``python -m <module> <args>`` with framed stdin/stdout; each request a future on ``loop``, answered
    in order (or resolved as ``Lost`` once the child is gone)."""

    def __init__(self, module: str, args: Sequence[str] = (), *, loop: asyncio.AbstractEventLoop,
                 first: Any = None, pythonpath: str | None = None, name: str = "writer",
                 stored: StoredIds | None = None) -> None:
        self._loop = loop
        self._stored = stored
        self._pending: deque[tuple[asyncio.Future[Any], tuple[str, ...]]] = deque()  # unanswered, oldest first
        self.ended = False  # the child's output ended: it is gone or going, and takes no more requests
        self._ending: asyncio.Task[None] | None = None
        #: the child's exit code, once its output ended and its unanswered requests are resolved
        self.done: asyncio.Future[int | None] = loop.create_future()
        env: Mapping[str, str] | None = None
        if pythonpath is not None:  # where the child finds this project when the parent found it by a path
            env = {**os.environ,
                   "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, close_fds=True, env=env)
        self.pid = self._proc.pid
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        self._frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        if first is not None:
            self._frames.put(encode_frame(first))
        # Own threads, not executors: at interpreter exit the executors refuse work before atexit runs.
        self._sender = threading.Thread(target=self._send_frames, name=f"{name}-send", daemon=True)
        self._reader = threading.Thread(target=self._read_answers, name=f"{name}-answers", daemon=True)
        self._sender.start()
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def _send_frames(self) -> None:
        try:
            while (frame := self._frames.get()) is not None:
                self._stdin.write(frame)
                self._stdin.flush()
            self._stdin.close()  # end of input: the child finishes what it has and exits
        except (OSError, ValueError):
            self.kill()  # a broken pipe: the child is gone or going; its reader reports the end

    def _read_answers(self) -> None:
        try:
            while (message := read_frame(self._stdout)) is not None:
                self._deliver(message)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):
            pass
        finally:
            self._deliver(None)

    def _deliver(self, message: Any | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._answer, message)
        except RuntimeError:  # the owner's loop is closed: nobody is listening any more
            pass

    def _answer(self, message: Any | None) -> None:
        if message is None:
            self.ended = True
            self._ending = self._loop.create_task(self._lose_pending())
            return
        if not self._pending:  # an answer nobody asked for: a broken child
            self.kill()
            return
        fut, _ = self._pending.popleft()
        if not fut.done():
            fut.set_result(message)

    async def _lose_pending(self) -> None:
        self.kill()  # gone before anything is read: nothing of theirs can commit after this
        code = await self.wait()
        pending = list(self._pending)
        self._pending.clear()
        ids = [i for _, request_ids in pending for i in request_ids]
        stored: Collection[str] | None = ()
        if ids and self._stored is not None:
            try:
                stored = set(await self._stored(ids))
            except Exception:  # noqa: BLE001 - the database cannot say now: unknown, not "not stored"
                stored = None
        for fut, request_ids in pending:
            if not fut.done():
                committed = None if stored is None or self._stored is None or not request_ids else \
                    any(i in stored for i in request_ids)
                fut.set_result(Lost(code, committed))
        if not self.done.done():
            self.done.set_result(code)

    def submit(self, message: Any, ids: Sequence[str] = (), *, fast: bool = False) -> asyncio.Future[Any]:
        """Queue one request (written by the sender thread, answered in order); ``ids`` are what its
        transaction stores, for reconciliation. The future holds the child's answer or a ``Lost``.
        Call on the owner's loop."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self.ended:  # not sent: it cannot have committed
            fut.set_result(Lost(self._proc.poll(), False))
            return fut
        self._pending.append((fut, tuple(ids)))
        self._frames.put(encode_frame(message, fast=fast))
        return fut

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    def abandon(self) -> None:
        """The owner's loop stops listening (it moved to another loop): end the child's input, and resolve
        what is unanswered as lost with an unknown outcome, for the owner to reconcile itself. Called from
        the new loop's thread, once the old one no longer runs this component's callbacks."""
        self.end_input()
        pending = list(self._pending)
        self._pending.clear()
        for fut, _ in pending:
            try:
                fut.get_loop().call_soon_threadsafe(
                    lambda f=fut: f.done() or f.set_result(Lost(None, None)))
            except RuntimeError:  # that loop is closed
                pass

    def end_input(self) -> None:
        """No more requests: the child answers what it has, then exits."""
        self._frames.put(None)

    async def finish(self, timeout: float = 30.0) -> int | None:
        """End the child's input once every request is written, and wait for it to exit (and for its
        unanswered requests, if any, to be reconciled); its exit code."""
        self.end_input()
        try:
            return await asyncio.wait_for(asyncio.shield(self.done), timeout)
        except TimeoutError:
            self.kill()
            return await asyncio.wait_for(asyncio.shield(self.done), 5)

    async def wait(self, timeout: float = 30.0) -> int | None:
        """The child's exit code once it has exited (killed after ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while (code := self._proc.poll()) is None:
            if loop.time() > deadline:
                self.kill()
                deadline = loop.time() + 5
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
