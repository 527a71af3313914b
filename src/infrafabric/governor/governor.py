"""IF.governor: capability matching, team assembly for blockers, exact budgets and circuit breakers.

Fixes S2 bug #2 (any idle swarm sent to help, budgets overrun): a helper must cover the capabilities a
blocker needs, a team never exceeds the policy's size and cost, and a swarm whose budget is exhausted or
that keeps failing is cut off until an operator resets it — every such decision audited by IF.witness.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from backends.errors import BackendError
from backends.jsonsafe import loads_bounded
from backends.kv import KeyValueStore
from infrafabric.coordinator import keys
from infrafabric.coordinator.credentials import Identity
from infrafabric.errors import (
    CircuitOpenError,
    InfraFabricError,
    PermissionDeniedError,
    UnknownSwarmError,
    ValidationError,
)
from infrafabric.capability import Capability, parse_capabilities
from infrafabric.governor.index import CapabilityIndex, base_score
from infrafabric.governor.ledger_keys import breaker_key as _breaker_key
from infrafabric.governor.ledger_keys import budget_key as _budget_key
from infrafabric.governor.money import add, share_of, sub, to_money
from infrafabric.governor.persistence import MISSING, StatePersister
from infrafabric.governor.policy import ResourcePolicy
from infrafabric.governor.profile import SwarmProfile
from infrafabric.reputation import check_reputation
from infrafabric.ids import validate_swarm_id, validate_task_id
from infrafabric import seed_wiring
from infrafabric.seed_wiring import join_live_governors, leave_live_governors

if TYPE_CHECKING:
    from infrafabric.coordinator import IFCoordinator

COMPONENT = "IF.governor"
CLOSED, OPEN = "closed", "open"


@dataclass(frozen=True)
class _Account:
    """A swarm's exact budget: what it started with (or was reset to) and what it has spent since.
    Frozen: a queued store write holds the account it was planned with (a charge changed one in place, and
    the swarm's queued registration then stored the charge as well as the charge's own write)."""

    budget: Decimal
    spent: Decimal = Decimal(0)

    @property
    def remaining(self) -> Decimal:
        return sub(self.budget, self.spent)  # exact, in the ledger's own context

    def record(self) -> dict[str, str]:
        return {"budget": str(self.budget), "spent": str(self.spent)}


@dataclass
class _Breaker:
    """A swarm's circuit breaker. Only an operator closes an open one (``reset_circuit_breaker``)."""

    state: str = CLOSED
    reason: str | None = None
    consecutive_failures: int = 0
    tripped_at: float | None = None


def _encode(record: Any) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=str).encode()


def _decode(data: bytes) -> Any:
    return loads_bounded(data)


GOVERNOR_PREFIX = "/governor/"
_UNREADABLE = "ledger record unreadable: an operator must set a budget"


def _status_of(breaker: "_Breaker") -> str:
    return "circuit_breaker_tripped" if breaker.state == OPEN else "active"


def _stored_dict(record: Any, what: str) -> dict[str, Any]:
    """A stored record that must be a JSON object (``null``, a list, or unreadable bytes are damage)."""
    if isinstance(record, BaseException):
        raise record
    if not isinstance(record, dict):
        raise ValueError(f"{what} record is {type(record).__name__}, not an object")
    return record


def _account_from(record: Any) -> "_Account":
    """A stored budget record; raises on any damage (callers fail closed)."""
    fields = _stored_dict(record, "budget")
    return _Account(to_money(fields["budget"], "budget"), to_money(fields["spent"], "spent"))


# The gateway's reservation ledger (gateway/reservations.py) writes ``opened_at`` where the governor writes
# ``tripped_at``; both are the same field.
_BREAKER_TIME_FIELDS = ("tripped_at", "opened_at")


def _breaker_from(record: Any) -> "_Breaker":
    """A stored breaker record; raises on any damage: an unknown field or state, or a field of the wrong
    type or range (callers fail closed). Why every field: a corrupted failure count loaded silently
    (``-1000`` defeats the failure breaker, ``"x"`` breaks the next ``record_task_result``)."""
    fields = _stored_dict(record, "breaker")
    unknown = set(fields) - {"state", "reason", "consecutive_failures", *_BREAKER_TIME_FIELDS}
    if unknown:
        raise ValueError(f"breaker record has unknown fields {sorted(unknown)}")
    state = fields.get("state", CLOSED)
    if state not in (OPEN, CLOSED):
        raise ValueError(f"breaker state {state!r}")
    reason = fields.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"breaker reason is {type(reason).__name__}")
    failures = fields.get("consecutive_failures", 0)
    if type(failures) is not int or failures < 0:
        raise ValueError(f"breaker consecutive_failures {failures!r}")
    times = [fields[f] for f in _BREAKER_TIME_FIELDS if f in fields]
    for at in times:
        if at is not None and (type(at) not in (int, float) or not math.isfinite(at) or at < 0):
            raise ValueError(f"breaker tripped_at {at!r}")
    tripped_at = next((float(at) for at in times if at is not None), None)
    return _Breaker(state, reason, failures, tripped_at)


class IFGovernor:
    def __init__(
        self,
        coordinator: "IFCoordinator | None" = None,
        policy: ResourcePolicy | None = None,
        *,
        kv: KeyValueStore | None = None,
        audit: Any = seed_wiring.DEFAULT,
        cost_sink: Any = seed_wiring.DEFAULT,
    ) -> None:
        self.coordinator = coordinator
        self._cost_sink = seed_wiring.cost_sink(cost_sink)
        self.policy = policy or ResourcePolicy()
        self.swarm_registry: dict[str, SwarmProfile] = {}
        self.task_budgets: dict[str, dict[str, Decimal]] = {}
        self._accounts: dict[str, _Account] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._reputation: dict[str, float] = {}
        self.load_problems: list[tuple[str, str]] = []  # (key, why) of records load() could not read
        self._index = CapabilityIndex()
        self._audit = seed_wiring.audit_sink(audit)
        store = kv if kv is not None else (coordinator.kv if coordinator is not None else None)
        self.kv: KeyValueStore | None = store  # where its state (and the credential revocations) live
        self._store = StatePersister(store) if store is not None else None
        self._live: set[str] | None = None  # swarms with a live registration, once follow() runs
        self._followers: list[asyncio.Task[None]] = []
        join_live_governors(self)  # the seeds' IFChassis() feeds every live governor (seed_wiring)

    # -- plumbing ---------------------------------------------------------------------------------

    def _log(self, operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
        if self._audit is not None:
            self._audit(COMPONENT, operation, params, severity)

    def _profile(self, swarm_id: str) -> SwarmProfile:
        profile = self.swarm_registry.get(swarm_id)
        if profile is None:
            raise UnknownSwarmError(f"swarm {swarm_id!r} is not registered with the governor")
        return profile

    def _persist_profile(self, swarm_id: str) -> None:
        if self._store is not None:
            self._store.put(keys.profile_key(swarm_id), self.swarm_registry[swarm_id].to_record())

    def _persist_budget(self, swarm_id: str) -> None:
        """Write this replica's budget record whatever is stored: only for operator actions, which set a
        budget anew (charges go through ``acharge`` or ``_store_charge``, both compare-and-swap). Queued
        behind the charges already waiting, and once stored it is this replica's view again: a charge
        being written when the operator acted answered after, and its old budget stayed on show."""
        if self._store is None:
            return
        key, account = _budget_key(swarm_id), self._accounts[swarm_id]

        def took(stored: _Account) -> None:
            self._accounts[swarm_id] = stored

        self._store.update(key, lambda _current: ([(key, account.record())], account), took)

    def _persist_breaker(self, swarm_id: str) -> None:
        """Blind write of this replica's breaker: only for the operator's reset, the one action that may
        close an open breaker. Every other change goes through ``_update_breaker``."""
        if self._store is not None:
            b = self._breakers[swarm_id]
            self._store.put(_breaker_key(swarm_id), b.__dict__)
            self._store.put(keys.status_key(swarm_id), _status_of(b))

    def _fail_closed(self, swarm_id: str) -> None:
        """A swarm whose ledger record is unreadable: nothing to spend, breaker open, until an operator acts."""
        self._accounts[swarm_id] = _Account(Decimal(0), Decimal(0))
        self._breakers[swarm_id] = _Breaker(OPEN, _UNREADABLE, 0)

    def _update_breaker(self, swarm_id: str, change: Callable[["_Breaker"], "_Breaker"]) -> None:
        """Change the swarm's breaker by a compare-and-swap read-modify-write of the stored record (as
        ``acharge`` does for budgets). Why: a blind write of this replica's cached breaker re-closed a
        breaker another replica had tripped, and the shared ledger then took charges past zero. ``change``
        is applied to the stored breaker, and may never close an open one (only an operator does that)."""

        def apply(base: _Breaker) -> _Breaker:
            after = change(base)
            if base.state == OPEN and after.state != OPEN:
                after = _Breaker(OPEN, base.reason, after.consecutive_failures, base.tripped_at)
            return after

        def settle(outcome: tuple[_Breaker, _Breaker] | BaseException) -> None:
            if isinstance(outcome, BaseException):
                self._unreadable(_breaker_key(swarm_id), outcome)
                self._fail_closed(swarm_id)
                return
            before, after = outcome
            self._breakers[swarm_id] = after
            if before.state == CLOSED and after.state == OPEN:
                self._tripped(swarm_id, after.reason or "tripped")

        if self._store is None:
            before = self._breakers[swarm_id]
            settle((before, apply(before)))
            return
        key, cached = _breaker_key(swarm_id), self._breakers[swarm_id]

        def plan(current: Any) -> tuple[list[tuple[str, Any]] | None, Any]:
            try:
                before = cached if current is MISSING else _breaker_from(current)
            except Exception as exc:  # noqa: BLE001 - damaged record: reported, left as evidence, fail closed
                return None, exc
            after = apply(before)
            return [(key, after.__dict__), (keys.status_key(swarm_id), _status_of(after))], (before, after)

        self._breakers[swarm_id] = apply(cached)  # what readers see until the store answers (queued writes)
        self._store.update(key, plan, settle)

    def _reindex(self, swarm_id: str) -> None:
        profile = self.swarm_registry[swarm_id]
        self._index.upsert(
            swarm_id, profile.capabilities, base_score(self._reputation[swarm_id], profile.cost_per_hour_exact)
        )

    # -- registry ---------------------------------------------------------------------------------

    def register_swarm(self, profile: SwarmProfile) -> None:
        """Add (or replace) a swarm's profile; its budget and reputation move into the governor's ledger.

        A swarm that already has a ledger (here or in the store) keeps it: the budget record and the
        breaker are created only when missing, each by one create-if-absent transaction. Why: a second
        registration reset ``spent`` to zero with a blind write, so every charge made so far was forgotten;
        changing a budget or closing a breaker stays an operator action."""
        if not isinstance(profile, SwarmProfile):
            raise ValidationError("register_swarm takes a SwarmProfile")
        swarm_id = profile.swarm_id
        fresh = _Account(profile.budget_remaining_exact)
        self._reputation[swarm_id] = profile.reputation_score
        self._accounts.setdefault(swarm_id, fresh)
        self._breakers.setdefault(swarm_id, _Breaker())
        profile.attach(self)
        self.swarm_registry[swarm_id] = profile
        self._reindex(swarm_id)
        self._persist_profile(swarm_id)
        self._create_ledger(swarm_id)
        self._log(
            "swarm_registered",
            {"swarm_id": swarm_id, "capabilities": [str(c) for c in profile.capabilities],
             "budget": str(self._accounts[swarm_id].budget), "cost_per_hour": str(profile.cost_per_hour_exact)},
        )

    def _create_ledger(self, swarm_id: str) -> None:
        """Store the swarm's budget and breaker records where they are missing; where they exist, this
        replica takes the stored ones (damaged ones are reported and fail closed, as in ``load``)."""
        if self._store is None:
            return
        bkey, rkey = _budget_key(swarm_id), _breaker_key(swarm_id)
        account, breaker = self._accounts[swarm_id], self._breakers[swarm_id]

        def plan_budget(current: Any) -> tuple[list[tuple[str, Any]] | None, Any]:
            if current is MISSING:
                return [(bkey, account.record())], account
            try:
                return None, _account_from(current)
            except Exception as exc:  # noqa: BLE001 - damaged record: reported below, never overwritten
                return None, exc

        def plan_breaker(current: Any) -> tuple[list[tuple[str, Any]] | None, Any]:
            if current is MISSING:
                return [(rkey, breaker.__dict__), (keys.status_key(swarm_id), _status_of(breaker))], breaker
            try:
                return None, _breaker_from(current)
            except Exception as exc:  # noqa: BLE001
                return None, exc

        damaged: list[str] = []

        def adopt(key: str, into: dict[str, Any]) -> Callable[[Any], None]:
            """Keep the stored (or new) record here; a damaged one is reported and the swarm fails closed."""
            def took(outcome: Any) -> None:
                if isinstance(outcome, BaseException):
                    damaged.append(key)
                    self._unreadable(key, outcome)
                    self._fail_closed(swarm_id)
                elif not damaged:
                    into[swarm_id] = outcome
            return took

        self._store.update(bkey, plan_budget, adopt(bkey, self._accounts))
        self._store.update(rkey, plan_breaker, adopt(rkey, self._breakers))

    def deregister_swarm(self, swarm_id: str) -> None:
        self._profile(swarm_id)
        self._index.remove(swarm_id)
        profile = self.swarm_registry.pop(swarm_id)
        profile.attach(None)
        self._log("swarm_deregistered", {"swarm_id": swarm_id})

    # -- reading the ledger -------------------------------------------------------------------------

    def budget_remaining(self, swarm_id: str) -> Decimal:
        acct = self._accounts.get(swarm_id)
        if acct is None:
            raise UnknownSwarmError(f"swarm {swarm_id!r} is not registered with the governor")
        return acct.remaining

    def budget_limit(self, swarm_id: str) -> Decimal:
        """What the swarm's budget started at (or was last set or reset to)."""
        self._profile(swarm_id)
        return self._accounts[swarm_id].budget

    def budget_spent(self, swarm_id: str) -> Decimal:
        self._profile(swarm_id)
        return self._accounts[swarm_id].spent

    def reputation(self, swarm_id: str) -> float:
        self._profile(swarm_id)
        return self._reputation[swarm_id]

    def circuit_breaker_status(self, swarm_id: str) -> dict[str, Any]:
        self._profile(swarm_id)
        b = self._breakers[swarm_id]
        return {"state": b.state, "reason": b.reason, "consecutive_failures": b.consecutive_failures,
                "tripped_at": b.tripped_at}

    def is_available(self, swarm_id: str) -> bool:
        """Breaker closed, budget left, and (when following the store) a live registration."""
        return self._breakers[swarm_id].state == CLOSED and self._accounts[swarm_id].remaining > 0 and \
            (self._live is None or swarm_id in self._live)

    # -- following the shared state (replicas) --------------------------------------------------------

    async def follow(self) -> None:
        """Keep this replica current with the store: profiles, budgets and breakers other replicas (or
        operators) change, and which swarms are alive (a registration lives on its swarm's session lease).

        One snapshot, then watches from the snapshot's revision, so no change falls between the two; a
        watch that fails is reopened from a fresh snapshot. After this, a swarm without a live
        registration is never chosen for a team."""
        if self.kv is None:
            raise ValidationError("follow() needs a store")
        from backends.kv import Get

        snapshot = await self.kv.txn([], [Get(keys.SWARMS, prefix=True), Get(GOVERNOR_PREFIX, prefix=True)])
        self._live = set()
        for rows in snapshot.results:
            for row in rows if isinstance(rows, list) else []:
                self._apply(row.key, row.value)
        if not self._followers:
            self._followers = [asyncio.create_task(self._follow(prefix, snapshot.revision + 1))
                               for prefix in (keys.SWARMS, GOVERNOR_PREFIX)]

    async def _follow(self, prefix: str, start: int) -> None:
        assert self.kv is not None
        while True:
            try:
                async with self.kv.watch(prefix, prefix=True, start_revision=start) as watch:
                    async for event in watch:
                        self._apply(event.key, event.value if event.type == "put" else None)
                        start = event.mod_revision + 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reopen after a store outage; report it
                self._log("governor_watch_lost", {"prefix": prefix, "error": f"{type(exc).__name__}: {exc}"[:300]},
                          "WARN")
                await asyncio.sleep(0.5)

    def _apply(self, key: str, value: bytes | None) -> None:
        """One stored change into this replica's caches (None: the key was deleted)."""
        parts = key.split("/")
        if len(parts) != 4 or not parts[2]:
            return
        _, area, swarm_id, kind = parts
        try:
            if area == "swarms" and kind == "capabilities" and self._live is not None:
                (self._live.add if value is not None else self._live.discard)(swarm_id)
            elif area == "swarms" and kind == "profile":
                if value is None:
                    if swarm_id in self.swarm_registry:
                        self._index.remove(swarm_id)
                        self.swarm_registry.pop(swarm_id).attach(None)
                    return
                profile = SwarmProfile.from_record(_decode(value))
                if profile.swarm_id != swarm_id:
                    raise ValueError("the record names another swarm")
                self._reputation[swarm_id] = profile.reputation_score  # read before the governor owns it
                profile.attach(self)
                self.swarm_registry[swarm_id] = profile
                self._accounts.setdefault(swarm_id, _Account(profile.initial_budget))
                self._breakers.setdefault(swarm_id, _Breaker())
                self._reindex(swarm_id)
            elif area == "governor" and swarm_id == "budgets" and value is not None:
                target = kind
                self._accounts[target] = _account_from(_decode(value))
            elif area == "governor" and swarm_id == "breakers" and value is not None:
                target = kind
                self._breakers[target] = _breaker_from(_decode(value))
        except Exception as exc:  # noqa: BLE001 - a damaged record: reported; a ledger fails closed
            self._unreadable(key, exc)
            if area == "governor":
                self._breakers[kind] = _Breaker(OPEN, "ledger record unreadable", 0)

    # -- matching ---------------------------------------------------------------------------------

    def find_qualified_swarm(
        self, required_capabilities: Iterable[Any], max_cost: float, *, exclude: Iterable[str] = ()
    ) -> str | None:
        """Best swarm covering >= min_capability_match of the requirements, within max_cost per hour.

        Ranked by match × reputation ÷ cost; swarms with an open breaker or no budget are skipped.
        """
        required = parse_capabilities(required_capabilities)
        if not required:
            raise ValidationError("required_capabilities must name at least one capability")
        ceiling = to_money(max_cost, "max_cost")
        excluded = set(exclude)
        profiles = self.swarm_registry

        def eligible(swarm_id: str) -> bool:
            return (
                swarm_id not in excluded
                and profiles[swarm_id].cost_per_hour_exact <= ceiling
                and self.is_available(swarm_id)
            )

        found = self._index.best(required, self.policy.min_capability_match, eligible)
        return found[0] if found else None

    # -- gang up on a blocker -----------------------------------------------------------------------

    @staticmethod
    def _extract_required_capabilities(description: dict[str, Any]) -> list[Capability]:
        if not isinstance(description, dict):
            raise ValidationError("blocker_description must be a dict")
        raw = description.get("required_capabilities", description.get("capabilities", []))
        return parse_capabilities(raw or [])

    async def request_help_for_blocker(
        self, blocked_swarm_id: str, blocker_description: dict[str, Any], *, request_id: str | None = None
    ) -> list[str]:
        """Assemble a team for a blocked swarm: per required capability the best affordable helper.

        Never the blocked swarm itself, at most max_swarms_per_task helpers, each within an equal share
        of max_cost_per_task. Coverage counts the blocked swarm's own capabilities; below
        min_capability_match the blocker is escalated to a human and no one is assigned; a team that falls
        below it because helpers could not be reached (nor replaced) keeps its tasks and is escalated too. ``request_id``
        (the blocker's id when the responder answers an event) names the help tasks:
        ``help-<request_id>-<helper>``; their completion resolves the blocker.
        """
        validate_swarm_id(blocked_swarm_id)
        required = self._extract_required_capabilities(blocker_description)
        request_id = validate_task_id(request_id) if request_id is not None else uuid.uuid4().hex
        if not required:
            await self._escalate_to_human(blocked_swarm_id, blocker_description, "no required capabilities")
            return []
        share = share_of(self.policy.max_cost_per_task_exact, len(required))  # a valid amount, never above
        blocked = self.swarm_registry.get(blocked_swarm_id)
        covered: set[Capability] = set(blocked.capabilities) if blocked else set()
        team: list[str] = []
        for cap in required:
            if len(team) >= self.policy.max_swarms_per_task:
                break
            if any(cap in self._index.capabilities_of(h) for h in team):
                continue
            helper = self.find_qualified_swarm([cap], share, exclude=[blocked_swarm_id, *team])
            if helper is not None:
                team.append(helper)
                covered |= self._index.capabilities_of(helper)
        coverage = len(covered.intersection(required)) / len(required)
        if not team or coverage + 1e-12 < self.policy.min_capability_match:
            await self._escalate_to_human(
                blocked_swarm_id, blocker_description, f"coverage {coverage:.0%} below policy"
            )
            return []
        self.task_budgets[request_id] = {h: share for h in team}
        self._log(
            "help_requested",
            {"request_id": request_id, "blocked_swarm": blocked_swarm_id, "assigned_swarms": team,
             "required_capabilities": [str(c) for c in required], "budget": str(share * len(team)),
             "coverage": coverage},
        )
        team = await self._dispatch_help(request_id, blocked_swarm_id, required, team, share)
        if not team:
            self.task_budgets.pop(request_id, None)
            await self._escalate_to_human(blocked_swarm_id, blocker_description, "no helper could be reached")
            return team
        self.task_budgets[request_id] = {h: share for h in team}  # who was reached, not who was planned
        reached = set(blocked.capabilities) if blocked else set()
        for helper in team:
            reached |= self._index.capabilities_of(helper)
        after = len(reached.intersection(required)) / len(required)
        if after + 1e-12 < self.policy.min_capability_match:
            # helpers who could not be reached nor replaced: those reached keep their tasks (they help
            # with what they can), and a human is told the team is short of the policy
            await self._escalate_to_human(blocked_swarm_id, blocker_description,
                                          f"coverage {after:.0%} below policy after unreachable helpers")
        return team

    async def _dispatch_help(
        self, request_id: str, blocked: str, required: list[Capability], team: list[str], share: Decimal
    ) -> list[str]:
        """Push each helper its assignment (when a coordinator is attached); returns the team that has it.

        A helper that cannot take it (not connected, hung: the push times out, dead) is recorded as a
        failure against it, and the capabilities it was to bring go to the next best helper, so a hung
        helper neither stalls the blocked swarm nor is chosen again at once. Bounded: each push has the
        bus's timeout, each capability gets at most three helpers, and the team (reached plus queued)
        never grows past max_swarms_per_task: a failed all-rounder is replaced by as many substitutes as
        the policy still allows, not one per capability it had.
        """
        if self.coordinator is None:
            return team
        reached: list[str] = []
        failed: set[str] = set()
        queue = list(team)
        tries = 3 * len(required)
        while queue and tries > 0:
            tries -= 1
            helper = queue.pop(0)
            task = {"id": keys.help_task_id(request_id, helper), "type": "help_request", "blocked_swarm": blocked,
                    "required_capabilities": [str(c) for c in required], "budget": str(share)}
            try:
                await self.coordinator.push_task_to_swarm(helper, task)
                reached.append(helper)
                continue
            except (InfraFabricError, BackendError) as exc:
                code = getattr(exc, "error_code", type(exc).__name__)
                self._log("help_push_failed", {"request_id": request_id, "swarm_id": helper, "error": code}, "WARN")
                failed.add(helper)
                if helper in self._breakers:
                    self.record_task_result(helper, False)
            wanted = [c for c in required if c in self._index.capabilities_of(helper)
                      and not any(c in self._index.capabilities_of(h) for h in reached + queue)]
            for cap in wanted:  # the next best helper for what the failed one was to bring
                if len(reached) + len(queue) >= self.policy.max_swarms_per_task:
                    break
                if any(cap in self._index.capabilities_of(h) for h in queue):
                    continue  # a substitute queued for an earlier capability brings this one too
                substitute = self.find_qualified_swarm([cap], share, exclude=[blocked, *reached, *queue, *failed])
                if substitute is not None and substitute not in queue:
                    queue.append(substitute)
        if reached != team:
            self._log("help_team_replanned", {"request_id": request_id, "planned": team, "reached": reached,
                                              "failed": sorted(failed)}, "WARN")
        return reached

    async def _escalate_to_human(self, swarm_id: str, description: dict[str, Any], reason: str) -> None:
        self._log("blocker_escalated", {"swarm_id": swarm_id, "reason": reason,
                                        "description": description}, "HIGH")
        if self.coordinator is not None:
            from backends.kv.base import to_bytes
            import json

            event = {"type": "escalation", "swarm_id": swarm_id, "reason": reason, "timestamp": time.time(),
                     "dashboard": f"http://localhost:8080/swarms/{swarm_id}"}
            await self.coordinator.bus.publish("if.events.escalation", to_bytes(json.dumps(event, default=str)))

    # -- budgets and breakers -----------------------------------------------------------------------

    def track_cost(self, swarm_id: str, operation: str, cost: float) -> Decimal:
        """Charge a cost exactly; at zero (or below) the swarm's breaker trips. Returns what remains."""
        self._profile(swarm_id)
        amount = to_money(cost, "cost")
        if not isinstance(operation, str) or not operation:
            raise ValidationError("operation must be a non-empty string")
        acct = self._accounts[swarm_id]
        self._accounts[swarm_id] = _Account(acct.budget, add(acct.spent, amount))  # exact or refused, never rounded
        self._store_charge(swarm_id, amount)
        acct = self._accounts[swarm_id]  # the stored total where the store answered at once
        self._log("budget_charged", {"swarm_id": swarm_id, "operation": operation, "cost": str(amount),
                                     "remaining": str(acct.remaining)})
        if self._cost_sink is not None:
            self._cost_sink(swarm_id, operation, amount, component=COMPONENT, model=self.swarm_registry[swarm_id].model)
        if acct.remaining <= 0 and self._breakers[swarm_id].state == CLOSED:
            self._trip_circuit_breaker(swarm_id, "budget_exhausted")
        return acct.remaining

    def _store_charge(self, swarm_id: str, amount: Decimal) -> None:
        """Add a ``track_cost`` charge to the stored total by compare-and-swap (at once, or queued in order
        on a running loop). Why: the cached record was written back blindly, and a charge another replica
        or the model gateway's ledger had stored in between was forgotten. Once stored, this replica's
        account is the stored one, and a total taken to zero by everyone's charges trips the breaker."""
        if self._store is None:
            return
        key, profile, charge_id = _budget_key(swarm_id), self.swarm_registry[swarm_id], uuid.uuid4().hex

        def plan(current: Any) -> tuple[list[tuple[str, Any]] | None, Any]:
            try:
                base = _Account(profile.initial_budget) if current is MISSING else _account_from(current)
            except Exception as exc:  # noqa: BLE001 - damaged record: reported, left as evidence, fail closed
                return None, exc
            after = _Account(base.budget, add(base.spent, amount))
            return [(key, {**after.record(), "last_charge": charge_id})], after

        def settle(outcome: "_Account | BaseException") -> None:
            if isinstance(outcome, BaseException):
                self._unreadable(key, outcome)
                self._fail_closed(swarm_id)
                return
            self._accounts[swarm_id] = outcome
            if outcome.remaining <= 0 and self._breakers[swarm_id].state == CLOSED:
                self._trip_circuit_breaker(swarm_id, "budget_exhausted")

        self._store.update(key, plan, settle)

    async def acharge(self, swarm_id: str, operation: str, cost: float | str | Decimal) -> Decimal:
        """Charge a cost against the swarm's ledger *in the store*: what replicas must use.

        One compare-and-swap on the shared budget and breaker records: the charge is added to the total
        every replica sees, the charge that takes it to zero trips the breaker in the same transaction, and
        a charge against an open breaker is refused (``CircuitOpenError``, nothing recorded). Why: with
        each replica charging its own copy and writing the whole record back, two governors overspent a
        budget and lost charges (last writer wins). A write whose outcome is unknown is looked up by its
        charge id, never sent twice. Returns what remains.
        """
        profile = self._profile(swarm_id)
        amount = to_money(cost, "cost")
        if not isinstance(operation, str) or not operation:
            raise ValidationError("operation must be a non-empty string")
        if self.kv is None:
            if self._breakers[swarm_id].state == OPEN:
                raise CircuitOpenError(f"breaker of {swarm_id} is open: {self._breakers[swarm_id].reason}")
            return self.track_cost(swarm_id, operation, amount)
        from backends.errors import OutcomeUnknown
        from backends.kv import Compare, Get, Put

        bkey, rkey = _budget_key(swarm_id), _breaker_key(swarm_id)
        charge_id = uuid.uuid4().hex
        for _attempt in range(256):
            read = await self.kv.txn([], [Get(bkey), Get(rkey)])
            b_rows, r_rows = read.results
            b_kv = b_rows[0] if isinstance(b_rows, list) and b_rows else None
            r_kv = r_rows[0] if isinstance(r_rows, list) and r_rows else None
            account, breaker = self._ledger_of(swarm_id, b_kv, r_kv, profile)
            if breaker.state == OPEN:
                self._accounts[swarm_id], self._breakers[swarm_id] = account, breaker
                self._log("charge_refused", {"swarm_id": swarm_id, "operation": operation, "cost": str(amount),
                                             "reason": breaker.reason}, "WARN")
                raise CircuitOpenError(f"breaker of {swarm_id} is open: {breaker.reason}")
            account = _Account(account.budget, add(account.spent, amount))
            trip = account.remaining <= 0
            if trip:
                breaker = _Breaker(OPEN, "budget_exhausted", breaker.consecutive_failures, time.time())
            writes = [Put(bkey, _encode({"budget": str(account.budget), "spent": str(account.spent),
                                         "last_charge": charge_id}))]
            if trip:
                writes += [Put(rkey, _encode(breaker.__dict__)), Put(keys.status_key(swarm_id), _encode(
                    "circuit_breaker_tripped"))]
            guard = [Compare.mod_revision(bkey, b_kv.mod_revision if b_kv else 0),
                     Compare.mod_revision(rkey, r_kv.mod_revision if r_kv else 0)]
            try:
                done = (await self.kv.txn(guard, writes)).succeeded
            except OutcomeUnknown:
                current = await self.kv.get(bkey)
                done = current is not None and _decode(current.value).get("last_charge") == charge_id
            if not done:
                continue  # another replica charged in between: read the new total and try again
            self._accounts[swarm_id], self._breakers[swarm_id] = account, breaker
            self._log("budget_charged", {"swarm_id": swarm_id, "operation": operation, "cost": str(amount),
                                         "remaining": str(account.remaining), "charge_id": charge_id})
            if self._cost_sink is not None:
                self._cost_sink(swarm_id, operation, amount, component=COMPONENT, model=profile.model)
            if trip:
                self._log("circuit_breaker_tripped", {"swarm_id": swarm_id, "reason": "budget_exhausted",
                                                      "remaining": str(account.remaining)}, "HIGH")
                if self.coordinator is not None:
                    await self._escalate_to_human(swarm_id, {"reason": "budget_exhausted"},
                                                  "circuit breaker: budget_exhausted")
            return account.remaining
        from backends.errors import BackendUnavailable

        raise BackendUnavailable(f"charge to {swarm_id} kept losing to other replicas; try again")

    def _ledger_of(self, swarm_id: str, b_kv: Any, r_kv: Any, profile: SwarmProfile) -> tuple["_Account", "_Breaker"]:
        """The stored ledger; a record that cannot be read is an open breaker (never a fresh budget),
        reported under its own key."""
        damaged = False
        account, state = _Account(profile.initial_budget), _Breaker()
        for key, kv in ((_budget_key(swarm_id), b_kv), (_breaker_key(swarm_id), r_kv)):
            if kv is None:
                continue  # absent: the fresh record above
            try:
                if key == _budget_key(swarm_id):
                    account = _account_from(_decode(kv.value))
                else:
                    state = _breaker_from(_decode(kv.value))
            except Exception as exc:  # noqa: BLE001 - damaged record: fail closed
                self._unreadable(key, exc)
                damaged = True
        if damaged:
            return _Account(Decimal(0), Decimal(0)), _Breaker(OPEN, "ledger record unreadable", 0)
        return account, state

    def record_task_result(self, swarm_id: str, success: bool) -> None:
        """Count consecutive failures; the policy's threshold trips the breaker. Counted on the stored
        breaker (compare-and-swap), so a success never closes a breaker another replica opened."""
        self._profile(swarm_id)
        threshold = self.policy.circuit_breaker_failure_threshold

        def count(b: _Breaker) -> _Breaker:
            failures = 0 if success else b.consecutive_failures + 1
            if failures >= threshold and b.state == CLOSED:
                return _Breaker(OPEN, "consecutive_failures", failures, time.time())
            return _Breaker(b.state, b.reason, failures, b.tripped_at)

        self._update_breaker(swarm_id, count)

    def _trip_circuit_breaker(self, swarm_id: str, reason: str) -> None:
        """Open the breaker (in the store, by compare-and-swap); one already open keeps its reason."""
        self._update_breaker(swarm_id, lambda b: b if b.state == OPEN else
                             _Breaker(OPEN, reason, b.consecutive_failures, time.time()))

    def _tripped(self, swarm_id: str, reason: str) -> None:
        """Audit and escalate a breaker this replica just opened."""
        self._log("circuit_breaker_tripped", {"swarm_id": swarm_id, "reason": reason,
                                              "remaining": str(self._accounts[swarm_id].remaining)}, "HIGH")
        if self.coordinator is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            loop.create_task(self._escalate_to_human(swarm_id, {"reason": reason}, f"circuit breaker: {reason}"))

    @staticmethod
    def _operator(operator: object, action: str) -> Identity:
        """Operator actions take a verified operator identity (``credentials.CredentialVerifier``), never a
        name a caller types: a swarm that could pass ``operator="ops"`` could raise its own budget.

        The identity must also still be one a verifier would return: a named operator, a credential id
        (audited with the change), not expired. Why: an ``Identity`` is a plain dataclass, and one that
        expired in 1970 with no credential id set budgets. (Accepting only identities the verifier itself
        made is not possible without breaking callers that build the ``Identity`` they already verified.)"""
        if not isinstance(operator, Identity) or operator.role != "operator":
            raise PermissionDeniedError(f"{action} needs an operator identity verified from an operator credential")
        if not isinstance(operator.name, str) or not operator.name.strip() or \
                not isinstance(operator.jti, str) or not operator.jti.strip():
            raise PermissionDeniedError(f"{action} needs an operator identity with a name and a credential id")
        expires = operator.expires_at
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not expires > time.time():
            raise PermissionDeniedError(f"{action}: the operator credential has expired")
        return operator

    def reset_circuit_breaker(self, swarm_id: str, *, operator: Identity, new_budget: float | None = None,
                              reason: str = "") -> None:
        """Operator action: close the breaker (optionally with a fresh budget). Audited with who did it."""
        self._profile(swarm_id)
        who = self._operator(operator, "reset_circuit_breaker")
        budget = to_money(new_budget, "new_budget") if new_budget is not None else None
        if budget is not None:
            self._accounts[swarm_id] = _Account(budget)
            self._persist_budget(swarm_id)
        self._breakers[swarm_id] = _Breaker()
        self._persist_breaker(swarm_id)
        self._log("circuit_breaker_reset", {"swarm_id": swarm_id, "operator": who.name, "credential": who.jti,
                                            "reason": reason,
                                            "new_budget": str(budget) if budget is not None else None}, "WARN")

    def set_budget(self, swarm_id: str, amount: float, *, operator: Identity) -> None:
        """Operator action: set a new budget (spending starts again from zero). Audited with who did it."""
        self._profile(swarm_id)
        who = self._operator(operator, "set_budget")
        budget = to_money(amount, "budget")
        old = self._accounts[swarm_id].remaining
        self._accounts[swarm_id] = _Account(budget)
        self._persist_budget(swarm_id)
        self._log("budget_set", {"swarm_id": swarm_id, "operator": who.name, "credential": who.jti,
                                 "old_remaining": str(old),
                                 "budget": str(budget)}, "WARN")

    def update_reputation(self, swarm_id: str, reputation: float) -> None:
        """Set the reputation IF.chassis computed from the swarm's SLO record."""
        self._profile(swarm_id)
        value = check_reputation(reputation)
        self._reputation[swarm_id] = value
        self._reindex(swarm_id)
        self._store_reputation(swarm_id, value)
        self._log("reputation_updated", {"swarm_id": swarm_id, "reputation": value})

    def _store_reputation(self, swarm_id: str, value: float) -> None:
        """Set the stored profile's reputation alone, by compare-and-swap. Why: this replica's whole cached
        profile was written back, so a replica that had not seen an operator's re-registration yet put the
        swarm's old capabilities and price back with the new reputation."""
        if self._store is None:
            return
        key, cached = keys.profile_key(swarm_id), self.swarm_registry[swarm_id].to_record()

        def plan(current: Any) -> tuple[list[tuple[str, Any]] | None, Any]:
            if current is MISSING:
                return [(key, cached)], None
            try:  # the stored one must be this swarm's profile to be changed in place (as ``load`` reads it)
                if SwarmProfile.from_record(current).swarm_id != swarm_id:
                    raise ValueError(f"the record names swarm {current.get('swarm_id')!r}, not {swarm_id!r}")
            except Exception as exc:  # noqa: BLE001 - damaged record: reported, left as evidence
                return None, exc
            return [(key, {**current, "reputation_score": value})], None

        def reported(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                self._unreadable(key, outcome)

        self._store.update(key, plan, reported)

    # -- persistence ----------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until every state change is stored (a no-op on the embedded store)."""
        if self._store is not None:
            await self._store.flush()

    async def load(self) -> int:
        """Restore profiles, budgets and breakers from the store (a restarted governor); returns count."""
        if self._store is None:
            return 0
        profiles = await self._store.load_prefix(keys.SWARMS)
        budgets = await self._store.load_prefix("/governor/budgets/")
        breakers = await self._store.load_prefix("/governor/breakers/")
        count = 0
        self.load_problems.clear()
        for key, record in profiles.items():
            if not key.endswith("/profile"):
                continue
            try:
                profile = SwarmProfile.from_record(record)
                if keys.profile_key(profile.swarm_id) != key:
                    raise ValueError(f"the record names swarm {profile.swarm_id!r}, not the one its key names")
            except Exception as exc:  # noqa: BLE001 - any damage: report the record, start without it
                self._unreadable(key, exc)
                continue
            swarm_id = profile.swarm_id
            bkey, rkey = _budget_key(swarm_id), _breaker_key(swarm_id)
            self._accounts[swarm_id], self._breakers[swarm_id] = _Account(profile.initial_budget), _Breaker()
            damaged = False
            # a key that is present is a record, whatever it holds: JSON null is damage, not absence
            for key, records in ((bkey, budgets), (rkey, breakers)):
                if key not in records:
                    continue
                try:
                    if key == bkey:
                        self._accounts[swarm_id] = _account_from(records[key])
                    else:
                        self._breakers[swarm_id] = _breaker_from(records[key])
                except Exception as exc:  # noqa: BLE001 - reported under the key that failed
                    self._unreadable(key, exc)
                    damaged = True
            if damaged:
                self._fail_closed(swarm_id)  # cannot spend until an operator sets a budget
            self._reputation[swarm_id] = profile.reputation_score
            profile.attach(self)
            self.swarm_registry[swarm_id] = profile
            self._reindex(swarm_id)
            count += 1
        return count

    def _unreadable(self, key: str, exc: BaseException) -> None:
        self.load_problems.append((key, f"{type(exc).__name__}: {exc}"))
        self._log("governor_record_unreadable", {"key": key, "error": f"{type(exc).__name__}: {exc}"[:500]}, "HIGH")

    async def close(self) -> None:
        for task in self._followers:
            task.cancel()
        for task in self._followers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._followers = []
        await self.flush()
        if self._store is not None:
            self._store.close()
        leave_live_governors(self)

