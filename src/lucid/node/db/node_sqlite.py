"""The node-creation group commit's statements on SQLite, as SQL text on the writer's own sqlite3 cursor.

Why (see poot_sqlite for the GIL side): SQLAlchemy's executemany of a group of nodes spent ~0.1 ms of
CPU per node in bind processing (each node's three JSON columns dumped to dicts, then to text by
json.dumps) while holding the GIL the event loop needs; here a node is one tuple built from the model
(pydantic writes the JSON), and every statement is one step whatever the group's size. The conflict
look-up answers only with conflicts, normally none, so the insert needs no per-row RETURNING.

Correctness rests on the transaction: NodeDatabase starts it with BEGIN IMMEDIATE, so nothing can insert
a node between the look-up and the insert; a conflict the look-up missed would fail the whole group (no
ON CONFLICT here), never pass silently. A round-trip test reads these rows back through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from ..models.node_models import Node
from ..sqlite_writer.sqlite_text import chunks, flat, sqlite_datetime, values_clause
from .tables import nodes

__all__ = ["node_values", "pool_seats", "taken", "insert_nodes", "join_pools"]

_COLUMNS = ["node_id", "name", "status", "node_type", "pool_id", "pool_priority", "hardware_info", "location",
            "configuration", "public_key", "poot_score", "last_heartbeat", "created_at", "updated_at"]
assert [c.name for c in nodes.columns] == _COLUMNS


def _json(value: BaseModel | None) -> str:
    # SQLAlchemy's JSON type stores Python None as the JSON text 'null' (none_as_null=False): the same here
    return "null" if value is None else value.model_dump_json()


def node_values(n: Node) -> tuple[Any, ...]:
    """One node row as pysqlite takes it, in the table's column order."""
    d = n.__dict__
    return (d["node_id"], d["name"], d["status"].value, d["node_type"].value, d["pool_id"], d["pool_priority"],
            _json(d["hardware_info"]), _json(d["location"]), _json(d["configuration"]), d["public_key"],
            d["poot_score"], sqlite_datetime(d["last_heartbeat"]), sqlite_datetime(d["created_at"]),
            sqlite_datetime(d["updated_at"]))


def pool_seats(cur: sqlite3.Cursor, pool_ids: list[str]) -> dict[str, int]:
    """Free seats of each existing pool among ``pool_ids`` (a group names few pools)."""
    seats: dict[str, int] = {}
    for chunk in chunks(pool_ids, 1):
        cur.execute(f"SELECT pool_id, max_nodes - node_count FROM node_pools WHERE pool_id IN "
                    f"({', '.join('?' * len(chunk))})", list(chunk))
        seats.update(cur.fetchall())
    return seats


def taken(cur: sqlite3.Cursor, group: Iterable[Node]) -> tuple[set[str], set[str]]:
    """The ids and names of ``group`` that existing nodes already have (normally none)."""
    group = list(group)
    ids: set[str] = set()
    names: set[str] = set()
    for chunk in chunks(group, 2):
        cur.execute(f"SELECT node_id, name FROM nodes WHERE node_id IN ({', '.join('?' * len(chunk))}) "
                    f"OR name IN ({', '.join('?' * len(chunk))})",
                    [n.node_id for n in chunk] + [n.name for n in chunk])
        for node_id, name in cur.fetchall():
            ids.add(node_id)
            names.add(name)
    return ids, names


def insert_nodes(cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> None:
    for chunk in chunks(rows, len(_COLUMNS)):
        cur.execute(f"INSERT INTO nodes ({', '.join(_COLUMNS)}) VALUES {values_clause(len(chunk), len(_COLUMNS))}",
                    flat(chunk))


def join_pools(cur: sqlite3.Cursor, joined: dict[str, int], now: datetime) -> None:
    """Add ``joined[pool]`` members to each pool (seats were checked under the same write lock)."""
    items = list(joined.items())
    for chunk in chunks(items, 2):
        cur.execute(f"UPDATE node_pools SET node_count = node_count + v.column2, updated_at = ? "
                    f"FROM (VALUES {values_clause(len(chunk), 2)}) AS v WHERE node_pools.pool_id = v.column1",
                    [sqlite_datetime(now), *flat(chunk)])
