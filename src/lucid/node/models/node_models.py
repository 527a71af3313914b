"""Node models: field rules from the reference notes (02-data-models), state enum from SPEC.md."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..validators import SAFE_TEXT_RE, validate_public_key

__all__ = [
    "NodeStatus", "NodeType", "CPUInfo", "MemoryInfo", "StorageInfo", "GPUInfo", "NetworkInterface",
    "HardwareInfo", "Location", "ResourceLimits", "MaintenanceWindow", "NodeConfiguration", "Node",
    "NodeCreateRequest", "NodeUpdateRequest", "utcnow", "new_node_id",
]

GB = 1024**3
TB = 1024**4
SafeText = Annotated[str, Field(max_length=100, pattern=SAFE_TEXT_RE)]
NodeName = Annotated[str, Field(min_length=3, max_length=100, pattern=r"^[a-zA-Z0-9_-]+$")]
PoolId = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^pool_[a-zA-Z0-9_-]+$")]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_node_id() -> str:
    return f"node_{uuid.uuid4().hex[:20]}"


class NodeStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    MAINTENANCE = "maintenance"
    ERROR = "error"
    STARTING = "starting"
    STOPPING = "stopping"


class NodeType(StrEnum):
    WORKER = "worker"
    VALIDATOR = "validator"
    STORAGE = "storage"
    COMPUTE = "compute"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CPUInfo(_Strict):
    cores: int = Field(ge=1, le=128)
    frequency_mhz: int = Field(ge=1, le=10_000)
    architecture: Literal["x86_64", "arm64", "aarch64", "riscv64"]


class MemoryInfo(_Strict):
    total_bytes: int = Field(ge=GB, le=TB)
    type: SafeText | None = None


class StorageInfo(_Strict):
    total_bytes: int = Field(ge=10 * GB, le=100 * TB)
    type: Literal["SSD", "HDD", "NVMe"]
    interface: SafeText | None = None


class GPUInfo(_Strict):
    model: SafeText
    memory_bytes: int = Field(ge=0, le=TB)
    compute_capability: Annotated[str, Field(pattern=r"^\d{1,2}\.\d{1,2}$")] | None = None


class NetworkInterface(_Strict):
    interface: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    speed_mbps: int = Field(ge=1, le=1_000_000)
    mac_address: Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")] | None = None


class HardwareInfo(_Strict):
    cpu: CPUInfo
    memory: MemoryInfo
    storage: StorageInfo
    gpu: GPUInfo | None = None
    network: list[NetworkInterface] = Field(min_length=1, max_length=32)


class Coordinates(_Strict):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class Location(_Strict):
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    region: SafeText | None = None
    city: SafeText | None = None
    timezone: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")] | None = None
    coordinates: Coordinates | None = None


class ResourceLimits(_Strict):
    cpu_percent: float | None = Field(default=None, gt=0, le=100)
    memory_bytes: int | None = Field(default=None, ge=0)
    disk_bytes: int | None = Field(default=None, ge=0)
    network_mbps: int | None = Field(default=None, ge=0)


class MaintenanceWindow(_Strict):
    start_hour: int = Field(ge=0, le=23)
    duration_hours: int = Field(ge=1, le=24)


class NodeConfiguration(_Strict):
    max_sessions: int = Field(default=10, ge=1, le=1000)
    resource_limits: ResourceLimits | None = None
    auto_scaling: bool = False
    maintenance_window: MaintenanceWindow | None = None


class Node(BaseModel):
    """A compute node. Fields have defaults so partial records (and tests) can build one; assignments are
    validated, so ``node.status = "bogus"`` fails."""

    model_config = ConfigDict(validate_assignment=True, extra="ignore")

    node_id: str = Field(default_factory=new_node_id, max_length=64, pattern=r"^node_[a-zA-Z0-9_-]+$")
    name: str | None = None
    status: NodeStatus = NodeStatus.INACTIVE
    node_type: NodeType = NodeType.WORKER
    pool_id: str | None = None
    pool_priority: int = Field(default=50, ge=1, le=100)
    hardware_info: HardwareInfo | None = None
    location: Location | None = None
    configuration: NodeConfiguration | None = None
    public_key: str | None = None
    poot_score: float = Field(default=0.0, ge=0, le=100)
    last_heartbeat: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def public_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def public_json(self) -> bytes:
        """``public_dict`` as JSON, written by pydantic in one pass (see PoOTValidationResult.public_json)."""
        return self.__pydantic_serializer__.to_json(self)


class NodeCreateRequest(_Strict):
    name: NodeName
    node_type: NodeType = NodeType.WORKER
    hardware_info: HardwareInfo | None = None
    location: Location | None = None
    initial_pool_id: PoolId | None = None
    configuration: NodeConfiguration | None = None
    public_key: str | None = Field(default=None, description="base64 Ed25519 public key for signed PoOT")

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return None if v is None else validate_public_key(v)


class NodeUpdateRequest(_Strict):
    name: NodeName | None = None
    status: Literal["active", "inactive", "maintenance", "error"] | None = None
    hardware_info: HardwareInfo | None = None
    location: Location | None = None
    configuration: NodeConfiguration | None = None
    public_key: str | None = None

    @field_validator("name", "status")
    @classmethod
    def _not_cleared(cls, v: Any) -> Any:
        """Left out, these stay as they are; sent as null they would erase a name or a status."""
        if v is None:
            raise ValueError("cannot be null")
        return v

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return None if v is None else validate_public_key(v)
