"""The parent's handle on a single-writer child process: start it, send framed requests, hear the answers.

Both SQLite single writers (the witness's ``writer_child`` and the node database's ``poot_writer_child``)
are driven through this one class; the frame format is ``backends.frames`` and the children's loop is
``backends.frames.serve``-shaped (read a request, answer it, in order, until the input ends).

Why threads and not an asyncio subprocess: the witness drives its child from a private event loop on its
own thread, and flushes a witness nobody closed from an ``atexit`` handler, where executors already refuse
work; plain pipes with a sender thread (so the loop stays free while a large batch goes down the pipe) and
a reader thread (answers become items of an asyncio queue on the owner's loop) work in every one of those
places. ``None`` in ``answers`` means the child's output ended: the process is gone or going.

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
from collections.abc import Mapping, Sequence
from typing import Any

from backends.frames import encode_frame, read_frame

__all__ = ["WriterProcess"]


class WriterProcess:
    """``python -m <module> <args>`` with framed stdin/stdout, answered in order, on ``loop``'s queue."""

    def __init__(self, module: str, args: Sequence[str] = (), *, loop: asyncio.AbstractEventLoop,
                 first: Any = None, pythonpath: str | None = None, name: str = "writer") -> None:
        self._loop = loop
        self.answers: asyncio.Queue[Any | None] = asyncio.Queue()
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
            self._loop.call_soon_threadsafe(self.answers.put_nowait, message)
        except RuntimeError:  # the owner's loop is closed: nobody is listening any more
            pass

    def send(self, message: Any, *, fast: bool = False) -> None:
        """Queue one request (written by the sender thread; answers come back in the same order)."""
        self._frames.put(encode_frame(message, fast=fast))

    def end_input(self) -> None:
        """No more requests: the child answers what it has, then exits."""
        self._frames.put(None)

    async def finish(self, timeout: float = 30.0) -> int | None:
        """End the child's input once every request is written, and wait for it to exit; its exit code."""
        self.end_input()
        return await self.wait(timeout)

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
