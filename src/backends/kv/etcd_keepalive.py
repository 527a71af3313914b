"""Every lease's keep-alive on one etcd ``LeaseKeepAlive`` stream, as etcd's own Go client does.

Why: a coordinator keeps one lease per swarm session (10,000 swarms: 10,000 leases, each refreshed every
TTL/3). Opening a bidirectional stream per refresh (etcd3aio's ``lease.keep_alive``) cost a stream set-up
and tear-down in gRPC and in etcd each time: 3,000 streams a second at 10,000 swarms, more than a 2-core
machine serves, so refreshes, and every call queued beside them, timed out (the coordinator benchmark's
10,000 registrations failed). Here one stream carries every refresh request and its answers are matched
to their callers by lease id; a broken stream fails the refreshes waiting on it and the next one opens a
new stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import grpc
from etcd3aio._protobuf import LeaseKeepAliveRequest

from backends.errors import BackendUnavailable

__all__ = ["KeepAliveStream"]


class KeepAliveStream:
    """``refresh(lease_id)`` -> the lease's TTL now (0 or less: etcd no longer knows the lease)."""

    def __init__(self, open_call: Callable[[], grpc.aio.StreamStreamCall]) -> None:
        self._open_call = open_call
        self._call: grpc.aio.StreamStreamCall | None = None
        self._outbox: asyncio.Queue[int] = asyncio.Queue()
        self._waiting: dict[int, list[asyncio.Future[int]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.opened = 0  # streams opened so far (one, unless one broke)

    async def refresh(self, lease_id: int, timeout: float) -> int:
        """The lease's TTL, or TimeoutError after ``timeout`` seconds. A stream that answers nothing for
        that long (its member cut off from the leader, say) is dropped, so the next refresh asks on a new
        one instead of waiting on it for ever."""
        if self._call is None:
            self._open()
        call = self._call
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(lease_id, []).append(future)
        self._outbox.put_nowait(lease_id)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            if call is not None:
                self._broken(call, BackendUnavailable(f"no keep-alive answer in {timeout} s"))
            raise
        finally:
            waiters = self._waiting.get(lease_id)
            if waiters is not None and future in waiters:  # timed out or cancelled: not answered
                waiters.remove(future)
                if not waiters:
                    del self._waiting[lease_id]

    def _open(self) -> None:
        self._call = call = self._open_call()
        self.opened += 1
        self._outbox = outbox = asyncio.Queue()
        for lease_id in self._waiting:  # asked while no stream was open (the last one broke): asked here
            outbox.put_nowait(lease_id)
        self._tasks = [asyncio.ensure_future(self._write(call, outbox)), asyncio.ensure_future(self._read(call))]

    async def _write(self, call: grpc.aio.StreamStreamCall, outbox: asyncio.Queue[int]) -> None:
        try:
            while True:
                lease_id = await outbox.get()
                await call.write(LeaseKeepAliveRequest(ID=lease_id))
        except asyncio.CancelledError:
            self._cancelled(call)
            raise
        except Exception as exc:  # noqa: BLE001 - the stream is gone: its waiters hear why
            self._broken(call, exc)

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                response: Any = await call.read()
                if response is grpc.aio.EOF:
                    raise BackendUnavailable("etcd closed the lease keep-alive stream")
                for future in self._waiting.pop(int(response.ID), ()):
                    if not future.done():
                        future.set_result(int(response.TTL))
        except asyncio.CancelledError:
            self._cancelled(call)
            raise
        except Exception as exc:  # noqa: BLE001 - the stream is gone: its waiters hear why
            self._broken(call, exc)

    def _cancelled(self, call: grpc.aio.StreamStreamCall) -> None:
        """A cancelled read or write: ours (``close``, ``_broken``) or the call's own (cancelled under us,
        the channel closed): in the second case the stream is broken like any other."""
        task = asyncio.current_task()
        if task is not None and not task.cancelling():
            self._broken(call, BackendUnavailable("the lease keep-alive stream was cancelled"))

    def _broken(self, call: grpc.aio.StreamStreamCall, exc: BaseException) -> None:
        if self._call is not call:
            return
        self._call = None
        call.cancel()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)

    async def close(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(BackendUnavailable("the etcd client closed"))
