"""Live updates: one task tails the witness log (every component's record of what happened) and fans
each new entry out to the open pages over server-sent events. The browser never polls; the server reads
the log's tail once for all pages, every ``interval`` seconds (a cheap indexed range read)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from infrafabric.witness import Witness

log = logging.getLogger(__name__)

# which view an operation concerns: the page showing that view refreshes its table when one arrives
VIEW_OF_OPERATION: dict[str, tuple[str, ...]] = {
    "blocker_detected": ("tasks", "swarms"), "blocker_resolved": ("tasks",), "blocker_expired": ("tasks",),
    "task_claimed": ("tasks", "swarms"), "tasks_claimed": ("tasks", "swarms"), "task_completed": ("tasks", "swarms"),
    "task_pushed": ("tasks",), "tasks_pushed": ("tasks",), "tasks_pushed_by_operator": ("tasks",),
    "budget_charged": ("swarms", "cost"), "budget_set": ("swarms", "cost"), "circuit_breaker_tripped": ("swarms",),
    "circuit_breaker_reset": ("swarms", "cost"), "swarm_registered": ("swarms",), "reputation_updated": ("swarms",),
    "cost_tracked": ("cost",), "model_call_settled": ("cost",),
    "task_executed": ("chassis",), "task_refused": ("chassis",), "rate_limited": ("chassis",),
    "service_deregistered": ("mesh",), "payout_retry_requested": ("nodes",),
}
MAX_QUEUED = 1000  # per page: a page that stops reading is dropped, never allowed to hold memory


def event_of(entry: Any) -> dict[str, Any]:
    params = entry.params_json if len(entry.params_json) <= 400 else entry.params_json[:400] + "…"
    return {"seq": entry.seq, "timestamp": entry.timestamp, "component": entry.component,
            "operation": entry.operation, "severity": entry.severity, "params": params,
            "views": list(VIEW_OF_OPERATION.get(entry.operation, ()))}


class EventHub:
    def __init__(self, witness: Witness, *, interval: float = 0.2, batch: int = 500) -> None:
        self.witness = witness
        self.interval = interval
        self.batch = batch
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.last_seq = -1

    async def start(self) -> None:
        size = await self.witness.asize()
        self.last_seq = size - 1
        self._task = asyncio.create_task(self._tail(), name="console-event-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for q in list(self._subscribers):
            q.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(MAX_QUEUED)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(q)

    async def _tail(self) -> None:
        while True:
            try:
                entries = await self.witness.asearch(after_seq=self.last_seq if self.last_seq >= 0 else None,
                                                     limit=self.batch, newest_first=False)
            except Exception as exc:  # a store outage: keep trying, the pages keep what they show
                log.warning("console event tail: %s", exc)
                entries = []
            for entry in entries:
                self.last_seq = entry.seq
                self._publish(event_of(entry))
            if len(entries) < self.batch:
                await asyncio.sleep(self.interval)

    def _publish(self, event: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # end that page's stream; its browser reconnects and reloads
                self._subscribers.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)


def sse(event: dict[str, Any]) -> str:
    """One server-sent event (JSON data on one line: no field can break the framing)."""
    return f"id: {event['seq']}\nevent: audit\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
