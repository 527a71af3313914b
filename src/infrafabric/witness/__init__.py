"""IF.witness: one tamper-evident, signed, Merkle-anchored audit log for the whole platform.

Hot paths call :func:`log_operation` (non-blocking, group-committed by a background writer);
anyone holding the public key can verify an export with :func:`verify_export`. See ``default.py``
for configuration by environment.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    WitnessClosedError,
    WitnessError,
    WitnessFormatError,
    WitnessInputError,
    WitnessKeyError,
    WitnessProofError,
    WitnessStorageError,
    WitnessTimeoutError,
)
from .canonical import GENESIS_HASH, SEVERITIES
from .checkpoint import Checkpoint
from .default import (
    configure,
    default_key_dir,
    default_url,
    get_default_witness,
    reset_default_witness,
    set_default_witness,
)
from .keys import WitnessKeys, load_or_create_keys, load_public_key
from .merkle import MerkleTree, leaf_hash, node_hash, root_of, verify_consistency, verify_inclusion
from .verify import Problem, RawRecord, VerificationReport, parse_export, verify_export, verify_records
from .witness import Witness


def _default() -> Any:
    return get_default_witness()


def log_operation(
    component: str,
    operation: str,
    params: dict[str, Any] | None = None,
    severity: str = "INFO",
    trace_id: str | None = None,
) -> str:
    """Append one entry to the default witness; returns the entry id. Non-blocking: the entry is queued
    for the writer."""
    try:
        return _default().log(component, operation, params, severity, trace_id)
    except WitnessClosedError:  # the default was replaced (configure/reset) while we called it
        return _default().log(component, operation, params, severity, trace_id)


def get_logs(
    component: str | None = None,
    operation: str | None = None,
    since: Any = None,
    trace_id: str | None = None,
    *,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Entries of the default witness, oldest first, including ones not yet flushed."""
    return _default().query(component, operation, since, trace_id, limit=limit)


async def aget_logs(
    component: str | None = None,
    operation: str | None = None,
    since: Any = None,
    trace_id: str | None = None,
    *,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """``get_logs`` for coroutines (does not block the event loop while flushing)."""
    return await _default().aquery(component, operation, since, trace_id, limit=limit)


get_operations = get_logs  # name used by the original task board


def flush(timeout: float | None = 60.0) -> int:
    return _default().flush(timeout)


async def aflush(timeout: float | None = 60.0) -> int:
    return await _default().aflush(timeout)


__all__ = [
    "GENESIS_HASH", "SEVERITIES", "Checkpoint", "MerkleTree", "Problem", "RawRecord", "VerificationReport",
    "Witness", "WitnessClosedError", "WitnessError", "WitnessFormatError", "WitnessInputError", "WitnessKeyError",
    "WitnessKeys", "WitnessProofError", "WitnessStorageError", "WitnessTimeoutError", "aflush", "aget_logs",
    "configure", "default_key_dir", "default_url", "flush", "get_default_witness", "get_logs", "get_operations",
    "leaf_hash", "load_or_create_keys", "load_public_key", "log_operation", "node_hash", "parse_export",
    "reset_default_witness", "root_of", "set_default_witness", "verify_consistency", "verify_export",
    "verify_inclusion", "verify_records",
]
