"""The stream meter skips events that cannot hold usage without reading them, and reads exactly what a meter
that parses every event reads: hostile encodings (any character of any key or value written as a \\u escape),
any chunking of the stream, junk events, OpenAI and Anthropic shapes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrafabric.gateway import usage as usage_module
from infrafabric.gateway.usage import StreamMeter


def _encode(value: Any, escape: list[bool]) -> str:
    """JSON with each string character written as itself or (by the next flag) as a \\u escape."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_encode(k, escape)}:{_encode(v, escape)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v, escape) for v in value) + "]"
    if isinstance(value, str):
        out = []
        for ch in value:
            flag = escape.pop(0) if escape else False
            out.append(f"\\u{ord(ch):04x}" if flag or ch in '"\\' or ord(ch) < 32 else ch)
        return '"' + "".join(out) + '"'
    return json.dumps(value)


counts = st.integers(0, 10**6)
text = st.text(alphabet=st.characters(codec="ascii"), max_size=12)
openai_events = st.one_of(
    st.builds(lambda t: {"choices": [{"index": 0, "delta": {"content": t}}]}, text),
    st.builds(lambda i, o, c: {"choices": [], "usage": {"prompt_tokens": i, "completion_tokens": o,
                                                      "prompt_tokens_details": {"cached_tokens": c}}},
              counts, counts, counts),
    st.builds(lambda t: {"usage": None, "note": t}, text),
    st.dictionaries(text, text, max_size=3))
anthropic_events = st.one_of(
    st.builds(lambda i: {"type": "message_start", "message": {"usage": {"input_tokens": i, "output_tokens": 1}}},
              counts),
    st.builds(lambda t: {"type": "content_block_delta", "delta": {"type": "text_delta", "text": t}}, text),
    st.builds(lambda o: {"type": "message_delta", "usage": {"output_tokens": o}}, counts),
    st.just({"type": "message_stop"}),
    st.dictionaries(text, text, max_size=3))


def _read(kind: str, stream: bytes, cuts: list[int]) -> tuple[Any, bool]:
    meter = StreamMeter(kind)
    start = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        meter.feed(stream[start:cut])
        start = cut
    return meter.usage(), meter.any_output


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["chat", "messages"]), data=st.data(),
       escape=st.lists(st.booleans(), max_size=400), cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_the_meter_reads_what_parsing_every_event_reads(kind: str, data: st.DataObject, escape: list[bool],
                                                       cuts: list[int]) -> None:
    events = data.draw(st.lists(anthropic_events if kind == "messages" else openai_events, max_size=12))
    stream = b"".join(b"data: " + _encode(e, list(escape)).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    skipping = _read(kind, stream, cuts)
    with pytest.MonkeyPatch.context() as everything:
        everything.setattr(usage_module, "_MAY_METER", re.compile(b""))  # parse every event
        parsing_all = _read(kind, stream, cuts)
    assert skipping == parsing_all


def test_an_escaped_usage_key_is_still_read() -> None:
    meter = StreamMeter("chat")
    meter.feed(b'data: {"choices":[],"\\u0075sage":{"prompt_tokens":7,"completion_tokens":3}}\n\n')
    assert meter.usage() is not None and (meter.usage().input_tokens, meter.usage().output_tokens) == (7, 3)
