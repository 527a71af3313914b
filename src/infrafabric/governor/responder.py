"""BlockerResponder: the governor answering blocker events as they happen (gang up on a blocker).

It listens on the coordinator's blocker broadcast; for each event it assembles a team with
`request_help_for_blocker` (which pushes each helper its assignment) and announces the team, so the
blocked swarm learns who is coming within milliseconds instead of the 62 s of git polling.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from backends.jsonsafe import loads_bounded
from backends.bus import Message, Subscription
from backends.kv import Compare, Delete, Put
from backends.periodic import Periodic
from infrafabric.coordinator import keys
from infrafabric.governor.governor import IFGovernor
from infrafabric.ids import is_valid_id

ANSWERS = "/governor/answers/"  # blocker id -> the replica answering it, then "answered" (a CAS: one answer each)
ANNOUNCE = "/governor/announce/"  # blocker id -> its team announcement, until the bus has taken it
ANSWER_TTL = 3600
ANSWERING_TTL = 10  # how long a replica may take to answer before its claim lapses and the sweep answers instead


class BlockerResponder:
    def __init__(self, governor: IFGovernor, *, sweep_interval: float = 2.0, sweep_after: float = 1.0,
                 answering_ttl: int = ANSWERING_TTL) -> None:
        if governor.coordinator is None:
            raise ValueError("the responder needs a governor attached to a coordinator")
        self.governor = governor
        self.bus = governor.coordinator.bus
        self.assignments: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.replica_id = uuid.uuid4().hex
        self.events_handled = 0  # blocker events this responder has finished with (answered or left to another)
        self.swept = 0  # pending blockers answered by the sweep (their event was lost, or its answer failed)
        self.reannounced = 0  # answers the sweep announced because their own announcement was not confirmed
        self.sweep_interval, self.sweep_after = sweep_interval, sweep_after
        self.answering_ttl = answering_ttl
        self._sweeper = Periodic(self.sweep, lambda: self.sweep_interval, name="blocker-sweep")

    async def start(self) -> "BlockerResponder":
        self._sub = await self.bus.subscribe(keys.BLOCKER_EVENTS, self._on_blocker)
        if self.governor.kv is not None and self.sweep_interval > 0:
            self._sweeper.start()
        return self

    async def sweep(self) -> int:
        """Answer pending blockers nobody answered: an event published by a replica cut from NATS can be
        lost (core NATS is at most once), and an answer can fail half way (the replica lost etcd). The
        blocker itself is in etcd, so every replica looks for unanswered ones (every ``sweep_interval``
        once started); the CAS on the answer key still lets exactly one answer each. Answers whose
        announcement the bus never confirmed are announced again (``_announce_left``)."""
        kv = self.governor.kv
        assert kv is not None
        await self._announce_left()
        answered = {row.key[len(ANSWERS):] for row in await kv.get_prefix(ANSWERS)}
        now, count = time.time(), 0
        for row in await kv.get_prefix(keys.BLOCKERS):
            try:
                event = loads_bounded(row.value)
                blocker_id, stamp = event["blocker_id"], float(event["timestamp"])
            except (ValueError, KeyError, TypeError):
                continue  # a damaged record: pending_blockers expires it
            if blocker_id in answered or now - stamp < self.sweep_after:
                continue
            count += await self._respond(event)
        self.swept += count
        return count

    def _on_blocker(self, msg: Message) -> None:
        event = loads_bounded(msg.data)  # another process's bytes: bounded depth
        task = asyncio.get_running_loop().create_task(self._respond(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self, event: dict[str, Any]) -> str | None:
        """This responder's claim on answering the blocker, or None when another replica has it.

        Every governor replica hears the event; the one whose compare-and-swap on the blocker's answer key
        wins answers it. The claim is on a short lease: a replica that loses etcd or dies half way through
        an answer lets it lapse, and the sweep (on any replica) answers the blocker instead."""
        kv = self.governor.kv
        blocker_id = event.get("blocker_id")
        if kv is None or not isinstance(blocker_id, str):
            return ""  # in process: nothing to share the answer with
        key = f"{ANSWERS}{blocker_id}"
        claim = f"answering:{self.replica_id}:{uuid.uuid4().hex}"
        lease = await kv.grant_lease(self.answering_ttl)
        won = (await kv.txn([Compare.missing(key)], [Put(key, claim, lease)])).succeeded
        if not won:
            await kv.revoke_lease(lease)
            return None
        return claim

    async def _commit(self, blocker_id: str, claim: str, assignment: dict[str, Any]) -> bool:
        """Turn the claim into the lasting "answered" record, only while the claim is still ours: a claim
        that lapsed may be answered by another replica now, and then this one must not announce a second
        answer. The announcement is stored in the same transaction, so an answer is announced even if this
        replica cannot reach the bus or dies before it does (the sweep announces what is left). An etcd
        that is away leaves the outcome unknown, so the record is read back until it is known (it names
        the claim), within the claim's lease."""
        kv = self.governor.kv
        if kv is None or not claim:
            return True
        key, done = f"{ANSWERS}{blocker_id}", f"answered:{claim}"
        announcement = json.dumps({"assignment": assignment, "at": time.time()})
        deadline = time.monotonic() + self.answering_ttl
        while True:
            try:
                lease = await kv.grant_lease(ANSWER_TTL)
                if (await kv.txn([Compare.value(key, claim)], [Put(key, done, lease),
                                                                Put(f"{ANNOUNCE}{blocker_id}", announcement,
                                                                    lease)])).succeeded:
                    return True
                await kv.revoke_lease(lease)
                current = await kv.get(key)
                return current is not None and current.value == done.encode()
            except Exception:  # noqa: BLE001 - the store is away; try again until the claim would lapse
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _respond(self, event: dict[str, Any]) -> bool:
        try:
            return await self._answer(event)
        finally:
            self.events_handled += 1

    async def _answer(self, event: dict[str, Any]) -> bool:
        """Whether this responder answered it (False: another replica does, or it is not a blocker)."""
        if not isinstance(event, dict) or not isinstance(event.get("swarm_id"), str):
            return False
        claim = await self._claim(event)
        if claim is None:
            return False  # another replica answers it
        info = event.get("blocker_info") or {}
        blocker_id = event.get("blocker_id")
        request_id = blocker_id if isinstance(blocker_id, str) and is_valid_id(blocker_id) else None
        team = await self.governor.request_help_for_blocker(event["swarm_id"], info, request_id=request_id)
        if team and request_id is not None:
            await self._record_team(event["swarm_id"], request_id, team)
        assignment = {
            "type": "help_assigned",
            "blocker_id": event.get("blocker_id"),
            "swarm_id": event["swarm_id"],
            "team": team,
            "detected_at": event.get("timestamp"),
        }
        if isinstance(blocker_id, str) and not await self._commit(blocker_id, claim, assignment):
            return False  # the claim lapsed while answering; the replica holding it now announces the answer
        self.assignments.put_nowait(assignment)
        await self._announce(blocker_id, assignment)
        return True

    async def _announce(self, blocker_id: Any, assignment: dict[str, Any], stored: Any = None) -> bool:
        """Publish the team and, once the bus server has it (a flush), drop the stored announcement. A bus
        that is away leaves it stored: the sweep announces it again (at least once, never lost)."""
        try:
            await self.bus.publish(keys.HELP_EVENTS, json.dumps(assignment).encode())
            await self.bus.flush()
        except Exception:  # noqa: BLE001 - the bus is away: the stored announcement waits for the sweep
            return False
        kv = self.governor.kv
        if kv is not None and isinstance(blocker_id, str):
            key = f"{ANNOUNCE}{blocker_id}"
            try:
                if stored is None:
                    await kv.delete(key)
                else:  # only the record this sweep read: another sweep may have taken it already
                    await kv.txn([Compare.mod_revision(key, stored.mod_revision)], [Delete(key)])
            except Exception:  # noqa: BLE001 - announced; a later sweep announces it once more at worst
                pass
        return True

    async def _announce_left(self) -> int:
        """Announce the answers whose announcement the bus never confirmed (their replica was cut from the
        bus, or died between its answer and its announcement)."""
        kv = self.governor.kv
        assert kv is not None
        now, count = time.time(), 0
        for row in await kv.get_prefix(ANNOUNCE):
            try:
                record = loads_bounded(row.value)
                assignment, at = record["assignment"], float(record["at"])
            except (ValueError, KeyError, TypeError):
                await kv.delete(row.key)  # damaged: nothing to announce from it
                continue
            if now - at < self.sweep_after or not isinstance(assignment, dict):
                continue
            count += await self._announce(row.key[len(ANNOUNCE):], assignment, stored=row)
        self.reannounced += count
        return count

    async def _record_team(self, swarm_id: str, blocker_id: str, team: list[str]) -> None:
        """The team whose completed help tasks resolve the blocker, on the blocker's own lease (it goes
        when the blocker does: resolved, or its reporter's session ended)."""
        kv = self.governor.kv
        if kv is None:
            return
        blocker = await kv.get(keys.blocker_key(swarm_id, blocker_id))
        if blocker is None:
            return  # resolved or expired already
        record = json.dumps({"swarm_id": swarm_id, "team": team, "assigned_at": time.time()})
        await kv.txn([Compare.mod_revision(blocker.key, blocker.mod_revision)],
                     [Put(keys.blocker_team_key(blocker_id), record, blocker.lease)])

    async def stop(self) -> None:
        await self._sweeper.stop()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for task in list(self._tasks):
            await task
