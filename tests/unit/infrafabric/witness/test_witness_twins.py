"""Witness and AsyncWitness: one log under both, the same names, and every waiting method awaitable."""

from __future__ import annotations

import inspect
import io
from pathlib import Path

import pytest

from infrafabric.witness import Witness
from infrafabric.witness.aio import AsyncWitness

_SYNC_ONLY = {"aflush", "aclose", "aquery", "asearch", "asize"}  # the core's own coroutine forms
_NEVER_WAIT = {"log"}


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_the_async_twin_has_every_name_of_the_sync_one_and_awaits_whatever_can_wait() -> None:
    sync_names = _public(Witness) - _SYNC_ONLY
    assert sync_names - {"search"} <= _public(AsyncWitness) - {"sync", "wrap", "search"}
    for name in sync_names:
        member = inspect.getattr_static(Witness, name)
        if isinstance(member, property) or name in _NEVER_WAIT:
            assert not inspect.iscoroutinefunction(getattr(AsyncWitness, name, None)), name
        elif callable(member):
            assert inspect.iscoroutinefunction(getattr(AsyncWitness, name)), name


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_both_faces_write_and_read_one_log_alike(tmp_path: Path, store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'w.db'}"
    key_dir = None if store == "memory" else tmp_path / "keys"
    witness = AsyncWitness(url, key_dir, writer="thread")
    for i in range(20):
        witness.log("IF.test", "step", {"i": i}, trace_id="trace-1" if i % 2 else None)
    witness.sync.log("IF.test", "from-sync", {"i": 20})
    assert await witness.flush() == 21 and await witness.size() == 21
    entries = await witness.query(component="IF.test")
    assert [e["params"]["i"] for e in entries] == list(range(21))
    assert entries == witness.sync.query(component="IF.test")  # the same log through either face
    page = await witness.search(contains='"i":19', limit=5)
    assert [e.to_dict()["params"]["i"] for e in page] == [19]
    report = await witness.verify()
    assert report.ok, report
    proof = await witness.inclusion_proof(3)
    assert proof == witness.sync.inclusion_proof(3)
    consistency = await witness.consistency_proof(5, 21)
    assert consistency["second"] == 21
    assert len((await witness.trace("trace-1"))["entries"]) == 10
    assert (await witness.latest_checkpoint()).size == 21
    out = io.StringIO()
    assert await witness.export(out) == 21 and out.getvalue() == await witness.export_text()
    await witness.close()
    assert witness.closed and witness.sync.closed


async def test_wrap_gives_an_existing_witness_an_async_face() -> None:
    witness = Witness("memory://", writer="thread")
    twin = AsyncWitness.wrap(witness)
    twin.log("IF.test", "one", {})
    assert await twin.flush() == 1 and twin.committed == 1 and twin.key_id == witness.key_id
    async with twin:
        pass
    assert witness.closed
