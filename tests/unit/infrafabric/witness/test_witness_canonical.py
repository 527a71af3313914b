"""Canonical entry bytes and input validation at the log boundary."""

from __future__ import annotations

import datetime as dt
import enum
import json
from decimal import Decimal

import pytest

from infrafabric.witness import WitnessInputError
from infrafabric.witness.canonical import (
    check_name,
    check_trace_id,
    content_text,
    entry_line,
    format_timestamp,
    normalise_severity,
    params_to_json,
    parse_since,
    split_entry_line,
)


class Colour(enum.Enum):
    RED = "red"


class Cap(str):
    pass


def test_content_text_is_exactly_sorted_compact_json() -> None:
    params = params_to_json({"z": [1, 2.5, None], "a": {"y": "é\n", "b": True}})
    text = content_text(seq=12, entry_id="abc", timestamp=format_timestamp(1_700_000_000_123_456_789),
                        component="IF.coordinator", operation="task_claimed", params_json=params,
                        severity="INFO", trace_id="t-1", prev_hash="f" * 64, sig_seq=15)
    parsed = json.loads(text)
    assert json.dumps(parsed, sort_keys=True, separators=(",", ":")) == text
    assert parsed["sig_seq"] == 15 and parsed["v"] == 2
    assert parsed["timestamp"] == "2023-11-14T22:13:20.123456Z"
    assert parsed["params"] == {"a": {"b": True, "y": "é\n"}, "z": [1, 2.5, None]}
    assert text.isascii()


def test_content_text_escapes_ids_that_are_not_plain_hex() -> None:
    text = content_text(seq=0, entry_id='a"b\u00e9', timestamp="2026-01-01T00:00:00.000000Z", component="c",
                        operation="o", params_json="{}", severity="INFO", trace_id=None, prev_hash="0" * 64, sig_seq=0)
    assert json.loads(text)["id"] == 'a"b\u00e9' and text.isascii()


def test_format_timestamp_cache_follows_the_second() -> None:
    assert format_timestamp(1_700_000_000_999_999_000) == "2023-11-14T22:13:20.999999Z"
    assert format_timestamp(1_700_000_001_000_000_000) == "2023-11-14T22:13:21.000000Z"
    assert format_timestamp(1_700_000_000_000_001_000) == "2023-11-14T22:13:20.000001Z"


def test_entry_line_round_trip_and_rejects_other_shapes() -> None:
    text = content_text(seq=0, entry_id="x", timestamp="2026-01-01T00:00:00.000000Z", component="c", operation="o",
                        params_json="{}", severity="INFO", trace_id=None, prev_hash="0" * 64, sig_seq=0)
    line = entry_line(text, "a" * 64, "b" * 128)
    assert split_entry_line(line) == (text, "a" * 64, "b" * 128)
    assert json.loads(line)["content_hash"] == "a" * 64
    assert split_entry_line(line[:-1]) is None
    assert split_entry_line(line.replace('"signature"', '"signaturE"')) is None


def test_params_conversions() -> None:
    out = json.loads(params_to_json({
        "money": Decimal("0.10"), "colour": Colour.RED, "cap": Cap("code-analysis:rust"),
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "tags": {"b", "a"}, "raw": b"\x01\xff",
        "tuple": (1, 2),
    }))
    assert out == {"money": "0.10", "colour": "red", "cap": "code-analysis:rust", "when": "2026-01-02T03:04:05+00:00",
                   "tags": ["a", "b"], "raw": "01ff", "tuple": [1, 2]}
    assert params_to_json(None) == "{}"


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": Decimal("Infinity")}, "not a dict", 42])
def test_bad_params_raise_clear_error(bad: object) -> None:
    with pytest.raises(WitnessInputError) as info:
        params_to_json(bad)
    assert info.value.error_code == "WITNESS_INVALID_PARAMS"


def test_severity_names_and_trace_ids() -> None:
    assert normalise_severity("warning") == "WARN"
    assert normalise_severity("high") == "HIGH"
    with pytest.raises(WitnessInputError) as info:
        normalise_severity("LOUD")
    assert info.value.error_code == "WITNESS_INVALID_SEVERITY"
    assert check_trace_id(None) is None
    assert check_trace_id("trace-1:a/b") == "trace-1:a/b"
    for bad in ("", "a b", "x" * 300, 5):
        with pytest.raises(WitnessInputError):
            check_trace_id(bad)
    for bad_name in ("", "has space", "x" * 200, None, "new\nline"):
        with pytest.raises(WitnessInputError):
            check_name("component", bad_name)


def test_since_accepts_datetimes_epochs_and_iso() -> None:
    expected = "2026-01-02T03:04:05.000000Z"
    assert parse_since(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)) == expected
    assert parse_since("2026-01-02T03:04:05Z") == expected
    assert parse_since(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc).timestamp()) == expected
    with pytest.raises(WitnessInputError):
        parse_since("yesterday")


def test_secret_values_are_redacted_before_they_reach_the_log() -> None:
    out = json.loads(params_to_json({
        "swarm_id": "s-1", "password": "hunter2", "tokens_in": 120,
        "nested": {"API_KEY": "sk-live-123", "scope": ["read"], "db_password": "pw"},
        "calls": [{"authorization": "Bearer abc", "url": "https://x"}],
    }))
    assert out == {"swarm_id": "s-1", "password": "[REDACTED]", "tokens_in": 120,
                   "nested": {"API_KEY": "[REDACTED]", "scope": ["read"], "db_password": "[REDACTED]"},
                   "calls": [{"authorization": "[REDACTED]", "url": "https://x"}]}
    original = {"token": "abc"}
    params_to_json(original)
    assert original == {"token": "abc"}  # the caller's dict is not modified


def test_oversized_params_are_refused() -> None:
    with pytest.raises(WitnessInputError) as info:
        params_to_json({"blob": "x" * (1 << 20)})
    assert info.value.error_code == "WITNESS_PARAMS_TOO_LARGE"


def test_circular_params_are_refused_clearly() -> None:
    params: dict = {"a": 1}
    params["self"] = params
    with pytest.raises(WitnessInputError) as err:
        params_to_json(params)
    assert err.value.error_code == "WITNESS_INVALID_PARAMS" and "circular" in err.value.message
