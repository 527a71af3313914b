"""Capability index: for each capability, its swarms sorted by reputation ÷ cost (best first).

A single-capability query walks one sorted list and stops at the first eligible swarm, so it stays
fast at 10,000 swarms; a multi-capability query counts matches only over the swarms that have at least
one of the required capabilities.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal

from infrafabric.capability import Capability

_ZERO_COST = Decimal("1e-9")  # a free swarm ranks as extremely cheap instead of dividing by zero


def base_score(reputation: float, cost_per_hour: Decimal) -> float:
    return reputation / float(max(cost_per_hour, _ZERO_COST))


class CapabilityIndex:
    def __init__(self) -> None:
        self._lists: dict[Capability, list[tuple[float, str]]] = {}
        self._entry: dict[str, tuple[float, str]] = {}
        self._caps: dict[str, frozenset[Capability]] = {}

    def upsert(self, swarm_id: str, caps: Iterable[Capability], score: float) -> None:
        self.remove(swarm_id)
        entry = (-score, swarm_id)
        self._entry[swarm_id] = entry
        self._caps[swarm_id] = frozenset(caps)
        for cap in self._caps[swarm_id]:
            bisect.insort(self._lists.setdefault(cap, []), entry)

    def remove(self, swarm_id: str) -> None:
        entry = self._entry.pop(swarm_id, None)
        if entry is None:
            return
        for cap in self._caps.pop(swarm_id, frozenset()):
            lst = self._lists[cap]
            i = bisect.bisect_left(lst, entry)
            if i < len(lst) and lst[i] == entry:
                del lst[i]

    def capabilities_of(self, swarm_id: str) -> frozenset[Capability]:
        return self._caps.get(swarm_id, frozenset())

    def ranked(self, cap: Capability) -> Iterator[tuple[float, str]]:
        """(score, swarm_id) best first for one capability."""
        for neg, swarm_id in self._lists.get(cap, ()):
            yield -neg, swarm_id

    def best(
        self, required: list[Capability], min_match: float, eligible: Callable[[str], bool]
    ) -> tuple[str, float] | None:
        """The swarm maximising match × score among eligible ones with match >= min_match."""
        if len(required) == 1:
            for score, swarm_id in self.ranked(required[0]):
                if eligible(swarm_id):
                    return swarm_id, 1.0
            return None
        # Walk the required capabilities' lists merged in descending base score. A swarm's value is
        # match × base <= base, so once the next base falls below the best value found, stop.
        wanted = set(required)
        total = len(required)
        best: tuple[float, str, float] | None = None  # (-value, swarm_id, match)
        seen: set[str] = set()
        lists = [self._lists.get(cap, []) for cap in wanted]
        for neg_base, swarm_id in heapq.merge(*lists):
            if best is not None and -neg_base < -best[0]:
                break
            if swarm_id in seen:
                continue
            seen.add(swarm_id)
            match = len(self._caps[swarm_id] & wanted) / total
            if match + 1e-12 < min_match or not eligible(swarm_id):
                continue
            candidate = (-(match * -neg_base), swarm_id, match)
            if best is None or candidate < best:
                best = candidate
        return (best[1], best[2]) if best else None
