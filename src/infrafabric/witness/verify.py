"""Verification of a witness log with nothing but the public key (and, optionally, a trusted checkpoint).

Every entry is checked for: its content hashing to its ``content_hash``; its position in the sequence
(duplicates → inserted, gaps → deleted, going backwards → reordered); its ``prev_hash`` link; its
signature; and the Merkle root of the log against each signed checkpoint (a checkpoint larger than the
log → truncated). Entries are signed in groups: an entry's signature must verify over the content
hash of the entry named by its ``sig_seq`` (at or after it, closing its group); the prev_hash links
from the entry to that closer carry the signature back to it. Each distinct (signature, closer) pair is
verified once. Signatures of entries covered by a verified checkpoint are implied by the root (the
leaf hash commits to the signature), so by default only the uncovered tail is signature-checked;
when a root does not match, every signature is checked so the culprit can be named.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from backends.jsonsafe import loads_bounded

from .canonical import GENESIS_HASH, content_text_from_record, link_fields, split_entry_line
from .checkpoint import Checkpoint
from .report import Problem, VerificationReport
from .verify_clean import verify_clean_text
from .errors import WitnessFormatError
from .keys import ENTRY_DOMAIN, failing_signatures
from .merkle import MerkleTree, root_of

EXPORT_FORMAT = "infrafabric-witness/1"
_sha256 = hashlib.sha256

class RawRecord(NamedTuple):
    """One entry as exported: the exact content text, its claimed hash and signature."""

    content: str | None
    content_hash: str
    signature: str
    error: str | None = None


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Parsing and verifying keep several small objects per entry alive until the report is made, and
    none of them form reference cycles: the cyclic collector only re-scanned them, again and again as
    they aged (benchmarks/RESULTS.md, "Figures behind the code"). Reference counting still frees
    everything; the collector is switched back on, if it was on, when the block ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _hex_bytes(text: object, size: int) -> bytes | None:
    """Bytes of a lowercase hex string of exactly ``size`` bytes, else None (any other spelling is an edit)."""
    if not isinstance(text, str) or len(text) != 2 * size:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == size and raw.hex() == text else None


def _bad_pairs(public_key: Ed25519PublicKey, records: Sequence[RawRecord],
               pairs: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """(signature, closer position) pairs whose signature does not cover the closer's content hash."""
    items = [(sig, ENTRY_DOMAIN + bytes.fromhex(records[cpos].content_hash)) for sig, cpos in pairs]
    return {pairs[i] for i in failing_signatures(public_key, items)}


def _signature_problems(public_key: Ed25519PublicKey, records: Sequence[RawRecord], todo: list[int],
                        seqs: list[int | None], sig_seqs: list[int | None], ids: list[str | None],
                        first_pos: dict[int, int], intact: list[bool]) -> tuple[list[Problem], int]:
    """Check the signatures of the intact entries at ``todo``; return problems and entries checked."""
    problems: list[Problem] = []
    groups: dict[tuple[str, int], list[int]] = {}  # (signature, closer position) -> member positions
    orphans: dict[int, list[int]] = {}  # sig_seq whose closer is missing or damaged -> member positions
    for pos in todo:
        seq, closes = seqs[pos], sig_seqs[pos]
        assert seq is not None and closes is not None
        cpos = first_pos.get(closes)
        if closes < seq or (cpos is not None and intact[cpos] and sig_seqs[cpos] != closes):
            problems.append(Problem("forged", f"sig_seq {closes} does not name the entry closing a signing group "
                                    "at or after this one: no witness signature covers it", pos, seq, ids[pos]))
        elif cpos is None or not intact[cpos]:
            orphans.setdefault(closes, []).append(pos)
        else:
            groups.setdefault((records[pos].signature, cpos), []).append(pos)
    bad = _bad_pairs(public_key, records, list(groups))
    checked = 0
    for pair, members in groups.items():
        checked += len(members)
        if pair in bad:
            problems.extend(Problem("forged", "signature does not verify under the witness public key",
                                    pos, seqs[pos], ids[pos]) for pos in members)
    top = max(first_pos, default=-1)
    for closes, members in orphans.items():
        first, last = seqs[members[0]], seqs[members[-1]]
        if closes > top:
            problems.append(Problem(
                "truncated", f"seqs {first}..{last} were signed as a group ending at seq {closes}, "
                f"but the log ends at seq {top}: its tail is missing", members[0], first, ids[members[0]]))
        else:
            problems.append(Problem(
                "unverified", f"signatures of seqs {first}..{last} cannot be checked: seq {closes}, which closes "
                "their signing group, is missing or damaged", members[0], first, ids[members[0]]))
    return problems, checked


@_without_cycle_collection()
def verify_records(
    records: Sequence[RawRecord],
    public_key: Ed25519PublicKey,
    *,
    checkpoints: Iterable[Checkpoint] = (),
    all_signatures: bool = True,
    require_checkpoint: bool = True,
    max_problems: int = 200,
    extra_problems: Sequence[Problem] = (),
) -> VerificationReport:
    """Verify a whole log (oldest first). Problems name the kind of tampering and where it is.

    Every signature is checked by default (one Ed25519 check per signing group of up to 256 entries):
    a checkpoint signed over a rewrite, by a writer that extended a head it could not prove, must not
    vouch for entries whose own signatures fail. ``all_signatures=False`` trusts verified checkpoints.
    ``extra_problems`` are findings made before (parsing the export, reading the store)."""
    n = len(records)
    problems: list[Problem] = list(extra_problems)
    leaves: list[bytes] = []
    intact = [False] * n
    seqs: list[int | None] = [None] * n
    sig_seqs: list[int | None] = [None] * n
    prevs: list[str | None] = [None] * n
    ids: list[str | None] = [None] * n
    loads = json.loads
    for pos, rec in enumerate(records):
        content, chash, sig = rec.content, rec.content_hash, rec.signature
        # the common case first: content that hashes to content_hash proves the hash is lowercase hex
        digest = _sha256(content.encode("utf-8", "surrogatepass")).digest() if content is not None else None
        hb = digest if digest is not None and digest.hex() == chash else _hex_bytes(chash, 32)
        sb = _hex_bytes(sig, 64)
        leaves.append(_sha256(b"\x00" + hb + sb).digest() if hb is not None and sb is not None else b"\xff" * 32)
        if content is None:
            problems.append(Problem("malformed", rec.error or "entry cannot be parsed", position=pos))
            continue
        matches = hb is not None and sb is not None and digest == hb
        fields = link_fields(content) if matches else None
        if fields is None:
            try:
                data = loads(content)
                fields = (data["seq"], data["prev_hash"], data["id"], data["sig_seq"])
                if type(fields[0]) is not int or not isinstance(fields[1], str) or not isinstance(fields[2], str) \
                        or type(fields[3]) is not int:
                    raise TypeError("seq/prev_hash/id/sig_seq have wrong types")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(Problem("malformed", f"entry content is not a valid entry: {exc}", position=pos))
                continue
        seq, prev, eid, closes = fields
        seqs[pos], prevs[pos], ids[pos], sig_seqs[pos] = seq, prev, eid, closes
        if hb is None or sb is None:
            problems.append(Problem("edited", "content_hash or signature is not lowercase hex of the right length", pos, seq, eid))
            continue
        if not matches:
            problems.append(Problem("edited", "content does not match its content_hash", pos, seq, eid))
            continue
        intact[pos] = True

    # Sequence analysis over intact entries: duplicates, gaps, order, links.
    first_pos: dict[int, int] = {}
    last_seq = -1
    for pos in range(n):
        if not intact[pos]:
            continue
        seq = seqs[pos]
        assert seq is not None
        if seq in first_pos:
            problems.append(Problem("inserted", f"duplicate of seq {seq} first seen at position {first_pos[seq]}", pos, seq, ids[pos]))
            intact[pos] = False
            continue
        first_pos[seq] = pos
        if seq < last_seq:
            problems.append(Problem("reordered", f"seq {seq} appears after seq {last_seq}", pos, seq, ids[pos]))
        last_seq = max(last_seq, seq)
    damaged_positions = {pos for pos in range(n) if not intact[pos]}
    if first_pos:
        top = max(first_pos)
        gap_start: int | None = None
        for s in range(top + 2):
            missing = s <= top and s not in first_pos and s not in damaged_positions
            if missing and gap_start is None:
                gap_start = s
            elif not missing and gap_start is not None:
                span = f"seq {gap_start}" if s - 1 == gap_start else f"seqs {gap_start}..{s - 1}"
                problems.append(Problem("deleted", f"{span} missing from the log", None, gap_start))
                gap_start = None
    for seq, pos in first_pos.items():
        prev = prevs[pos]
        if seq == 0:
            if prev != GENESIS_HASH:
                problems.append(Problem("chain_broken", "first entry does not start from the genesis hash", pos, seq, ids[pos]))
        elif seq - 1 in first_pos and records[first_pos[seq - 1]].content_hash != prev:
            problems.append(Problem("chain_broken", f"prev_hash does not point at seq {seq - 1}", pos, seq, ids[pos]))

    # Checkpoints anchor size and root.
    cps = list(checkpoints)
    verified: list[Checkpoint] = []
    covered = 0
    root_mismatch = False
    tree: MerkleTree | None = None
    full_root = root_of(leaves)
    for cp in cps:
        if not cp.verify(public_key):
            problems.append(Problem("checkpoint_invalid", f"checkpoint of size {cp.size} is not signed by this key"))
            continue
        if cp.size > n:
            problems.append(Problem(
                "truncated",
                f"checkpoint of {cp.timestamp} commits to {cp.size} entries but the log has {n}: "
                f"entries {n}..{cp.size - 1} are missing",
                None, n,
            ))
            root_mismatch = True
            continue
        if cp.size == n:
            root = full_root
        else:
            tree = tree or MerkleTree(leaves)
            root = tree.root(cp.size)
        if root.hex() != cp.root:
            problems.append(Problem("checkpoint_mismatch", f"Merkle root of the first {cp.size} entries differs from the checkpoint of {cp.timestamp}"))
            root_mismatch = True
            continue
        verified.append(cp)
        covered = max(covered, cp.size)
    if not cps and require_checkpoint:
        problems.append(Problem("no_checkpoint", "no signed checkpoint: truncation of the tail cannot be ruled out"))

    # Signatures: the uncovered tail always; everything when asked or when a root failed to match.
    start = 0 if (all_signatures or root_mismatch or not verified) else covered
    todo = [pos for pos in range(start, n) if intact[pos]]
    signature_problems, checked = _signature_problems(public_key, records, todo, seqs, sig_seqs, ids, first_pos, intact)
    problems.extend(signature_problems)
    problems.sort(key=lambda p: (p.position if p.position is not None else (p.seq if p.seq is not None else n)))
    if len(problems) > max_problems:
        extra = len(problems) - max_problems
        problems = problems[:max_problems] + [Problem(problems[max_problems].kind, f"... and {extra} more problems")]
    return VerificationReport(
        ok=not problems, entries=n, root=full_root.hex(), checkpoints_verified=verified,
        signatures_checked=checked, problems=problems,
    )


@dataclass
class ParsedExport:
    records: list[RawRecord]
    checkpoints: list[Checkpoint]
    header: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)  # findings of the parse itself (not per entry)


# The fields of one entry in a JSON export, and of the document: anything else is not covered by any
# hash or signature, so a reader could be shown a value ("refund": "100000.00") the witness never signed.
ENTRY_FIELDS = frozenset(("id", "seq", "timestamp", "component", "operation", "params", "severity", "trace_id",
                          "prev_hash", "content_hash", "signature", "sig_seq", "v"))
DOCUMENT_FIELDS = frozenset(("format", "key_id", "public_key", "checkpoint", "checkpoints", "entries"))
_MAX_EXPORT_DEPTH = 100_000  # params may nest; only the parser's own recursion limit is refused


class _Object(dict):  # type: ignore[type-arg]
    """A parsed JSON object that remembers the keys it was given more than once."""

    __slots__ = ("duplicates",)


def _keep_duplicates(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.duplicates = sorted({k for k, _ in pairs if sum(1 for q, _ in pairs if q == k) > 1}) \
        if len(obj) != len(pairs) else []
    return obj


def _duplicates_in(value: Any) -> list[str]:
    """Keys given twice anywhere inside ``value`` (iterative: any depth)."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.extend(getattr(item, "duplicates", ()))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _parse_jsonl(text: str) -> ParsedExport:
    """JSON Lines: one entry per line (content, content_hash, signature), checkpoint lines last.

    There is no unsigned header: every byte of the file is covered by a hash or a signature.
    """
    records: list[RawRecord] = []
    checkpoints: list[Checkpoint] = []
    problems: list[Problem] = []
    for number, line in enumerate(_jsonl_lines(text), start=1):
        if line.startswith('{"type":"checkpoint"'):
            try:
                checkpoints.append(Checkpoint.from_json(line))
            except WitnessFormatError as exc:
                problems.append(Problem("checkpoint_invalid", f"line {number}: unreadable checkpoint ({exc.message})",
                                        position=number - 1))
            continue
        parts = split_entry_line(line)
        if parts is None:
            records.append(RawRecord(None, "", "", f"line {number}: not an entry line"))
        else:
            records.append(RawRecord(*parts))
    return ParsedExport(records, checkpoints, None, problems)


def _parse_json_document(text: str) -> ParsedExport:
    """Strict: unknown fields and keys given twice (at any depth) are findings, never ignored."""
    try:
        doc = loads_bounded(text, _MAX_EXPORT_DEPTH, object_pairs_hook=_keep_duplicates)
    except ValueError as exc:
        raise WitnessFormatError(f"export is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise WitnessFormatError("JSON export must be an object with an 'entries' list")
    problems: list[Problem] = []
    unknown = sorted(set(doc) - DOCUMENT_FIELDS)
    if unknown:
        problems.append(Problem("malformed", f"the document has unknown fields {unknown}: nothing signs them"))
    if doc.duplicates:
        problems.append(Problem("malformed", f"the document gives keys {doc.duplicates} more than once"))
    records: list[RawRecord] = []
    for i, item in enumerate(doc["entries"]):
        try:
            if not isinstance(item, dict):
                raise TypeError("an entry must be an object")
            extra = sorted(set(item) - ENTRY_FIELDS)
            if extra:
                raise ValueError(f"unknown fields {extra} (not covered by the entry's hash or signature)")
            dups = _duplicates_in(item)
            if dups:
                raise ValueError(f"keys {sorted(set(dups))} given more than once")
            records.append(RawRecord(content_text_from_record(item), item["content_hash"], item["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            records.append(RawRecord(None, "", "", f"entry {i}: {exc}"))
    raw_cps = doc.get("checkpoints") or ([doc["checkpoint"]] if doc.get("checkpoint") else [])
    checkpoints: list[Checkpoint] = []
    for i, raw in enumerate(raw_cps if isinstance(raw_cps, list) else [raw_cps]):
        try:
            if _duplicates_in(raw):
                raise WitnessFormatError(f"keys {sorted(set(_duplicates_in(raw)))} given more than once")
            checkpoints.append(Checkpoint.from_dict(raw))
        except WitnessFormatError as exc:
            problems.append(Problem("checkpoint_invalid", f"checkpoint {i} of the document is unreadable: {exc.message}"))
    header = {k: v for k, v in doc.items() if k not in ("entries", "checkpoint", "checkpoints")}
    return ParsedExport(records, checkpoints, header, problems)


def _as_text(source: str | bytes | Path) -> str:
    if isinstance(source, Path):
        source = source.read_bytes()
    if isinstance(source, bytes):
        source = source.decode("utf-8", "replace")  # corrupt bytes become malformed lines
    return source


def _is_json_document(source: str) -> bool:
    """A JSON document with ``entries`` (pretty-printed or compact), as opposed to JSON Lines."""
    if source.lstrip().startswith("{") and not source.startswith('{"'):
        return True  # pretty-printed document
    try:
        doc = loads_bounded(source, _MAX_EXPORT_DEPTH)
    except ValueError:
        return False
    return isinstance(doc, dict) and "entries" in doc


def _jsonl_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_export(source: str | bytes | Path) -> ParsedExport:
    """Read an export made by ``Witness.export`` (JSON Lines, or a JSON document with ``entries``)."""
    text = _as_text(source)
    return _parse_json_document(text) if _is_json_document(text) else _parse_jsonl(text)


def verify_export(
    source: str | bytes | Path,
    public_key: Ed25519PublicKey,
    *,
    trusted_checkpoints: Iterable[Checkpoint] = (),
    all_signatures: bool = True,
    fast_path: bool = True,
) -> VerificationReport:
    """Verify an exported log with only the public key (plus any checkpoint obtained out of band).

    A JSON-Lines export is first given to the clean-log pass (:mod:`.verify_clean`), which proves an
    intact log intact in one pass; anything out of shape goes to the full analysis, which names every
    problem. ``fast_path=False`` skips the clean-log pass (the reports are the same).
    """
    with _without_cycle_collection():
        text = _as_text(source)
        if _is_json_document(text):
            parsed = _parse_json_document(text)
        else:
            trusted_checkpoints = list(trusted_checkpoints)
            report = verify_clean_text(text, public_key, trusted_checkpoints, all_signatures=all_signatures) \
                if fast_path else None
            if report is not None:
                return report
            parsed = _parse_jsonl(text)
        return verify_records(
            parsed.records, public_key,
            checkpoints=[*parsed.checkpoints, *trusted_checkpoints],
            all_signatures=all_signatures, extra_problems=parsed.problems,
        )
