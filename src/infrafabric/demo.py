"""`make demo`: S2 phase 0 end to end on the embedded default, then a summary; exits 0 on success.

Seven swarms register, tasks are pushed and claimed (exactly one winner each), session-4 blocks, the
governor assembles qualified helpers inside the budget, the helpers' work runs as WebAssembly in
IF.chassis (and attacks are refused), an overrun trips a breaker, and the run's audit log is verified
and its signed checkpoint printed. Every figure in the summary is measured in this run.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from infrafabric.coordinator import IFCoordinator
from infrafabric.governor import Capability, IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.governor.responder import BlockerResponder

console = Console()

SESSIONS: list[tuple[str, list[Capability], float]] = [
    ("session-1-ndi", [Capability.INTEGRATION_NDI, Capability.CODE_ANALYSIS_PYTHON], 2.0),
    ("session-2-webrtc", [Capability.INTEGRATION_WEBRTC], 2.0),
    ("session-3-h323", [Capability.CODE_ANALYSIS_RUST], 1.5),
    ("session-4-sip", [Capability.INTEGRATION_SIP], 2.0),
    ("session-5-cli", [Capability.CLI_DESIGN], 1.0),
    ("session-6-talent", [Capability.ARCHITECTURE_PATTERNS], 15.0),
    ("session-7-bus", [Capability.CODE_ANALYSIS_PYTHON], 1.0),
]


@dataclass
class Results:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def figure(self, what: str, value: str, note: str = "") -> None:
        self.rows.append((what, value, note))

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values) * 1e6:.1f} µs · p99 {q[98] * 1e6:.1f} µs"


async def run_s2_phase0(results: Results) -> dict[str, Any]:
    coordinator = IFCoordinator()
    governor = IFGovernor(coordinator, ResourcePolicy(max_swarms_per_task=3, max_cost_per_task=10.0,
                                                      min_capability_match=0.7))
    async with coordinator:
        start = time.perf_counter()
        queues = {}
        for swarm_id, caps, cost in SESSIONS:
            queues[swarm_id] = await coordinator.register_swarm(swarm_id, caps)
            governor.register_swarm(SwarmProfile(swarm_id, caps, cost, 1.0, 10.0))
        orchestrator = await coordinator.register_swarm("orchestrator", [])
        results.figure("7 swarms registered", f"{(time.perf_counter() - start) * 1000:.2f} ms")

        push_lat, claim_lat, winners = [], [], {}
        for i in range(70):
            task = {"id": f"phase0-task-{i}", "action": "integrate"}
            target = SESSIONS[i % 7][0]
            t0 = time.perf_counter()
            await coordinator.push_task_to_swarm(target, task)
            push_lat.append(time.perf_counter() - t0)
        for i in range(70):
            task_id = f"phase0-task-{i}"
            t0 = time.perf_counter()
            outcome = await asyncio.gather(*[coordinator.claim_task(s, task_id) for s, _, _ in SESSIONS])
            claim_lat.append((time.perf_counter() - t0) / len(SESSIONS))
            winners[task_id] = sum(outcome)
        results.figure("push to a swarm's inbox (70 tasks)", _ms(push_lat), "seed target < 10 ms")
        results.figure("claim, 7 swarms racing per task", _ms(claim_lat), "seed target < 5 ms")
        results.check("every task claimed by exactly one swarm", all(v == 1 for v in winners.values()))
        results.check("every pushed task arrived", sum(q.qsize() for q in queues.values()) == 70)

        responder = await BlockerResponder(governor).start()
        t0 = time.perf_counter()
        await coordinator.detect_blocker("session-4-sip", {
            "reason": "sip_ndi_integration_failure",
            "required_capabilities": ["integration:sip", "integration:ndi", "integration:webrtc"]})
        event = await asyncio.wait_for(orchestrator.get(), 1)
        detect = time.perf_counter() - t0
        assignment = await asyncio.wait_for(responder.assignments.get(), 1)
        assigned = time.perf_counter() - t0
        team = assignment["team"]
        results.figure("blocker detected -> orchestrator told", f"{detect * 1000:.2f} ms", "git polling: ~30 s")
        results.figure("blocker detected -> team assigned", f"{assigned * 1000:.2f} ms",
                       f"team {', '.join(team)}; git polling: ~62 s")
        results.check("orchestrator got blocker_detected", event["type"] == "blocker_detected")
        results.check("team is qualified (ndi + webrtc), not the blocked swarm, at most 3",
                      sorted(team) == ["session-1-ndi", "session-2-webrtc"])
        shares = next(iter(governor.task_budgets.values()))
        results.check("team inside max_cost_per_task", sum(shares.values()) <= Decimal("10.0"))
        helpers_told = all(any(t.get("type") == "help_request" for t in _drain(queues[h])) for h in team)
        results.check("every helper received its help request", helpers_told)
        await run_help_in_chassis(results, coordinator, governor, team)
        legal = await governor.request_help_for_blocker("session-3-h323",
                                                        {"required_capabilities": ["contract-review:nda"]})
        results.check("no one qualified for an NDA review: escalated, nobody sent", legal == [])

        for _ in range(3):
            governor.track_cost("session-1-ndi", "llm-call", Decimal("3.50"))
        breaker = governor.circuit_breaker_status("session-1-ndi")
        results.figure("session-1-ndi spent", f"${governor.budget_spent('session-1-ndi')} of $10.00",
                       f"breaker {breaker['state']} ({breaker['reason']})")
        results.check("budget overrun tripped the breaker", breaker["state"] == "open")
        again = await governor.request_help_for_blocker("session-4-sip",
                                                        {"required_capabilities": ["integration:ndi"]})
        results.check("tripped swarm is no longer sent to help", "session-1-ndi" not in again)
        await responder.stop()
        await governor.close()
    return {"team": team}


async def run_help_in_chassis(results: Results, coordinator: IFCoordinator, governor: IFGovernor,
                              team: list[str]) -> None:
    """Each helper's work runs as a WASM task in the chassis; its cost and SLO record go to the governor."""
    from infrafabric.audit import log_operation
    from infrafabric.chassis import IFChassis, ResourceLimits, ServiceContract
    from infrafabric.chassis.modules import reference_module

    chassis = IFChassis(audit=log_operation, reputation_sink=governor.update_reputation)
    latencies = []
    try:
        for helper in team:
            chassis.load_swarm(helper, reference_module(), ServiceContract(
                helper, capabilities=[str(c) for c in governor.swarm_registry[helper].capabilities],
                resource_requirements=ResourceLimits(max_memory_mb=64, max_execution_time_seconds=2)))
            task_id = f"help-{helper}"
            claim = await coordinator.claim(helper, task_id)
            t0 = time.perf_counter()
            result = await chassis.execute_task(helper, {"id": task_id, "action": "wordcount",
                                                         "text": "decode the SIP to NDI bridge handshake"})
            latencies.append(time.perf_counter() - t0)
            await coordinator.complete_task(helper, task_id, result, claim)
            governor.track_cost(helper, "wasm-task", Decimal("0.25"))
            governor.record_task_result(helper, True)
        results.figure("helpers' work as WASM tasks in IF.chassis",
                       ", ".join(f"{x * 1000:.2f} ms" for x in latencies), "a fresh sandbox per task")
        results.check("every helper's WASM task completed", len(latencies) == len(team))
        from infrafabric.chassis.showcase import run_showcase

        rows = await run_showcase(chassis)
        table = Table("scenario", "swarm", "outcome", "error code", title="IF.chassis: attacks and allowed work")
        for r in rows:
            table.add_row(r.scenario, r.swarm_id, r.outcome, r.error_code or "")
        console.print(table)
        attacks = [r for r in rows if r.swarm_id == "attacker"]
        results.check("every sandbox attack refused", all(r.outcome == "refused" for r in attacks))
        results.check("allowed scoped call and useful work succeeded",
                      all(r.outcome == "ok" for r in rows if r.swarm_id == "helper"))
    finally:
        chassis.close()


def verify_audit_log(results: Results) -> None:
    """Verify this run's audit log with the public key only, and print its signed checkpoint."""
    from infrafabric.witness import get_default_witness

    witness = get_default_witness()
    witness.flush()
    report = witness.verify()
    checkpoint = witness.latest_checkpoint()
    results.figure("audit log of this run", f"{witness.size()} entries", f"verified: {report.ok}")
    results.check("audit log verifies (hash chain, signatures, checkpoint)", bool(report.ok))
    console.print(f"[bold]signed checkpoint[/bold] {checkpoint.to_json()}")


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def main() -> None:
    import tempfile
    from pathlib import Path

    from infrafabric.witness import configure

    run_dir = Path(tempfile.mkdtemp(prefix="if-demo-"))
    configure(url=f"sqlite:///{run_dir / 'witness.db'}", key_dir=run_dir / "keys")  # this run's own log
    results = Results()
    console.rule("[bold]InfraFabric S2 phase 0 — embedded default")
    asyncio.run(run_s2_phase0(results))
    verify_audit_log(results)
    table = Table("measured", "value", "note", title="S2 phase 0 figures (this run)")
    for row in results.rows:
        table.add_row(*row)
    console.print(table)
    checks = Table("check", "result", title="S2 phase 0 checks")
    for what, ok in results.checks:
        checks.add_row(what, "[green]ok[/green]" if ok else "[red]FAILED[/red]")
    console.print(checks)
    failed = [what for what, ok in results.checks if not ok]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed[/red]")
        sys.exit(1)
    console.print(f"[green]all {len(results.checks)} checks passed[/green]")


if __name__ == "__main__":
    main()
