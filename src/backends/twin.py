"""The async face of a sync core (httpx's twin pattern: ``Client`` and ``AsyncClient`` over one core).

A face holds its core as ``sync``; ``wrap`` gives an existing core a face (both then act on the same
state), and ``delegated`` exposes a core attribute read-only, so a face lists what it shares without
writing a property for each.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["AsyncTwin", "delegated"]

CoreT = TypeVar("CoreT")
TwinT = TypeVar("TwinT", bound="AsyncTwin[Any]")


class AsyncTwin(Generic[CoreT]):
    sync: CoreT

    @classmethod
    def wrap(cls: type[TwinT], core: Any) -> TwinT:
        """The async face of an existing core (both act on the same state)."""
        twin = cls.__new__(cls)
        twin.sync = core
        return twin


def delegated(name: str, doc: str | None = None) -> Any:
    """A read-only attribute that reads ``self.sync.<name>``."""
    return property(lambda self: getattr(self.sync, name), doc=doc or f"The core's ``{name}``.")
