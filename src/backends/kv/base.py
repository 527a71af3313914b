"""The key-value interface shared by every stateful part, and the value types it speaks.

The model is etcd's (revisions, compare-and-swap transactions, leases, watch), because that is the
strongest contract the engines here offer; the embedded store implements the same semantics in process
so that code and tests are identical on both.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Union

Bytesish = Union[bytes, str]


def to_bytes(value: Bytesish) -> bytes:
    """Values are bytes on the wire; str is accepted as UTF-8 for convenience."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"value must be bytes or str, not {type(value).__name__}")


def prefix_end(prefix: str) -> str:
    """The exclusive upper bound of a prefix range (etcd's range_end convention)."""
    raw = bytearray(prefix.encode("utf-8"))
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1]).decode("utf-8", errors="surrogateescape")
    return "\0"


class KeyValue(NamedTuple):
    """One stored key with its etcd-style metadata (revision numbers are store-global).

    A NamedTuple rather than a frozen dataclass: it is created on every write, and this is 3x cheaper.
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


CompareTarget = Literal["value", "version", "create", "mod"]
CompareOp = Literal["==", "!=", "<", ">"]


class Compare(NamedTuple):
    """One predicate of a transaction; a missing key has version/create/mod revision 0."""

    key: str
    target: CompareTarget
    op: CompareOp
    operand: bytes | int

    @classmethod
    def value(cls, key: str, value: Bytesish, op: CompareOp = "==") -> "Compare":
        return cls(key, "value", op, to_bytes(value))

    @classmethod
    def version(cls, key: str, version: int, op: CompareOp = "==") -> "Compare":
        return cls(key, "version", op, version)

    @classmethod
    def create_revision(cls, key: str, revision: int, op: CompareOp = "==") -> "Compare":
        return cls(key, "create", op, revision)

    @classmethod
    def mod_revision(cls, key: str, revision: int, op: CompareOp = "==") -> "Compare":
        return cls(key, "mod", op, revision)

    @classmethod
    def missing(cls, key: str) -> "Compare":
        """True when the key does not exist."""
        return cls(key, "version", "==", 0)


def compare_holds(cmp: Compare, current: "KeyValue | None") -> bool:
    """A compare evaluated as etcd evaluates it: a missing key has version, create and mod revision 0,
    and a value compare on a missing key is false."""
    if cmp.target == "value":
        if current is None:
            return False
        actual: bytes | int = current.value
    elif cmp.target == "version":
        actual = current.version if current else 0
    elif cmp.target == "create":
        actual = current.create_revision if current else 0
    else:
        actual = current.mod_revision if current else 0
    operand = cmp.operand
    if cmp.op == "==":
        return actual == operand
    if cmp.op == "!=":
        return actual != operand
    if cmp.op == "<":
        return actual < operand  # type: ignore[operator]
    return actual > operand  # type: ignore[operator]


class Put:
    """Write value at key (with an optional lease) inside a transaction."""

    __slots__ = ("key", "value", "lease")

    def __init__(self, key: str, value: Bytesish, lease: int = 0) -> None:
        self.key = key
        self.value = value if type(value) is bytes else to_bytes(value)
        self.lease = lease

    def __repr__(self) -> str:
        return f"Put({self.key!r}, {self.value!r}, lease={self.lease})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Put) and (self.key, self.value, self.lease) == (other.key, other.value, other.lease)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


class Get:
    """Read key (or every key under it with prefix=True) inside a transaction."""

    __slots__ = ("key", "prefix")

    def __init__(self, key: str, prefix: bool = False) -> None:
        self.key = key
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Get({self.key!r}, prefix={self.prefix})"


TxnOp = Union[Put, Delete, Get]


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, at which revision, and one result per op of that branch.

    Results: Get -> list[KeyValue]; Put -> None; Delete -> number of keys deleted.
    """

    succeeded: bool
    revision: int
    results: list[list[KeyValue] | int | None] = field(default_factory=list)


class WatchEvent(NamedTuple):
    type: Literal["put", "delete"]
    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


WATCH_ENDED: Any = object()  # queued when a watch is cancelled: its iterator stops there


class Watch(abc.ABC):
    """An open watch: iterate it for events; leaving the `async with` block cancels it, and so does
    closing the store handle it was opened on (its iteration then ends)."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    @abc.abstractmethod
    async def cancel(self) -> None: ...

    async def __aenter__(self) -> "Watch":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()


class LeaseKeeper:
    """Keeps one lease alive by refreshing it every ttl/3 until stopped or the lease is lost.

    Built on `refresh_lease` only, so it works the same for every implementation.
    """

    def __init__(self, store: "KeyValueStore", lease_id: int, ttl: float) -> None:
        self.store = store
        self.lease_id = lease_id
        self.ttl = ttl
        self.alive = True
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        from backends.errors import BackendError, LeaseNotFound

        interval = max(self.ttl / 3.0, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.refresh_lease(self.lease_id)
            except LeaseNotFound:
                self.alive = False
                return
            except BackendError:
                continue  # transient: try again next tick; the lease survives up to its TTL

    async def stop(self) -> None:
        """Stop refreshing (the lease then expires by itself unless revoked)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class KeyValueStore(abc.ABC):
    """Async key-value store with revisions, CAS transactions, leases and watch.

    Open one with `backends.kv.open_kv(url)`; `async with` connects and closes it.
    """

    url: str = ""
    backend: str = ""

    async def connect(self) -> None:
        """Open connections; idempotent. Methods connect lazily too."""

    @abc.abstractmethod
    def reopen(self) -> "KeyValueStore":
        """A new, unconnected handle on the same store (for another event loop or thread)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> "KeyValueStore":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        """All keys starting with prefix, sorted by key."""

    @abc.abstractmethod
    async def put(self, key: str, value: Bytesish, *, lease: int = 0) -> int:
        """Store value; returns the new store revision."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """True when the key existed."""

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Number of keys deleted."""

    @abc.abstractmethod
    async def txn(
        self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        """Atomically: if every compare holds run `success`, else run `failure`."""

    async def txn_many(
        self, txns: Sequence[tuple[Sequence[Compare], Sequence[TxnOp], Sequence[TxnOp]]]
    ) -> list[TxnResult]:
        """Several independent transactions (each atomic on its own), results in order."""
        return list(await asyncio.gather(*[self.txn(c, s, f) for c, s, f in txns]))

    async def create_many(self, items: Sequence[tuple[str, bytes, int]]) -> list[tuple[bool, KeyValue | None]]:
        """Put-if-absent for each (key, value, lease): (created, the key's value now) per item, in order.

        Each item is its own atomic create (as `txn([Compare.missing(k)], [Put(..)], [Get(k)])`).
        """
        results = await self.txn_many([([Compare.missing(k)], [Put(k, v, lease)], [Get(k)]) for k, v, lease in items])
        out: list[tuple[bool, KeyValue | None]] = []
        for (key, value, lease), res in zip(items, results):
            if res.succeeded:
                out.append((True, KeyValue(key, value, res.revision, res.revision, 1, lease)))
            else:
                current = res.results[0]
                out.append((False, current[0] if isinstance(current, list) and current else None))
        return out

    @abc.abstractmethod
    async def grant_lease(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; keys put with it vanish when it expires."""

    @abc.abstractmethod
    async def refresh_lease(self, lease_id: int) -> int:
        """Renew the lease to its full TTL; returns the TTL. LeaseNotFound when it is gone."""

    @abc.abstractmethod
    async def revoke_lease(self, lease_id: int) -> None:
        """Drop the lease now and delete its keys (no error when already gone)."""

    async def lease_remaining(self, lease_id: int) -> float | None:
        """Seconds left on a lease (when a key held on it vanishes unless refreshed); None when it is gone."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell a lease's time to live")

    def keep_alive(self, lease_id: int, ttl: float) -> LeaseKeeper:
        """Refresh the lease in the background (call from a running event loop)."""
        return LeaseKeeper(self, lease_id, ttl)

    @abc.abstractmethod
    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> Watch:
        """Events for key (or every key under it with prefix=True), from start_revision if given."""

    @abc.abstractmethod
    async def status(self) -> dict[str, object]:
        """{'healthy': bool, 'backend': str, 'revision': int, ...}; raises AuthenticationError when refused."""
