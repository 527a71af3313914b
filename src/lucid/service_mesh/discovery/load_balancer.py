"""Choosing one instance among the healthy ones: round-robin, least-connections, random."""

from __future__ import annotations

import itertools
import random
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

from lucid.service_mesh.errors import InvalidServiceConfigError

T = TypeVar("T")
STRATEGIES = ("round-robin", "least-connections", "random")


class LoadBalancer:
    """Per-service round-robin counters and in-flight connection counts (thread-safe)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._counters: dict[str, itertools.count[int]] = defaultdict(itertools.count)
        self._active: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    def pick(self, service: str, candidates: Sequence[T], strategy: str, key=lambda c: c) -> T:
        """One of ``candidates`` (non-empty, in a stable order) by ``strategy``."""
        if strategy == "round-robin":
            return candidates[next(self._counters[service]) % len(candidates)]
        if strategy == "random":
            return self._rng.choice(candidates)
        if strategy == "least-connections":
            with self._lock:
                return min(candidates, key=lambda c: self._active.get(key(c), 0))
        raise InvalidServiceConfigError(f"load_balance must be one of {STRATEGIES}, not {strategy!r}")

    def acquire(self, instance_id: str) -> None:
        """Count a connection opened to ``instance_id`` (least-connections uses these counts)."""
        with self._lock:
            self._active[instance_id] += 1

    def release(self, instance_id: str) -> None:
        with self._lock:
            n = self._active.get(instance_id, 0) - 1
            if n > 0:
                self._active[instance_id] = n
            else:
                self._active.pop(instance_id, None)

    def active(self, instance_id: str) -> int:
        with self._lock:
            return self._active.get(instance_id, 0)
