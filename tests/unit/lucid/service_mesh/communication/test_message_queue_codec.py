"""The client's message codec, checked against json itself: the fast paths (a prebuilt C encoder, the
scanner called directly inside ``loads_bounded``, a flat walk) must decide exactly as the general ones for
any payload and any body a hostile publisher could send."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.jsonsafe import json_depth_exceeds, loads_bounded
from lucid.service_mesh.communication import message_queue as mq
from lucid.service_mesh.errors import InvalidServiceConfigError

scalars = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.text(max_size=40) | st.floats(
    allow_nan=False, allow_infinity=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=10), inner, max_size=5), max_leaves=30)
payloads = st.dictionaries(st.text(max_size=12), values, max_size=8)
flat_payloads = st.dictionaries(st.text(max_size=12), scalars, max_size=12)


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_a_payload_comes_back_as_json_encodes_it(payload: dict) -> None:
    body = mq._body(payload)
    assert body == json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    assert loads_bounded(body, mq.MAX_PAYLOAD_DEPTH) == json.loads(body) == payload


@settings(max_examples=400, deadline=None)
@given(flat_payloads)
def test_the_flat_walk_bounds_as_the_nested_one(payload: dict) -> None:
    assert mq._walk(payload) == mq._walk_nested(payload)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=80) | st.text(alphabet='{}[]",:0123456789.eE+-truefalsn \\u\t\n\ufeff', max_size=80).map(
    lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_body_is_decoded_or_refused_exactly_as_json_and_the_depth_rule_decide(body: bytes) -> None:
    """The reference: json.loads itself (which sniffs encodings), refused past the depth limit."""
    try:
        expected = json.loads(body)
        refused = json_depth_exceeds(expected, mq.MAX_PAYLOAD_DEPTH)
    except (ValueError, RecursionError):
        refused = True
    if refused:
        with pytest.raises(ValueError):
            loads_bounded(body, mq.MAX_PAYLOAD_DEPTH)
        return
    got = loads_bounded(body, mq.MAX_PAYLOAD_DEPTH)
    assert got == expected or (isinstance(got, float) and math.isnan(got) and math.isnan(expected))


def loads_bounded_64(body: bytes) -> object:
    return loads_bounded(body, mq.MAX_PAYLOAD_DEPTH)


def test_deep_or_trailing_or_odd_bodies_take_the_careful_path() -> None:
    deep = b'{"a":' * 70 + b"1" + b"}" * 70
    with pytest.raises(ValueError):
        loads_bounded_64(deep)  # 70 levels: refused, not parsed and not a RecursionError
    with pytest.raises(ValueError):
        loads_bounded_64(b'{"a":1} x')
    assert loads_bounded_64(b'{"a":1}  \n') == {"a": 1}  # trailing whitespace is still JSON
    assert loads_bounded_64('{"a":1}'.encode("utf-16")) == {"a": 1}  # not UTF-8: json.loads sniffs it


def test_a_huge_flat_payload_is_refused_before_it_is_encoded() -> None:
    huge = {f"k{i}": i for i in range(300_000)}  # > 1 MiB of keys alone; the walk stops past the limit
    assert mq._walk(huge) > mq.MAX_PAYLOAD_BYTES
    with pytest.raises(InvalidServiceConfigError):
        mq._body(huge)
    with pytest.raises(InvalidServiceConfigError):
        mq._body({"x": "y" * (mq.MAX_PAYLOAD_BYTES + 1)})
    cyclic: dict = {}
    cyclic["self"] = cyclic
    with pytest.raises(InvalidServiceConfigError):
        mq._body(cyclic)  # refused by depth before the (marker-free) encoder could loop
