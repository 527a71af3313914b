"""The PoOT group commit's statements on SQLite, as SQL text on the writer's own sqlite3 cursor.

Why not SQLAlchemy Core here: the group commit runs on the writer thread while the event loop thread
validates the next proofs, and both need the GIL. pysqlite gives the GIL up around every
``sqlite3_step``: an ``executemany`` of n rows, or a SELECT or RETURNING of n rows, is n steps, and each
time the writer must win the GIL back from a busy event loop, up to a switch interval (5 ms) later.
Every statement here is one step whatever the group's size (multi-row VALUES; joins that answer with
one count or only the exceptions), so a group costs about seven GIL hand-offs instead of three per
proof, and none of SQLAlchemy's per-row bind processors.

Correctness rests on the transaction: NodeDatabase starts it with BEGIN IMMEDIATE, so this connection
holds SQLite's write lock from the first statement and reads the latest committed state; no other
writer (thread or process) can claim a nonce between the look-up and the insert below. (PostgreSQL,
whose transactions do run concurrently, decides claims with an upsert ... RETURNING instead.)
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from ..models.poot_models import PoOTValidationResult
from .sqlite_text import chunks, flat, sqlite_datetime, values_clause
from .tables import poot_validations

__all__ = ["sqlite_datetime", "validation_values", "nodes_as_checked", "claim_nonces", "insert_validations",
           "set_scores"]

_dump_json = json.JSONEncoder().encode  # SQLAlchemy's JSON type stores json.dumps() text: same bytes
def _json(value: Any) -> str:
    return "[]" if value == [] else _dump_json(value)


# the table's column order, which validation_values follows
_COLUMNS = ["validation_id", "node_id", "batch_id", "output_data", "output_hash", "timestamp", "nonce",
            "is_valid", "score", "score_parts", "confidence", "validation_time_ms", "errors", "created_at"]
assert [c.name for c in poot_validations.columns] == _COLUMNS


def validation_values(v: PoOTValidationResult, store_output: bool) -> tuple[Any, ...]:
    """One validation row as pysqlite takes it, read straight from the model (model_dump's copies and
    the column processors cost more than the insert). The bytes equal SQLAlchemy's own binding: a
    round-trip test compares them."""
    d = v.__dict__
    return (d["validation_id"], d["node_id"], d["batch_id"], d["output_data"] if store_output else None,
            d["output_hash"], sqlite_datetime(d["timestamp"]), d["nonce"], int(d["is_valid"]), d["score"],
            _json(d["score_parts"]), d["confidence"], d["validation_time_ms"], _json(d["errors"]),
            sqlite_datetime(d["created_at"]))


def nodes_as_checked(cur: sqlite3.Cursor, pairs: set[tuple[str, str | None]], active: str) -> bool:
    """True if every (node_id, key) pair names an active node whose public key is still ``key`` (None:
    no key). One count; the caller looks at the nodes one by one only when it is short."""
    if not pairs:
        return True
    matched = 0
    for chunk in chunks(list(pairs), 2):
        cur.execute(f"SELECT count(*) FROM (VALUES {values_clause(len(chunk), 2)}) AS v CROSS JOIN nodes AS n "
                    "ON n.node_id = v.column1 WHERE n.status = ? AND coalesce(n.public_key, '') = v.column2",
                    (*flat((node, key or "") for node, key in chunk), active))
        matched += cur.fetchone()[0]
    return matched == len(pairs)


def claim_nonces(cur: sqlite3.Cursor, keys: list[tuple[str, str]], used_at: datetime,
                 cutoff: datetime) -> set[tuple[str, str]]:
    """Claim each (node_id, nonce) not used since ``cutoff``; returns the winners. The look-up answers
    only with the losers (normally none); every winner is then written by one upsert (a conflict there
    is a use older than the window, which the claim renews)."""
    since = sqlite_datetime(cutoff)
    lost: set[tuple[str, str]] = set()
    for chunk in chunks(keys, 2):
        cur.execute(f"SELECT n.node_id, n.nonce FROM (VALUES {values_clause(len(chunk), 2)}) AS v "
                    "CROSS JOIN poot_nonces AS n ON n.node_id = v.column1 AND n.nonce = v.column2 "
                    "WHERE n.used_at >= ?", (*flat(chunk), since))
        lost.update(map(tuple, cur.fetchall()))
    won = [k for k in keys if k not in lost]
    used = sqlite_datetime(used_at)
    for chunk in chunks(won, 3):
        cur.execute(f"INSERT INTO poot_nonces (node_id, nonce, used_at) VALUES {values_clause(len(chunk), 3)} "
                    "ON CONFLICT (node_id, nonce) DO UPDATE SET used_at = excluded.used_at",
                    flat((node, nonce, used) for node, nonce in chunk))
    return set(won)


def insert_validations(cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> None:
    for chunk in chunks(rows, len(_COLUMNS)):
        cur.execute(f"INSERT INTO poot_validations ({', '.join(_COLUMNS)}) "
                    f"VALUES {values_clause(len(chunk), len(_COLUMNS))}", flat(chunk))


def set_scores(cur: sqlite3.Cursor, scores: dict[str, float]) -> None:
    items = list(scores.items())
    for chunk in chunks(items, 2):
        cur.execute(f"UPDATE nodes SET poot_score = v.column2 FROM (VALUES {values_clause(len(chunk), 2)}) AS v "
                    "WHERE nodes.node_id = v.column1", flat(chunk))
