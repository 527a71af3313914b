"""Signed checkpoints published outside the log's database, so that a truncated or rolled-back log shows.

A log whose tail was cut together with its checkpoints verifies as a shorter log: only a checkpoint
kept somewhere else can tell. The witness therefore publishes its newest checkpoint (with the head hash
and the tree edge, so that a writer can resume trust from it, see ``trust.py``) to places outside the
database: a file the operator names (by default one file per log under ``published/`` in the key directory) and/or
the platform's key-value store (``etcd://…``, ``sqlite:///…``). A published checkpoint only moves forward:
a writer never replaces it with a smaller one. Writers refuse to extend a log smaller than it, and
verification checks the log against it.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .checkpoint import Checkpoint, strict_object
from .errors import WitnessFormatError

PUBLISHED_DIR = "published"
PUBLISH_ENV = "INFRAFABRIC_WITNESS_PUBLISH"
_FIELDS = ("type", "size", "root", "timestamp", "key_id", "signature", "head_hash", "frontier")


@dataclass(frozen=True)
class PublishedCheckpoint:
    checkpoint: Checkpoint
    head_hash: str
    frontier: str

    def to_json(self) -> str:
        return json.dumps({**self.checkpoint.to_dict(), "head_hash": self.head_hash, "frontier": self.frontier},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "PublishedCheckpoint":
        """Strict: exactly the published fields, no duplicates (an added field would be unsigned)."""
        data = strict_object(text, "published checkpoint")
        extra = sorted(set(data) - set(_FIELDS))
        if extra or data.get("type") != "checkpoint":
            raise WitnessFormatError(f"published checkpoint has unknown fields {extra} or no type")
        head_hash, frontier = data.get("head_hash"), data.get("frontier")
        if not isinstance(head_hash, str) or not isinstance(frontier, str):
            raise WitnessFormatError("published checkpoint needs head_hash and frontier strings")
        signed = {k: v for k, v in data.items() if k not in ("head_hash", "frontier")}
        return cls(Checkpoint.from_dict(signed), head_hash, frontier)


class CheckpointPublisher(Protocol):
    """A place outside the database where the newest checkpoint is kept."""

    name: str

    async def read(self) -> PublishedCheckpoint | None: ...

    async def publish(self, record: PublishedCheckpoint) -> None:
        """Store ``record`` unless a checkpoint at least as large is already there."""

    async def close(self) -> None: ...


class FilePublisher:
    """A JSON file, replaced atomically (write, fsync, rename) under an advisory lock (several writers)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.name = f"file {self.path}"

    def read_sync(self) -> PublishedCheckpoint | None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return PublishedCheckpoint.from_json(text)

    async def read(self) -> PublishedCheckpoint | None:
        return self.read_sync()

    def publish_sync(self, record: PublishedCheckpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = self.read_sync()
            except WitnessFormatError:
                current = None  # unreadable: replaced by a valid one (verification reports the damage first)
            if current is not None and current.checkpoint.size >= record.checkpoint.size:
                return
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="ascii") as fh:
                fh.write(record.to_json() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)

    async def publish(self, record: PublishedCheckpoint) -> None:
        self.publish_sync(record)  # called on the witness's own writer thread; one small fsync'd file

    async def close(self) -> None:
        return None


class KVPublisher:
    """One key of the platform's key-value store (etcd, SQLite or memory), advanced by compare-and-swap."""

    def __init__(self, url: str, key: str) -> None:
        from backends.kv.urls import open_kv

        self._kv = open_kv(url)
        self._connected = False
        self.key = key
        self.name = f"key {key} at {url.split('@')[-1]}"

    async def _store(self) -> Any:
        if not self._connected:
            await self._kv.connect()
            self._connected = True
        return self._kv

    async def read(self) -> PublishedCheckpoint | None:
        kv = await self._store()
        found = await kv.get(self.key)
        return None if found is None else PublishedCheckpoint.from_json(found.value)

    async def publish(self, record: PublishedCheckpoint) -> None:
        from backends.kv.base import Compare, Put

        kv = await self._store()
        for _ in range(16):  # another writer may publish between our read and our swap: read again
            found = await kv.get(self.key)
            if found is not None:
                try:
                    if PublishedCheckpoint.from_json(found.value).checkpoint.size >= record.checkpoint.size:
                        return
                except WitnessFormatError:
                    pass
            guard = Compare.missing(self.key) if found is None else Compare.mod_revision(self.key, found.mod_revision)
            result = await kv.txn([guard], [Put(self.key, record.to_json().encode("ascii"))])
            if result.succeeded:
                return

    async def close(self) -> None:
        if self._connected:
            self._connected = False
            await self._kv.close()


def log_location(store_url: str) -> str:
    """A name for the database a log lives in, the same however its URL is spelled: one key may sign
    several logs, and each needs its own published checkpoint (the database at a place never shrinks)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(store_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        where = "sqlite:" + os.path.realpath(os.path.expanduser(parsed.database))
        label = Path(parsed.database).stem
    else:
        where = f"{parsed.get_backend_name()}:{parsed.host}:{parsed.port or 5432}/{parsed.database}"
        label = f"{parsed.get_backend_name()}-{parsed.database}"
    label = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]
    return f"{label}-{hashlib.sha256(where.encode()).hexdigest()[:16]}"


def kv_key_for(key_id: str, location: str) -> str:
    return f"/infrafabric/witness/{key_id}/{location}/checkpoint"


def default_published_file(key_dir: Path, store_url: str) -> Path:
    return Path(key_dir) / PUBLISHED_DIR / f"{log_location(store_url)}.json"


def publishers_for(targets: str | Sequence[str] | None, key_dir: Path | None, key_id: str,
                   store_url: str) -> list[CheckpointPublisher]:
    """Publishers from ``targets`` (file paths, ``file://`` or key-value URLs; comma-separated in a string).

    ``None`` means the default: $INFRAFABRIC_WITNESS_PUBLISH, else a file per log in the key directory
    (``published/<db>-<hash>.json``); a log without a key directory (``memory://``) publishes nowhere.
    An empty sequence publishes nowhere.
    """
    if store_url.startswith("memory:"):
        return [] if targets is None else _build(targets, key_id, "memory")
    if targets is None:
        env = os.environ.get(PUBLISH_ENV)
        if env is not None:
            targets = env
        elif key_dir is not None:
            targets = [str(default_published_file(key_dir, store_url))]
        else:
            targets = []
    return _build(targets, key_id, log_location(store_url))


def _build(targets: str | Sequence[str], key_id: str, location: str) -> list[CheckpointPublisher]:
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    out: list[CheckpointPublisher] = []
    for target in targets:
        if target.startswith("file://"):
            out.append(FilePublisher(target[len("file://"):]))
        elif "://" in target:
            out.append(KVPublisher(target, kv_key_for(key_id, location)))
        else:
            out.append(FilePublisher(target))
    return out


async def read_all(publishers: Sequence[CheckpointPublisher]) -> list[tuple[CheckpointPublisher, PublishedCheckpoint]]:
    records = await asyncio.gather(*(p.read() for p in publishers))
    return [(p, r) for p, r in zip(publishers, records) if r is not None]
