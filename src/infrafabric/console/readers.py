"""Read models of the console's views: plain dataclasses built from the platform's stores, paginated and
filtered on the server (10,000 swarms or 100,000 audit entries never reach the page at once)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from backends.kv import Get
from infrafabric.coordinator import keys
from infrafabric.console.platform import Platform
from infrafabric.witness.store.base import StoredEntry

T = TypeVar("T")
PAGE_SIZE = 50
ALERT_THRESHOLDS = (50, 80, 100)


@dataclass
class Page(Generic[T]):
    items: list[T]
    page: int
    pages: int
    total: int
    query: str = ""

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def paginate(rows: list[T], page: int, size: int = PAGE_SIZE, query: str = "") -> Page[T]:
    pages = max(1, -(-len(rows) // size))
    page = min(max(page, 1), pages)
    return Page(rows[(page - 1) * size: page * size], page, pages, len(rows), query)


def _json(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None


# ----------------------------------------------------------------------------------------------- swarms
@dataclass
class SwarmRow:
    swarm_id: str
    capabilities: list[str]
    reputation: float
    budget: Decimal
    remaining: Decimal
    spent: Decimal
    breaker: str
    breaker_reason: str
    live_tasks: int

    @property
    def used_percent(self) -> int:
        if self.budget <= 0:
            return 100
        return int(min(max(self.spent * 100 / self.budget, Decimal(0)), Decimal(100)))


async def _task_owners(platform: Platform) -> dict[str, list[Any]]:
    """Claimed tasks per swarm (the owner keys of live claims)."""
    owners: dict[str, list[Any]] = defaultdict(list)
    for row in await platform.kv.get_prefix(keys.TASKS):
        if not row.key.endswith("/owner"):
            continue
        owner = row.value.decode("utf-8", "replace")
        if owner != keys.UNCLAIMED and not owner.startswith(keys.COMPLETED_PREFIX):
            owners[owner].append(row)
    return owners


async def swarms(platform: Platform, page: int = 1, query: str = "") -> Page[SwarmRow]:
    g = platform.governor
    owners = await _task_owners(platform)
    q = query.strip().lower()
    rows: list[SwarmRow] = []
    for swarm_id in sorted(g.swarm_registry):
        profile = g.swarm_registry[swarm_id]
        caps = [str(c) for c in profile.capabilities]
        if q and q not in swarm_id.lower() and not any(q in c.lower() for c in caps):
            continue
        breaker = g.circuit_breaker_status(swarm_id)
        rows.append(SwarmRow(swarm_id, caps, g.reputation(swarm_id), g.budget_limit(swarm_id),
                             g.budget_remaining(swarm_id), g.budget_spent(swarm_id), breaker["state"],
                             breaker["reason"] or "", len(owners.get(swarm_id, ()))))
    return paginate(rows, page, query=query)


# ------------------------------------------------------------------------------------------------ tasks
@dataclass
class TaskRow:
    task_id: str
    owner: str
    state: str  # claimed | completed | unclaimed
    fencing_revision: int
    lease_expires_in: float | None  # seconds; None: no lease (completed, unclaimed) or gone


@dataclass
class BlockerRow:
    blocker_id: str
    swarm_id: str
    reported_at: float
    description: str
    team: list[str]
    answered: str  # pending | answered | escalated
    time_to_team: float | None  # seconds from report to the team's assignment


async def tasks(platform: Platform, page: int = 1, query: str = "") -> Page[TaskRow]:
    q = query.strip()
    rows: list[TaskRow] = []
    lease_of: dict[str, int] = {}  # task id -> the lease its claim lives on
    for row in await platform.kv.get_prefix(keys.TASKS):
        if not row.key.endswith("/owner"):
            continue
        task_id = row.key[len(keys.TASKS):-len("/owner")]
        owner = row.value.decode("utf-8", "replace")
        if q and q not in task_id and q not in owner:
            continue
        state = "unclaimed" if owner == keys.UNCLAIMED else (
            "completed" if owner.startswith(keys.COMPLETED_PREFIX) else "claimed")
        if state == "completed":
            owner = owner[len(keys.COMPLETED_PREFIX):]
        rows.append(TaskRow(task_id, "" if state == "unclaimed" else owner, state, row.mod_revision, None))
        if row.lease and state == "claimed":
            lease_of[task_id] = row.lease
    rows.sort(key=lambda r: ({"claimed": 0, "unclaimed": 1, "completed": 2}[r.state], r.task_id))
    result = paginate(rows, page, query=query)
    remaining: dict[int, float | None] = {}
    for r in result.items:  # the time to live only of what this page shows, one ask per lease
        lease = lease_of.get(r.task_id)
        if lease is None:
            continue
        if lease not in remaining:
            try:
                remaining[lease] = await platform.kv.lease_remaining(lease)
            except NotImplementedError:
                remaining[lease] = None
        r.lease_expires_in = remaining[lease]
    return result


async def blockers(platform: Platform, limit: int = 200) -> list[BlockerRow]:
    rows = await platform.kv.txn([], [Get(keys.BLOCKERS, prefix=True), Get(keys.BLOCKER_TEAMS, prefix=True),
                                      Get("/governor/answers/", prefix=True)])
    reported, teams, answers = (r if isinstance(r, list) else [] for r in rows.results)
    team_of = {kv.key[len(keys.BLOCKER_TEAMS):]: _json(kv.value) or {} for kv in teams}
    answer_of = {kv.key.rsplit("/", 1)[-1]: kv.value.decode("utf-8", "replace") for kv in answers}
    out: list[BlockerRow] = []
    for kv in reported:
        event = _json(kv.value)
        if not isinstance(event, dict):
            continue
        blocker_id = str(event.get("blocker_id", kv.key.rsplit("/", 1)[-1]))
        info = event.get("blocker_info")
        description = info.get("description", "") if isinstance(info, dict) else ""
        team_record = team_of.get(blocker_id, {})
        team = [str(s) for s in team_record.get("team", [])] if isinstance(team_record, dict) else []
        answer = answer_of.get(blocker_id, "")
        state = "answered" if answer.startswith("answered") or team else ("pending" if not answer else "answering")
        assigned_at = team_record.get("assigned_at") if isinstance(team_record, dict) else None
        at = float(event.get("timestamp") or 0.0)
        out.append(BlockerRow(blocker_id, str(event.get("swarm_id", "")), at, str(description)[:500], team, state,
                              (float(assigned_at) - at) if isinstance(assigned_at, (int, float)) and at else None))
    out.sort(key=lambda b: -b.reported_at)
    return out[:limit]


# ---------------------------------------------------------------------------------------------- chassis
@dataclass
class RateLimitRow:
    """A swarm's rate limit as the chassis recorded it: the contract's rate and burst (its newest
    ``swarm_loaded``), calls refused, and until when the last refusal told it to wait."""

    swarm_id: str
    rate: float | None
    burst: int | None
    refused: int
    last_refused: str | None
    limited_until: float | None  # epoch seconds; in the future while the swarm is being held back

    def limited(self, now: float) -> bool:
        return self.limited_until is not None and self.limited_until > now


@dataclass
class ChassisSummary:
    executions: Counter[str]  # outcome -> count
    refusals: Counter[str]  # error code -> count
    rate_limited: Counter[str]  # swarm -> refusals by its rate limit
    recent: list[dict[str, Any]]
    scanned: int
    rate_limits: list[RateLimitRow] = field(default_factory=list)


async def chassis(platform: Platform, window: int = 10_000) -> ChassisSummary:
    """Outcomes of the newest ``window`` chassis entries of the audit log (the chassis pool's own record)."""
    entries = await platform.witness.asearch(component="IF.chassis", limit=window)
    executions: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    limited: Counter[str] = Counter()
    recent: list[dict[str, Any]] = []
    contracts: dict[str, dict[str, Any]] = {}  # swarm -> its newest loaded contract (entries are newest first)
    last_refusal: dict[str, tuple[str, float | None]] = {}
    for e in entries:
        p = _params(e)
        if e.operation == "task_executed":
            executions[str(p.get("status", "unknown"))] += 1
        elif e.operation == "task_refused":
            refusals[str(p.get("error_code", "unknown"))] += 1
        elif e.operation == "rate_limited":
            swarm = str(p.get("swarm_id", "unknown"))
            limited[swarm] += 1
            if swarm not in last_refusal:
                wait = p.get("retry_after")
                at = _epoch(e.timestamp)
                until = at + min(max(float(wait), 0.0), 3600.0) if at is not None and _number(wait) else None
                last_refusal[swarm] = (e.timestamp, until)
        elif e.operation == "swarm_loaded":
            contract = p.get("contract")
            if isinstance(contract, dict):
                contracts.setdefault(str(p.get("swarm_id", "unknown")), contract)
        if len(recent) < 25 and e.operation in ("task_executed", "task_refused", "rate_limited"):
            recent.append({"seq": e.seq, "timestamp": e.timestamp, "operation": e.operation, **p})
    rows = []
    for swarm in sorted(set(contracts) | set(limited), key=lambda s: (-limited[s], s))[:50]:
        contract = contracts.get(swarm, {})
        rate, burst = contract.get("max_api_calls_per_second"), contract.get("api_burst")
        when, until = last_refusal.get(swarm, (None, None))
        rows.append(RateLimitRow(swarm, float(rate) if _number(rate) else None, int(burst) if _number(burst) else None,
                                 limited[swarm], when, until))
    return ChassisSummary(executions, refusals, limited, recent, len(entries), rows)


async def claim_latencies(platform: Platform, window: int = 2000) -> list[float]:
    """Push → claim latency (ms) of the newest claimed tasks, from the audit log's own timestamps."""
    pushed: dict[str, float] = {}
    out: list[float] = []
    for e in reversed(await platform.witness.asearch(component="IF.coordinator", limit=window)):
        tid, at = _params(e).get("task_id"), _epoch(e.timestamp)
        if not isinstance(tid, str) or at is None:
            continue
        if e.operation == "task_pushed":
            pushed[tid] = at
        elif e.operation == "task_claimed" and tid in pushed:
            out.append(max((at - pushed[tid]) * 1000, 0.0))
    return out[-60:]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _epoch(timestamp: str) -> float | None:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def _params(e: StoredEntry) -> dict[str, Any]:
    p = _json(e.params_json.encode())
    return p if isinstance(p, dict) else {}


# ------------------------------------------------------------------------------------------------- cost
@dataclass
class BudgetLine:
    swarm_id: str
    budget: Decimal
    spent: Decimal
    percent: int
    alerts: list[int]
    burn_per_hour: Decimal | None
    hours_left: float | None


@dataclass
class CostSummary:
    by_swarm: list[dict[str, Any]]
    by_component: list[dict[str, Any]]
    by_model: list[dict[str, Any]]
    by_day: list[dict[str, Any]]
    budgets: list[BudgetLine]
    total: Decimal


async def costs(platform: Platform, *, now: datetime | None = None) -> CostSummary:
    tracker = platform.costs
    if tracker is None:
        return CostSummary([], [], [], [], [], Decimal(0))
    await asyncio.to_thread(tracker.refresh)
    now = now or datetime.now(timezone.utc)
    first_seen: dict[str, datetime] = {}
    for r in tracker.records():
        first_seen.setdefault(r.provider, r.timestamp)
    g = platform.governor
    lines: list[BudgetLine] = []
    for swarm_id in sorted(g.swarm_registry):
        budget, spent = g.budget_limit(swarm_id), g.budget_spent(swarm_id)
        percent = int(spent * 100 / budget) if budget > 0 else (100 if spent > 0 else 0)
        alerts = [t for t in ALERT_THRESHOLDS if percent >= t]
        burn = hours = None
        start = first_seen.get(swarm_id)
        if start is not None and spent > 0:
            elapsed_h = max((now - start).total_seconds() / 3600, 1 / 60)  # at least a minute of history
            burn = (spent / Decimal(str(elapsed_h))).quantize(Decimal("0.0001"))
            remaining = budget - spent
            hours = float(remaining / burn) if burn > 0 and remaining > 0 else 0.0
        if spent > 0 or alerts:
            lines.append(BudgetLine(swarm_id, budget, spent, percent, alerts, burn, hours))
    lines.sort(key=lambda line: -line.percent)
    return CostSummary(tracker.report("swarm"), tracker.report("component"), tracker.report("model"),
                       tracker.report("day"), lines, tracker.total())


# ------------------------------------------------------------------------------------------------ audit
@dataclass
class AuditPage:
    entries: list[dict[str, Any]]
    operation: str
    query: str
    before: int | None
    next_before: int | None
    size: int


AUDIT_PAGE = 50


async def audit(platform: Platform, *, query: str = "", operation: str = "", before: int | None = None) -> AuditPage:
    """A page of the log, newest first: ``query`` is a task id, swarm id or any text of the params."""
    q = query.strip()[:256] or None
    entries = await platform.witness.asearch(operation=operation.strip() or None, contains=q, before_seq=before,
                                             limit=AUDIT_PAGE + 1)
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    rows = [{"seq": e.seq, "timestamp": e.timestamp, "component": e.component, "operation": e.operation,
             "severity": e.severity, "params": json.dumps(_params(e), sort_keys=True, ensure_ascii=False)[:600]}
            for e in entries]
    return AuditPage(rows, operation, query, before, entries[-1].seq if more and entries else None,
                     await platform.witness.asize())


@dataclass
class Verification:
    ok: bool | None
    checked_entries: int
    checked_at: float
    detail: str
    checkpoint: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)


async def verification(platform: Platform) -> Verification:
    """Verify the whole log (hash chain, signatures, Merkle root against the signed checkpoint) and say
    where its newest checkpoint is published. Costly on a large log: the app caches it (``AuditState``)."""
    w = platform.witness
    report = await asyncio.to_thread(w.verify)
    cp = await asyncio.to_thread(w.latest_checkpoint)
    published = await asyncio.to_thread(w.published_checkpoint)
    return Verification(
        bool(report.ok), report.entries, time.time(), "; ".join(str(p) for p in report.problems[:5])[:500],
        {"size": cp.size, "root": cp.root, "timestamp": cp.timestamp, "key_id": cp.key_id},
        {"where": ", ".join(w.publishers),
         "size": published.checkpoint.size if published is not None else None})


async def inclusion_proof(platform: Platform, seq: int) -> dict[str, Any]:
    return await asyncio.to_thread(platform.witness.inclusion_proof, seq)


# ------------------------------------------------------------------------------------------------- mesh
@dataclass
class ServiceRow:
    service_id: str
    name: str
    plane: str
    cluster: str
    address: str
    health: str
    breakers: dict[str, str] = field(default_factory=dict)  # its outbound breakers: destination -> state


@dataclass
class MeshSummary:
    services: list[ServiceRow]
    denials: Counter[str]
    queue_depth: dict[str, int | None]


async def mesh(platform: Platform) -> MeshSummary:
    from lucid.service_mesh.discovery.keys import RegistryKeys
    from lucid.service_mesh.resilience.published import read_breakers

    services: list[ServiceRow] = []
    if platform.mesh_kv is not None:
        rk = RegistryKeys()
        health: dict[str, str] = {}
        regs: list[tuple[str, str, dict[str, Any]]] = []
        for row in await platform.mesh_kv.get_prefix(rk.prefix):
            kind = rk.classify(row.key)
            if kind is None:
                continue
            if kind[0] == "health":
                h = _json(row.value)
                health[kind[2]] = str(h.get("status", "unknown")) if isinstance(h, dict) else "unknown"
            elif kind[0] == "service":
                reg = _json(row.value)
                if isinstance(reg, dict):
                    regs.append((kind[1], kind[2], reg))
        published = await read_breakers(platform.mesh_kv, rk.prefix)
        for name, sid, reg in regs:
            own = published.get(sid)
            services.append(ServiceRow(sid, name, str(reg.get("plane", "")), str(reg.get("cluster", "")),
                                       f"{reg.get('host', '')}:{reg.get('port', '')}", health.get(sid, "unknown"),
                                       dict(sorted(own.breakers.items())) if own is not None else {}))
    services.sort(key=lambda s: (s.plane, s.cluster, s.name, s.service_id))
    denials: Counter[str] = Counter()
    for e in await platform.witness.asearch(component="lucid.service_mesh", limit=5_000):
        if "denied" in e.operation or "refused" in e.operation:
            p = _params(e)
            denials[f"{p.get('source') or p.get('caller') or '?'} → {p.get('destination') or p.get('target') or '?'}"
                    f" ({e.operation})"] += 1
    depth: dict[str, int | None] = {}
    if platform.mq is not None:
        for dest in platform.mq_destinations:
            try:
                depth[dest] = await platform.mq.depth(dest)
            except Exception:  # a broker that cannot say shows as unknown, never breaks the page
                depth[dest] = None
    return MeshSummary(services, denials, depth)


# ------------------------------------------------------------------------------------------------ nodes
@dataclass
class NodesSummary:
    nodes: list[dict[str, Any]]
    scores: dict[str, dict[str, Any]]
    resources: dict[str, list[dict[str, Any]]]
    payouts: list[dict[str, Any]]
    page: int
    pages: int
    available: bool
    batches: list[dict[str, Any]] = field(default_factory=list)  # the shown payouts' batches, as the API says


async def nodes(platform: Platform, page: int = 1) -> NodesSummary:
    api = platform.nodes
    if api is None:
        return NodesSummary([], {}, {}, [], 1, 1, False)
    listing = await api.get("/api/v1/nodes", page=page, limit=20)
    items = listing.get("nodes", [])
    scores: dict[str, dict[str, Any]] = {}
    resources: dict[str, list[dict[str, Any]]] = {}

    async def detail(node: dict[str, Any]) -> None:
        nid = node["node_id"]
        try:
            scores[nid] = await api.get(f"/api/v1/nodes/{nid}/poot/score")
        except Exception:  # a node with no PoOT yet has no score: shown as such
            scores[nid] = {}
        try:
            res = await api.get(f"/api/v1/nodes/{nid}/resources", time_range="1h")
            resources[nid] = list(res.get("samples") or [])
        except Exception:
            resources[nid] = []

    await asyncio.gather(*(detail(n) for n in items))
    payouts = (await api.get("/api/v1/nodes/payouts/history", limit=50)).get("payouts", [])
    pag = listing.get("pagination", {})
    batch_ids = sorted({str(p["batch_id"]) for p in payouts if p.get("batch_id")})[:20]

    async def batch(batch_id: str) -> dict[str, Any] | None:
        try:
            return await api.get(f"/api/v1/nodes/payouts/batch/{quote(batch_id, safe='')}")  # type: ignore[no-any-return]
        except Exception:  # a batch the API no longer knows is left out, never breaks the page
            return None

    batches = [b for b in await asyncio.gather(*(batch(i) for i in batch_ids)) if isinstance(b, dict)]
    return NodesSummary(items, scores, resources, payouts, int(pag.get("page", page)), int(pag.get("pages", 1)) or 1,
                        True, batches)
