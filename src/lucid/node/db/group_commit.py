"""Group commit for the node database: callers queue items, one drain writes them in groups, and each
caller learns its own item's fate (stored, refused with its own error, or the group's failure).

Both group-committing repositories (nodes, PoOT results) queue ``(..., waiter)`` tuples whose last element
is the caller's future; the write decides per item (``{index: error}`` for the refused ones) inside one
transaction, so a failed write means none of the group was stored, and every waiter hears so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ..errors import GroupCommitError

__all__ = ["drain_groups", "group_failed", "settle_group"]

Item = TypeVar("Item", bound=tuple[Any, ...])


def group_failed(size: int, exc: BaseException, outcome: str = "none of them was stored") -> GroupCommitError:
    """The error every waiter of a failed group gets (the cause attached, its message never leaked)."""
    error = GroupCommitError(f"Storing a group of {size} failed ({type(exc).__name__}); {outcome}")
    error.__cause__ = exc
    return error


def settle_group(batch: list[Item], *, rejected: Mapping[int, BaseException] | None = None,
                 error: BaseException | None = None) -> None:
    """Wake each waiter (the last element of its item) still waiting: the group's ``error``, its own
    rejection, or success."""
    for i, item in enumerate(batch):
        fut: asyncio.Future[None] = item[-1]
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        elif rejected and i in rejected:
            fut.set_exception(rejected[i])
        else:
            fut.set_result(None)


async def drain_groups(queue: list[Item], max_group: int,
                       write: Callable[[list[Item]], Awaitable[Mapping[int, BaseException]]],
                       committed: Callable[[list[Item], Mapping[int, BaseException]], None] | None = None) -> None:
    """Write everything queued (including what arrives meanwhile) in groups of at most ``max_group``;
    ``committed`` sees each stored group before its waiters wake."""
    while queue:
        batch = queue[:max_group]
        del queue[:max_group]
        try:
            rejected = await write(batch)
        except Exception as exc:  # noqa: BLE001 - every waiter of this group gets the failure
            settle_group(batch, error=group_failed(len(batch), exc))
            continue
        if committed is not None:
            committed(batch, rejected)
        settle_group(batch, rejected=rejected)
