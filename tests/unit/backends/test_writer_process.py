"""``backends.writer_process``: a real child process on a real SQLite file. Answers come back in order;
when the child dies with requests unanswered, each is reconciled by its ids through the owner's callback
(committed, not committed, or unknown), and nothing is ever sent twice."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from backends.writer_process import Lost, WriterProcess

ROOT = str(Path(__file__).resolve().parents[3])  # where ``tests.fixtures`` is importable from
CHILD = "tests.fixtures.ids_writer_child"


def _stored_in(path: Path):  # type: ignore[no-untyped-def]
    asked: list[list[str]] = []

    async def stored(ids: list[str]) -> set[str]:
        asked.append(list(ids))
        with sqlite3.connect(path) as con:
            return {r[0] for r in con.execute(f"SELECT id FROM rows WHERE id IN ({','.join('?' * len(ids))})", ids)}

    return stored, asked


def _child(path: Path, stored=None) -> WriterProcess:  # type: ignore[no-untyped-def]
    return WriterProcess(CHILD, (str(path),), loop=asyncio.get_running_loop(), pythonpath=ROOT, stored=stored)


async def test_answers_come_back_in_order_and_finish_reports_the_exit(tmp_path: Path) -> None:
    proc = _child(tmp_path / "w.db")
    answers = await asyncio.gather(*(proc.submit(("store", [f"r{i}"]), [f"r{i}"]) for i in range(50)))
    assert answers == [("ok", [f"r{i}"]) for i in range(50)]
    assert proc.in_flight == 0
    assert await proc.finish() == 0 and proc.ended


async def test_a_child_that_dies_after_its_commit_is_reconciled_as_committed(tmp_path: Path) -> None:
    stored, asked = _stored_in(tmp_path / "w.db")
    proc = _child(tmp_path / "w.db", stored)
    first = proc.submit(("store", ["a1", "a2"]), ["a1", "a2"])
    dying = proc.submit(("die_after_commit", ["b1", "b2"]), ["b1", "b2"])
    never = proc.submit(("store", ["c1"]), ["c1"])  # sent, never read by the dead child
    assert await first == ("ok", ["a1", "a2"])
    assert await dying == Lost(5, True)
    assert await never == Lost(5, False)
    assert asked == [["b1", "b2", "c1"]]  # one question for everything unanswered
    assert await proc.done == 5
    late = proc.submit(("store", ["d1"]), ["d1"])  # after the end: not sent, cannot have committed
    assert late.result() == Lost(5, False)


async def test_a_child_that_dies_before_its_commit_is_reconciled_as_not_committed(tmp_path: Path) -> None:
    stored, _ = _stored_in(tmp_path / "w.db")
    proc = _child(tmp_path / "w.db", stored)
    await proc.submit(("store", ["x"]), ["x"])  # the table exists
    assert await proc.submit(("die_before_commit", ["y"]), ["y"]) == Lost(3, False)


async def test_unknown_when_the_database_cannot_say_or_the_request_has_no_ids(tmp_path: Path) -> None:
    async def broken(ids: list[str]) -> set[str]:
        raise OSError("disk gone")

    proc = _child(tmp_path / "w.db", broken)
    assert await proc.submit(("die_after_commit", ["e1"]), ["e1"]) == Lost(5, None)
    stored, _ = _stored_in(tmp_path / "w.db")
    proc = _child(tmp_path / "w.db", stored)
    assert await proc.submit(("die_after_commit", ["e2"])) == Lost(5, None)  # no ids: no way to tell
    proc = _child(tmp_path / "w.db")  # no callback
    assert await proc.submit(("die_after_commit", ["e3"]), ["e3"]) == Lost(5, None)


async def test_a_killed_child_loses_nothing_answered(tmp_path: Path) -> None:
    stored, _ = _stored_in(tmp_path / "w.db")
    proc = _child(tmp_path / "w.db", stored)
    await proc.submit(("store", ["k0"]), ["k0"])
    held = [proc.submit(("hold", []), ["h"])] + [proc.submit(("store", [f"k{i}"]), [f"k{i}"]) for i in range(1, 5)]
    proc.kill()
    outcomes = await asyncio.gather(*held)
    assert all(isinstance(o, Lost) and o.committed is False and o.exit_code == -9 for o in outcomes)


async def test_abandon_resolves_what_is_unanswered_as_unknown(tmp_path: Path) -> None:
    proc = _child(tmp_path / "w.db")
    held = proc.submit(("hold", []), ["h"])
    proc.abandon()
    assert await held == Lost(None, None)
    assert await proc.finish() == 4  # its input ended: the held child exits
