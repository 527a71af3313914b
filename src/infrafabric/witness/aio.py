"""``AsyncWitness``: IF.witness for coroutines, the twin of ``Witness`` (as httpx's ``AsyncClient`` is of
``Client``): one log and one writer under both; the same method names; every method that waits is a
coroutine that never blocks the event loop (reads and proofs run on the witness's writer loop or a worker
thread), and ``log`` is the same non-blocking call on both.

Why a twin and not ``a``-prefixed methods alone: a caller in an event loop should not have to know which
of ``verify``, ``export`` or ``inclusion_proof`` would stall it; here none can.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from backends.twin import AsyncTwin, delegated

from .checkpoint import Checkpoint
from .publish import PublishedCheckpoint
from .store.base import StoredEntry
from .verify import VerificationReport
from .witness import Witness

__all__ = ["AsyncWitness"]


class AsyncWitness(AsyncTwin[Witness]):
    def __init__(self, url: str = "memory://", key_dir: str | os.PathLike[str] | None = None, **options: Any) -> None:
        self.sync = Witness(url, key_dir, **options)

    # identity and state: the core's, read-only (never wait)
    url = delegated("url")
    public_key = delegated("public_key")
    public_key_pem = delegated("public_key_pem")
    key_id = delegated("key_id")
    closed = delegated("closed")
    writer = delegated("writer")
    writer_pid = delegated("writer_pid")
    pending = delegated("pending")
    committed = delegated("committed")
    publishers = delegated("publishers")

    # ------------------------------------------------------------------ writing
    def log(self, component: str, operation: str, params: dict[str, Any] | None = None, severity: str = "INFO",
            trace_id: str | None = None) -> str:
        """Queue one entry and return its id (never waits)."""
        return self.sync.log(component, operation, params, severity, trace_id)

    async def flush(self, timeout: float | None = 60.0) -> int:
        return await self.sync.aflush(timeout)

    async def close(self, timeout: float | None = 60.0) -> None:
        await asyncio.to_thread(self.sync.close, timeout)

    async def __aenter__(self) -> "AsyncWitness":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ reads
    async def entries(self, component: str | None = None, operation: str | None = None, since: Any = None,
                      trace_id: str | None = None, *, until: Any = None, limit: int | None = None) -> list[StoredEntry]:
        return await asyncio.to_thread(self.sync.entries, component, operation, since, trace_id, until=until,
                                       limit=limit)

    async def query(self, component: str | None = None, operation: str | None = None, since: Any = None,
                    trace_id: str | None = None, *, until: Any = None, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.sync.aquery(component, operation, since, trace_id, until=until, limit=limit)

    async def search(self, **filters: Any) -> list[StoredEntry]:
        """A page of committed entries (``Witness.asearch``: filters, ``contains``, seq cursors, ``limit``)."""
        return await self.sync.asearch(**filters)

    async def size(self) -> int:
        await self.flush()
        return await self.sync.asize()

    async def latest_checkpoint(self) -> Checkpoint:
        return await asyncio.to_thread(self.sync.latest_checkpoint)

    async def checkpoints(self) -> list[Checkpoint]:
        return await asyncio.to_thread(self.sync.checkpoints)

    async def trace(self, trace_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.trace, trace_id)

    # ------------------------------------------------------------------ proofs, verification, export
    async def inclusion_proof(self, seq: int, size: int | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.inclusion_proof, seq, size)

    async def consistency_proof(self, first: int, second: int | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.consistency_proof, first, second)

    async def verify(self, trusted_checkpoints: Sequence[Checkpoint] = (), *, all_signatures: bool = True,
                     public_key: Ed25519PublicKey | None = None) -> VerificationReport:
        return await asyncio.to_thread(self.sync.verify, trusted_checkpoints, all_signatures=all_signatures,
                                       public_key=public_key)

    async def published_checkpoint(self) -> PublishedCheckpoint | None:
        return await asyncio.to_thread(self.sync.published_checkpoint)

    async def export(self, out: str | os.PathLike[str] | IO[str], fmt: str = "jsonl") -> int:
        return await asyncio.to_thread(self.sync.export, out, fmt)

    async def export_text(self, fmt: str = "jsonl") -> str:
        return await asyncio.to_thread(self.sync.export_text, fmt)
