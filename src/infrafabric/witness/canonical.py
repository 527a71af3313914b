"""Canonical bytes of an entry: the exact bytes that are hashed, signed and exported.

Params are serialised once, when the caller logs (so later mutation of the caller's dict cannot change
the record), as sorted-key compact ASCII JSON. The entry content is assembled by string concatenation
in sorted key order, which is byte-identical to ``json.dumps(content, sort_keys=True,
separators=(",", ":"))`` (a unit test holds us to that) but avoids re-serialising params on the
writer thread.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import re
import uuid
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from .errors import WitnessInputError

ENTRY_VERSION = 2  # v2 added ``sig_seq``: entries are signed in groups (see keys.py)
GENESIS_HASH = "0" * 64
SEVERITIES = ("DEBUG", "INFO", "WARN", "HIGH", "ERROR", "CRITICAL")
_SEVERITY_ALIASES = {"WARNING": "WARN", "FATAL": "CRITICAL"}
_NAME_RE = re.compile(r"^[A-Za-z0-9._:/@-]{1,128}\Z")
_TRACE_RE = re.compile(r"^[A-Za-z0-9._:/@+=-]{1,256}\Z")

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False).encode
_dump_str = json.JSONEncoder(ensure_ascii=True).encode


def _default(value: Any) -> Any:
    """Convert the few non-JSON types the platform logs into stable JSON values."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"non-finite Decimal {value!r}")
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (uuid.UUID, PurePath)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        items = [json.loads(_dumps(v)) if not isinstance(v, str) else v for v in value]
        return sorted(items, key=lambda v: _dumps(v))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    # converted objects become dicts only here, after params_to_json redacted: redact what they hold now
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _redact(dataclasses.asdict(value))
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic v2 models
        return _redact(model_dump(mode="json"))
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


MAX_PARAMS_CHARS = 1 << 20  # an audit entry is a record, not a blob store
REDACTED = "[REDACTED]"
# Values under these keys never reach the log (it is exported and shown); a safety net, not a licence.
SECRET_KEYS = frozenset({
    "password", "passwd", "secret", "client_secret", "token", "access_token", "refresh_token", "id_token",
    "api_key", "apikey", "private_key", "authorization", "credentials", "jwt", "bearer",
})


_secret_verdicts: dict[object, bool] = {}  # key -> is secret; the same few keys are logged millions of times


_safe_keys: set[object] = set()  # keys already judged not secret, for the one-step check in _redact
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})


def _is_secret_key(key: object) -> bool:
    """Whether ``key``'s value must be redacted; a key that is not text is refused (JSON turns it into text
    after sorting by the original type, so {2:.., 10:..} would be stored in an order no re-serialisation of
    the parsed entry gives, and its JSON export would not verify)."""
    verdict = _secret_verdicts.get(key)
    if verdict is None:
        if not isinstance(key, str):
            raise WitnessInputError(f"params keys must be strings, not {type(key).__name__} {key!r:.40}",
                                    error_code="WITNESS_INVALID_PARAMS")
        verdict = key.lower() in SECRET_KEYS or key.lower().endswith(("_password", "_secret", "_private_key"))
        if len(_secret_verdicts) < 65536:
            _secret_verdicts[key] = verdict
            if not verdict:
                _safe_keys.add(key)
    return verdict


def _redact(value: Any) -> Any:
    """Copy of ``value`` with secret-keyed values replaced; ``value`` itself when nothing to redact."""
    # the common case, a flat dict of known keys, checked in two C-level passes instead of a Python loop
    if value.__class__ is dict and value.keys() <= _safe_keys and _SCALAR_TYPES.issuperset(map(type, value.values())):
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if _is_secret_key(k) or isinstance(v, (dict, list, tuple)):
                return {k: (REDACTED if _is_secret_key(k) else _redact(v)) for k, v in value.items()}
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, (dict, list, tuple)):
                return [_redact(v) for v in value]
    return value


_params_encoder = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False, default=_default
)
# JSONEncoder.encode builds a new C encoder on every call, which is most of the cost for the small
# dicts the platform logs; this one is built once with the same settings (markers=None: a circular
# structure ends in RecursionError instead of ValueError, and both are refused below).
_c_encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False
) if getattr(json.encoder, "c_make_encoder", None) else None


def _encode_params(params: dict[str, Any]) -> str:
    if _c_encoder is None:
        return _params_encoder.encode(params)
    return "".join(_c_encoder(params, 0))


def params_to_json(params: Any) -> str:
    """Serialise ``params`` (a mapping) to canonical JSON, or raise ``WitnessInputError``."""
    if params is None:
        return "{}"
    if not isinstance(params, dict):
        try:
            params = dict(params)
        except (TypeError, ValueError):
            raise WitnessInputError(
                f"params must be a dict, got {type(params).__name__}", error_code="WITNESS_INVALID_PARAMS"
            ) from None
    try:
        text = _encode_params(_redact(params))
    except WitnessInputError:
        raise
    except RecursionError:
        raise WitnessInputError("params are circular or nested too deeply", error_code="WITNESS_INVALID_PARAMS") from None
    except (TypeError, ValueError) as exc:
        raise WitnessInputError(f"params are not JSON-serialisable: {exc}", error_code="WITNESS_INVALID_PARAMS") from exc
    if len(text) > MAX_PARAMS_CHARS:
        raise WitnessInputError(f"params serialise to {len(text)} characters, more than {MAX_PARAMS_CHARS}",
                                error_code="WITNESS_PARAMS_TOO_LARGE")
    return text


_SEVERITY_OF = {**{s: s for s in SEVERITIES}, **{s.lower(): s for s in SEVERITIES}}


def normalise_severity(severity: Any) -> str:
    """Upper-case a severity and map aliases (WARNING → WARN); reject unknown ones."""
    if severity.__class__ is str:
        known = _SEVERITY_OF.get(severity)
        if known is not None:
            return known
    value = getattr(severity, "value", severity)
    if isinstance(value, str):
        upper = value.upper()
        upper = _SEVERITY_ALIASES.get(upper, upper)
        if upper in SEVERITIES:
            return upper
    raise WitnessInputError(
        f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}", error_code="WITNESS_INVALID_SEVERITY"
    )


_valid_names: set[str] = set()  # a hot path sees the same few names millions of times


def check_name(kind: str, value: Any) -> str:
    """Components and operations are short identifiers (letters, digits, . _ : / @ -)."""
    if value.__class__ is str and value in _valid_names:
        return value
    if isinstance(value, str) and _NAME_RE.match(value):
        name = str(value)
        if len(_valid_names) < 65536:
            _valid_names.add(name)
        return name
    raise WitnessInputError(f"{kind} must match {_NAME_RE.pattern}, got {value!r}", error_code="WITNESS_INVALID_NAME")


def check_trace_id(value: Any) -> str | None:
    """Trace ids are optional opaque identifiers of at most 256 safe characters."""
    if value is None:
        return None
    value = str(value) if isinstance(value, uuid.UUID) else value
    if isinstance(value, str) and _TRACE_RE.match(value):
        return str(value)
    raise WitnessInputError(f"trace_id must match {_TRACE_RE.pattern}, got {value!r}", error_code="WITNESS_INVALID_TRACE_ID")


_last_second: tuple[int, str] = (-1, "")  # formatting the date part dominates; it changes once a second


def format_timestamp(ns: int) -> str:
    """Fixed-width UTC ISO 8601 with microseconds, so text order is time order."""
    global _last_second
    seconds, rest = divmod(ns, 1_000_000_000)
    cached_second, base = _last_second  # one tuple read: consistent even when threads race
    if cached_second != seconds:
        base = f"{_dt.datetime.fromtimestamp(seconds, _dt.timezone.utc):%Y-%m-%dT%H:%M:%S}"
        _last_second = (seconds, base)
    return f"{base}.{rest // 1000:06d}Z"


def parse_since(since: Any) -> str | None:
    """Accept a datetime, an epoch number or an ISO string and return the canonical timestamp text.

    A time no timestamp can hold (NaN, infinite, beyond year 9999 or before year 1 once in UTC) is an input
    error like any other bad filter, not a ValueError/OverflowError from the datetime module."""
    try:
        return _parse_since(since)
    except WitnessInputError:
        raise
    except (ValueError, OverflowError, OSError) as exc:
        raise WitnessInputError(f"since/until is out of range: {since!r:.60} ({exc})",
                                error_code="WITNESS_INVALID_SINCE") from None


def _parse_since(since: Any) -> str | None:
    if since is None:
        return None
    if isinstance(since, _dt.datetime):
        if since.tzinfo is None:
            since = since.replace(tzinfo=_dt.timezone.utc)
        return format_timestamp(int(since.timestamp() * 1_000_000) * 1000)
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        return format_timestamp(int(since * 1_000_000) * 1000)
    if isinstance(since, str):
        text = since.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise WitnessInputError(f"since is not an ISO 8601 time: {since!r}", error_code="WITNESS_INVALID_SINCE") from None
        return _parse_since(parsed)
    raise WitnessInputError(f"since must be a datetime, epoch seconds or ISO text, got {since!r}", error_code="WITNESS_INVALID_SINCE")


_json_strings: dict[str, str] = {}  # components, operations and severities repeat millions of times


def json_string(value: str) -> str:
    """JSON text of a short string that repeats (cached)."""
    cached = _json_strings.get(value)
    if cached is None:
        cached = _dump_str(value)
        if len(_json_strings) < 65536:
            _json_strings[value] = cached
    return cached


CONTENT_TEMPLATE = (
    '{"component":%s,"id":%s,"operation":%s,"params":%s,"prev_hash":"%s","seq":%d,"severity":%s,"sig_seq":%d,'
    '"timestamp":"%s","trace_id":%s,"v":' + str(ENTRY_VERSION) + "}"
)

# The writer's template: the same bytes as CONTENT_TEMPLATE for entries that came through Witness.log,
# whose component, operation, severity, id and trace id are validated identifiers that JSON never
# escapes, so the writer quotes them itself instead of calling json_string per field and entry.
SEAL_TEMPLATE = (
    '{"component":"%s","id":"%s","operation":"%s","params":%s,"prev_hash":"%s","seq":%d,"severity":"%s",'
    '"sig_seq":%d,"timestamp":"%s","trace_id":%s,"v":' + str(ENTRY_VERSION) + "}"
)

def content_text(
    *,
    seq: int,
    entry_id: str,
    timestamp: str,
    component: str,
    operation: str,
    params_json: str,
    severity: str,
    trace_id: str | None,
    prev_hash: str,
    sig_seq: int,
) -> str:
    """Canonical content (sorted keys, compact, ASCII) of one entry; what content_hash covers.

    ``sig_seq`` is the seq of the entry that closes this entry's signing group: the group's one
    signature covers that entry's content hash, which commits to this entry through the hash chain.
    """
    return CONTENT_TEMPLATE % (
        json_string(component), json_id(entry_id), json_string(operation), params_json, prev_hash, seq,
        json_string(severity), sig_seq, timestamp, "null" if trace_id is None else _dump_str(trace_id),
    )


def json_id(entry_id: str) -> str:
    return '"' + entry_id + '"' if entry_id.isascii() and entry_id.isalnum() else _dump_str(entry_id)


def content_text_from_record(record: dict[str, Any]) -> str:
    """Re-serialise the content fields of a parsed record (used for JSON-array exports)."""
    content = {
        "component": record["component"],
        "id": record["id"],
        "operation": record["operation"],
        "params": record["params"],
        "prev_hash": record["prev_hash"],
        "seq": record["seq"],
        "severity": record["severity"],
        "sig_seq": record["sig_seq"],
        "timestamp": record["timestamp"],
        "trace_id": record["trace_id"],
        "v": record.get("v", ENTRY_VERSION),
    }
    return _dumps(content)


def entry_line(content: str, content_hash: str, signature: str) -> str:
    """The JSON-Lines export of one entry: the content bytes verbatim plus hash and signature."""
    return content[:-1] + ',"content_hash":"' + content_hash + '","signature":"' + signature + '"}'


LINE_SUFFIX_LEN = len(',"content_hash":"') + 64 + len('","signature":"') + 128 + len('"}')


def split_entry_line(line: str) -> tuple[str, str, str] | None:
    """Inverse of :func:`entry_line`; None when the line does not have that exact shape."""
    if len(line) <= LINE_SUFFIX_LEN:
        return None
    head, suffix = line[:-LINE_SUFFIX_LEN], line[-LINE_SUFFIX_LEN:]
    if not (suffix.startswith(',"content_hash":"') and suffix[81:96] == '","signature":"' and suffix.endswith('"}')):
        return None
    return head + "}", suffix[17:81], suffix[96:224]


# The canonical tail of an entry from its top-level prev_hash on (keys are sorted: seq, severity and
# sig_seq follow prev_hash). One C-level match instead of a json.loads of the whole entry.
_TAIL = re.compile(r'"prev_hash":"([0-9a-f]{64})","seq":([0-9]+),"severity":"[^"]*","sig_seq":([0-9]+),')


def link_fields(content: str) -> tuple[int, str, str, int] | None:
    """(seq, prev_hash, id, sig_seq) read straight from canonical content, None if the layout is not canonical.

    Used only when the content hashes to its content_hash; a forger who can hash but not sign is still
    caught by the signature or checkpoint root, so a shortcut here cannot hide tampering. Saves the
    json.loads that dominates verification time. The top-level prev_hash is the last one in the text
    (a nested key of that name sits in params, which sorts before it; a string value cannot hold the
    pattern, its quotes are escaped), and the top-level id the first (it sorts before params).
    """
    p = content.rfind('"prev_hash":"')
    tail = _TAIL.match(content, p) if p >= 0 else None
    if tail is None:
        return None
    q = content.find('"id":"')
    end = content.find('"', q + 6)
    if q < 0 or end < 0 or end > p:
        return None
    return int(tail[2]), tail[1], content[q + 6 : end], int(tail[3])
