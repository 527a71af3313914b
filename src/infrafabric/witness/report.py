"""What verification found: the report and its problems (kinds are listed in PROBLEM_KINDS)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .checkpoint import Checkpoint

PROBLEM_KINDS = (
    "malformed",  # an entry cannot be parsed at all
    "edited",  # content does not hash to its content_hash, or a field is not in canonical form
    "forged",  # content is intact but the signature is not by the witness key
    "inserted",  # an entry whose sequence number already appeared
    "deleted",  # a sequence number is missing
    "reordered",  # sequence numbers go backwards
    "chain_broken",  # prev_hash does not point at the previous entry
    "truncated",  # a checkpoint commits to more entries than the log has
    "checkpoint_mismatch",  # the Merkle root of the log differs from a checkpoint's root
    "checkpoint_invalid",  # a checkpoint's signature does not verify
    "no_checkpoint",  # nothing anchors the size of the log, truncation cannot be ruled out
    "unverified",  # the entry closing a signing group is missing or damaged: its members cannot be checked
    "head_mismatch",  # the store's head row does not describe its entries (count, last hash, tree edge)
)


@dataclass
class Problem:
    kind: str
    message: str
    position: int | None = None
    seq: int | None = None
    entry_id: str | None = None

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.position is not None:
            where.append(f"line/position {self.position}")
        if self.entry_id:
            where.append(f"id {self.entry_id}")
        return f"{self.kind}: {self.message}" + (f" ({', '.join(where)})" if where else "")


@dataclass
class VerificationReport:
    ok: bool
    entries: int
    root: str
    checkpoints_verified: list[Checkpoint] = field(default_factory=list)
    signatures_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "root": self.root,
            "checkpoints_verified": [c.to_dict() for c in self.checkpoints_verified],
            "signatures_checked": self.signatures_checked,
            "problems": [asdict(p) for p in self.problems],
        }
