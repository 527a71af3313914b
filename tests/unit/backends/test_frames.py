"""The single-writer pipe protocol: what is written is read back whole, in order, by the sync and async
readers alike; a stream cut inside a frame ends the reading instead of yielding a partial message."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.frames import HEADER, encode_frame, read_frame, write_frame

values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(),
                                st.binary()),
                      lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                              st.dictionaries(st.text(max_size=5), inner, max_size=4)), max_leaves=20)


@given(messages=st.lists(values, max_size=5), fast=st.booleans())
def test_messages_round_trip_in_order(messages: list[object], fast: bool) -> None:
    stream = io.BytesIO()
    for message in messages:
        write_frame(stream, message, fast=fast)
    stream.seek(0)
    assert [read_frame(stream) for _ in messages] == messages
    assert read_frame(stream) is None  # the end


@pytest.mark.parametrize("cut", [1, HEADER.size, HEADER.size + 3])
def test_a_frame_cut_short_is_not_read(cut: int) -> None:
    frame = encode_frame(("ok", {0: "replay"}, datetime(2026, 12, 7, tzinfo=UTC)))
    assert read_frame(io.BytesIO(frame[:cut])) is None
