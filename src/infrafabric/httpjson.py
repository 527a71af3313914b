"""The JSON object of an HTTP request from another party: bounded in size and depth, an object or a 400."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from backends.jsonsafe import loads_bounded
from infrafabric.errors import ValidationError


async def json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's body as a JSON object. Over ``max_bytes``, refused from its Content-Length, or as soon
    as that many bytes have arrived: never held whole in memory first."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ValidationError(f"body over {max_bytes} bytes")
    pieces: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > max_bytes:
            raise ValidationError(f"body over {max_bytes} bytes")
        pieces.append(piece)
    raw = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    try:
        body = loads_bounded(raw or b"{}")
    except ValueError as exc:
        raise ValidationError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object")
    return body
