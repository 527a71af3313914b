"""Read caches for the PoOT hot path, shared by the repositories of one NodeDatabase.

Each proof used to read its node and its last 100 validations from the database: three quarters of its
cost. Neither cache decides a rule on its own:

* ``NodeSnapshotCache`` holds nodes as the PoOT validator last read them. Every node write made through
  this NodeDatabase drops the entry, and the PoOT writer re-reads status and public key inside the
  transaction that stores a proof (a proof checked against a stale snapshot is refused there), so a node
  stopped or re-keyed by another process can never get a proof accepted.
* ``PoOTHistoryCache`` holds each node's recent (is_valid, score) summaries in a ScoreWindow, which only
  feeds reliability and confidence. The PoOT writer appends what it commits; an entry is reloaded after
  ``ttl`` seconds so validations stored by another process show up. A reload that finds nothing this
  process did not already have doubles the node's period (up to ``max_stretch`` x ``ttl``); one that finds
  another writer's validations brings it back to ``ttl``. With one writer, reloads (a 100-row read, the
  HTTP PoOT p99 when it was one proof in six) become rare; with several, history lags by ``ttl`` as before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ..poot.score_window import ScoreWindow

__all__ = ["NodeSnapshotCache", "PoOTHistoryCache"]


class NodeSnapshotCache:
    """Bounded LRU of node snapshots (node_id -> Node)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._max = max_entries
        self.generation = 0  # bumped by every invalidation, so a read racing a write is not cached

    def get(self, node_id: str) -> Any | None:
        node = self._entries.get(node_id)
        if node is not None:
            self._entries.move_to_end(node_id)
        return node

    def put(self, node: Any, generation: int) -> None:
        """Cache ``node`` unless an invalidation happened since the read that produced it began."""
        if generation != self.generation:
            return
        self._entries[node.node_id] = node
        self._entries.move_to_end(node.node_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, node_id: str | None = None) -> None:
        """Drop one node (or all): called before and after every node write of this process."""
        self.generation += 1
        if node_id is None:
            self._entries.clear()
        else:
            self._entries.pop(node_id, None)

    def __len__(self) -> int:
        return len(self._entries)


class PoOTHistoryCache:
    """Per node, the newest ``capacity`` validation summaries, newest first, with their running sums.

    A reload (after ``ttl``) that races this process's own commits is merged, not dropped: the commits
    appended while the read was in flight are added unless the read already holds them (by validation
    id). Dropping it meant that under steady load, when every node commits several times per read, an
    expired entry was never reinstalled and every proof of the node went back to the database."""

    _MAX_LOGGED = 10_000  # appends remembered for one node's in-flight reads; beyond that a read is dropped

    def __init__(self, capacity: int = 100, ttl: float = 1.0, max_nodes: int = 10_000, max_stretch: int = 32) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.max_stretch = max_stretch
        self._max_nodes = max_nodes
        # node -> (loaded at, window, stretch: the entry expires after ttl x stretch)
        self._entries: OrderedDict[str, tuple[float, ScoreWindow, int]] = OrderedDict()
        self._writes: dict[str, int] = {}  # per node, appends seen
        self._loading: dict[str, list[Any]] = {}  # per node with reads in flight: [reads, appends since]
        self._epoch = 0

    def get(self, node_id: str, limit: int) -> list[Any] | None:
        window = self.window(node_id) if limit <= self.capacity else None
        return None if window is None else window.newest(limit)

    def window(self, node_id: str) -> ScoreWindow | None:
        """The node's live window (shared: read it, do not push to it), or None if absent or expired."""
        entry = self._entries.get(node_id)
        if entry is None or time.monotonic() - entry[0] > self.ttl * entry[2]:
            return None
        return entry[1]

    def aged_window(self, node_id: str) -> tuple[ScoreWindow, float] | None:
        """The node's window and the seconds it has been expired (<= 0: not yet); None if absent. For a
        caller that serves an expired window while it reloads it (SqlPoOTRepository.get_score_window)."""
        entry = self._entries.get(node_id)
        if entry is None:
            return None
        return entry[1], time.monotonic() - entry[0] - self.ttl * entry[2]

    def stretch(self, node_id: str) -> int | None:
        entry = self._entries.get(node_id)
        return None if entry is None else entry[2]

    def version(self, node_id: str) -> tuple[int, int]:
        """Taken before a database read, which must end in ``load`` or ``abandon``."""
        track = self._loading.get(node_id)
        if track is None:
            track = self._loading[node_id] = [0, []]
        track[0] += 1
        return self._epoch, self._writes.get(node_id, 0)

    def abandon(self, node_id: str) -> None:
        """The read begun by ``version`` failed."""
        self._release(node_id)

    def _release(self, node_id: str) -> list[Any] | None:
        track = self._loading.get(node_id)
        if track is None:
            return None
        track[0] -= 1
        if track[0] <= 0:
            del self._loading[node_id]
        return track[1]  # type: ignore[no-any-return]

    def load(self, node_id: str, newest_first: list[Any], version: tuple[int, int]) -> None:
        logged = self._release(node_id)
        epoch, seen = version
        if epoch != self._epoch:
            return
        missed = self._writes.get(node_id, 0) - seen
        later: list[Any] = []
        if missed:
            if logged is None or missed > len(logged):
                return
            later = logged[len(logged) - missed:]
            if any(getattr(s, "validation_id", None) is None for s in later):
                return  # cannot tell whether the read holds them
        read = newest_first
        if later:
            ids = {getattr(s, "validation_id", None) for s in newest_first}
            newest_first = [s for s in reversed(later) if s.validation_id not in ids] + list(newest_first)
        stretch = 1
        previous = self._entries.get(node_id)
        if previous is not None:
            known = {getattr(s, "validation_id", None) for s in previous[1]}
            known.update(getattr(s, "validation_id", None) for s in later)
            if None not in known and all(getattr(s, "validation_id", None) in known for s in read):
                stretch = min(previous[2] * 2, self.max_stretch)  # nothing from another writer
        self._entries[node_id] = (time.monotonic(), ScoreWindow.of(newest_first, self.capacity), stretch)
        self._entries.move_to_end(node_id)
        while len(self._entries) > self._max_nodes:
            self._entries.popitem(last=False)

    def append(self, node_id: str, summary: Any) -> None:
        """A committed validation (called after the commit). Nodes not loaded stay unloaded."""
        if len(self._writes) > 4 * self._max_nodes:
            self._writes.clear()
            self._epoch += 1
        self._writes[node_id] = self._writes.get(node_id, 0) + 1
        track = self._loading.get(node_id)
        if track is not None:
            track[1].append(summary)
            if len(track[1]) > self._MAX_LOGGED:
                del track[1][:len(track[1]) - self._MAX_LOGGED]
        entry = self._entries.get(node_id)
        if entry is not None:
            entry[1].push(summary)

    def invalidate(self, node_id: str | None = None) -> None:
        self._epoch += 1
        if node_id is None:
            self._entries.clear()
        else:
            self._entries.pop(node_id, None)
