"""JSON from untrusted parties, bounded in depth.

Why: Python's ``json`` recurses once per level, in C for parsing and in Python for ``dumps``, ``deepcopy``
and most walkers. A document nested a few hundred levels (well under any byte cap) passes parsing and
then raises ``RecursionError`` somewhere later, far from the boundary, as a 500 or a dead task; a few
thousand levels fail in the parser itself. Every boundary that accepts JSON checks depth here, once,
and refuses with its own error code."""

from __future__ import annotations

import json
from typing import Any

from backends.errors import PlatformError

__all__ = ["DEFAULT_MAX_DEPTH", "JSONTooDeepError", "json_depth_exceeds", "loads_bounded"]

DEFAULT_MAX_DEPTH = 64


class JSONTooDeepError(PlatformError, ValueError):
    """A document nested deeper than allowed (a ValueError, as json's own decode errors are)."""

    error_code = "INVALID_JSON_TOO_DEEP"
    http_status = 400


def json_depth_exceeds(value: Any, limit: int = DEFAULT_MAX_DEPTH) -> bool:
    """Whether containers in ``value`` nest deeper than ``limit`` (iterative: safe at any depth)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _refuse_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON (RFC 8259); Python's parser takes them, and a value holding
    one is then stored and later fails where it is written back out (``allow_nan=False``), far from here."""
    raise ValueError(f"{name} is not a JSON value")


_SNIFF = (b"\xef", b"\xfe", b"\xff", b"\0")  # first bytes of a BOM or of UTF-16/32 text: json.loads decides
_OPEN = (b"{", b"[")
_scan = json.JSONDecoder(parse_constant=_refuse_constant).scan_once


def loads_bounded(data: str | bytes | bytearray, max_depth: int = DEFAULT_MAX_DEPTH, **kwargs: Any) -> Any:
    """``json.loads`` that raises :class:`JSONTooDeepError` (never ``RecursionError``) past ``max_depth``
    and ``ValueError`` for NaN and ±Infinity; ``kwargs`` go to ``json.loads`` (e.g. an
    ``object_pairs_hook`` refusing duplicate keys)."""
    if not kwargs and type(data) is bytes and data.startswith(_OPEN) and len(data) > 1 and data[1]:
        # the common case: a compact UTF-8 object or array with few brackets (so it cannot nest deeper),
        # parsed by json's scanner called directly, since json.loads's wrappers cost more than parsing a small
        # document; what this does not settle (whitespace around it, an error to report) goes the full way
        try:
            text = data.decode("utf-8")
            if text.count("[") + text.count("{") <= max_depth:
                value, end = _scan(text, 0)
                if end == len(text):
                    return value
        except (UnicodeDecodeError, StopIteration, ValueError):
            pass
    if isinstance(data, (bytes, bytearray)) and data[:1] not in _SNIFF and data[1:2] != b"\0":
        try:  # plain UTF-8 (no BOM, not UTF-16/32): json.loads would only sniff that again
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            pass  # json.loads reports what is wrong
    kwargs.setdefault("parse_constant", _refuse_constant)
    try:
        value = json.loads(data, **kwargs)
    except RecursionError as exc:
        raise JSONTooDeepError("JSON nested too deeply") from exc
    # a document with at most max_depth opening brackets cannot nest deeper (brackets inside strings only
    # make the count larger): the walk is needed only when the count does not settle it
    if data.count("[") + data.count("{") > max_depth if isinstance(data, str) else \
            data.count(b"[") + data.count(b"{") > max_depth:
        if json_depth_exceeds(value, max_depth):
            raise JSONTooDeepError(f"JSON nested deeper than {max_depth} levels")
    return value
