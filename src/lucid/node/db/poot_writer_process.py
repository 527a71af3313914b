"""The parent side of the PoOT writer process (poot_writer_child): start it, send groups, read answers.

Why a process: a PoOT group commit costs about as much CPU as validating the proofs in it (~0.1 ms a
proof each here), and on the writer thread both share one GIL, so they ran one after the other. The
writer process has its own interpreter on the other core: the event loop validates the next groups
while the process commits the previous ones (up to ``depth`` groups in flight). One process per
NodeDatabase file; it runs only ``poot_sqlite.group_transaction``, every other write stays on the
writer thread, and SQLite's write lock (BEGIN IMMEDIATE, busy_timeout) orders the two.

Failure: if the process dies, every group in flight fails with ``WriterProcessLost``. Such a group may
or may not have been committed (it dies between COMMIT and its answer, or before): the repository
finds out from the database, by the results' ids, never by sending it again. The next group starts a
new process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

from backends.writer_process import WriterProcess
from lucid.node.errors import InternalNodeError

__all__ = ["PoOTWriterProcess", "WriterProcessLost", "WriterProcessError"]

_SRC = str(Path(__file__).resolve().parents[3])  # the directory holding the ``lucid`` package
#: the module run as the writer process (a crash test runs a wrapper of it that dies between commit and answer)
CHILD_MODULE = "lucid.node.sqlite_writer.poot_writer_child"


class WriterProcessLost(InternalNodeError, RuntimeError):
    """The process ended with groups in flight: whether each was committed is for the database to say."""

    default_message = "the PoOT writer process ended with writes in flight"


class WriterProcessError(InternalNodeError, RuntimeError):
    """The process rolled the group back (the message names the SQLite error)."""

    default_message = "the PoOT writer process rolled a group back"


def _fail(in_flight: deque[asyncio.Future[dict[int, str]]], exc: BaseException) -> None:
    while in_flight:
        fut = in_flight.popleft()
        if not fut.done():
            fut.set_exception(exc)


class PoOTWriterProcess:
    """One writer process per database file (``backends.writer_process``), with a future per group."""

    def __init__(self, path: str, pragmas: tuple[str, ...]) -> None:
        self.path = path
        self.pragmas = pragmas
        self._proc: WriterProcess | None = None
        self._reader: asyncio.Task[None] | None = None
        # the current process's groups in flight, oldest first (each process has its own: a dead one's
        # reader fails only its own groups, even once a new process is running)
        self._in_flight: deque[asyncio.Future[dict[int, str]]] = deque()
        self._starting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.starts = 0  # processes started so far (a restart after a loss counts)

    @property
    def running(self) -> bool:
        """A live process whose answers go to the running event loop."""
        if self._proc is None or self._reader is None or self._reader.done() or not self._proc.alive:
            return False
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the process unless it runs (concurrent callers share one start)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a database used from another event loop: that loop's process is left
            self._leave_other_loop()
            self._starting, self._loop = asyncio.Lock(), loop
        assert self._starting is not None
        async with self._starting:
            if self._closed:
                raise WriterProcessLost("the database was disposed")
            if self.running:
                return
            try:
                self._proc = WriterProcess(CHILD_MODULE, (self.path, *self.pragmas), loop=loop, pythonpath=_SRC,
                                           name="poot-writer")
            except OSError as exc:
                raise WriterProcessLost(f"the PoOT writer process could not start: {exc}") from exc
            self.starts += 1
            self._in_flight = deque()
            self._reader = asyncio.create_task(self._read_answers(self._proc, self._in_flight),
                                               name="poot-writer-answers")

    def submit(self, now: datetime, cutoff: datetime, store_output: bool,
               items: list[tuple[Any, ...]]) -> asyncio.Future[dict[int, str]]:
        """Send one group (the process must be running); the future holds {index: rejection code}."""
        if not self.running:
            raise WriterProcessLost("the PoOT writer process is not running")
        assert self._proc is not None
        fut: asyncio.Future[dict[int, str]] = asyncio.get_running_loop().create_future()
        self._proc.send((now, cutoff, store_output, items))
        self._in_flight.append(fut)
        return fut

    @staticmethod
    async def _read_answers(proc: WriterProcess, in_flight: deque[asyncio.Future[dict[int, str]]]) -> None:
        while (message := await proc.answers.get()) is not None:
            status, value = message
            fut = in_flight.popleft()
            if fut.done():
                continue
            if status == "ok":
                fut.set_result(value)
            else:
                fut.set_exception(WriterProcessError(value))
        # the process is gone before the groups fail: nothing of theirs can commit after this
        proc.kill()
        code = await proc.wait()
        _fail(in_flight, WriterProcessLost(f"the PoOT writer process ended (exit code {code})"))

    def _leave_other_loop(self) -> None:
        """Ending its input lets that process finish its group and exit; that loop can no longer hear
        the answers, so its groups in flight fail as lost (and are reconciled by whoever awaits them)."""
        if self._proc is not None:
            self._proc.end_input()
        lost = WriterProcessLost("the database moved to another event loop")
        while self._in_flight:
            fut = self._in_flight.popleft()
            with contextlib.suppress(RuntimeError):  # that loop may be closed already
                fut.get_loop().call_soon_threadsafe(lambda f=fut: f.done() or f.set_exception(lost))
        self._proc = self._reader = None

    async def close(self, timeout: float = 10.0) -> None:
        """Let the process finish what it was sent (its input ends), then stop it; no other starts."""
        self._closed = True
        proc, reader = self._proc, self._reader
        if proc is None:
            return
        if self._loop is not asyncio.get_running_loop():
            self._leave_other_loop()
            return
        await proc.finish(timeout)
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(reader, timeout)
        _fail(self._in_flight, WriterProcessLost("the PoOT writer process was closed"))
        self._proc = self._reader = None
