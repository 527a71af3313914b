"""Key-value backends: one interface, an embedded store (memory/SQLite) and etcd, chosen by URL."""

from __future__ import annotations

from backends.kv.base import (
    Compare,
    Delete,
    Get,
    KeyValue,
    KeyValueStore,
    LeaseKeeper,
    Put,
    TxnResult,
    Watch,
    WatchEvent,
)
from backends.kv.sync import SyncKV
from backends.kv.urls import open_kv

__all__ = [
    "Compare",
    "Delete",
    "Get",
    "KeyValue",
    "KeyValueStore",
    "LeaseKeeper",
    "Put",
    "SyncKV",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "open_kv",
]
