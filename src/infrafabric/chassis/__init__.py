"""IF.chassis: a WebAssembly (wasmtime) sandbox for untrusted swarm code.

Each task runs in a fresh store with the contract's memory cap, a CPU (fuel) and wall-clock (epoch)
cap, WASI without preopens/env/args, and only the host functions in docs/GUEST_ABI.md. Outbound
calls are made by the host with task-scoped, short-lived credentials it never hands to the guest.
"""

from .chassis import IFChassis, SwarmRuntime, TaskOutcome
from .contracts import DEFAULT_SLO, ResourceLimits, ServiceContract, ServiceLevelObjective
from .credentials import ScopedCredentials
from .errors import (
    ChassisError,
    CpuLimitExceededError,
    CredentialError,
    CredentialExpiredError,
    EndpointNotAllowedError,
    ForbiddenImportError,
    GuestMemoryError,
    GuestProtocolError,
    GuestTrapError,
    InvalidContractError,
    InvalidModuleError,
    InvalidTaskError,
    OutboundRequestError,
    RateLimitExceeded,
    SandboxPermissionError,
    SwarmNotLoadedError,
    TaskTimeoutError,
)
from .slo import PerformanceSummary

__all__ = [
    "DEFAULT_SLO", "ChassisError", "CpuLimitExceededError", "CredentialError", "CredentialExpiredError",
    "EndpointNotAllowedError", "ForbiddenImportError", "GuestMemoryError", "GuestProtocolError",
    "GuestTrapError", "IFChassis", "InvalidContractError", "InvalidModuleError", "InvalidTaskError",
    "OutboundRequestError", "PerformanceSummary", "RateLimitExceeded", "ResourceLimits",
    "SandboxPermissionError", "ScopedCredentials", "ServiceContract", "ServiceLevelObjective",
    "SwarmNotLoadedError", "SwarmRuntime", "TaskOutcome", "TaskTimeoutError",
]
