"""The first step of every ``open_*`` URL: its scheme and the rest, or a clear InvalidBackendURL."""

from __future__ import annotations

from backends.errors import InvalidBackendURL

__all__ = ["split_scheme"]


def split_scheme(url: str, not_a_url: str | None = None) -> tuple[str, str]:
    """``scheme://rest`` -> (the scheme in lower case, rest). ``not_a_url`` is the message for a string
    without ``://`` (default: it quotes the string)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidBackendURL(not_a_url or f"not a backend URL: {url!r}")
    return scheme.lower(), rest
