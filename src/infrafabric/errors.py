"""InfraFabric's error classes: each has a stable `error_code` and a human `message`.

Validation errors also subclass ValueError, as the seed's tests expect (`pytest.raises(ValueError)`).
"""

from __future__ import annotations

from backends.errors import AuthenticationError, BackendError, BackendUnavailable, OutcomeUnknown, PlatformError

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BackendUnavailable",
    "BudgetManipulationError",
    "CredentialError",
    "CircuitOpenError",
    "InfraFabricError",
    "InvalidCapabilityError",
    "InvalidCostError",
    "InvalidIdentifierError",
    "InvalidPolicyError",
    "NotTaskOwnerError",
    "OutcomeUnknown",
    "PermissionDeniedError",
    "StaleClaimError",
    "SwarmAlreadyConnectedError",
    "SwarmQueueFullError",
    "UnknownSwarmError",
    "ValidationError",
]


class InfraFabricError(PlatformError):
    """Base of every InfraFabric error (a subclass, or a call, may set a more specific error_code)."""

    error_code = "IF_ERR_INTERNAL"
    status_of_code = {"IF_ERR_AUTH_KEY_UNSAFE": 500, "IF_ERR_MODEL_NOT_ALLOWED": 403, "IF_ERR_UNAVAILABLE": 503,
                      "IF_ERR_UPSTREAM": 502, "IF_ERR_UPSTREAM_TIMEOUT": 504}


class ValidationError(InfraFabricError, ValueError):
    error_code = "IF_ERR_VALIDATION"
    http_status = 400


class InvalidIdentifierError(ValidationError):
    """A task or swarm id outside ^[A-Za-z0-9._:-]{1,128}$ (shell metacharacters, paths, spaces...)."""

    error_code = "IF_ERR_INVALID_ID"


class InvalidCapabilityError(ValidationError):
    error_code = "IF_ERR_INVALID_CAPABILITY"


class InvalidCostError(ValidationError):
    error_code = "IF_ERR_INVALID_COST"


class InvalidPolicyError(ValidationError):
    error_code = "IF_ERR_INVALID_POLICY"


class UnknownSwarmError(InfraFabricError, KeyError):
    error_code = "IF_ERR_UNKNOWN_SWARM"
    http_status = 403


class SwarmQueueFullError(InfraFabricError):
    """The swarm's inbox is full: the push is refused rather than dropped."""

    error_code = "IF_ERR_QUEUE_FULL"
    http_status = 429


class StaleClaimError(InfraFabricError):
    """A write fenced by a claim revision that is no longer current (lease expired, task re-claimed)."""

    error_code = "IF_ERR_STALE_CLAIM"
    http_status = 409


class NotTaskOwnerError(InfraFabricError):
    error_code = "IF_ERR_NOT_OWNER"
    http_status = 403


class BudgetManipulationError(InfraFabricError, AttributeError):
    """Budgets and reputation live in the governor; a profile cannot set them."""

    error_code = "IF_ERR_BUDGET_READ_ONLY"
    http_status = 403


class CircuitOpenError(InfraFabricError):
    error_code = "IF_ERR_CIRCUIT_OPEN"
    http_status = 429


class CredentialError(InfraFabricError, PermissionError):
    """A swarm or operator credential that is missing, malformed, not signed by the platform's authority,
    expired or revoked (engine authentication failures are ``AuthenticationError``, from the backends)."""

    error_code = "IF_ERR_AUTH_INVALID"
    http_status = 401


class PermissionDeniedError(InfraFabricError, PermissionError):
    """An authenticated identity asked for something its role does not allow."""

    error_code = "IF_ERR_FORBIDDEN"
    http_status = 403


class SwarmAlreadyConnectedError(InfraFabricError):
    """A second live session for a swarm id: the first one must end (or expire) before another opens."""

    error_code = "IF_ERR_SWARM_ALREADY_CONNECTED"
    http_status = 409


# Codes a subclass stands for besides its own (a credential can also be expired or revoked).
_ALSO = {"IF_ERR_AUTH_EXPIRED": CredentialError, "IF_ERR_AUTH_REVOKED": CredentialError}


def error_from_envelope(code: str, message: str, status: int | None = None) -> InfraFabricError:
    """The error a client raises for an HTTP error envelope: the class of that code, a ValidationError
    for another 400, an InfraFabricError otherwise (always with the envelope's code and message)."""
    cls = _ALSO.get(code) or _BY_CODE.get(code) or (ValidationError if status == 400 else InfraFabricError)
    return cls(message, error_code=code)


_BY_CODE: dict[str, type[InfraFabricError]] = {
    cls.error_code: cls for cls in reversed([globals()[name] for name in __all__])
    if isinstance(cls, type) and issubclass(cls, InfraFabricError)}
