"""What a model call used, read from the provider's answer (``openai_usage``, ``anthropic_usage``) or from its
server-sent event stream as it passes (``StreamMeter``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from backends.jsonsafe import loads_bounded

__all__ = ["StreamMeter", "Usage", "anthropic_usage", "openai_usage"]

# An event is parsed only if it can hold what the meter reads: a "usage" key or an Anthropic "message_..."
# type. JSON can spell those letters only as themselves or as \u escapes, so an event with neither is
# skipped without changing what is read (tests/unit/infrafabric/gateway/test_usage.py).
_MAY_METER = re.compile(rb"usage|message_|\\u")


@dataclass
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0  # prompt tokens the provider wrote to its cache (billed at the cache-write rate)


def _count(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= 10**12 else None


def openai_usage(usage: Any, *, embeddings: bool = False) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    i = _count(usage.get("prompt_tokens"))
    o = 0 if embeddings and "completion_tokens" not in usage else _count(usage.get("completion_tokens"))
    if i is None or o is None:
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(i, o, cached or 0)


def anthropic_usage(usage: Any, input_tokens: int | None = None) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    i = _count(usage.get("input_tokens")) if "input_tokens" in usage else input_tokens
    o = _count(usage.get("output_tokens"))
    if i is None or o is None:
        return None
    cached = _count(usage.get("cache_read_input_tokens")) or 0
    created = _count(usage.get("cache_creation_input_tokens")) or 0
    return Usage(i + cached + created, o, cached, created)



class StreamMeter:
    """Reads usage out of a server-sent event stream as it passes (OpenAI or Anthropic events)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._buffer = b""
        self.any_output = False
        self.cut = False
        self._final: Usage | None = None
        self._input: int | None = None
        self._done = False

    def feed(self, chunk: bytes) -> None:
        if chunk:
            self.any_output = True
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self._done = True
                continue
            if not _MAY_METER.search(data):
                continue  # a content delta: nothing in it is read (most of a stream; parsing each cost ~6 µs)
            try:
                event = loads_bounded(data)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._event(event)
        if len(self._buffer) > 1 << 20:  # a line without end: keep memory bounded (its usage, if any, is lost:
            self._buffer = b""  # the call is then charged its reservation)

    def _event(self, event: dict[str, Any]) -> None:
        if self.kind == "messages":
            kind = event.get("type")
            if kind == "message_start" and isinstance(event.get("message"), dict):
                usage = event["message"].get("usage")
                start = anthropic_usage({**usage, "output_tokens": 0}) if isinstance(usage, dict) else None
                self._input = start.input_tokens if start else None
            elif kind == "message_delta":
                self._final = anthropic_usage(event.get("usage"), self._input)
            elif kind == "message_stop":
                self._done = True
        elif event.get("usage") is not None:
            self._final = openai_usage(event.get("usage"))

    def usage(self) -> Usage | None:
        return self._final
