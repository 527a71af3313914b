"""ScoreWindow: a node's recent validation summaries with the sums reliability and confidence need.

Reliability and confidence used to be recomputed from the whole history (100 summaries) on every
proof: a fifth of the validator's time. The window keeps running sums instead, updated as summaries
enter and leave, so both are O(1) per proof. Scores are kept in integer hundredths (the validator rounds
every score to two places), so the sums are exact: sliding the window a million times leaves no float
drift, and the mean and deviation equal a recomputation from scratch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["ScoreWindow"]


def _hundredths(score: float) -> int:
    return round(score * 100)


class ScoreWindow:
    """Newest first, at most ``capacity`` summaries (anything with ``is_valid`` and ``score``)."""

    __slots__ = ("capacity", "_items", "_valid", "_sum", "_valid_sum", "_valid_sq")

    def __init__(self, capacity: int = 100) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[tuple[Any, bool, int]] = deque()
        self._valid = 0       # how many summaries are valid
        self._sum = 0         # sum of every score, hundredths
        self._valid_sum = 0   # sum of valid scores, hundredths
        self._valid_sq = 0    # sum of squared valid scores, hundredths squared

    @classmethod
    def of(cls, newest_first: Iterable[Any], capacity: int | None = None) -> ScoreWindow:
        items = list(newest_first)
        window = cls(capacity or max(1, len(items)))
        for summary in reversed(items[:window.capacity]):
            window.push(summary)
        return window

    def push(self, summary: Any) -> None:
        """Add the newest summary; the oldest leaves if the window is full."""
        if len(self._items) == self.capacity:
            self._account(*self._items.pop()[1:], sign=-1)
        valid, h = bool(summary.is_valid), _hundredths(summary.score)
        self._items.appendleft((summary, valid, h))
        self._account(valid, h, sign=1)

    def _account(self, valid: bool, h: int, *, sign: int) -> None:
        self._sum += sign * h
        if valid:
            self._valid += sign
            self._valid_sum += sign * h
            self._valid_sq += sign * h * h

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return (item[0] for item in self._items)

    def newest(self, limit: int) -> list[Any]:
        return [item[0] for _, item in zip(range(limit), self._items)]

    def reliability(self) -> float:
        """0.7 x success rate + 0.3 x mean score / 100; 0.5 without history."""
        n = len(self._items)
        if not n:
            return 0.5
        return 0.7 * self._valid / n + 0.3 * self._sum / n / 10_000

    def confidence(self, score: float) -> float:
        """How typical ``score`` is of the valid history: 0.5 with fewer than two valid proofs, else
        max(0.1, 1 - z/3) with z the distance from the mean in population standard deviations."""
        n = self._valid
        if n < 2:
            return 0.5
        # z = |x - S/n| / (sqrt(nQ - S^2)/n) = |n x - S| / sqrt(nQ - S^2), all in hundredths
        spread = n * self._valid_sq - self._valid_sum * self._valid_sum
        distance = abs(n * score * 100 - self._valid_sum)
        if spread == 0:
            return 1.0 if distance < 1e-6 * n else 0.1
        return round(min(1.0, max(0.1, 1 - distance / math.sqrt(spread) / 3)), 4)
