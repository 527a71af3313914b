"""Process-wide collector settings for a process that serves the node API and nothing else.

They belong to the entry point that owns the process (``lucid serve``), never to the app factory: an app
built inside a longer-lived process (tests, an embedding service) must not change that process's
collector. Why these settings: the app's long-lived objects (routes, pydantic schemas, SQLAlchemy
metadata, modules) go to the permanent generation, so a full collection no longer rescans them; and
young collections run every 20,000 allocations instead of 700, since 100 concurrent requests keep their
few hundred objects each alive across the default young collections (the measurements are in
benchmarks/RESULTS.md). Cycles are still collected.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["GC_THRESHOLDS", "tuned_collector"]

GC_THRESHOLDS = (20_000, 20, 20)


@contextlib.contextmanager
def tuned_collector() -> Iterator[None]:
    """Freeze what exists now and raise the young threshold; both undone on exit."""
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
