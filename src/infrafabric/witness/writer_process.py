"""The parent's handle on one SQLite writer process (``writer_child``): start it, send batches, hear back.

Runs on the witness's writer thread and its private event loop. Pipes are plain blocking file objects:
a sender thread writes the frames (so the loop stays free for reads while a large batch goes down the
pipe) and a reader thread turns the child's answers into items of an asyncio queue; ``None`` means
the child's output ended, i.e. the process is gone. No asyncio subprocess: its child watcher would
have to run on the main thread's loop in some Python versions, and this loop is private to a thread.
"""

from __future__ import annotations

import asyncio
import pickle
import queue
import subprocess
import sys
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization

from backends.frames import encode_frame, read_frame

from .keys import WitnessKeys


#: the module run as the writer process (a crash test runs a wrapper of it that dies between commit and answer)
CHILD_MODULE = "infrafabric.witness.writer_child"


class WriterProcess:
    def __init__(self, database: str, keys: WitnessKeys, *, entries_per_signature: int, high_water: int,
                 pipeline: bool, loop: asyncio.AbstractEventLoop,
                 trusted: tuple[int, str, str, str] | None = None) -> None:
        self._loop = loop
        self.answers: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )
        self.pid = self._proc.pid
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        self._frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        private = keys.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                 serialization.NoEncryption())
        # the key travels over the pipe only: never in argv, the environment or a file
        self._frames.put(encode_frame({"database": database, "private_key": private,
                                 "entries_per_signature": entries_per_signature, "high_water": high_water,
                                 "pipeline": pipeline, "trusted": trusted}))
        # Own threads, not executors: at interpreter exit the executors refuse work before atexit runs,
        # and the final flush of a witness that was never closed happens in an atexit handler.
        self._sender = threading.Thread(target=self._send_frames, name="witness-writer-send", daemon=True)
        self._reader = threading.Thread(target=self._read_answers, name="witness-writer-answers", daemon=True)
        self._sender.start()
        self._reader.start()

    def _send_frames(self) -> None:
        try:
            while (frame := self._frames.get()) is not None:
                self._stdin.write(frame)
                self._stdin.flush()
            self._stdin.close()  # end of input: the child commits what it has and exits
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

    def _deliver(self, message: tuple[Any, ...] | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self.answers.put_nowait, message)
        except RuntimeError:  # the writer's loop is closed: nobody is listening any more
            pass

    def send(self, number: int, batch: list[Any]) -> None:
        """Queue one batch for the child (written by the sender thread, answered in order)."""
        self._frames.put(encode_frame((number, batch), fast=True))

    async def finish(self, timeout: float = 30.0) -> int | None:
        """End the child's input once every batch is written, and wait for it to exit; its exit code."""
        self._frames.put(None)
        return await self.wait(timeout)

    async def wait(self, timeout: float = 30.0) -> int | None:
        """The child's exit code once it has exited (killed after ``timeout``)."""
        deadline = self._loop.time() + timeout
        delay = 0.001
        while (code := self._proc.poll()) is None:
            if self._loop.time() > deadline:
                self.kill()
                deadline = self._loop.time() + 5
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()

