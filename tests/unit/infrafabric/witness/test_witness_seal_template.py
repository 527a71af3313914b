"""The writer's fast template produces exactly the canonical bytes that the verifier recomputes.

The seal quotes component, operation, severity, id and trace id itself (they are validated identifiers
that JSON never escapes) instead of going through ``content_text``; if the two ever disagreed, every
entry logged would fail verification, so the property is checked over the whole identifier alphabet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrafabric.witness import Witness
from infrafabric.witness.canonical import SEVERITIES, content_text, format_timestamp
from infrafabric.witness.merkle import CompactRange
from infrafabric.witness.store.base import Pending
from infrafabric.witness.trust import TrustedHead

names = st.from_regex(r"[A-Za-z0-9._:/@-]{1,40}", fullmatch=True)
traces = st.none() | st.from_regex(r"[A-Za-z0-9._:/@+=-]{1,60}", fullmatch=True)
params = st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=12) | st.none(), max_size=4)


@pytest.fixture(scope="module")
def witness() -> Iterator[Witness]:
    w = Witness("memory://seal-template", entries_per_signature=3)
    yield w
    w.close()


@settings(max_examples=60, deadline=None)
@given(entries=st.lists(st.tuples(names, names, st.sampled_from(SEVERITIES), traces, params,
                                  st.integers(0, 4_000_000_000_000_000_000)), min_size=1, max_size=12))
def test_sealed_hashes_are_sha256_of_content_text(witness: Witness, entries: list) -> None:
    from infrafabric.witness.canonical import params_to_json

    batch = [Pending(f"{i:032x}", ts_ns, component, operation, params_to_json(p), severity, trace)
             for i, (component, operation, severity, trace, p, ts_ns) in enumerate(entries)]
    edge = CompactRange()
    edge.extend([bytes([i]) * 32 for i in range(7)])
    # the sealer extends only heads it trusts (trust.py): this one is declared in the log
    witness._sealer.trust.remember(TrustedHead(7, "ab" * 32, edge.root().hex(), edge))
    sealed = witness._seal(7, "ab" * 32, edge.copy(), batch)
    prev = "ab" * 32
    for row, pending in zip(sealed.rows, batch):
        seq, entry_id, ts, component, operation, params_json, severity, trace, prev_hash, content_hash, _, sig_seq = row
        assert ts == format_timestamp(pending.ts_ns)
        assert prev_hash == prev
        text = content_text(seq=seq, entry_id=entry_id, timestamp=ts, component=component, operation=operation,
                            params_json=params_json, severity=severity, trace_id=trace, prev_hash=prev_hash,
                            sig_seq=sig_seq)
        assert hashlib.sha256(text.encode("ascii")).hexdigest() == content_hash
        prev = content_hash
    # groups of three: every entry names the last entry of its group (or of the batch) as its closer
    assert [r[11] for r in sealed.rows] == [min(7 + (i // 3) * 3 + 2, 7 + len(batch) - 1) for i in range(len(batch))]
    # every member of a group carries the one signature of its closer
    assert len({(r[11], r[10]) for r in sealed.rows}) == len({r[11] for r in sealed.rows})


def test_raw_sqlite_appender_binds_the_columns_of_the_table_in_order() -> None:
    """The writer process inserts through sqlite3 without SQLAlchemy: its column list is the table's."""
    from infrafabric.witness.store.sql import checkpoints_table, entries_table, head_table
    from infrafabric.witness.store.sqlite_append import (
        CHECKPOINTS_TABLE,
        ENTRIES_TABLE,
        ENTRY_COLUMN_NAMES,
        HEAD_TABLE,
    )

    assert tuple(c.name for c in entries_table.c) == ENTRY_COLUMN_NAMES
    assert (entries_table.name, head_table.name, checkpoints_table.name) == (ENTRIES_TABLE, HEAD_TABLE,
                                                                             CHECKPOINTS_TABLE)


def test_the_writer_process_starts_without_sqlalchemy() -> None:
    """Each SQLite witness starts a writer process on its first batch: it must not pay for SQLAlchemy."""
    import subprocess
    import sys

    code = ("import sys, infrafabric.witness.writer_child; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'aiosqlite', 'asyncpg')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
