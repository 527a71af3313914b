"""What PoOTValidator needs of its repository, as types: the seed's four methods, and what a repository
can declare it does beyond them.

Why declared traits and not probing: the seed's tests hand the validator an ``AsyncMock``, which answers
every attribute; a repository says what it does with one typed class attribute (``traits``), and anything
that does not (a mock, a test double) gets the plain behaviour. Wiring code may also pass traits explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .score_window import ScoreWindow

__all__ = ["PoOTRepository", "RepositoryTraits", "ScoreWindowSource", "traits_of"]


@dataclass(frozen=True, slots=True)
class RepositoryTraits:
    caches_nodes: bool = False  # nodes may come from a cache: re-read fresh before refusing a signature
    records_nonce_replays: bool = False  # the storing transaction claims the nonce and records a lost claim
    keeps_score_windows: bool = False  # ``get_score_window`` serves the node's live window (ScoreWindowSource)


class PoOTRepository(Protocol):
    async def get_by_id(self, node_id: str, *, fresh: bool = False) -> Any: ...

    async def get_by_nonce(self, node_id: str, nonce: str, since: datetime | None = None) -> Any: ...

    async def get_recent_validations(self, node_id: str, limit: int = 100) -> Sequence[Any]: ...

    async def save_validation(self, validation: Any, *, claim_nonce: bool = False,
                              checked_against: tuple[str | None] | None = None) -> None: ...


class ScoreWindowSource(Protocol):
    async def get_score_window(self, node_id: str, limit: int = 100) -> ScoreWindow: ...


def traits_of(repository: object) -> RepositoryTraits:
    """The traits a repository's class declares, or none."""
    declared = None
    for cls in type(repository).__mro__:  # the class's own attribute: a mock answers any instance attribute
        declared = cls.__dict__.get("traits")
        if declared is not None:
            break
    return declared if isinstance(declared, RepositoryTraits) else RepositoryTraits()
