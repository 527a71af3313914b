"""Identifier validation at the boundary (SPEC: ^[A-Za-z0-9._:-]{1,128}$).

Ids become etcd keys and NATS subjects, so anything else (shell metacharacters, slashes, spaces,
wildcards) is refused before it can touch a store.
"""

from __future__ import annotations

import re

from infrafabric.errors import InvalidIdentifierError

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def validate_id(value: object, kind: str = "id") -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value) or value in (".", ".."):
        raise InvalidIdentifierError(f"invalid {kind} {value!r}: must match ^[A-Za-z0-9._:-]{{1,128}}$")
    return value


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None and value not in (".", "..")


_MANY = re.compile(r"(?:[A-Za-z0-9._:-]{1,128}\n)*[A-Za-z0-9._:-]{1,128}")


def validate_task_ids(values: list[str]) -> list[str]:
    """Validate a batch in one regex pass (the batch claim path); on failure, name the bad id."""
    if values and all(type(v) is str for v in values):
        joined = "\n".join(values)
        # One id with a newline inside would look like two: the separator count must match.
        if joined.count("\n") == len(values) - 1 and _MANY.fullmatch(joined):
            if "." not in values and ".." not in values:
                return values
    for value in values:
        validate_task_id(value)
    return values


def validate_task_id(value: object) -> str:
    return validate_id(value, "task id")


#: What a task's owner key holds when no swarm does (``coordinator.keys`` names them from here): a swarm id
#: equal to one would read as that state (a swarm named ``completed:alice`` would own alice's finished tasks).
OWNER_UNCLAIMED = "unclaimed"
OWNER_COMPLETED_PREFIX = "completed:"


def validate_swarm_id(value: object) -> str:
    validate_id(value, "swarm id")
    if value == OWNER_UNCLAIMED or value.startswith(OWNER_COMPLETED_PREFIX):  # type: ignore[union-attr]
        raise InvalidIdentifierError(f"invalid swarm id {value!r}: {OWNER_UNCLAIMED!r} and "
                                     f"{OWNER_COMPLETED_PREFIX!r}... name task states, not swarms")
    return value  # type: ignore[return-value]
