"""Service contracts: what a swarm may use (ResourceLimits) and promise (ServiceLevelObjective)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infrafabric.ids import is_valid_id

from .errors import InvalidContractError

MIB = 1024 * 1024
WASM_PAGE = 65536

# Fuel (≈ wasm instructions) a core burns per CPU-second on this machine class
# (benchmarks/RESULTS.md, "Figures behind the code"). Used only to turn a CPU-seconds budget into fuel.
FUEL_PER_CPU_SECOND = 1_500_000_000


def validate_swarm_id(swarm_id: object) -> str:
    """Swarm ids are keys everywhere (rate buckets, metrics, witness): the platform's one id rule
    (``infrafabric.ids``), refused with the chassis's own contract error."""
    if not is_valid_id(swarm_id):
        raise InvalidContractError(
            f"invalid swarm id {swarm_id!r}: expected 1-128 chars of [A-Za-z0-9._:-]",
            swarm_id=repr(swarm_id),
        )
    return swarm_id


def _positive(name: str, value: float | int | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidContractError(f"{name} must be a positive number, got {value!r}", field=name)


@dataclass
class ResourceLimits:
    """Hard per-swarm limits. The first four are the design document's; the rest bound the ABI.

    CPU cap: a task may burn ``max_execution_time_seconds × max_cpu_percent/100`` CPU-seconds of
    fuel (or ``max_fuel`` when given); wall-clock is capped at ``max_execution_time_seconds``.
    """

    max_memory_mb: int = 256
    max_cpu_percent: int = 25
    max_api_calls_per_second: float = 10
    max_execution_time_seconds: float = 300
    api_burst: int = 1  # strict 1/rate spacing by default (100 calls at 10/s take ≥ 9.9 s)
    max_fuel: int | None = None
    max_concurrent_tasks: int = 4
    max_task_bytes: int = MIB
    max_result_bytes: int = MIB
    max_output_bytes: int = 64 * 1024  # each of stdout, stderr, log
    max_response_bytes: int = MIB
    max_wasm_stack_bytes: int = 512 * 1024

    def __post_init__(self) -> None:
        _positive("max_memory_mb", self.max_memory_mb)
        _positive("max_cpu_percent", self.max_cpu_percent)
        if self.max_cpu_percent > 100:
            raise InvalidContractError("max_cpu_percent is a share of one core (≤ 100)", field="max_cpu_percent")
        _positive("max_api_calls_per_second", self.max_api_calls_per_second)
        _positive("max_execution_time_seconds", self.max_execution_time_seconds)
        _positive("max_fuel", self.max_fuel, allow_none=True)
        for name in ("api_burst", "max_concurrent_tasks", "max_task_bytes", "max_result_bytes",
                     "max_output_bytes", "max_response_bytes", "max_wasm_stack_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidContractError(f"{name} must be an integer, got {value!r}", field=name)
            _positive(name, value)

    @property
    def memory_bytes(self) -> int:
        return int(self.max_memory_mb * MIB)

    @property
    def fuel_budget(self) -> int:
        """Fuel for one task: explicit ``max_fuel`` or the CPU share of the wall-clock cap."""
        if self.max_fuel is not None:
            return int(self.max_fuel)
        cpu_seconds = self.max_execution_time_seconds * self.max_cpu_percent / 100.0
        return max(1, int(cpu_seconds * FUEL_PER_CPU_SECOND))


@dataclass
class ServiceLevelObjective:
    """What the swarm promises; violations lower its reputation."""

    p99_latency_ms: float
    success_rate: float
    availability: float

    def __post_init__(self) -> None:
        _positive("p99_latency_ms", self.p99_latency_ms)
        for name in ("success_rate", "availability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise InvalidContractError(f"{name} must be within [0, 1], got {value!r}", field=name)


# Used when a swarm has no SLO of its own (the design doc's example SLO).
DEFAULT_SLO = ServiceLevelObjective(p99_latency_ms=500, success_rate=0.95, availability=0.99)


@dataclass
class ServiceContract:
    """A swarm's identity, capabilities, limits and SLO, as in the design document."""

    swarm_id: str
    capabilities: list[str] = field(default_factory=list)
    resource_requirements: ResourceLimits = field(default_factory=ResourceLimits)
    slos: ServiceLevelObjective | None = None
    version: str = "1.0"

    def __post_init__(self) -> None:
        validate_swarm_id(self.swarm_id)
        if self.resource_requirements is None:
            self.resource_requirements = ResourceLimits()
        if not isinstance(self.resource_requirements, ResourceLimits):
            raise InvalidContractError("resource_requirements must be a ResourceLimits", field="resource_requirements")
        if self.slos is not None and not isinstance(self.slos, ServiceLevelObjective):
            raise InvalidContractError("slos must be a ServiceLevelObjective or None", field="slos")
        if not isinstance(self.capabilities, (list, tuple)) or not all(isinstance(c, str) for c in self.capabilities):
            raise InvalidContractError("capabilities must be a list of strings", field="capabilities")
        self.capabilities = [str(c) for c in self.capabilities]
        if not isinstance(self.version, str) or not self.version:
            raise InvalidContractError("version must be a non-empty string", field="version")

    def summary(self) -> dict[str, object]:
        """Loggable view of the contract (no secrets in contracts, but keep it compact)."""
        limits = self.resource_requirements
        return {
            "swarm_id": self.swarm_id,
            "capabilities": list(self.capabilities),
            "version": self.version,
            "max_memory_mb": limits.max_memory_mb,
            "max_cpu_percent": limits.max_cpu_percent,
            "max_api_calls_per_second": limits.max_api_calls_per_second,
            "api_burst": limits.api_burst,
            "max_execution_time_seconds": limits.max_execution_time_seconds,
            "slo": None if self.slos is None else {
                "p99_latency_ms": self.slos.p99_latency_ms,
                "success_rate": self.slos.success_rate,
                "availability": self.slos.availability,
            },
        }
