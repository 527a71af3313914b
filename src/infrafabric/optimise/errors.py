"""IF.optimise errors (``error_code`` + ``message``)."""

from __future__ import annotations


class OptimiseError(Exception):
    error_code = "OPTIMISE_ERROR"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    def __str__(self) -> str:
        return f"{self.error_code}: {self.message}"


class OptimiseInputError(OptimiseError, ValueError):
    """A cost, budget limit, period or grouping is invalid."""

    error_code = "OPTIMISE_INVALID_INPUT"
