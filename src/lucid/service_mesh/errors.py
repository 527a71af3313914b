"""Error classes of the Lucid service mesh.

Every error carries the SPEC's ``error_code`` (``LUCID_ERR_1xxx``) and a human ``message`` so callers and
the HTTP API can map failures without parsing strings.
"""

from __future__ import annotations

from backends.errors import PlatformError, RateLimited


class LucidMeshError(PlatformError):
    """Base class of the mesh's errors (the project's one contract: ``error_code``, ``message``, ``details``,
    ``http_status``; ``str()`` is ``CODE: message``)."""

    error_code = "LUCID_ERR_1105"
    http_status = 500


class ServiceRegistrationError(LucidMeshError):
    """Registration failed (the backend refused or was unreachable)."""

    error_code = "LUCID_ERR_1001"
    http_status = 503


class ServiceDiscoveryError(LucidMeshError):
    """Discovery failed; the default code is the discovery-timeout code."""

    error_code = "LUCID_ERR_1005"
    http_status = 503


class ServiceNotFoundError(ServiceDiscoveryError):
    """No (healthy, matching) instance of the service, or an unknown service id."""

    error_code = "LUCID_ERR_1002"
    http_status = 404


class ServiceAlreadyRegisteredError(LucidMeshError):
    """The same service id is registered already."""

    error_code = "LUCID_ERR_1003"
    http_status = 409


class InvalidServiceConfigError(LucidMeshError, ValueError):
    """A registration or query argument failed validation; 1203 (403) when what it declares breaks the
    plane map (a Lucid cluster registered in another plane)."""

    error_code = "LUCID_ERR_1004"
    http_status = 400
    status_of_code = {"LUCID_ERR_1203": 403}


class PolicyValidationError(LucidMeshError, ValueError):
    """A policy definition is malformed."""

    error_code = "LUCID_ERR_1102"
    http_status = 400


class CircuitBreakerConfigError(LucidMeshError, ValueError):
    """Circuit breaker settings out of the documented ranges."""

    error_code = "LUCID_ERR_1202"
    http_status = 400


class CircuitBreakerOpenError(LucidMeshError):
    """Raised without calling the protected function while the breaker is open (fail fast)."""

    error_code = "LUCID_ERR_1104"
    http_status = 503


class SecurityPolicyViolation(LucidMeshError):
    """A plane/cluster rule or an authentication check refused the caller."""

    error_code = "LUCID_ERR_1203"
    http_status = 403


class MethodNotAllowedError(SecurityPolicyViolation):
    """A request method the policy cannot classify (not one of the canonical, upper-case HTTP methods):
    refused, so the method a handler sees is always the one the policy approved."""

    http_status = 405


class AuthenticationError(SecurityPolicyViolation):
    """Every service-JWT failure (SPEC: all of them are 1203)."""

    http_status = 401


class MTLSVerificationError(LucidMeshError):
    """Certificate refused: 1204 when bad/expired/untrusted, 1203 when the plane/cluster is not allowed."""

    error_code = "LUCID_ERR_1204"
    http_status = 403


class CertificateError(MTLSVerificationError):
    """Certificate authority or issuance problem (mTLS configuration failure)."""


__all__ = [
    "AuthenticationError",
    "CertificateError",
    "CircuitBreakerConfigError",
    "CircuitBreakerOpenError",
    "InvalidServiceConfigError",
    "LucidMeshError",
    "MTLSVerificationError",
    "MethodNotAllowedError",
    "PolicyValidationError",
    "SecurityPolicyViolation",
    "ServiceAlreadyRegisteredError",
    "ServiceDiscoveryError",
    "ServiceNotFoundError",
    "ServiceRegistrationError",
]


class UpstreamCallError(LucidMeshError):
    """A mesh call reached no healthy answer (connection failure or a 5xx from the destination)."""

    error_code = "LUCID_ERR_1301"
    http_status = 502


__all__.append("UpstreamCallError")


class MessageDeliveryError(LucidMeshError):
    """The broker refused a message: it was not queued."""

    error_code = "LUCID_ERR_1301"
    http_status = 502


class SubscriptionError(LucidMeshError):
    """Consuming a destination's queue failed."""

    error_code = "LUCID_ERR_1302"
    http_status = 503


class MessageQueueUnavailableError(LucidMeshError):
    """The broker cannot be reached, or the client is not connected: nothing was sent."""

    error_code = "LUCID_ERR_1303"
    http_status = 503


class MessageTimeoutError(LucidMeshError):
    """The broker's confirm did not arrive in time: the message may or may not be queued."""

    error_code = "LUCID_ERR_1305"
    http_status = 504


class RateLimitedError(LucidMeshError, RateLimited):
    """A caller is over its rate (SPEC: 4291); ``retry_after`` is the whole seconds until it may retry."""

    error_code = "LUCID_ERR_4291"
    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after}, retry_after=retry_after)


__all__.append("RateLimitedError")
