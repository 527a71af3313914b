"""One contract suite, three backends: named in-memory log, SQLite, real PostgreSQL (fixture-started)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from infrafabric.witness import Witness, WitnessKeyError, WitnessKeys


def test_append_query_and_verify(witness_backend_url: str, make_witness) -> None:
    w = make_witness(witness_backend_url)
    for i in range(250):
        w.log("IF.coordinator" if i % 2 else "IF.governor", "task_claimed" if i % 5 else "blocker_detected",
              {"i": i, "amount": "0.10"}, trace_id=f"tr-{i % 3}")
    logs = w.query()
    assert [e["seq"] for e in logs] == list(range(250))
    assert all(logs[i]["prev_hash"] == logs[i - 1]["content_hash"] for i in range(1, 250))
    assert len(w.query(component="IF.governor")) == 125
    assert [e["params"]["i"] for e in w.query(operation="blocker_detected")] == list(range(0, 250, 5))
    assert all(e["trace_id"] == "tr-1" for e in w.query(trace_id="tr-1"))
    assert len(w.query(limit=7)) == 7
    middle = logs[120]["timestamp"]
    assert all(e["timestamp"] >= middle for e in w.query(since=middle))
    report = w.verify(all_signatures=True)
    assert report.ok, report.problems
    assert w.latest_checkpoint().size == 250


def test_two_witnesses_on_one_log_make_one_chain(witness_backend_url: str, make_witness, tmp_path: Path) -> None:
    keys = WitnessKeys.generate()
    a = make_witness(witness_backend_url, keys=keys)
    b = make_witness(witness_backend_url, keys=keys)

    def run(w: Witness, tag: str) -> None:
        for i in range(400):
            w.log("IF.chassis", "swarm_loaded", {"w": tag, "i": i})
            if i % 50 == 0:
                w.flush()

    threads = [threading.Thread(target=run, args=(a, "a")), threading.Thread(target=run, args=(b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.flush()
    b.flush()
    logs = b.query()
    assert [e["seq"] for e in logs] == list(range(800))
    assert len({(e["params"]["w"], e["params"]["i"]) for e in logs}) == 800
    assert a.verify().ok and b.verify().ok
    # both writers kept full trees: their proofs agree
    assert a.inclusion_proof(10) == b.inclusion_proof(10)


def test_alternating_writers_each_continue_where_the_other_stopped(witness_backend_url: str, make_witness) -> None:
    """Each writer's idea of the head goes stale in turn (the SQLite writer caches it): no fork, no gap."""
    keys = WitnessKeys.generate()
    a = make_witness(witness_backend_url, keys=keys)
    b = make_witness(witness_backend_url, keys=keys)
    for round_no in range(5):
        for w, tag in ((a, "a"), (b, "b")):
            for i in range(3):
                w.log("IF.chassis", "swarm_loaded", {"w": tag, "r": round_no, "i": i})
            w.flush()
    logs = a.query()
    assert [e["seq"] for e in logs] == list(range(30))
    assert [(e["params"]["w"], e["params"]["r"]) for e in logs[::3]] == [(t, r) for r in range(5) for t in "ab"]
    assert all(logs[i]["prev_hash"] == logs[i - 1]["content_hash"] for i in range(1, 30))
    report = a.verify(all_signatures=True)
    assert report.ok, report.problems
    assert a.latest_checkpoint() == b.latest_checkpoint() and a.latest_checkpoint().size == 30


def test_log_signed_by_another_key_is_refused(witness_backend_url: str, make_witness) -> None:
    w = make_witness(witness_backend_url, keys=WitnessKeys.generate())
    w.log("IF.x", "op", {})
    w.flush()
    with pytest.raises(WitnessKeyError) as info:
        make_witness(witness_backend_url, keys=WitnessKeys.generate())
    assert info.value.error_code == "WITNESS_KEY_MISMATCH"


def test_reopen_continues_the_same_chain(witness_backend_url: str, make_witness) -> None:
    keys = WitnessKeys.generate()
    first = make_witness(witness_backend_url, keys=keys)
    for i in range(30):
        first.log("IF.x", "op", {"i": i})
    old = first.latest_checkpoint()
    first.close()
    second = make_witness(witness_backend_url, keys=keys)
    for i in range(30, 45):
        second.log("IF.x", "op", {"i": i})
    assert [e["params"]["i"] for e in second.query()] == list(range(45))
    assert second.verify([old]).ok
    assert second.consistency_proof(30)["first_root"] == old.root


def test_checkpoints_are_kept_at_milestones_and_latest(witness_backend_url: str, make_witness) -> None:
    from infrafabric.witness.verify import RawRecord

    w = make_witness(witness_backend_url, max_batch=700)
    for round_no in range(12):  # several batches, crossing the 4096-entry milestone
        for i in range(700):
            w.log("IF.x", "op", {"r": round_no, "i": i})
        w.flush()
    cps = w.checkpoints()
    sizes = [c.size for c in cps]
    assert sizes == sorted(sizes) and sizes[-1] == 8400
    assert len(cps) <= 4  # the first, one per 4096 boundary crossed, the latest: not one per batch
    assert any(0 < s < 4096 for s in sizes) and any(4096 <= s < 8192 for s in sizes)
    entries = w.entries()
    records = [RawRecord(e.content(), e.content_hash, e.signature) for e in entries]
    from infrafabric.witness import verify_records

    report = verify_records(records, w.public_key, checkpoints=cps)
    assert report.ok and len(report.checkpoints_verified) == len(cps)  # each old root still matches


def test_existing_ids_answers_for_thousands_of_ids(witness_backend_url: str, make_witness) -> None:
    """What a writer asks after a lost commit (up to three batches of 4,096 ids): exactly the stored ones."""
    w = make_witness(witness_backend_url)
    ids = [w.log("IF.x", "op", {"i": i}) for i in range(1500)]
    w.flush()
    unknown = [f"{i:032x}" for i in range(11_000)]
    asked = unknown[:5000] + ids + unknown[5000:]
    assert w._run(w._store.existing_ids(asked)) == set(ids)


async def test_asearch_pages_filters_and_matches_literally(witness_backend_url: str, make_witness) -> None:
    """The console's reader on every backend: seq cursors both ways, newest first or oldest first, and a
    ``contains`` that is a literal, case-sensitive substring (LIKE wildcards and quotes match only themselves)."""
    w = make_witness(witness_backend_url)
    odd = ["100%", "a_b", "it's", "back\\slash", "Task-X", "ünï"]
    for i in range(120):
        w.log("IF.coordinator" if i % 3 else "IF.chassis", "task_claimed" if i % 2 else "task_pushed",
              {"task_id": f"task-{i:03d}", "note": odd[i % len(odd)]})
    await w.aflush()
    newest = await w.asearch(limit=10)
    assert [e.seq for e in newest] == list(range(119, 109, -1))
    older = await w.asearch(limit=10, before_seq=newest[-1].seq)
    assert [e.seq for e in older] == list(range(109, 99, -1))
    after = await w.asearch(limit=5, after_seq=114)
    assert sorted(e.seq for e in after) == [115, 116, 117, 118, 119]
    oldest_first = await w.asearch(limit=3, newest_first=False)
    assert [e.seq for e in oldest_first] == [0, 1, 2]
    chassis = await w.asearch(component="IF.chassis", operation="task_pushed", limit=100)
    assert sorted(e.seq for e in chassis) == [i for i in range(120) if i % 3 == 0 and i % 2 == 0]
    assert [e.seq for e in await w.asearch(contains='"task-042"', limit=100)] == [42]
    for needle, expected in (("100%", 0), ("a_b", 1), ("it's", 2), ("back\\\\slash", 3), ("Task-X", 4), ("ünï", 5)):
        hits = await w.asearch(contains=needle, limit=100)
        assert sorted(e.seq for e in hits) == list(range(expected, 120, len(odd))), needle
    assert sorted(e.seq for e in await w.asearch(contains="%", limit=100)) == list(range(0, 120, len(odd)))
    assert await w.asearch(contains="t_sk", limit=100) == []  # as a LIKE pattern it would match every entry
    assert await w.asearch(contains="task-x", limit=100) == []  # case-sensitive
    assert await w.asearch(contains="no such text", limit=5) == []
    assert await w.asize() == 120


ALPHABET = "ab-_%'1é日😀\n\t ."


def test_asearch_contains_matches_exactly_the_entries_whose_text_holds_it(witness_backend_url: str,
                                                                          make_witness) -> None:
    """Any needle a console user types (LIKE wildcards, quotes, non-ASCII, control characters) finds exactly
    the entries whose params hold that text, on every backend: never more (a wildcard), never fewer."""
    import asyncio
    import json
    import random

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    rng = random.Random(7)
    w = make_witness(witness_backend_url)
    for i in range(150):
        w.log("IF.coordinator", "task_claimed", {"note": "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))),
                                                 "n": i})
    w.flush()
    everything = asyncio.run(w.asearch(limit=1000, newest_first=False))
    notes = {e.seq: json.loads(e.params_json)["note"] for e in everything}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(alphabet=ALPHABET, min_size=1, max_size=4))
    def check(needle: str) -> None:
        found = sorted(e.seq for e in asyncio.run(w.asearch(contains=needle, limit=1000)))
        # the model: the needle as text inside the note (the other field is a number and a key name)
        expected = sorted(s for s, note in notes.items() if needle in note or needle in '"n":' + str(s)
                          or needle in '"note":')
        assert found == expected, (needle, found[:5], expected[:5])

    check()
