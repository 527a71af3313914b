"""The PoOT group commit on SQLite, as SQL text on a plain sqlite3 cursor (standard library only).

One function, ``group_transaction``, decides (by ``lucid.node.poot_rules``) and writes a whole group.
Two callers run it: the writer thread of NodeDatabase (``SqlPoOTRepository`` in ``thread`` mode) and the
PoOT writer process (poot_writer_child), which imports this module without SQLAlchemy or pydantic. A group travels as
plain tuples (``ITEM_FIELDS``), which is also what crosses the pipe to the process.

Why not SQLAlchemy Core here: the group commit runs beside the event loop thread that validates the
next proofs. pysqlite gives the GIL up around every ``sqlite3_step``: an ``executemany`` of n rows, or
a SELECT or RETURNING of n rows, is n steps, and each time the writer thread must win the GIL back from
a busy event loop, up to a switch interval (5 ms) later. Every statement here is one step whatever the
group's size (multi-row VALUES; joins that answer with one count or only the exceptions), and there
are none of SQLAlchemy's per-row bind processors.

Correctness rests on the transaction: it starts with BEGIN IMMEDIATE, so the connection holds SQLite's
write lock from the first statement and reads the latest committed state; no other writer (thread or
process) can claim a nonce between the look-up and the insert below. (PostgreSQL, whose transactions
do run concurrently, decides claims with an upsert ... RETURNING instead: poot_repo.)
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from operator import itemgetter
from typing import Any

from .. import poot_rules as rules
from .sqlite_text import chunks, flat, sqlite_datetime, values_clause

__all__ = ["sqlite_datetime", "validation_values", "item_of", "group_transaction", "COLUMNS", "ITEM_FIELDS",
           "REPLAY", "INACTIVE", "BAD_KEY"]

_dump_json = json.JSONEncoder().encode  # SQLAlchemy's JSON type stores json.dumps() text: same bytes


def _json(value: Any) -> str:
    return "[]" if value == [] else _dump_json(value)


# the poot_validations table's column order (a test compares it with tables.py)
COLUMNS = ("validation_id", "node_id", "batch_id", "output_data", "output_hash", "timestamp", "nonce",
           "is_valid", "score", "score_parts", "confidence", "validation_time_ms", "errors", "created_at")
# a queued proof as it travels: the result's fields in COLUMNS order, then (claim its nonce, the key
# it was checked against: (key or None,) / None if unchecked)
ITEM_FIELDS = (*COLUMNS, "claim", "checked_against")
_I_NODE, _I_NONCE, _I_VALID, _I_SCORE = 1, 6, 7, 8
_I_CLAIM, _I_AGAINST = len(COLUMNS), len(COLUMNS) + 1
_fields_of = itemgetter(*COLUMNS)

# rejection codes of group_transaction (the rules' own), turned into exceptions by the repository
REPLAY, INACTIVE, BAD_KEY, REPLAY_ERRORS = rules.REPLAY, rules.INACTIVE, rules.BAD_KEY, rules.REPLAY_ERRORS


def item_of(v: Any, claim: bool, checked_against: tuple[str | None] | None) -> tuple[Any, ...]:
    """A PoOTValidationResult as a group item: one C call for its fields (the hot path builds one per
    proof)."""
    return (*_fields_of(v.__dict__), claim, checked_against)


def _row(item: tuple[Any, ...], store_output: bool) -> tuple[Any, ...]:
    (vid, node, batch, output, digest, ts, nonce, valid, score, parts, confidence, elapsed, errors,
     created) = item[:_I_CLAIM]
    return (vid, node, batch, output if store_output else None, digest, sqlite_datetime(ts), nonce, int(valid),
            score, _json(parts), confidence, elapsed, _json(errors), sqlite_datetime(created))


def _replay_row(item: tuple[Any, ...], store_output: bool) -> tuple[Any, ...]:
    """What a replayed proof leaves on record: a failed attempt under the result's id (the output is not
    kept, the score and its parts are zero), as the validator records its other refusals."""
    (vid, node, batch, _output, digest, ts, nonce, _valid, _score, _parts, _confidence, elapsed, _errors,
     created) = item[:_I_CLAIM]
    return (vid, node, batch, "" if store_output else None, digest, sqlite_datetime(ts), nonce, 0, 0.0, "{}",
            0.0, elapsed, _json(REPLAY_ERRORS), sqlite_datetime(created))


def validation_values(v: Any, store_output: bool) -> tuple[Any, ...]:
    """One validation row as pysqlite takes it, read straight from the model. The bytes equal
    SQLAlchemy's own binding: a round-trip test compares them."""
    return _row(item_of(v, False, None), store_output)


def _nodes_as_checked(cur: sqlite3.Cursor, pairs: set[tuple[str, str | None]], active: str) -> bool:
    """True if every (node_id, key) pair names an active node whose public key is still ``key`` (None:
    no key). One count; the caller looks at the nodes one by one only when it is short."""
    matched = 0
    for chunk in chunks(list(pairs), 2):
        cur.execute(f"SELECT count(*) FROM (VALUES {values_clause(len(chunk), 2)}) AS v CROSS JOIN nodes AS n "
                    "ON n.node_id = v.column1 WHERE n.status = ? AND coalesce(n.public_key, '') = v.column2",
                    (*flat((node, key or "") for node, key in chunk), active))
        matched += cur.fetchone()[0]
    return matched == len(pairs)


def _node_states(cur: sqlite3.Cursor, node_ids: list[str]) -> dict[str, tuple[str, str | None]]:
    states: dict[str, tuple[str, str | None]] = {}
    for chunk in chunks(node_ids, 1):
        cur.execute(f"SELECT node_id, status, public_key FROM nodes WHERE node_id IN ({', '.join('?' * len(chunk))})",
                    chunk)
        states.update((node, (status, key or None)) for node, status, key in cur.fetchall())
    return states


def _claim_nonces(cur: sqlite3.Cursor, keys: list[tuple[str, str]], used_at: str, since: str) -> set[tuple[str, str]]:
    """Claim each (node_id, nonce) not used since ``since``; returns the winners. The look-up answers
    only with the losers (normally none); every winner is then written by one upsert (a conflict there
    is a use older than the window, which the claim renews)."""
    lost: set[tuple[str, str]] = set()
    for chunk in chunks(keys, 2):
        cur.execute(f"SELECT n.node_id, n.nonce FROM (VALUES {values_clause(len(chunk), 2)}) AS v "
                    "CROSS JOIN poot_nonces AS n ON n.node_id = v.column1 AND n.nonce = v.column2 "
                    "WHERE n.used_at >= ?", (*flat(chunk), since))
        lost.update(map(tuple, cur.fetchall()))
    won = [k for k in keys if k not in lost]
    for chunk in chunks(won, 3):
        cur.execute(f"INSERT INTO poot_nonces (node_id, nonce, used_at) VALUES {values_clause(len(chunk), 3)} "
                    "ON CONFLICT (node_id, nonce) DO UPDATE SET used_at = excluded.used_at",
                    flat((node, nonce, used_at) for node, nonce in chunk))
    return set(won)


def group_transaction(cur: sqlite3.Cursor, items: list[tuple[Any, ...]], now: datetime, cutoff: datetime,
                      store_output: bool, active: str = "active") -> dict[int, str]:
    """Decide and write one group inside the caller's transaction; returns {index: rejection code}.
    The decisions are ``lucid.node.poot_rules``'; this function is their I/O on SQLite."""
    rejected = rules.decide_group(
        [(item[_I_NODE], item[_I_NONCE], item[_I_CLAIM], item[_I_AGAINST]) for item in items],
        states=lambda node_ids: _node_states(cur, node_ids),
        claim=lambda keys: _claim_nonces(cur, keys, sqlite_datetime(now) or "", sqlite_datetime(cutoff) or ""),
        all_as_checked=lambda pairs: _nodes_as_checked(cur, pairs, active), active=active)
    written, scores = rules.stored_rows(((item[_I_NODE], item[_I_VALID], item[_I_SCORE]) for item in items), rejected)
    rows = [_replay_row(items[i], store_output) if as_replay else _row(items[i], store_output)
            for i, as_replay in written]
    for chunk in chunks(rows, len(COLUMNS)):
        cur.execute(f"INSERT INTO poot_validations ({', '.join(COLUMNS)}) "
                    f"VALUES {values_clause(len(chunk), len(COLUMNS))}", flat(chunk))
    for chunk in chunks(list(scores.items()), 2):
        cur.execute(f"UPDATE nodes SET poot_score = v.column2 FROM (VALUES {values_clause(len(chunk), 2)}) AS v "
                    "WHERE nodes.node_id = v.column1", flat(chunk))
    return rejected
