"""The verifier's shortcut reads (seq, prev_hash, id, sig_seq) out of canonical content without json.loads;
it must agree with json.loads on every entry the witness can write, params that mimic the fields included,
and refuse (None, so the verifier parses) anything whose tail is not canonical."""

from __future__ import annotations

import gc
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from infrafabric.witness.canonical import SEVERITIES, content_text, format_timestamp, params_to_json
from infrafabric.witness.canonical import link_fields as _fast_fields

names = st.from_regex(r"[A-Za-z0-9._:/@-]{1,40}", fullmatch=True)
traces = st.none() | st.from_regex(r"[A-Za-z0-9._:/@+=-]{1,60}", fullmatch=True)
mimics = st.sampled_from(['"prev_hash":"' + "f" * 64 + '","seq":1,"severity":"INFO","sig_seq":1,', '"id":"x"',
                          "prev_hash", "id", "seq", "sig_seq", '","seq":'])
values = st.integers() | st.text(max_size=12) | mimics | st.none()
params = st.dictionaries(st.text(max_size=8) | mimics, values | st.dictionaries(mimics, values, max_size=3), max_size=4)
hexes = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(0, 10**12), sig_gap=st.integers(0, 1000), component=names, operation=names,
       severity=st.sampled_from(SEVERITIES), trace=traces, p=params, prev=hexes,
       entry_id=st.from_regex(r"[0-9a-f]{32}", fullmatch=True), ts_ns=st.integers(0, 4 * 10**18))
def test_fast_fields_agree_with_json(seq: int, sig_gap: int, component: str, operation: str, severity: str,
                                     trace: str | None, p: dict, prev: str, entry_id: str, ts_ns: int) -> None:
    text = content_text(seq=seq, entry_id=entry_id, timestamp=format_timestamp(ts_ns), component=component,
                        operation=operation, params_json=params_to_json(p), severity=severity, trace_id=trace,
                        prev_hash=prev, sig_seq=seq + sig_gap)
    data = json.loads(text)
    assert _fast_fields(text) == (data["seq"], data["prev_hash"], data["id"], data["sig_seq"])


def test_non_canonical_tails_are_left_to_json() -> None:
    good = content_text(seq=5, entry_id="a" * 32, timestamp=format_timestamp(0), component="c", operation="o",
                        params_json="{}", severity="INFO", trace_id=None, prev_hash="b" * 64, sig_seq=6)
    assert _fast_fields(good) == (5, "b" * 64, "a" * 32, 6)
    for edited in (good.replace('"seq":5', '"seq":"5"'), good.replace('"seq":5', '"seq":-5'),
                   good.replace('"sig_seq":6', '"sig_seq":6.0'), good.replace("b" * 64, "B" * 64),
                   good.replace("b" * 64, "b" * 63), good.replace('"seq":5', '"seq":٥')):
        assert _fast_fields(edited) is None, edited


def test_verification_leaves_the_cycle_collector_as_it_found_it() -> None:
    from infrafabric.witness import Witness

    w = Witness("memory://gc-state")
    try:
        for i in range(50):
            w.log("IF.test", "op", {"i": i})
        w.flush()
        report = w.verify()
        assert report.ok and gc.isenabled()
        gc.disable()
        try:
            assert w.verify().ok and not gc.isenabled()
        finally:
            gc.enable()
    finally:
        w.close()
