"""Export formats of the log and the trace summary (pure functions over stored entries)."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from .canonical import ENTRY_VERSION, entry_line
from .checkpoint import Checkpoint
from .errors import WitnessStorageError
from .store.base import StoredEntry
from .verify import EXPORT_FORMAT

CSV_COLUMNS = ("seq", "id", "timestamp", "component", "operation", "severity", "trace_id", "params",
               "prev_hash", "content_hash", "signature", "sig_seq")


def write_export(fh: IO[str], entries: list[StoredEntry], cp: Checkpoint | None, fmt: str, key_id: str,
                 public_pem: str) -> int:
    """``jsonl``: the exact hashed bytes per line then the checkpoint (what verifiers should get);
    ``json``: one document (verifiable by re-serialising); ``csv``: for spreadsheets (not verifiable)."""
    if fmt == "jsonl":
        for e in entries:
            e.check()  # an edited row is a coded error, not a TypeError half-way through the file
            fh.write(entry_line(e.content(), e.content_hash, e.signature))
            fh.write("\n")
        if cp is not None:
            fh.write(cp.to_json() + "\n")
    elif fmt == "json":
        doc = {
            "format": EXPORT_FORMAT,
            "key_id": key_id,
            "public_key": public_pem,
            "checkpoint": cp.to_dict() if cp else None,
            "entries": [{**e.to_dict(), "v": ENTRY_VERSION} for e in entries],
        }
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
    else:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for e in entries:
            e.check()
            writer.writerow([e.seq, e.id, e.timestamp, e.component, e.operation, e.severity, e.trace_id or "",
                             e.params_json, e.prev_hash, e.content_hash, e.signature, e.sig_seq])
    return len(entries)


def _parse_ts(ts: str) -> datetime:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:  # an edited row: say so with a code
        raise WitnessStorageError(f"a stored timestamp is unreadable: {ts!r:.40} (run verify)",
                                  error_code="WITNESS_ROW_UNREADABLE") from None


def summarise_trace(trace_id: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Components, time span and total cost (exact, from ``cost_tracked`` entries) of one trace."""
    total = Decimal(0)
    for e in entries:
        cost = e["params"].get("cost") if e["operation"] == "cost_tracked" else None
        if cost is not None:
            try:
                total += Decimal(str(cost))
            except InvalidOperation:
                pass
    start = entries[0]["timestamp"] if entries else None
    end = entries[-1]["timestamp"] if entries else None
    duration = (_parse_ts(end) - _parse_ts(start)).total_seconds() if start and end else None
    return {
        "trace_id": trace_id,
        "entries": entries,
        "components": sorted({e["component"] for e in entries}),
        "operations": len(entries),
        "start": start,
        "end": end,
        "duration_s": duration,
        "total_cost": str(total),
    }
