"""The project's one periodic-task helper: a step run every ``interval`` seconds in its own asyncio task.

Every background loop of the platform (health heartbeats and checks, certificate renewal, sweeps of
blockers and reservations, liveness of discovery, retention of samples, payout reconciliation) is one of
these, so they all start, fail and stop the same way: a step that raises is logged and the next one runs
on time; a step that returns ``Periodic.DONE`` ends the loop; ``stop()`` cancels it and waits until it has
ended, and is safe to call twice or before ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    """``step`` every ``interval`` seconds; ``first_delay`` before the first (default: one interval)."""

    DONE: Final = object()  # a step returns this to end the loop (its work is over, e.g. registration lost)

    def __init__(self, step: Callable[[], Awaitable[Any]], interval: float | Callable[[], float], *, name: str,
                 first_delay: float | None = None, logger: logging.Logger | None = None) -> None:
        self.step, self.name = step, name
        self._interval = interval
        self.first_delay = first_delay
        self.log = logger or log
        self.runs = 0  # steps that completed (raised or not)
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self._interval() if callable(self._interval) else self._interval

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> "Periodic":
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        return self

    async def _run(self) -> None:
        await asyncio.sleep(self.interval if self.first_delay is None else self.first_delay)
        while True:
            try:
                outcome = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged; the next step runs on time (the engine may be back)
                self.failures += 1
                self.log.warning("%s: a step failed; the next runs in %.1f s", self.name, self.interval,
                                 exc_info=True)
                outcome = None
            self.runs += 1
            if outcome is Periodic.DONE:
                return
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
