"""ResourcePolicy: the governor's limits (defaults from the S2 design), loadable from YAML."""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from infrafabric.errors import InvalidPolicyError
from infrafabric.governor.money import to_money


@dataclass
class ResourcePolicy:
    max_swarms_per_task: int = 3
    max_cost_per_task: float = 10.0
    min_capability_match: float = 0.7
    circuit_breaker_failure_threshold: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.max_swarms_per_task, bool) or not isinstance(self.max_swarms_per_task, int):
            raise InvalidPolicyError("max_swarms_per_task must be an integer")
        if self.max_swarms_per_task < 1:
            raise InvalidPolicyError("max_swarms_per_task must be at least 1")
        try:
            to_money(self.max_cost_per_task, "max_cost_per_task")
        except ValueError as exc:
            raise InvalidPolicyError(str(exc)) from exc
        if not isinstance(self.min_capability_match, (int, float)) or not 0 < self.min_capability_match <= 1:
            raise InvalidPolicyError("min_capability_match must be in (0, 1]")
        threshold = self.circuit_breaker_failure_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise InvalidPolicyError("circuit_breaker_failure_threshold must be an integer >= 1")

    @property
    def max_cost_per_task_exact(self) -> Decimal:
        return to_money(self.max_cost_per_task, "max_cost_per_task")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResourcePolicy":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidPolicyError(f"unknown policy fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, source: str | Path) -> "ResourcePolicy":
        """Read `resource_policy:` from a YAML file path or YAML text."""
        return cls.from_dict(load_policy_document(source).get("resource_policy") or {})


def load_policy_document(source: str | Path) -> dict[str, Any]:
    text = Path(source).read_text() if isinstance(source, Path) or "\n" not in str(source) else str(source)
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidPolicyError(f"policy is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidPolicyError("policy document must be a mapping")
    return doc
