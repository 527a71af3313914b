"""Errors of the real-engine launchers (classes with error_code and message, per the project rules)."""

from __future__ import annotations

from backends.errors import PlatformError

__all__ = ["ServerError", "ServerStartError", "BinaryNotFoundError"]


class ServerError(PlatformError):
    """Base class for launcher errors."""

    error_code = "SERVER_ERROR"


class ServerStartError(ServerError):
    """The engine did not become ready before its deadline (the message carries the log tail)."""

    error_code = "SERVER_START_FAILED"


class BinaryNotFoundError(ServerError):
    """The engine binary is not installed."""

    error_code = "SERVER_BINARY_NOT_FOUND"
