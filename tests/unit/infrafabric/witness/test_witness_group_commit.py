"""Group commit at trickle rates: a lone entry waits a moment for company, but never a flush or a close."""

from __future__ import annotations

import asyncio
from typing import Any

from infrafabric.witness import Witness


def _count_appends(witness: Witness) -> list[int]:
    sizes: list[int] = []
    append = witness._store.append

    async def counted(batch: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(batch))
        return await append(batch, *args, **kwargs)

    witness._store.append = counted  # type: ignore[method-assign]
    return sizes


def test_entries_that_trickle_in_share_a_commit() -> None:
    witness = Witness("memory://", writer="thread", linger=0.5)
    sizes = _count_appends(witness)

    async def trickle() -> None:
        for i in range(5):
            witness.log("IF.test", "tick", {"i": i})
            await asyncio.sleep(0.01)  # each arrives while the writer waits for company

    asyncio.run(trickle())
    witness.flush(timeout=5)
    assert sum(sizes) == 5 and len(sizes) < 5, sizes
    witness.close()


def test_a_flush_does_not_wait_for_the_group_commit_window() -> None:
    witness = Witness("memory://", writer="thread", linger=30.0)
    witness.log("IF.test", "first", {})
    witness.flush(timeout=5)  # raises WitnessTimeoutError if it waited out the window
    witness.log("IF.test", "second", {})
    assert witness.flush(timeout=5) == 2
    assert [e["operation"] for e in witness.query()] == ["first", "second"]
    witness.log("IF.test", "third", {})
    witness.close(timeout=5)  # a close flushes without waiting out the window either
    assert witness._committed == 3


def test_without_a_window_every_lone_entry_is_its_own_commit() -> None:
    witness = Witness("memory://", writer="thread", linger=0.0)
    sizes = _count_appends(witness)

    async def trickle() -> None:
        for i in range(3):
            witness.log("IF.test", "tick", {"i": i})
            for _ in range(50):  # until the writer has committed it
                if witness._committed > i:
                    break
                await asyncio.sleep(0.01)

    asyncio.run(trickle())
    witness.close()
    assert sizes == [1, 1, 1]
