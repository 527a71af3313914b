"""Where a swarm's money lives in the store: the governor's budget and breaker records, and the gateway's
holds against them. One module, so the two writers of these records cannot disagree on a key."""

from __future__ import annotations

HOLDS = "/governor/holds/"
LIVE = "/governor/holds-live/"


def budget_key(swarm_id: str) -> str:
    return f"/governor/budgets/{swarm_id}"


def breaker_key(swarm_id: str) -> str:
    return f"/governor/breakers/{swarm_id}"


def holds_key(swarm_id: str) -> str:
    return f"{HOLDS}{swarm_id}"


def live_key(swarm_id: str, hold_id: str) -> str:
    return f"{LIVE}{swarm_id}/{hold_id}"
