"""Node pool models (reference notes: pool ids ^pool_..., max_nodes 1..1000, description <= 500)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..validators import SAFE_TEXT_RE
from .node_models import NodeName, PoolId, ResourceLimits, utcnow
from .types import NonNegativePrice

__all__ = ["ScalingPolicy", "NodePool", "NodePoolCreateRequest", "NodePoolUpdateRequest", "AddNodeToPoolRequest"]

_RESERVED = ("pool_system_", "pool_admin_", "pool_test_")


class ScalingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale_up_threshold: float = Field(default=80, ge=0, le=100)
    scale_down_threshold: float = Field(default=20, ge=0, le=100)
    min_nodes: int = Field(default=1, ge=0, le=1000)
    max_nodes: int = Field(default=100, ge=1, le=1000)
    cooldown_minutes: int = Field(default=10, ge=0, le=1440)


class NodePool(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    pool_id: str = Field(default_factory=lambda: f"pool_{uuid.uuid4().hex[:16]}")
    name: str
    description: str | None = None
    node_count: int = Field(default=0, ge=0)
    max_nodes: int = Field(default=100, ge=1, le=1000)
    resource_limits: ResourceLimits | None = None
    auto_scaling: bool = False
    scaling_policy: ScalingPolicy | None = None
    pricing: dict[str, Any] | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class NodePoolCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_id: PoolId | None = None
    name: NodeName
    description: Annotated[str, Field(max_length=500, pattern=SAFE_TEXT_RE)] | None = None
    max_nodes: int = Field(default=100, ge=1, le=1000)
    resource_limits: ResourceLimits | None = None
    auto_scaling: bool = False
    scaling_policy: ScalingPolicy | None = None
    pricing: dict[str, NonNegativePrice] | None = None

    @field_validator("pool_id")
    @classmethod
    def _not_reserved(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(_RESERVED):
            raise ValueError("pool id uses a reserved prefix")
        return v


class NodePoolUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: NodeName | None = None
    description: Annotated[str, Field(max_length=500, pattern=SAFE_TEXT_RE)] | None = None
    max_nodes: int | None = Field(default=None, ge=1, le=1000)
    resource_limits: ResourceLimits | None = None
    auto_scaling: bool | None = None
    scaling_policy: ScalingPolicy | None = None

    @field_validator("name", "max_nodes", "auto_scaling")
    @classmethod
    def _not_cleared(cls, v: Any) -> Any:
        """Left out, these stay as they are; a pool cannot be without them, so null is refused."""
        if v is None:
            raise ValueError("cannot be null")
        return v


class AddNodeToPoolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^node_[a-zA-Z0-9_-]+$")]
    priority: int = Field(default=50, ge=1, le=100)
