"""A reputation score: a finite number in [0, 1]. Computed by IF.chassis, kept by IF.governor, checked
here so both (and the seeds' wiring between them) refuse the same values with the same error."""

from __future__ import annotations

import math

from infrafabric.errors import ValidationError

__all__ = ["check_reputation"]


def check_reputation(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"reputation must be a finite number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValidationError(f"reputation must be within [0, 1], got {value!r}")
    return float(value)
