"""The message bus interface: request/reply to a named subscriber, and broadcast events.

Subjects are NATS-style dot-separated tokens; subscriptions may use `*` (one token) and `>` (the
rest). A handler returns the reply bytes for requests; if it raises, the requester gets RemoteError
with the handler's error code, on every implementation alike.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from backends.errors import InvalidBackendURL


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    data: bytes
    reply: str | None = None


Handler = Callable[[Message], "Awaitable[bytes | None] | bytes | None"]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a final `>` is one or more tokens."""
    pt, st = pattern.split("."), subject.split(".")
    for i, token in enumerate(pt):
        if token == ">":
            return len(st) > i
        if i >= len(st) or (token != "*" and token != st[i]):
            return False
    return len(pt) == len(st)


def check_subject(subject: str, *, wildcards: bool = False) -> str:
    """Reject empty tokens, whitespace and (for publishing) wildcards."""
    if not subject or any(not t for t in subject.split(".")) or any(c.isspace() for c in subject):
        raise InvalidBackendURL(f"invalid subject {subject!r}")
    if not wildcards and ("*" in subject.split(".") or ">" in subject.split(".")):
        raise InvalidBackendURL(f"wildcards are not allowed when sending: {subject!r}")
    return subject


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def unsubscribe(self) -> None: ...


class MessageBus(abc.ABC):
    url: str = ""
    backend: str = ""

    async def connect(self) -> None:
        """Open connections; idempotent."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> "MessageBus":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def publish(self, subject: str, data: bytes) -> None:
        """Broadcast to every current subscriber (none is not an error)."""

    @abc.abstractmethod
    async def request(self, subject: str, data: bytes, timeout: float = 2.0) -> bytes:
        """Deliver to one subscriber and wait for its reply (NoResponders when nobody listens)."""

    @abc.abstractmethod
    async def subscribe(self, subject: str, handler: Handler, *, queue: str | None = None) -> Subscription:
        """Call handler for each message; with `queue`, each message goes to one member of the group."""

    @abc.abstractmethod
    async def flush(self, timeout: float = 2.0) -> None:
        """Return once everything published so far reached the server (or the local subscribers)."""

    @abc.abstractmethod
    async def status(self) -> dict[str, object]: ...
