"""IF.optimise errors (``error_code`` + ``message``)."""

from __future__ import annotations

from infrafabric.errors import InfraFabricError


class OptimiseError(InfraFabricError):
    error_code = "OPTIMISE_ERROR"


class OptimiseInputError(OptimiseError, ValueError):
    """A cost, budget limit, period or grouping is invalid."""

    error_code = "OPTIMISE_INVALID_INPUT"
    http_status = 400
