"""The embedded broker's queue (FIFO lanes per priority, a heap for what is given back) against the plain
model it replaces: one heap ordered by (priority, arrival). Any mix of sends, batches, takes, requeues and
expiries must hand out the same messages in the same order."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.mq.base import QueueMessage
from backends.mq.memory import _Core

PRIORITIES = [1, 5, 8, 10]
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(PRIORITIES), st.booleans()),
    st.tuples(st.just("batch"), st.lists(st.sampled_from(PRIORITIES), min_size=1, max_size=6), st.booleans()),
    st.tuples(st.just("take"), st.integers(1, 5), st.booleans()),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_lanes_hand_out_what_one_heap_would(operations: list[tuple]) -> None:
    core, model = _Core(), []  # model: heap of (-priority, seq, expires_at, message)
    taken_core: list[str] = []
    taken_model: list[str] = []
    held: list[tuple] = []  # entries taken and not settled: the "requeue" choice gives them back
    n = 0
    for op in operations:
        if op[0] in ("put", "batch"):
            prios = [op[1]] if op[0] == "put" else op[1]
            expired = op[2]
            messages = []
            for p in prios:
                messages.append(QueueMessage(f"m{n}", "a", "d", b"{}", p, 60, 0.0))
                n += 1
            expires = -1.0 if expired else 1e18  # already expired, or never
            if op[0] == "put":
                core.put(messages[0], expires)
            else:
                core.put_many(messages, expires - 60 if expired else 1e18)
            for m in messages:
                seq = int(m.message_id[1:])
                heapq.heappush(model, (-m.priority, seq, expires, m))
        else:
            limit, requeue = op[1], op[2]
            got = core.take("d", limit)
            want: list[tuple] = []
            while model and len(want) < limit:
                e = heapq.heappop(model)
                if e[2] > 0:
                    want.append(e)
            taken_core += [QueueMessage._make(e[3]).message_id for e in got]
            taken_model += [e[3].message_id for e in want]
            if requeue:  # given back with their arrival seq: they return to their place
                for e in got:
                    core.put(QueueMessage._make(e[3]), e[2], redelivered=True, seq=e[1])
                for e in want:
                    heapq.heappush(model, e)
        assert taken_core == taken_model
        assert core.depth("d") == len(model)
    assert taken_core == taken_model


def test_a_backlog_is_invisible_to_the_cyclic_collector() -> None:
    """Queued messages are plain tuples of atomic fields: once the collector has passed over them it stops
    tracking them, so a backlog of thousands costs no collection time (the reason for the layout)."""
    import gc

    core = _Core()
    import time

    core.put_many([QueueMessage(f"m{i}", "a", "d", b'{"i":1}', 5, 60, 0.0, "corr") for i in range(1000)],
                  time.monotonic())
    gc.collect()
    gc.collect()  # the fields' tuple is untracked on the first pass, the entry holding it on the next
    entries = [e for lanes in core._queues.values() for fifo in lanes.fifo.values() for e in fifo]
    assert len(entries) == 1000 and not any(gc.is_tracked(e) or gc.is_tracked(e[3]) for e in entries)
    [taken] = core.take("d", 1)
    assert QueueMessage._make(taken[3]) == QueueMessage("m0", "a", "d", b'{"i":1}', 5, 60, 0.0, "corr")
