"""The JSON object of an HTTP request from another party: bounded in size and depth, an object or a 400."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from backends.jsonsafe import loads_bounded
from infrafabric.errors import ValidationError


async def json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > max_bytes:
        raise ValidationError(f"body over {max_bytes} bytes")
    try:
        body = loads_bounded(raw or b"{}")
    except ValueError as exc:
        raise ValidationError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object")
    return body
