"""Errors of the real-engine launchers (classes with error_code and message, per the project rules)."""

from __future__ import annotations

__all__ = ["ServerError", "ServerStartError", "BinaryNotFoundError"]


class ServerError(Exception):
    """Base class for launcher errors."""

    error_code: str = "SERVER_ERROR"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    def __str__(self) -> str:
        return f"[{self.error_code}] {self.message}"


class ServerStartError(ServerError):
    """The engine did not become ready before its deadline (the message carries the log tail)."""

    error_code = "SERVER_START_FAILED"


class BinaryNotFoundError(ServerError):
    """The engine binary is not installed."""

    error_code = "SERVER_BINARY_NOT_FOUND"
