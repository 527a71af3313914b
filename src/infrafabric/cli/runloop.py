"""How a long-running service command runs its event loop.

Why here: the loop implementation is a process-wide choice, so it belongs to the entry point, never to a
library. Services run on uvloop (its socket and timer paths are C; the swarm API's per-request cost fell
with it, see benchmarks/RESULTS.md); one-shot commands keep ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run_service(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

