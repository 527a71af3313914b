"""Errors raised by the backend layer, whatever engine is behind it.

Callers catch these instead of engine-specific exceptions (grpc, nats, sqlite), so code written against
the embedded backend behaves the same on etcd or NATS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PlatformError", "RateLimited", "BackendError", "BackendUnavailable", "OutcomeUnknown",
           "AuthenticationError", "UntrustedServerError", "AlreadySettled", "LeaseNotFound", "InvalidBackendURL",
           "NoResponders", "RequestTimeout", "RemoteError", "QueueUnavailable", "DeliveryFailed", "ConfirmTimeout"]


class PlatformError(Exception):
    """The one error contract of the whole project: every error the platform raises derives from this.

    ``error_code`` is stable (the spec's code; a call may name a more precise one), ``message`` is for a
    person, ``details`` for a program, ``http_status`` is what an HTTP API answers with, and ``str()`` is
    always ``CODE: message``. Each system keeps its own base (``BackendError``, ``InfraFabricError``,
    ``LucidMeshError``, ``NodeManagementError``) for its codes; catching ``PlatformError`` catches them all.
    """

    error_code: str = "PLATFORM_ERROR"
    http_status: int = 500
    default_message: str = "platform error"
    # statuses of codes a call names (``error_code=``) that differ from its class's status
    status_of_code: Mapping[str, int] = {}

    def __init__(self, message: str | None = None, error_code: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        self.message: str = message or self.default_message
        if error_code is not None:
            self.error_code = error_code
            if error_code in self.status_of_code:
                self.http_status = self.status_of_code[error_code]
        self.details: dict[str, Any] = dict(details) if details else {}
        super().__init__(self.message)

    def __str__(self) -> str:  # one form everywhere (KeyError subclasses would otherwise repr() it)
        return f"{self.error_code}: {self.message}"


class RateLimited(PlatformError):
    """A caller over its rate; ``retry_after`` is the seconds until it may try again. Each system refuses
    with its own code (its subclass), so a client catches this one class for all of them."""

    error_code = "RATE_LIMITED"
    http_status = 429
    retry_after: float = 0.0

    def __init__(self, message: str | None = None, error_code: str | None = None,
                 details: Mapping[str, Any] | None = None, *, retry_after: float = 0.0) -> None:
        super().__init__(message, error_code, details)
        self.retry_after = retry_after


class BackendError(PlatformError):
    """Base class: every backend failure carries a stable `error_code` and a human `message`."""

    error_code = "BACKEND_ERROR"


class BackendUnavailable(BackendError):
    """The engine cannot be reached (down, partitioned, no quorum) within the call's deadline."""

    error_code = "BACKEND_UNAVAILABLE"
    http_status = 503


class OutcomeUnknown(BackendUnavailable):
    """A write timed out after it was sent: it may or may not have been applied.

    Callers must re-read to learn the outcome instead of retrying blindly (no double effects).
    """

    error_code = "BACKEND_OUTCOME_UNKNOWN"


class AuthenticationError(BackendError):
    """The engine refused the caller's identity (no credentials, wrong password, no permission)."""

    error_code = "BACKEND_AUTH_FAILED"


class UntrustedServerError(BackendError):
    """The engine's TLS certificate is not signed by the CA the client was given (or no CA was given)."""

    error_code = "BACKEND_TLS_UNTRUSTED"


class AlreadySettled(BackendError):
    """A delivery acknowledged or rejected a second time (the first settlement stands)."""

    error_code = "MQ_ALREADY_SETTLED"


class LeaseNotFound(BackendError):
    """The lease expired or was revoked."""

    error_code = "BACKEND_LEASE_NOT_FOUND"


class InvalidBackendURL(BackendError, ValueError):
    """A backend URL that names no known engine or is malformed."""

    error_code = "BACKEND_INVALID_URL"
    http_status = 400


class NoResponders(BackendError):
    """A request on the bus found no subscriber for its subject."""

    error_code = "BUS_NO_RESPONDERS"


class RequestTimeout(BackendError):
    """A request on the bus got no reply within its timeout."""

    error_code = "BUS_REQUEST_TIMEOUT"


class RemoteError(BackendError):
    """The subscriber that handled a request raised; its error code and message travel back."""

    error_code = "BUS_REMOTE_ERROR"

    def __init__(self, remote_code: str, message: str) -> None:
        super().__init__(message)
        self.remote_code = remote_code


class QueueUnavailable(BackendUnavailable):
    """The message broker cannot be reached, or this client is not connected to it."""

    error_code = "MQ_UNAVAILABLE"


class DeliveryFailed(BackendError):
    """The broker refused a message (negative confirm, or it could not be routed): it was not queued."""

    error_code = "MQ_DELIVERY_FAILED"


class ConfirmTimeout(OutcomeUnknown):
    """A message was sent but the broker's confirm did not arrive in time: it may or may not be queued."""

    error_code = "MQ_CONFIRM_TIMEOUT"
