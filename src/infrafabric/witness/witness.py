"""The witness: a non-blocking ``log`` for hot paths, and a background writer that group-commits.

``log`` validates, serialises params and queues the entry (a few microseconds, no I/O). One writer
thread per witness runs a private event loop that owns the store for reads and drains the queue in
batches. A SQLite log is written by a writer process by default (``writer_child``): the batches go
down a pipe, and the process seals them (sequence numbers, hash links, Ed25519 signatures, a signed
checkpoint, see ``seal.py``) and commits each in one transaction, on its own interpreter and core.
Other stores, or ``writer="thread"``, seal on a seal thread and commit on the store's thread, batch
k+1 sealed while batch k commits. Either way, every writer of a log takes the store's cross-writer
lock, so all of them form one chain. ``flush`` waits until everything queued before the call is
durable; reads flush first, so callers read their own writes.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import io
import itertools
import json
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import (
    check_name,
    check_trace_id,
    format_timestamp,
    normalise_severity,
    params_to_json,
    parse_since,
)
from .checkpoint import Checkpoint
from .errors import (
    WitnessClosedError,
    WitnessFormatError,
    WitnessHeadRewrittenError,
    WitnessHeadUnprovenError,
    WitnessInputError,
    WitnessStorageError,
    WitnessTimeoutError,
)
from .export import summarise_trace, write_export
from .keys import WitnessKeys, load_or_create_keys
from .merkle import CompactRange, MerkleTree
from .publish import PublishedCheckpoint, publishers_for, read_all
from .seal import EntrySealer
from .trust import TrustedHead
from .store import Query, Sealed, StoredEntry, make_store
from .store.base import ROW_CONTENT_HASH, PendingEntry
from .store.memory import MemoryStore
from .verify import VerificationReport
from .verify_store import inclusion_in_store, verify_store

T = TypeVar("T")
_LIVE: "weakref.WeakSet[Witness]" = weakref.WeakSet()
_dump_trace = json.JSONEncoder(ensure_ascii=True).encode


WRITER_ENV = "INFRAFABRIC_WITNESS_WRITER"
# errors a retry cannot cure: the log's head cannot be proven, or the log is smaller than it was
FATAL_CODES = frozenset(("WITNESS_HEAD_REWRITTEN", "WITNESS_LOG_ROLLED_BACK", "WITNESS_PUBLISHED_INVALID"))
_PROCESS_DEPTH = 3  # batches in a writer process at once: one committing, one sealed, one being sealed
_INLINE_SEAL = 32  # batches this small are sealed on the writer thread (see _preseal)
WRITER_MODES = ("auto", "process", "thread")


def _writer_mode(writer: str | None, store: object) -> str:
    """``process`` for SQLite files unless ``thread`` is asked for (argument, else $INFRAFABRIC_WITNESS_WRITER)."""
    explicit = writer is not None
    mode = writer if explicit else (os.environ.get(WRITER_ENV) or "auto")
    if mode not in WRITER_MODES:
        raise WitnessInputError(f"writer must be one of {', '.join(WRITER_MODES)}, not {mode!r}",
                                error_code="WITNESS_INVALID_CONFIG")
    supported = sqlite_file_of(store) is not None
    if mode == "process" and explicit and not supported:
        raise WitnessInputError("the writer process serves SQLite logs only", error_code="WITNESS_INVALID_CONFIG")
    return "process" if mode != "thread" and supported else "thread"


def sqlite_file_of(store: object) -> str | None:
    """The database file of a SQLite store, None for any other store."""
    return getattr(store, "sqlite_file", None)


MAX_SQL_INT = 2**63 - 1  # the largest integer a SQL filter can bind (BIGINT, SQLite INTEGER)


def _filter_text(name: str, value: Any) -> str | None:
    """A text filter as the store can bind it: text that encodes to UTF-8 (no lone surrogates), else refused
    here rather than by the driver with a UnicodeEncodeError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise WitnessInputError(f"{name} must be text, not {type(value).__name__}", error_code="WITNESS_INVALID_FILTER")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise WitnessInputError(f"{name} is not valid Unicode text: {value!r:.60}",
                                error_code="WITNESS_INVALID_FILTER") from None
    return value


class Witness:
    """One tamper-evident log (see module docstring). Thread-safe; usable from any event loop."""

    def __init__(
        self,
        url: str = "memory://",
        key_dir: str | os.PathLike[str] | None = None,
        *,
        keys: WitnessKeys | None = None,
        max_batch: int = 4096,
        sign_threads: int = 2,
        start_timeout: float = 60.0,
        create_key: bool = True,
        pipeline: bool = True,
        max_pending: int = 1_000_000,
        entries_per_signature: int = 256,
        linger: float = 0.005,
        writer: str | None = None,
        publish: str | Sequence[str] | None = None,
        publish_interval: float = 1.0,
    ) -> None:
        if not isinstance(entries_per_signature, int) or entries_per_signature < 1:
            raise WitnessInputError("entries_per_signature must be a positive integer",
                                    error_code="WITNESS_INVALID_CONFIG")
        self._group = entries_per_signature
        self._linger = linger  # seconds a lone entry waits for company before it is sealed (group commit)
        self.url = url
        self._store = make_store(url)
        self._writer_mode = _writer_mode(writer, self._store)
        self._writer_pid: int | None = None
        if keys is None:
            if key_dir is None:
                if not isinstance(self._store, MemoryStore):
                    raise WitnessInputError("a persistent witness needs key_dir (or keys)", error_code="WITNESS_NO_KEY_DIR")
                keys = WitnessKeys.generate()
            else:
                keys = load_or_create_keys(key_dir, create=create_key)
        self._keys = keys
        self.key_dir = None if key_dir is None else Path(key_dir)
        # where signed checkpoints go outside the database (publish.py); default: a file in the key dir
        self._publishers = publishers_for(publish, self.key_dir, keys.key_id, url)
        self._publish_interval = publish_interval
        self._published_size = -1
        self._published_at = 0.0
        self._max_batch = max_batch
        self._pipeline = pipeline  # seal batch k+1 while batch k commits
        self._max_pending = max_pending  # bound on memory while the store is down
        self._queue: deque[PendingEntry] = deque()
        self._id_prefix = os.urandom(10).hex()
        self._id_counter = itertools.count()
        self._append_lock = threading.Lock()
        self._appended = 0
        self._committed = 0
        self._done = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._stopping = False
        self._idle = False
        self._lingering = False  # the writer is waiting a moment for more entries (see _idle_wait)
        self._hurry = False  # a flush is waiting: no lingering
        self._tree = MerkleTree()  # full tree, built only when proofs are asked for
        self._tree_lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signers = ThreadPoolExecutor(max_workers=max(sign_threads - 1, 1), thread_name_prefix="witness-sign") \
            if sign_threads > 1 else None
        # high_water: the largest log size this witness has seen committed (the log never shrinks)
        self._sealer = EntrySealer(keys, entries_per_signature, self._signers)
        self._seal_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness-seal")
        self._latest_record: PublishedCheckpoint | None = None
        self._publish_error: BaseException | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="witness-writer", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            raise WitnessStorageError(f"witness store {url} did not open within {start_timeout} s")
        if self._start_error is not None:
            self._thread.join(5)
            if self._signers:
                self._signers.shutdown(wait=False)
            self._seal_pool.shutdown(wait=False)
            raise self._start_error
        _LIVE.add(self)

    # ------------------------------------------------------------------ properties
    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._keys.public_key

    @property
    def public_key_pem(self) -> str:
        return self._keys.public_pem

    @property
    def key_id(self) -> str:
        return self._keys.key_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writer(self) -> str:
        """``process`` (a SQLite log written by a writer process) or ``thread``."""
        return self._writer_mode

    @property
    def writer_pid(self) -> int | None:
        """The pid of the running writer process, if any (started with the first batch, replaced if it exits)."""
        return self._writer_pid

    @property
    def pending(self) -> int:
        """Entries accepted by ``log`` and not yet durable."""
        return self._appended - self._committed

    @property
    def committed(self) -> int:
        """Entries this witness has made durable since it was opened (the metrics' appends)."""
        return self._committed

    # ------------------------------------------------------------------ hot path
    def log(
        self,
        component: str,
        operation: str,
        params: dict[str, Any] | None = None,
        severity: str = "INFO",
        trace_id: str | None = None,
    ) -> str:
        """Queue one entry and return its id. Never blocks on I/O; safe from threads and event loops."""
        if self._closed:
            raise WitnessClosedError("witness is closed")
        # a plain tuple in Pending's field order: no Python-level __new__ on the hot path, and it pickles
        # to the writer process without one either
        record: PendingEntry = (
            # 80 random bits per witness, then a counter (next() on itertools.count is atomic): unique,
            # in log order for one writer, so the id index grows at its right edge, and no syscall or
            # random draw per call (a getrandom syscall gives up the GIL, which queued every log call
            # behind the writer threads)
            f"{self._id_prefix}{next(self._id_counter):012x}",
            time.time_ns(),
            check_name("component", component),
            check_name("operation", operation),
            params_to_json(params),
            normalise_severity(severity),
            check_trace_id(trace_id),
        )
        with self._append_lock:  # close() sets _closed under this lock: an entry queued here is flushed by it
            if self._closed:
                raise WitnessClosedError("witness is closed")
            if self._appended - self._committed >= self._max_pending:
                raise WitnessStorageError(f"{self._max_pending} entries are waiting for the store: {self._error}",
                                          error_code="WITNESS_BACKLOG_FULL")
            self._queue.append(record)
            self._appended += 1
        if self._idle:
            self._kick()
        return record[0]

    def _kick(self) -> None:
        self._idle = False
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # loop already closed
                pass

    # ------------------------------------------------------------------ writer thread
    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._writer())
        finally:
            try:
                # reads other threads submitted (verify, query, ...) still pending when the writer stopped: cancel
                # them so their callers get WitnessClosedError instead of waiting forever on a closed loop
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _writer(self) -> None:
        self._wake = asyncio.Event()
        self._tree_lock = asyncio.Lock()
        try:
            await self._store.open(self._keys)
        except BaseException as exc:  # reported to the constructor
            self._start_error = exc
            self._ready.set()
            await self._store.close()
            return
        try:  # the newest published checkpoint is the first head this writer trusts (trust.py)
            await self._anchor_to_published()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            await self._close_publishers()
            await self._store.close()
            return
        self._ready.set()
        try:
            if self._writer_mode == "process":
                await self._write_loop_process()
            else:
                await self._write_loop()
        finally:
            try:
                await self._publish(force=True)
            except Exception:  # noqa: BLE001 - a failed last publish must not lose the store's close
                pass
            await self._close_publishers()
            await self._store.close()

    # ------------------------------------------------------------------ trust and publishing
    async def _anchor_to_published(self) -> None:
        newest = None
        for publisher in self._publishers:
            try:
                record = await publisher.read()
            except WitnessFormatError as exc:
                raise WitnessHeadRewrittenError(f"the checkpoint published in {publisher.name} is unreadable: "
                                                f"{exc.message}", error_code="WITNESS_PUBLISHED_INVALID") from None
            if record is None:
                continue
            if record.checkpoint.key_id != self._keys.key_id:
                raise WitnessHeadRewrittenError(
                    f"the checkpoint published in {publisher.name} is by key {record.checkpoint.key_id}, "
                    f"this witness holds {self._keys.key_id}", error_code="WITNESS_PUBLISHED_INVALID")
            try:
                self._sealer.trust.anchor(record.checkpoint, record.head_hash, record.frontier)
            except WitnessHeadRewrittenError as exc:
                raise WitnessHeadRewrittenError(f"{publisher.name}: {exc.message}",
                                                error_code="WITNESS_PUBLISHED_INVALID") from None
            if newest is None or record.checkpoint.size > newest.checkpoint.size:
                newest = record
        if newest is not None:
            self._published_size = newest.checkpoint.size
            self._latest_record = newest

    async def _prove_head(self) -> None:
        """Prove the store's current head to the sealer's trust (see ``trust.py``), in chunks of entries."""
        proof = self._sealer.trust.begin_proof(await self._store.signed_head())
        for first in range(proof.start, proof.end, proof.CHUNK):
            proof.add(await self._store.link_rows(first, min(first + proof.CHUNK, proof.end)))
        proof.finish()

    def _note_head(self, head_hash: str, checkpoint: Checkpoint, frontier_text: str) -> None:
        self._latest_record = PublishedCheckpoint(checkpoint, head_hash, frontier_text)

    async def _publish(self, force: bool = False) -> None:
        """Publish the newest committed checkpoint if it is new and (unless forced) the interval passed."""
        record = self._latest_record
        if record is None or not self._publishers or record.checkpoint.size <= self._published_size:
            return
        now = time.monotonic()
        if not force and now - self._published_at < self._publish_interval:
            return
        self._published_at = now
        for publisher in self._publishers:
            await publisher.publish(record)
        self._published_size = record.checkpoint.size

    async def _close_publishers(self) -> None:
        for publisher in self._publishers:
            try:
                await publisher.close()
            except Exception:  # noqa: BLE001 - closing a KV client must not hide the store's close
                pass

    async def _after_commit(self, n: int) -> None:
        """Acknowledge ``n`` entries; when the queue is empty (or a second passed), publish first, so that a
        returned ``flush`` also means its checkpoint is published. A failed publish is reported, not fatal."""
        try:
            await self._publish(force=not self._queue)
        except Exception as exc:  # noqa: BLE001 - the entries are durable; say why the anchor lags
            with self._done:
                self._publish_error = exc
        self._mark_committed(n)

    async def _preseal(self, head: tuple[int, str, CompactRange] | None, batch: list[PendingEntry]) -> Sealed | None:
        """Seal ``batch`` after the predicted head on the seal thread (overlaps the commit in flight)."""
        if head is None or not batch or not self._pipeline:
            return None
        size, head_hash, frontier = head
        if len(batch) <= _INLINE_SEAL:  # a handoff to the seal thread costs more than sealing a few entries
            try:
                return self._seal(size, head_hash, frontier.copy(), batch)
            except WitnessStorageError:
                return None
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._seal_pool, self._seal, size, head_hash, frontier.copy(), batch)
        except (RuntimeError, WitnessStorageError):  # executor closed, or a head to prove: seal under the lock
            return None

    async def _write_loop(self) -> None:
        """Group commit, pipelined: batch k+1 is sealed and signed while batch k commits.

        Batches commit strictly in queue order (k+1 is submitted only after k succeeded), so the
        first n entries logged are durable when ``_committed`` reaches n.
        """
        carry: list[PendingEntry] = []
        backoff = 0.02
        predicted: tuple[int, str, CompactRange] | None = None  # head after our last sealed batch
        inflight: tuple[asyncio.Task[Sealed], list[PendingEntry]] | None = None
        queue = self._queue
        while True:
            batch = carry
            carry = []
            while queue and len(batch) < self._max_batch:
                batch.append(queue.popleft())
            presealed = await self._preseal(predicted, batch) if self._error is None else None
            if inflight is not None:
                task, sent = inflight
                inflight = None
                try:
                    committed = await task
                except WitnessHeadUnprovenError:  # a head another writer (or a restart) left: prove it, retry
                    carry = sent + batch
                    predicted = None
                    try:
                        await self._prove_head()
                        continue
                    except Exception as exc:  # noqa: BLE001 - unprovable: reported below, never signed after
                        failure: Exception = exc
                    with self._done:
                        self._error = failure
                        self._done.notify_all()
                    if self._stopping:
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                except Exception as exc:  # keep both batches in order, report, back off, retry
                    carry = sent + batch
                    predicted = None
                    with self._done:
                        self._error = exc
                        self._done.notify_all()
                    if self._stopping:  # close() gave up waiting and has reported the failure
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.02
                self._error = None
                self._sealer.trust.confirm(committed.frontier.size, committed.rows[-1][ROW_CONTENT_HASH])
                self._note_head(committed.rows[-1][ROW_CONTENT_HASH], committed.checkpoint,
                                committed.frontier.to_text())
                await self._after_commit(len(sent))
                if presealed is None or not presealed.fits(*committed.head[:2]):
                    predicted = committed.head
                    presealed = await self._preseal(predicted, batch)
            if not batch:
                if self._stopping and not queue:
                    return
                await self._idle_wait()
                continue
            if self._error is not None:
                try:  # the failed commit may have succeeded before its error surfaced
                    present = await self._store.existing_ids([p[0] for p in batch])
                except Exception:  # noqa: BLE001 - store still down: retry the whole batch later
                    present = set()
                if present:
                    done = [p for p in batch if p[0] in present]
                    batch = [p for p in batch if p[0] not in present]
                    self._mark_committed(len(done))
                    presealed = None
                if not batch:
                    self._error = None
                    continue
            inflight = (asyncio.create_task(self._store.append(batch, self._seal, presealed)), batch)
            predicted = presealed.head if presealed is not None else None

    async def _write_loop_process(self) -> None:
        """Group commit through a writer process (SQLite): it seals and commits, this loop feeds it.

        Up to ``_PROCESS_DEPTH`` batches are in the child at once and come back in order. If the child
        exits (an error it reported, a crash, a kill), the batches it had are looked up by their ids:
        each batch is one transaction, so it is all there or none of it. The first batches found are
        acknowledged, the rest go first to the next writer process. Nothing is sent twice that was
        committed, and a batch whose fate cannot be read yet is resent: its ids are unique in the log,
        so a second copy cannot be stored.
        """
        from .writer_process import Lost, WriterProcess

        database = sqlite_file_of(self._store)
        assert database is not None
        loop = asyncio.get_running_loop()
        queue = self._queue
        child: WriterProcess | None = None
        # batches sent, oldest first: (number, entries, the child's answer or a writer_process.Lost)
        inflight: deque[tuple[int, list[PendingEntry], asyncio.Future[Any]]] = deque()
        carry: list[PendingEntry] = []
        numbers = itertools.count()
        backoff = 0.02
        assert self._wake is not None

        async def settle() -> None:
            """The oldest batch's answer: its head becomes trusted; an error or a lost child ends the child."""
            nonlocal backoff
            number, batch, answer = inflight[0]
            message = await answer
            if not isinstance(message, Lost) and message[0] == "ok":
                inflight.popleft()
                if number != message[1]:  # answers come in order; anything else is a broken child
                    raise WitnessStorageError(f"writer process answered batch {message[1]}, expected {number}")
                self._error = None
                backoff = 0.02
                _, _, size, head_hash, frontier_text, cp_fields = message
                checkpoint = Checkpoint(*cp_fields)
                self._sealer.trust.remember(TrustedHead(size, head_hash, checkpoint.root,
                                                        CompactRange.from_text(frontier_text)))
                self._note_head(head_hash, checkpoint, frontier_text)
                await self._after_commit(len(batch))
                return
            if not isinstance(message, Lost):  # ("error", number, code, message): rolled back; the child exits next
                with self._done:
                    self._error = WitnessStorageError(message[3], error_code=message[2])
                    self._done.notify_all()
            await child_ended()

        async def child_ended() -> None:
            """The child is gone: the batches it had were reconciled by their ids (writer_process.Lost). They
            commit in order, so the committed ones are a prefix; they are acknowledged, the rest go first to
            the next child. A batch whose fate could not be read is resent: its ids are unique in the log, so
            a second copy cannot be stored."""
            nonlocal child, carry, backoff
            assert child is not None
            code = await child.done
            child = None
            self._writer_pid = None
            lost = [(batch, answer.result()) for _, batch, answer in inflight]
            inflight.clear()
            done = 0
            while done < len(lost) and isinstance(lost[done][1], Lost) and lost[done][1].committed:
                done += 1
            if done:
                self._mark_committed(sum(len(batch) for batch, _ in lost[:done]))
            carry = [entry for batch, _ in lost[done:] for entry in batch] + carry
            if carry and self._error is None:
                with self._done:
                    self._error = WitnessStorageError(f"witness writer process exited with code {code}",
                                                      error_code="WITNESS_WRITER_LOST")
                    self._done.notify_all()
            if carry:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

        try:
            while True:
                if child is not None:
                    while inflight and (inflight[0][2].done() or len(inflight) >= _PROCESS_DEPTH):
                        await settle()
                        if child is None:
                            break
                    if child is not None and child.ended and not inflight:  # it died with nothing in it
                        await child_ended()
                if self._stopping and self._error is not None and child is None:
                    return  # close() gave up waiting and has reported the failure
                batch = carry
                carry = []
                while queue and len(batch) < self._max_batch:
                    batch.append(queue.popleft())
                if not batch:
                    if self._stopping and not queue and not inflight:
                        return
                    if inflight:
                        await settle()
                        continue
                    await self._idle_wait()
                    continue
                if child is None:
                    try:
                        newest = self._sealer.trust.newest
                        child = WriterProcess(database, self._keys, entries_per_signature=self._group,
                                              high_water=self._sealer.high_water, pipeline=self._pipeline, loop=loop,
                                              stored=self._store.existing_ids,
                                              trusted=None if newest is None else (
                                                  newest.size, newest.head_hash, newest.root,
                                                  newest.frontier.to_text()))
                        self._writer_pid = child.pid
                    except OSError as exc:
                        carry = batch
                        with self._done:
                            self._error = WitnessStorageError(f"cannot start the witness writer process: {exc}")
                            self._done.notify_all()
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 2.0)
                        continue
                number = next(numbers)
                inflight.append((number, batch, child.submit_batch(number, batch)))
        finally:
            if child is not None:
                if self._stopping and not inflight:
                    await child.finish()
                else:
                    child.kill()
                    await child.wait()
            self._writer_pid = None

    async def _idle_wait(self) -> None:
        """Sleep until ``log`` kicks (it does when it sees ``_idle``) or half a second has passed."""
        assert self._wake is not None
        if self._queue:
            return
        self._idle = True
        woken = False
        if not self._queue and not self._stopping:  # checked again: a log may have come in before _idle
            try:
                async with asyncio.timeout(0.5):  # no task per wait, unlike wait_for
                    await self._wake.wait()
                    woken = True
            except TimeoutError:
                pass
        self._wake.clear()
        self._idle = False
        if woken and self._linger > 0 and not self._stopping and not self._hurry:
            # Entries trickling in one at a time cost two signatures and a commit each: wait a moment for
            # more to share them (group commit). A flush or close cuts the wait short.
            self._lingering = True
            try:
                async with asyncio.timeout(self._linger):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._lingering = False
            self._wake.clear()
        self._hurry = False

    def _mark_committed(self, n: int) -> None:
        with self._done:
            self._committed += n
            self._done.notify_all()

    async def _sync_tree(self) -> None:
        size = await self._store.size()
        if size > self._tree.size:
            self._tree.extend(await self._store.leaves(self._tree.size, size))

    def _seal(self, size: int, head_hash: str, frontier: CompactRange, batch: Sequence[PendingEntry]) -> Sealed:
        """Runs under the store lock: chain ``batch`` after the head, sign it, extend the tree edge."""
        return self._sealer.seal(size, head_hash, frontier, batch)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120.0) -> T:
        loop = self._loop
        if loop is None or self._closed and not self._thread.is_alive():
            coro.close()
            raise WitnessClosedError("witness is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise WitnessStorageError("cannot block the writer thread on itself")
        try:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
        except concurrent.futures.CancelledError:
            raise WitnessClosedError("witness closed before the operation completed") from None

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or not self._thread.is_alive():
            coro.close()
            raise WitnessClosedError("witness is closed")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and not task.cancelling():  # the writer loop stopped under it, not our caller
                raise WitnessClosedError("witness closed before the operation completed") from None
            raise

    # ------------------------------------------------------------------ durability
    def flush(self, timeout: float | None = 60.0) -> int:
        """Wait until every entry logged before this call is durable; return the number committed."""
        target = self._appended
        if self._committed >= target:
            return self._committed
        self._hurry = True  # no group-commit wait for this one
        if self._idle or self._lingering:
            self._kick()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            while self._committed < target:
                if not self._thread.is_alive():
                    raise WitnessClosedError("witness writer stopped before the flush completed")
                err = self._error
                if err is not None and getattr(err, "error_code", None) in FATAL_CODES:
                    # retrying cannot help: the writer will not sign after this head until an operator acts
                    raise WitnessStorageError(f"flush failed: {getattr(err, 'message', err)}",
                                              error_code=err.error_code) from err  # type: ignore[attr-defined]
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    err = self._error
                    if err is not None:
                        code = getattr(err, "error_code", WitnessStorageError.error_code)
                        raise WitnessStorageError(f"flush failed: {getattr(err, 'message', err)}", error_code=code) from err
                    raise WitnessTimeoutError(f"flush did not complete within {timeout} s")
                self._done.wait(0.1 if remaining is None else min(remaining, 0.1))
        return self._committed

    async def aflush(self, timeout: float | None = 60.0) -> int:
        """``flush`` for coroutines: waits in a worker thread, never blocks the event loop."""
        if self._committed >= self._appended:
            return self._committed
        return await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        """Flush, stop the writer and release the store. Idempotent."""
        with self._append_lock:  # after this, log() refuses; everything it accepted is in _appended
            if self._closed:
                return
            self._closed = True
        try:
            if self._thread.is_alive():
                self.flush(timeout)
        finally:
            self._stopping = True
            self._hurry = True
            self._kick()
            self._thread.join(timeout)
            if self._signers is not None:
                self._signers.shutdown(wait=False)
            self._seal_pool.shutdown(wait=False)
            _LIVE.discard(self)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> "Witness":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads
    @staticmethod
    def _query(component: str | None, operation: str | None, since: Any, trace_id: str | None,
               until: Any = None, limit: int | None = None) -> Query:
        if limit is not None and (type(limit) is not int or limit < 1):
            raise WitnessInputError("limit must be a positive integer", error_code="WITNESS_INVALID_FILTER")
        return Query(component=_filter_text("component", component), operation=_filter_text("operation", operation),
                     since=parse_since(since), until=parse_since(until), trace_id=_filter_text("trace_id", trace_id),
                     limit=None if limit is None or limit > MAX_SQL_INT else limit)  # more than any log holds

    def entries(self, component: str | None = None, operation: str | None = None, since: Any = None,
                trace_id: str | None = None, *, until: Any = None, limit: int | None = None) -> list[StoredEntry]:
        q = self._query(component, operation, since, trace_id, until, limit)
        self.flush()
        return self._run(self._store.query(q))

    def query(self, component: str | None = None, operation: str | None = None, since: Any = None,
              trace_id: str | None = None, *, until: Any = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries (dicts, oldest first) matching every given filter, including not-yet-flushed ones."""
        return [e.to_dict() for e in self.entries(component, operation, since, trace_id, until=until, limit=limit)]

    async def aquery(self, component: str | None = None, operation: str | None = None, since: Any = None,
                     trace_id: str | None = None, *, until: Any = None, limit: int | None = None) -> list[dict[str, Any]]:
        q = self._query(component, operation, since, trace_id, until, limit)
        await self.aflush()
        return [e.to_dict() for e in await self._arun(self._store.query(q))]

    async def asearch(self, *, component: str | None = None, operation: str | None = None,
                      contains: str | None = None, before_seq: int | None = None, after_seq: int | None = None,
                      limit: int = 50, newest_first: bool = True) -> list[StoredEntry]:
        """A page of committed entries for a reader that pages through a large log (the console): filters,
        a literal, case-sensitive substring of the params' canonical JSON (``contains``: quotes and backslashes
        as written, other characters as the text they encode), and a seq cursor on either side. Does not wait for
        this witness's own pending appends: a page shows what is durable."""
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise WitnessInputError("limit must be an integer from 1 to 10000")
        for name, value in (("before_seq", before_seq), ("after_seq", after_seq)):
            if value is not None and (type(value) is not int or not 0 <= value < MAX_SQL_INT):
                raise WitnessInputError(f"{name} must be an integer from 0 to {MAX_SQL_INT - 1}",
                                        error_code="WITNESS_INVALID_FILTER")
        if contains is not None and (not isinstance(contains, str) or not 0 < len(contains) <= 256):
            raise WitnessInputError("contains must be a string of 1 to 256 characters")
        if contains is not None:  # params are stored as ASCII-only canonical JSON: match what is stored
            contains = "".join(c if 32 <= ord(c) < 128 else json.dumps(c)[1:-1] for c in contains)
        q = Query(component=_filter_text("component", component), operation=_filter_text("operation", operation),
                  contains=contains, limit=limit,
                  start_seq=0 if after_seq is None else after_seq + 1, end_seq=before_seq, newest_first=newest_first)
        return await self._arun(self._store.query(q))

    async def asize(self) -> int:
        """Entries committed so far (without waiting for this witness's pending appends)."""
        return await self._arun(self._store.size())

    def size(self) -> int:
        self.flush()
        return self._run(self._store.size())

    def latest_checkpoint(self) -> Checkpoint:
        """The newest signed checkpoint (covers everything flushed so far)."""
        self.flush()
        cp = self._run(self._store.latest_checkpoint())
        if cp is None:  # empty log: a signed statement that it is empty
            from .merkle import EMPTY_ROOT

            cp = Checkpoint.create(self._keys, 0, EMPTY_ROOT, format_timestamp(time.time_ns()))
        return cp

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint (milestones every 4096 entries, and the latest), oldest first."""
        self.flush()
        return self._run(self._store.checkpoints())

    def trace(self, trace_id: str) -> dict[str, Any]:
        """Every entry of one trace with a summary: components, time span, total cost."""
        return summarise_trace(trace_id, self.query(trace_id=check_trace_id(trace_id)))

    # ------------------------------------------------------------------ proofs
    async def _proof(self, fn: Any) -> Any:
        assert self._tree_lock is not None
        async with self._tree_lock:
            await self._sync_tree()
            return fn(self._tree)

    def inclusion_proof(self, seq: int, size: int | None = None) -> dict[str, Any]:
        """RFC 9162 audit path of entry ``seq`` in the tree of ``size`` entries (default: all).

        The leaf is built from the entry's content hashed again, not from its stored hash, and the root
        must be the one a stored checkpoint of that size signs (``checkpoint`` in the answer; None when
        no checkpoint of that size is kept): an edited row gets no proof."""
        self._flush_for_reading()

        async def prove() -> dict[str, Any]:
            assert self._tree_lock is not None
            async with self._tree_lock:
                await self._sync_tree()
                return await inclusion_in_store(self._store, self.public_key, seq, size, tree=self._tree)

        return self._run(prove())

    def consistency_proof(self, first: int, second: int | None = None) -> dict[str, Any]:
        """RFC 9162 proof that the log of ``second`` entries extends the log of ``first`` entries."""
        self.flush()

        def build(tree: MerkleTree) -> dict[str, Any]:
            n = tree.size if second is None else second
            proof = tree.consistency_proof(first, n)
            return {"first": first, "second": n, "first_root": tree.root(first).hex(),
                    "second_root": tree.root(n).hex(), "proof": [p.hex() for p in proof]}

        return self._run(self._proof(build))

    # ------------------------------------------------------------------ verification and export
    def _flush_for_reading(self) -> None:
        """Flush before a verification or export, but read what is stored even if the writer refuses to
        sign (a rewritten head is exactly when the stored log must be examined)."""
        try:
            self.flush()
        except WitnessStorageError as exc:
            if exc.error_code not in FATAL_CODES:
                raise

    def _snapshot(self) -> tuple[list[StoredEntry], Checkpoint | None]:
        self._flush_for_reading()

        async def read() -> tuple[list[StoredEntry], Checkpoint | None]:
            cp = await self._store.latest_checkpoint()  # read first: the entries read next extend it
            return await self._store.query(Query()), cp

        return self._run(read(), timeout=None)

    def verify(self, trusted_checkpoints: Sequence[Checkpoint] = (), *, all_signatures: bool = True,
               public_key: Ed25519PublicKey | None = None) -> VerificationReport:
        """Verify the stored log with a public key (default: this witness's), against its stored
        checkpoints, the ones published outside the database and ``trusted_checkpoints`` (``verify_store``)."""
        self._flush_for_reading()
        return self._run(verify_store(self._store, public_key or self.public_key, trusted=list(trusted_checkpoints),
                                      publishers=self._publishers, all_signatures=all_signatures), timeout=None)

    @property
    def publishers(self) -> list[str]:
        """Where this witness publishes its checkpoints (see ``publish.py``)."""
        return [p.name for p in self._publishers]

    def published_checkpoint(self) -> PublishedCheckpoint | None:
        """The newest checkpoint published outside the database (after a flush publishes the latest)."""
        self._flush_for_reading()

        async def newest() -> PublishedCheckpoint | None:
            await self._publish(force=True)
            records = [r for _, r in await read_all(self._publishers)]
            return max(records, key=lambda r: r.checkpoint.size, default=None)

        return self._run(newest())

    def export(self, out: str | os.PathLike[str] | IO[str], fmt: str = "jsonl") -> int:
        """Write the whole log: ``jsonl`` (verifiable, canonical bytes), ``json`` (verifiable) or ``csv``."""
        if fmt not in ("jsonl", "json", "csv"):
            raise WitnessInputError(f"unknown export format {fmt!r} (jsonl, json, csv)", error_code="WITNESS_BAD_FORMAT")
        entries, cp = self._snapshot()
        if isinstance(out, (str, os.PathLike)):
            with open(out, "w", encoding="utf-8", newline="") as fh:
                return write_export(fh, entries, cp, fmt, self.key_id, self.public_key_pem)
        return write_export(out, entries, cp, fmt, self.key_id, self.public_key_pem)

    def export_text(self, fmt: str = "jsonl") -> str:
        buf = io.StringIO()
        self.export(buf, fmt)
        return buf.getvalue()


def _close_all_at_exit() -> None:
    for witness in list(_LIVE):
        try:
            witness.close(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_close_all_at_exit)


def _new_id_prefixes_in_child() -> None:
    """A forked child must not mint the ids its parent mints next."""
    for witness in list(_LIVE):
        witness._id_prefix = os.urandom(10).hex()


os.register_at_fork(after_in_child=_new_id_prefixes_in_child)
