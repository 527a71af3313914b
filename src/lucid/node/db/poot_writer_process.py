"""The parent side of the PoOT writer process (poot_writer_child): start it, send groups, read answers.

Why a process: a PoOT group commit costs about as much CPU as validating the proofs in it (~0.1 ms a
proof each here), and on the writer thread both share one GIL, so they ran one after the other. The
writer process has its own interpreter on the other core: the event loop validates the next groups
while the process commits the previous ones (up to ``depth`` groups in flight). One process per
NodeDatabase file; it runs only ``poot_sqlite.group_transaction``, every other write stays on the
writer thread, and SQLite's write lock (BEGIN IMMEDIATE, busy_timeout) orders the two.

Failure: if the process dies, every group in flight fails with ``WriterProcessLost``. Such a group may
or may not have been committed (it dies between COMMIT and its answer, or before): the component
(``backends.writer_process``) asks the database by the results' ids, through ``stored``, which the group
committer provides, and the error says what it found (``committed``); it is never sent again. The next
group starts a new process.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from backends.writer_process import Lost, StoredIds, WriterProcess
from lucid.node.errors import InternalNodeError

__all__ = ["PoOTWriterProcess", "WriterProcessLost", "WriterProcessError"]

_SRC = str(Path(__file__).resolve().parents[3])  # the directory holding the ``lucid`` package
#: the module run as the writer process (a crash test runs a wrapper of it that dies between commit and answer)
CHILD_MODULE = "lucid.node.sqlite_writer.poot_writer_child"


class WriterProcessLost(InternalNodeError, RuntimeError):
    """The process ended with the group in flight. ``committed``: what the database said of the group's
    ids (True, False), or None when it could not be read or the group's loop stopped listening."""

    default_message = "the PoOT writer process ended with writes in flight"
    committed: bool | None = None


class WriterProcessError(InternalNodeError, RuntimeError):
    """The process rolled the group back (the message names the SQLite error)."""

    default_message = "the PoOT writer process rolled a group back"


def _answered(out: asyncio.Future[dict[int, str]], answer: asyncio.Future[Any]) -> None:
    if out.done():
        return
    message = answer.result()
    if isinstance(message, Lost):
        lost = WriterProcessLost(f"the PoOT writer process ended (exit code {message.exit_code})")
        lost.committed = message.committed
        out.set_exception(lost)
    elif message[0] == "ok":
        out.set_result(message[1])
    else:
        out.set_exception(WriterProcessError(message[1]))


class PoOTWriterProcess:
    """One writer process per database file (``backends.writer_process``), with a future per group."""

    def __init__(self, path: str, pragmas: tuple[str, ...]) -> None:
        self.path = path
        self.pragmas = pragmas
        #: which validation ids are stored (the group committer's query), for the reconciliation of a loss
        self.stored: StoredIds | None = None
        self._proc: WriterProcess | None = None
        self._starting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.starts = 0  # processes started so far (a restart after a loss counts)

    @property
    def running(self) -> bool:
        """A live process whose answers go to the running event loop."""
        if self._proc is None or self._proc.ended or not self._proc.alive:
            return False
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    @property
    def in_flight(self) -> int:
        return self._proc.in_flight if self._proc is not None else 0

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
                                           name="poot-writer", stored=self.stored)
            except OSError as exc:
                raise WriterProcessLost(f"the PoOT writer process could not start: {exc}") from exc
            self.starts += 1

    def submit(self, now: datetime, cutoff: datetime, store_output: bool, items: list[tuple[Any, ...]],
               ids: list[str] | None = None) -> asyncio.Future[dict[int, str]]:
        """Send one group (the process must be running); the future holds {index: rejection code}.
        ``ids``: the group's validation ids, by which a loss is reconciled."""
        if not self.running:
            raise WriterProcessLost("the PoOT writer process is not running")
        assert self._proc is not None
        out: asyncio.Future[dict[int, str]] = asyncio.get_running_loop().create_future()
        self._proc.submit((now, cutoff, store_output, items), ids or ()).add_done_callback(partial(_answered, out))
        return out

    def _leave_other_loop(self) -> None:
        """Ending its input lets that process finish its group and exit; that loop can no longer hear
        the answers, so its groups in flight fail as lost (and are reconciled by whoever awaits them)."""
        if self._proc is not None:
            self._proc.abandon()
        self._proc = None

    async def close(self, timeout: float = 10.0) -> None:
        """Let the process finish what it was sent (its input ends), then stop it; no other starts."""
        self._closed = True
        proc = self._proc
        if proc is None:
            return
        if self._loop is not asyncio.get_running_loop():
            self._leave_other_loop()
            return
        await proc.finish(timeout)
        self._proc = None
