"""Chassis error classes.

Every refusal is a class with ``error_code`` and ``message``. The classes also derive from the
built-in exception the seed tests expect (``MemoryError``, ``PermissionError``, ``TimeoutError``), so
callers can catch either the precise chassis error or the generic Python one.
"""

from __future__ import annotations

from typing import Any

from backends.errors import RateLimited
from infrafabric.errors import InfraFabricError


class ChassisError(InfraFabricError):
    """Base of every IF.chassis error (an InfraFabricError: ``error_code`` + ``message``)."""

    error_code: str = "IF_ERR_CHASSIS"
    http_status = 400

    def __init__(self, message: str, *, error_code: str | None = None, **details: Any) -> None:
        super().__init__(message, error_code, details)


class InvalidContractError(ChassisError, ValueError):
    """A contract, limit or swarm id is malformed."""

    error_code = "IF_ERR_CHASSIS_INVALID_CONTRACT"


class InvalidTaskError(ChassisError, ValueError):
    """The task cannot be serialised for the guest (not a JSON object, too large...)."""

    error_code = "IF_ERR_CHASSIS_INVALID_TASK"


class InvalidModuleError(ChassisError, ValueError):
    """The bytes are not a valid WebAssembly module or miss the guest ABI exports."""

    error_code = "IF_ERR_CHASSIS_INVALID_MODULE"


class SwarmNotLoadedError(ChassisError, KeyError):
    """execute_task for a swarm that was never loaded (strict chassis only)."""

    error_code = "IF_ERR_CHASSIS_SWARM_NOT_LOADED"


class SandboxPermissionError(ChassisError, PermissionError):
    """The guest tried something the sandbox does not allow (file system, network, sockets)."""

    error_code = "IF_ERR_CHASSIS_PERMISSION_DENIED"


class ForbiddenImportError(SandboxPermissionError):
    """The module imports a host function the chassis does not provide (exec, shell, ...)."""

    error_code = "IF_ERR_CHASSIS_FORBIDDEN_IMPORT"


class CredentialError(SandboxPermissionError):
    """Credentials are missing, expired, or belong to another swarm or task."""

    error_code = "IF_ERR_CHASSIS_CREDENTIAL_REFUSED"


class CredentialExpiredError(CredentialError):
    """The scoped credentials' TTL has run out."""

    error_code = "IF_ERR_CHASSIS_CREDENTIAL_EXPIRED"


class EndpointNotAllowedError(SandboxPermissionError):
    """An outbound URL is not on the credentials' allow-list (after canonical checks)."""

    error_code = "IF_ERR_CHASSIS_ENDPOINT_NOT_ALLOWED"


class GuestMemoryError(ChassisError, MemoryError):
    """The guest needed more linear memory than its contract allows."""

    error_code = "IF_ERR_CHASSIS_MEMORY_LIMIT"


class TaskTimeoutError(ChassisError, TimeoutError):
    """The task ran past its wall-clock cap (epoch interruption)."""

    error_code = "IF_ERR_CHASSIS_TIMEOUT"


class CpuLimitExceededError(TaskTimeoutError):
    """The task used up its CPU budget (wasmtime fuel)."""

    error_code = "IF_ERR_CHASSIS_CPU_LIMIT"


class RateLimitExceeded(ChassisError, RateLimited):
    """The swarm is over its call rate; ``retry_after`` says when the next call may go."""

    error_code = "IF_ERR_CHASSIS_RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float = 0.0, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class GuestTrapError(ChassisError, RuntimeError):
    """The guest trapped (unreachable, stack overflow, abort, bad exit code...)."""

    error_code = "IF_ERR_CHASSIS_GUEST_TRAP"


class GuestProtocolError(GuestTrapError):
    """The guest broke the ABI: bad pointers, oversized or non-JSON result, false claims."""

    error_code = "IF_ERR_CHASSIS_GUEST_PROTOCOL"


class OutboundRequestError(ChassisError, ConnectionError):
    """An allowed outbound call failed on the network side (refused, timed out)."""

    error_code = "IF_ERR_CHASSIS_OUTBOUND_FAILED"
