"""The coordination protocol on a key-value store and a bus, shared by the coordinator and swarm clients.

Claims are one compare-and-swap on /tasks/{id}/owner, attached to the claiming swarm's session lease,
so a crashed swarm's tasks become claimable when its lease expires. The revision of the winning write is
the fencing token: completion and progress writes compare it, so an owner whose lease expired (and whose
task someone else claimed) cannot write any more.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from backends.bus import MessageBus
from backends.errors import BackendUnavailable, LeaseNotFound, OutcomeUnknown
from backends.kv import Compare, Delete, Get, KeyValue, KeyValueStore, LeaseKeeper, Put
from infrafabric.coordinator import keys
from infrafabric.errors import NotTaskOwnerError, StaleClaimError
from infrafabric.ids import validate_swarm_id, validate_task_id, validate_task_ids

AuditFn = Callable[..., Any]


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


class Claim(NamedTuple):
    """A won claim: the revision is the fencing token for the owner's later writes."""

    task_id: str
    swarm_id: str
    revision: int
    lease: int


class _Session:
    """One swarm's lease, refreshed in the background while the swarm is alive."""

    def __init__(self, lease: int, keeper: LeaseKeeper) -> None:
        self.lease = lease
        self.keeper = keeper


class CoordinationCore:
    def __init__(self, kv: KeyValueStore, bus: MessageBus, *, claim_ttl: int = 10, audit: AuditFn | None = None) -> None:
        self.kv = kv
        self.bus = bus
        self.claim_ttl = claim_ttl
        self._audit = audit
        self._sessions: dict[str, _Session] = {}
        self._session_locks: dict[str, asyncio.Lock] = {}
        self.claims: dict[str, Claim] = {}

    def audit(self, operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
        if self._audit is not None:
            self._audit("IF.coordinator", operation, params, severity)

    # -- registration ----------------------------------------------------------------------------

    async def write_registration(self, swarm_id: str, capabilities: list[str]) -> None:
        """The registration lives on the swarm's session lease: a swarm that dies (stops refreshing it)
        drops out of every listing within the lease's TTL, as its claims do."""
        for _attempt in range(3):
            lease = await self.session_lease(swarm_id)
            try:
                await self.kv.put(keys.capabilities_key(swarm_id), encode([str(c) for c in capabilities]), lease=lease)
                return
            except LeaseNotFound:
                await self.end_session(swarm_id, release=False)  # expired under us: take a new lease
        raise BackendUnavailable(f"registration of {swarm_id} did not complete; try again")

    # -- sessions (leases) ------------------------------------------------------------------------

    async def session_lease(self, swarm_id: str) -> int:
        session = self._sessions.get(swarm_id)
        if session is not None and session.keeper.alive:
            return session.lease
        lock = self._session_locks.setdefault(swarm_id, asyncio.Lock())
        async with lock:
            session = self._sessions.get(swarm_id)
            if session is not None and session.keeper.alive:
                return session.lease
            lease = await self.kv.grant_lease(self.claim_ttl)
            self._sessions[swarm_id] = _Session(lease, self.kv.keep_alive(lease, self.claim_ttl))
            return lease

    async def end_session(self, swarm_id: str, *, release: bool) -> None:
        """Stop refreshing a swarm's lease; with release, revoke it so its claims free up now."""
        session = self._sessions.pop(swarm_id, None)
        if session is None:
            return
        await session.keeper.stop()
        if release:
            await self.kv.revoke_lease(session.lease)

    async def close(self) -> None:
        for swarm_id in list(self._sessions):
            await self.end_session(swarm_id, release=False)

    # -- claims -----------------------------------------------------------------------------------

    async def claim(self, swarm_id: str, task_id: str, *, lease: int | None = None) -> Claim | None:
        """Claim one task on the swarm's session lease. With ``lease`` (a session someone else keeps, as the
        coordinator service does for remote swarms) that lease or nothing: if it is gone, ``LeaseNotFound``
        (a claim racing its session's close must not open a new session that nobody would ever end)."""
        validate_swarm_id(swarm_id)
        validate_task_id(task_id)
        key = keys.owner_key(task_id)
        for _attempt in range(3):
            held = lease if lease is not None else await self.session_lease(swarm_id)
            try:
                won = await self._try_claim(key, swarm_id, task_id, held)
            except LeaseNotFound:
                if lease is not None:
                    raise
                await self.end_session(swarm_id, release=False)  # expired under us: take a new lease
                continue
            except OutcomeUnknown:
                # The write may or may not have landed: read to find out, and try again only if the
                # task is still claimable (a blind retry could report our own win as a loss).
                current = await self.kv.get(key)
                if current is None or current.value == keys.UNCLAIMED.encode():
                    continue
                won = self._already_mine([current], swarm_id, task_id)
            if won is not None:
                self.claims[task_id] = won
                self.audit("task_claimed", {"task_id": task_id, "swarm_id": swarm_id, "revision": won.revision})
            return won
        raise BackendUnavailable(f"claim of {task_id} by {swarm_id} did not complete; try again")

    async def claim_many(self, swarm_id: str, task_ids: list[str], *, lease: int | None = None) -> list[Claim | None]:
        """Claim several tasks at once: one independent CAS each, sent together (one lock embedded).
        ``lease`` as for ``claim``."""
        validate_swarm_id(swarm_id)
        if not isinstance(task_ids, list):
            raise TypeError("task_ids must be a list")
        validate_task_ids(task_ids)
        given = lease
        if lease is None:
            lease = await self.session_lease(swarm_id)
        value = swarm_id.encode()
        try:
            created = await self.kv.create_many([(f"/tasks/{t}/owner", value, lease) for t in task_ids])
        except (LeaseNotFound, OutcomeUnknown):
            return [await self.claim(swarm_id, t, lease=given) for t in task_ids]  # slow path decides each one
        claims: list[Claim | None] = []
        held = self.claims
        unclaimed = keys.UNCLAIMED.encode()
        for task_id, (won, current) in zip(task_ids, created):
            if won:  # tuple.__new__ skips NamedTuple's Python-level __new__: this loop is the batch hot path
                claim: Claim | None = tuple.__new__(Claim, (task_id, swarm_id, current.mod_revision, lease))  # type: ignore[union-attr,arg-type]
            elif current is not None and current.value == unclaimed:
                claim = await self.claim(swarm_id, task_id, lease=given)  # announced: the two-step path
            else:
                claim = self._already_mine([current] if current else [], swarm_id, task_id)
            if claim is not None:
                held[task_id] = claim
            claims.append(claim)
        if self._audit is not None:
            won_ids = [c.task_id for c in claims if c is not None]
            if won_ids:
                self.audit("tasks_claimed", {"swarm_id": swarm_id, "task_ids": won_ids})
        return claims

    async def _try_claim(self, key: str, swarm_id: str, task_id: str, lease: int) -> Claim | None:
        """One transaction for a fresh task (the common case: pushed, never announced, or its lease
        expired); a second only when the task was announced as 'unclaimed'."""
        res = await self.kv.txn([Compare.missing(key)], [Put(key, swarm_id, lease)], [Get(key)])
        if res.succeeded:
            return Claim(task_id, swarm_id, res.revision, lease)
        current = res.results[0]
        assert isinstance(current, list)
        if current and current[0].value == keys.UNCLAIMED.encode():
            res = await self.kv.txn(
                [Compare.mod_revision(key, current[0].mod_revision)], [Put(key, swarm_id, lease)], [Get(key)]
            )
            if res.succeeded:
                return Claim(task_id, swarm_id, res.revision, lease)
            current = res.results[0]
            assert isinstance(current, list)
        return self._already_mine(current, swarm_id, task_id)

    def _already_mine(self, current: list[KeyValue], swarm_id: str, task_id: str) -> Claim | None:
        """A re-claim by the current owner is idempotent (also resolves a retried, applied claim)."""
        if current and current[0].value == swarm_id.encode():
            return Claim(task_id, swarm_id, current[0].mod_revision, current[0].lease)
        return None

    def _claim_of(self, swarm_id: str, task_id: str, claim: Claim | None) -> Claim:
        claim = claim or self.claims.get(task_id)
        if claim is None or claim.swarm_id != swarm_id:
            raise NotTaskOwnerError(f"{swarm_id} holds no claim on task {task_id}")
        return claim

    async def fenced_write(self, claim: Claim, writes: list[Put]) -> int:
        """Apply writes only while the claim is still the current ownership (revision fence)."""
        key = keys.owner_key(claim.task_id)
        res = await self.kv.txn(
            [Compare.mod_revision(key, claim.revision), Compare.value(key, claim.swarm_id)], writes, [Get(key)]
        )
        if not res.succeeded:
            current = res.results[0]
            holder = current[0].value.decode() if isinstance(current, list) and current else "nobody"
            self.audit(
                "fenced_write_refused",
                {"task_id": claim.task_id, "swarm_id": claim.swarm_id, "current_owner": holder},
                "WARN",
            )
            raise StaleClaimError(
                f"claim of {claim.swarm_id} on {claim.task_id} (revision {claim.revision}) is stale; owner: {holder}"
            )
        return res.revision

    async def update_progress(self, swarm_id: str, task_id: str, progress: Any, claim: Claim | None = None) -> int:
        claim = self._claim_of(swarm_id, task_id, claim)
        return await self.fenced_write(claim, [Put(keys.progress_key(task_id), encode(progress))])

    async def complete(self, swarm_id: str, task_id: str, result: Any = None, claim: Claim | None = None) -> int:
        claim = self._claim_of(swarm_id, task_id, claim)
        revision = await self.fenced_write(
            claim,
            [
                Put(keys.owner_key(task_id), keys.COMPLETED_PREFIX + swarm_id),
                Put(keys.result_key(task_id), encode(result)),
            ],
        )
        self.claims.pop(task_id, None)
        self.audit("task_completed", {"task_id": task_id, "swarm_id": swarm_id})
        if task_id.startswith(keys.HELP_PREFIX):
            await self.resolve_if_team_done(task_id)
        return revision

    async def resolve_if_team_done(self, help_task_id: str) -> bool:
        """A blocker is resolved once every member of its team completed its help task
        (``help-<blocker id>-<helper>``): the blocker and its team record go in one transaction, so two
        helpers finishing at once resolve it once."""
        blocker_id = help_task_id[len(keys.HELP_PREFIX):].split("-", 1)[0]
        record = await self.kv.get(keys.blocker_team_key(blocker_id))
        if record is None:
            return False  # not a team the responder recorded, or resolved already
        try:
            team_of = json.loads(record.value)
            swarm_id, team = team_of["swarm_id"], list(team_of["team"])
            validate_swarm_id(swarm_id)
            for helper in team:
                validate_swarm_id(helper)
        except (ValueError, KeyError, TypeError):
            return False  # a damaged record resolves nothing (an operator still can)
        for helper in team:
            owner = await self.kv.get(keys.owner_key(keys.help_task_id(blocker_id, helper)))
            if owner is None or owner.value != (keys.COMPLETED_PREFIX + helper).encode():
                return False  # not done yet, or done by someone who was not assigned it
        res = await self.kv.txn([Compare.mod_revision(record.key, record.mod_revision)],
                                [Delete(keys.blocker_key(swarm_id, blocker_id)), Delete(record.key)])
        if res.succeeded:
            self.audit("blocker_resolved", {"swarm_id": swarm_id, "blocker_id": blocker_id, "by": "team",
                                            "team": team})
        return res.succeeded

    # -- blockers ---------------------------------------------------------------------------------

    async def report_blocker(self, swarm_id: str, blocker_info: dict[str, Any], *,
                             lease: int | None = None) -> dict[str, Any]:
        """Persist the blocker, then notify the orchestrator and every governor at once (no polling).

        It stays pending until resolved (``IFCoordinator.resolve_blocker``, ``coordinator resolve-blocker``)
        or until the reporting swarm's session ends: it lives on that session's lease."""
        validate_swarm_id(swarm_id)
        if not isinstance(blocker_info, dict):
            raise TypeError("blocker_info must be a dict")
        event = {
            "type": "blocker_detected",
            "blocker_id": uuid.uuid4().hex,
            "swarm_id": swarm_id,
            "blocker_info": blocker_info,
            "timestamp": time.time(),
        }
        data = encode(event)
        # on the reporter's session lease: a blocker of a swarm that died does not stay pending for ever
        for _attempt in range(3):
            held = lease if lease is not None else await self.session_lease(swarm_id)
            try:
                await self.kv.put(keys.blocker_key(swarm_id, event["blocker_id"]), data, lease=held)
                break
            except LeaseNotFound:
                if lease is not None:  # that session is over (``claim`` says why not a new one)
                    raise
                await self.end_session(swarm_id, release=False)
        else:
            raise BackendUnavailable(f"blocker of {swarm_id} could not be recorded; try again")
        await self.bus.publish(keys.BLOCKER_EVENTS, data)
        self.audit("blocker_detected", {"swarm_id": swarm_id, "blocker_id": event["blocker_id"]}, "WARN")
        return event
