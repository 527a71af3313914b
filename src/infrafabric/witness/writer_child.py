"""The SQLite writer process of a witness: seals and commits the batches its parent sends.

    python -m infrafabric.witness.writer_child     (started by ``writer_process.WriterProcess``)

Why a process: on one interpreter the thread that logs, the thread that seals and the thread that
commits shared one GIL, and every statement the commit thread ran gave the GIL up and then waited
for it behind the other two (up to a switch interval each time), so appends stopped near 40k/s with
one of the two cores idle. Here the parent only validates and queues entries; this process seals on
its main thread while its commit thread runs the SQLite transaction of the previous batch. This
process runs nothing else, so it can use a short switch interval (0.5 ms) without imposing it on
anyone: the commit thread gets the GIL back soon after each statement.

Protocol (stdin/stdout, each frame a 4-byte little-endian length and a pickle): the parent sends an
init dict (database, private key, signing group, high water, pipeline), then ``(number, entries)``
batches; this process answers ``("ok", number, log_size, head_hash, tree_edge, checkpoint)`` once a batch is committed, in order, or
``("error", number, error_code, message)`` and exits: the parent learns from the database which
batches were committed, starts a new writer and sends the rest. End of input: commit what was
received, then exit.
"""

from __future__ import annotations

import gc
import os
import queue
import sys
import threading
from itertools import chain
from typing import Any, BinaryIO, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backends.frames import read_frame, write_frame

from .keys import WitnessKeys
from .merkle import CompactRange
from .seal import EntrySealer
from .errors import WitnessHeadUnprovenError
from .store.base import ROW_CONTENT_HASH, Sealed
from .trust import TrustedHead, prove_head
from .store.sqlite_append import SqliteAppender

SWITCH_INTERVAL = 0.0005
GC_EVERY_BATCHES = 64


class _Writer:
    def __init__(self, init: dict[str, Any], out: BinaryIO,
                 after_commit: Callable[[int], None] | None = None) -> None:
        keys = WitnessKeys.from_private(Ed25519PrivateKey.from_private_bytes(init["private_key"]))
        self.sealer = EntrySealer(keys, init["entries_per_signature"])
        self.sealer.high_water = init["high_water"]
        trusted = init.get("trusted")  # (size, head hash, root, tree edge): the newest head the parent trusts
        if trusted is not None:
            size, head_hash, root, frontier_text = trusted
            self.sealer.trust.remember(TrustedHead(size, head_hash, root, CompactRange.from_text(frontier_text)))
        self.pipeline = bool(init.get("pipeline", True))
        self.appender = SqliteAppender(init["database"], background_checkpoints=True)
        self.out = out
        self.out_lock = threading.Lock()
        self.sealed: queue.Queue[tuple[int, list[Any], Sealed | None] | None] = queue.Queue(maxsize=2)
        # the head after the last commit whose batch had to be resealed (another writer came in between):
        # the main thread predicts from it instead of from its own last sealed batch
        self.actual_head: tuple[int, str, CompactRange] | None = None
        self.after_commit = after_commit  # called with the number of commits so far, before the answer

    def answer(self, message: tuple[Any, ...]) -> None:
        try:
            with self.out_lock:
                write_frame(self.out, message, fast=True)
        except OSError:  # the parent is gone: nobody is waiting for this answer, and nothing else is to do
            os._exit(0)

    def commit_loop(self) -> None:
        commits = 0
        while (item := self.sealed.get()) is not None:
            number, batch, presealed = item
            try:
                committed = self._append(batch, presealed)
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which reconciles and restarts
                self.answer(("error", number, getattr(exc, "error_code", "WITNESS_STORAGE_ERROR"),
                             str(getattr(exc, "message", exc))))
                os._exit(3)
            self.sealer.trust.confirm(committed.frontier.size, committed.rows[-1][ROW_CONTENT_HASH])
            if committed is not presealed:
                self.actual_head = committed.head
            commits += 1
            if self.after_commit is not None:
                self.after_commit(commits)
            cp = committed.checkpoint
            self.answer(("ok", number, committed.frontier.size, committed.rows[-1][ROW_CONTENT_HASH],
                         committed.frontier.to_text(), (cp.size, cp.root, cp.timestamp, cp.key_id, cp.signature)))

    def _append(self, batch: list[Any], presealed: Sealed | None) -> Sealed:
        """Append; a head this process did not seal (another writer's, or the log at start) is proven
        first (``trust.py``), and one that cannot be proven is an error: nothing is signed after it."""
        for _ in range(8):
            try:
                return self.appender.append(batch, self.sealer.seal, presealed)
            except WitnessHeadUnprovenError:
                prove_head(self.sealer.trust, self.appender.signed_head, self.appender.link_rows)
                presealed = None
        raise WitnessHeadUnprovenError("other writers kept moving the head while this one proved it")

    def run(self, stream: BinaryIO) -> None:
        committer = threading.Thread(target=self.commit_loop, name="witness-writer-commit")
        committer.start()
        predicted: tuple[int, str, CompactRange] | None = None  # the head after the last batch sealed here
        try:
            while (message := read_frame(stream)) is not None:
                number, batch = message
                actual, self.actual_head = self.actual_head, None
                if actual is not None:
                    predicted = actual
                presealed = None
                if predicted is not None and self.pipeline:
                    size, head_hash, frontier = predicted
                    try:  # seal after the predicted head while the previous batch commits
                        presealed = self.sealer.seal(size, head_hash, frontier.copy(), batch)
                        presealed.params = tuple(chain.from_iterable(presealed.rows))
                    except Exception:  # noqa: BLE001 - the commit thread seals under the lock and reports
                        presealed = None
                predicted = presealed.head if presealed is not None else None
                self.sealed.put((number, batch, presealed))
                if number % GC_EVERY_BATCHES == 0:
                    gc.collect()
        finally:
            self.sealed.put(None)
            committer.join()
            self.appender.close()


def main(after_commit: Callable[[int], None] | None = None) -> None:
    """The process's entry point; ``after_commit`` is for a caller that wraps it (the crash tests start a
    writer that dies between a commit and its answer: ``tests/fixtures/crashing_witness_writer.py``)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Batches make thousands of lists and tuples and no reference cycles: automatic collections would
    # only rescan them (a measurable share of the sealing thread); one full collection every
    # GC_EVERY_BATCHES batches frees whatever cycle a rare error leaves behind.
    gc.disable()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    init = read_frame(stdin)
    if init is None:
        return
    _Writer(init, stdout, after_commit).run(stdin)


if __name__ == "__main__":
    main()
