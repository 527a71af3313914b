"""Partial updates (PUT bodies whose fields are all optional) applied as one validated change."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from ..errors import ValidationError

__all__ = ["apply_update"]

M = TypeVar("M", bound=BaseModel)


def apply_update(current: M, request: BaseModel) -> M:
    """A new ``current`` with the fields the request set applied, validated as a whole.

    Assigning field by field turned an explicit null for a field that cannot be empty (a pool's name,
    ``auto_scaling``) into a 500 after earlier fields had already changed; here it is a 400 with the
    failing fields, and ``current`` is left untouched."""
    changes = {name: getattr(request, name) for name in request.model_fields_set}
    try:
        return type(current).model_validate({**dict(current), **changes})
    except PydanticValidationError as exc:
        errors: list[dict[str, Any]] = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                        for e in exc.errors(include_url=False)]
        raise ValidationError("Invalid request", details={"errors": errors}) from None
