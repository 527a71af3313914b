"""The module-level contract other components code against: log_operation / get_logs / flush / configure."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

import infrafabric.witness as witness_mod
from infrafabric.witness import (
    Witness,
    WitnessClosedError,
    WitnessInputError,
    WitnessStorageError,
    aget_logs,
    get_default_witness,
    get_logs,
    log_operation,
    verify_consistency,
    verify_inclusion,
)
from infrafabric.witness.merkle import root_of
from infrafabric.witness.verify import parse_export

KEYS = {"id", "seq", "timestamp", "component", "operation", "params", "severity", "trace_id", "prev_hash",
        "content_hash", "signature"}


def test_log_then_get_logs_reads_own_writes_oldest_first(fresh_witness: Witness) -> None:
    first = log_operation("IF.coordinator", "task_claimed", {"task_id": "t-1", "swarm_id": "s-1"}, trace_id="tr-1")
    log_operation("IF.governor", "help_requested", {"task_id": "t-1"}, severity="WARN", trace_id="tr-1")
    log_operation("IF.coordinator", "task_pushed", {"task_id": "t-2"})
    logs = get_logs(component="IF.coordinator")  # no explicit flush: reads include queued entries
    assert [e["operation"] for e in logs] == ["task_claimed", "task_pushed"]
    assert logs[0]["id"] == first and set(logs[0]) >= KEYS
    assert logs[0]["params"] == {"task_id": "t-1", "swarm_id": "s-1"}
    all_logs = get_logs()
    assert [e["seq"] for e in all_logs] == [0, 1, 2]
    assert all_logs[1]["prev_hash"] == all_logs[0]["content_hash"]
    assert all_logs[1]["severity"] == "WARN"
    assert [e["operation"] for e in get_logs(trace_id="tr-1")] == ["task_claimed", "help_requested"]
    assert [e["operation"] for e in get_logs(operation="task_pushed")] == ["task_pushed"]
    assert get_logs(component="IF.chassis") == []
    since = all_logs[1]["timestamp"]
    assert [e["seq"] for e in get_logs(since=since)] == [e["seq"] for e in all_logs if e["timestamp"] >= since]


async def test_usable_inside_a_running_event_loop(fresh_witness: Witness) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    for i in range(2000):
        log_operation("IF.chassis", "swarm_loaded", {"i": i})
        if i % 100 == 0:
            await asyncio.sleep(0)
    await fresh_witness.aflush()
    logs = await aget_logs(component="IF.chassis")
    task.cancel()
    assert len(logs) == 2000 and logs[-1]["params"] == {"i": 1999}
    assert ticks > 10  # the loop kept running while we logged and flushed


def test_threads_share_one_chain(fresh_witness: Witness) -> None:
    def work(t: int) -> None:
        for i in range(500):
            log_operation("IF.governor", "budget_changed", {"t": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    logs = get_logs()
    assert [e["seq"] for e in logs] == list(range(2000))
    assert len({(e["params"]["t"], e["params"]["i"]) for e in logs}) == 2000
    assert fresh_witness.verify().ok


def test_flush_makes_entries_durable_for_other_readers(make_witness, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    writer = make_witness(url)
    ids = [writer.log("IF.coordinator", "task_claimed", {"n": i}) for i in range(300)]
    assert writer.flush() >= 300
    reader = make_witness(url)
    assert [e["id"] for e in reader.query()] == ids


def test_close_flushes_and_then_refuses_appends(make_witness, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    w = make_witness(url)
    for i in range(100):
        w.log("IF.chassis", "swarm_loaded", {"n": i})
    w.close()
    with pytest.raises(WitnessClosedError):
        w.log("IF.chassis", "swarm_loaded", {})
    assert len(make_witness(url).query()) == 100



async def test_close_never_strands_a_read_waiting_on_the_writer(make_witness, tmp_path: Path) -> None:
    """A read another thread (or coroutine) handed to the writer loop when close() stops it: the caller gets
    WitnessClosedError, never a wait without end (a console's background verify hung a whole test run so).
    The read is one that cannot finish by itself, so only close() can end it."""
    w = make_witness(f"sqlite:///{tmp_path / 'r.db'}")
    w.log("IF.chassis", "swarm_loaded", {"n": 1})
    outcome: list[BaseException] = []

    def blocked_reader() -> None:
        try:
            w._run(asyncio.Event().wait(), timeout=None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects what the reader got
            outcome.append(exc)

    reader = threading.Thread(target=blocked_reader, daemon=True)
    reader.start()
    async_read = asyncio.create_task(w._arun(asyncio.Event().wait()))
    await asyncio.sleep(0.1)  # both reads are on the writer loop now
    assert reader.is_alive() and not async_read.done()
    await w.aclose()
    reader.join(10)
    assert not reader.is_alive() and [type(e) for e in outcome] == [WitnessClosedError]
    with pytest.raises(WitnessClosedError):
        await asyncio.wait_for(async_read, 10)

def test_bad_input_is_refused_and_loses_nothing(fresh_witness: Witness) -> None:
    log_operation("IF.governor", "help_requested", {"ok": 1})
    with pytest.raises(WitnessInputError) as info:
        log_operation("IF.governor", "help_requested", {"bad": object()})
    assert info.value.error_code == "WITNESS_INVALID_PARAMS" and info.value.message
    with pytest.raises(WitnessInputError):
        log_operation("IF governor", "x", {})
    with pytest.raises(WitnessInputError):
        log_operation("IF.governor", "x", {}, severity="PANIC")
    log_operation("IF.governor", "help_requested", {"ok": 2})
    assert [e["params"]["ok"] for e in get_logs()] == [1, 2]


def test_configure_and_reset_replace_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAFABRIC_WITNESS_URL", "memory://reset-test")
    witness_mod.reset_default_witness()
    try:
        a = get_default_witness()
        assert a.url == "memory://reset-test" and get_default_witness() is a
        log_operation("IF.x", "op", {})
        b = witness_mod.configure(url=f"sqlite:///{tmp_path / 'x.db'}", key_dir=tmp_path / "k")
        assert a.closed and get_default_witness() is b and get_logs() == []
        witness_mod.reset_default_witness()
        assert b.closed and get_default_witness().url == "memory://reset-test"
        assert [e["operation"] for e in get_logs()] == ["op"]  # the named in-memory log survived
    finally:
        witness_mod.reset_default_witness()
        from infrafabric.witness.store import drop_memory_log

        drop_memory_log("reset-test")


def test_unreachable_database_fails_with_storage_error(tmp_path: Path) -> None:
    with pytest.raises(WitnessStorageError) as info:
        Witness("postgresql://postgres@127.0.0.1:1/nope", tmp_path / "k")
    assert info.value.error_code == "WITNESS_STORAGE_ERROR"


def test_proofs_verify_against_independent_recomputation(make_witness) -> None:
    w = make_witness()
    for i in range(37):
        w.log("IF.coordinator", "task_claimed", {"i": i})
    old = w.latest_checkpoint()
    for i in range(37, 101):
        w.log("IF.coordinator", "task_claimed", {"i": i})
    new = w.latest_checkpoint()
    assert (old.size, new.size) == (37, 101)
    # independent recomputation from the export: leaf = H(0x00 || content_hash || signature)
    parsed = parse_export(w.export_text())
    leaves = [hashlib.sha256(b"\x00" + bytes.fromhex(r.content_hash) + bytes.fromhex(r.signature)).digest()
              for r in parsed.records]
    assert root_of(leaves).hex() == new.root and root_of(leaves[:37]).hex() == old.root
    for seq in (0, 17, 36, 64, 100):
        proof = w.inclusion_proof(seq)
        assert proof["leaf_hash"] == leaves[seq].hex()
        assert verify_inclusion(leaves[seq], seq, 101, [bytes.fromhex(p) for p in proof["path"]], bytes.fromhex(new.root))
        assert not verify_inclusion(leaves[seq - 1], seq, 101, [bytes.fromhex(p) for p in proof["path"]], bytes.fromhex(new.root))
    cons = w.consistency_proof(37, 101)
    assert verify_consistency(37, 101, bytes.fromhex(old.root), bytes.fromhex(new.root), [bytes.fromhex(p) for p in cons["proof"]])


def test_a_log_rolled_back_under_a_live_witness_is_refused() -> None:
    """If the store loses acknowledged entries (restore of an old backup, truncation), the witness
    refuses to write a second history over them and says why."""
    from infrafabric.witness.merkle import CompactRange
    from infrafabric.witness.store.memory import _LOGS, drop_memory_log

    w = Witness("memory://rollback-test")
    try:
        for i in range(100):
            w.log("IF.x", "op", {"i": i})
        w.flush()
        log = _LOGS["rollback-test"]
        with log.lock:  # what a restore of an older backup looks like to the writer
            del log.entries[50:]
            edge = CompactRange()
            for e in log.entries:
                edge.append(e.leaf())
            log.frontier = edge
        w.log("IF.x", "op", {"i": 100})
        with pytest.raises(WitnessStorageError) as info:
            w.flush(timeout=1)
        assert info.value.error_code == "WITNESS_LOG_ROLLED_BACK"
        assert len(log.entries) == 50  # nothing was written over the gap
        with pytest.raises(WitnessStorageError):
            w.close(timeout=0.5)  # close cannot flush either, and says so
        w._thread.join(5)
        assert not w._thread.is_alive()  # the writer gave up once close was requested
    finally:
        w.close()
        drop_memory_log("rollback-test")


def test_backlog_is_bounded_while_the_store_cannot_keep_up() -> None:
    w = Witness("memory://", max_pending=5)
    try:
        accepted = 0
        with pytest.raises(WitnessStorageError) as info:
            for i in range(100_000):
                w.log("IF.x", "op", {"i": i})
                accepted += 1
        assert info.value.error_code == "WITNESS_BACKLOG_FULL" and accepted >= 5
    finally:
        w.close()


def test_the_witness_metrics_count_durable_entries_and_the_published_checkpoint_age(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import math

    from prometheus_client import CollectorRegistry

    from infrafabric.witness import Witness
    from infrafabric.witness.metrics import WitnessCollector

    registry = CollectorRegistry()
    holder: dict[str, Witness | None] = {"w": None}
    registry.register(WitnessCollector(lambda: holder["w"]))
    assert registry.get_sample_value("if_witness_appends_total") == 0  # no log opened yet: zeros, no error
    assert math.isnan(registry.get_sample_value("if_witness_checkpoint_age_seconds") or 0.0)
    with Witness(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "keys", writer="thread") as w:
        holder["w"] = w
        for i in range(5):
            w.log("test", "op", {"i": i})
        w.flush()
        assert registry.get_sample_value("if_witness_appends_total") == 5
        assert registry.get_sample_value("if_witness_pending_entries") == 0
        assert 0 <= (registry.get_sample_value("if_witness_checkpoint_age_seconds") or -1) < 60
