"""The clean-log fast path of export verification: one pass that proves an intact log intact.

Almost every log a verifier sees is intact, and proving that needs far less bookkeeping than naming
what is wrong with a damaged one. This pass walks the JSON-Lines export once, line by line, and
requires the simplest shape an intact log has: entry ``i`` has seq ``i``, links to entry ``i-1``
(genesis for the first), hashes to its content_hash, and signing groups are consecutive runs that
share one signature and end at the entry their ``sig_seq`` names. Checkpoints and signatures are
checked exactly as :func:`~infrafabric.witness.verify.verify_records` checks them.

It returns a report only when that report is clean, and then it is the report ``verify_records``
would give (a test compares the two on intact and tampered logs). At the first thing out of shape
it returns None, and the caller runs the full analysis, which names every problem and where it is.
It does not keep per-entry records, five per-entry arrays and a sequence map, which is what makes it
about twice as fast; see docs/ARCHITECTURE.md (IF.witness).
"""

from __future__ import annotations

import hashlib
import io
import os
import select
import signal
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from backends.frames import encode_frame, read_frame

from .canonical import GENESIS_HASH, LINE_SUFFIX_LEN
from .checkpoint import Checkpoint
from .errors import WitnessFormatError
from .keys import ENTRY_DOMAIN, failing_signatures
from .merkle import MerkleTree, root_of
from .report import VerificationReport

_CHECKPOINT_PREFIX = '{"type":"checkpoint"'
_HASH_KEY = ',"content_hash":"'
_SIG_KEY = '","signature":"'
_SIG_AT = len(_HASH_KEY) + 64  # offset of _SIG_KEY after the cut
_HASH_END = _SIG_AT
_SIG_START = _SIG_AT + len(_SIG_KEY)
_SIG_END = _SIG_START + 128
_SIG_SEQ_KEY = '","sig_seq":'
BLOCK = 4096  # chunks start at multiples of this many entries (aligned Merkle blocks)
PARALLEL_MIN_CHARS = 8 << 20  # smaller exports (under ~14 k entries) are verified in one process: a fork
# costs 10-20 ms here, about what a second core saves on 8 MiB
CHILD_PATIENCE_MIN = 30.0  # seconds a child may take beyond the parent's own chunk time × 4


class _Span(NamedTuple):
    """Entries ``lo..hi-1``: their lines are ``text[start:end]``; the first must link to ``expect_prev``."""

    lo: int
    hi: int
    start: int
    end: int
    expect_prev: str


class _Chunk(NamedTuple):
    """The result of the clean pass over one span."""

    lo: int
    hi: int
    groups: list[list]  # signing groups met, in order: [first, closer, signature hex, closer's content hash]
    leaves: bytes  # RFC 9162 leaf hashes, 32 bytes each, joined
    tops: list[bytes]  # the Merkle root of each aligned block of BLOCK leaves (the last one may be short)


def _entry_region(text: str) -> tuple[int, list[Checkpoint]] | None:
    """Where the entry lines end, and the checkpoint lines after them, parsed (as ``parse_export``
    splits lines: one final newline ends the text); None when there is no entry or a checkpoint
    line is unreadable."""
    end = len(text) - 1 if text.endswith("\n") else len(text)
    checkpoints: list[Checkpoint] = []
    while end > 0:
        nl = text.rfind("\n", 0, end)
        line = text[nl + 1 : end]
        if not line.startswith(_CHECKPOINT_PREFIX):
            break
        try:
            checkpoints.insert(0, Checkpoint.from_json(line))
        except WitnessFormatError:
            return None
        end = nl
    return (end, checkpoints) if end > 0 else None


def _line_start(text: str, line: int, end: int, lines: int) -> int:
    """Offset of the first character of line ``line`` of ``text[:end]`` (``lines`` lines): a guess in
    proportion, the line it falls in counted in C, then a walk of at most a few thousand lines."""
    guess = end * line // lines
    k = text.count("\n", 0, guess)  # the guess lies in line k
    start = text.rfind("\n", 0, guess) + 1
    while k < line:
        start = text.index("\n", start) + 1
        k += 1
    while k > line:
        start = text.rfind("\n", 0, start - 1) + 1
        k -= 1
    return start


def _spans(text: str, end: int, workers: int) -> list[_Span]:
    """``workers`` spans of about equal size, each starting at a multiple of BLOCK entries."""
    n = text.count("\n", 0, end) + 1
    los = [0]
    for j in range(1, workers):
        cut = round(n * j / workers / BLOCK) * BLOCK
        if los[-1] < cut < n:
            los.append(cut)
    starts = [0, *(_line_start(text, lo, end, n) for lo in los[1:])]
    spans = []
    for j, lo in enumerate(los):
        hi = los[j + 1] if j + 1 < len(los) else n
        span_end = starts[j + 1] - 1 if j + 1 < len(los) else end
        prev_end = starts[j] - 1  # the newline ending the line before, whose claimed hash we link to
        expect = GENESIS_HASH if lo == 0 else text[prev_end - LINE_SUFFIX_LEN + 17 : prev_end - LINE_SUFFIX_LEN + _HASH_END]
        spans.append(_Span(lo, hi, starts[j], span_end, expect))
    return spans


def _clean_chunk(text: str, span: _Span) -> _Chunk | None:
    """The clean pass over one span of entry lines; None at the first flaw."""
    lo, expect_prev = span.lo, span.expect_prev
    lines = text[span.start : span.end].split("\n")
    if len(lines) != span.hi - lo:
        return None
    sha = hashlib.sha256
    cut_len = LINE_SUFFIX_LEN
    hash_key, sig_key = _HASH_KEY, _SIG_KEY
    leaves: list[bytes] = []
    add_leaf = leaves.append
    groups: list[list] = []  # [first, closer, signature, closer's content hash]
    group: list | None = None
    sig_bytes = b""
    pos = lo
    for line in lines:
        cut = len(line) - cut_len
        if cut < 1 or not line.startswith(hash_key, cut) or not line.startswith(sig_key, cut + _SIG_AT) \
                or not line.endswith('"}'):
            return None
        content = line[:cut] + "}"
        chash = line[cut + 17 : cut + _HASH_END]
        sig = line[cut + _SIG_START : cut + _SIG_END]
        digest = sha(content.encode("utf-8", "surrogatepass")).digest()
        if digest.hex() != chash:
            return None
        # the link fields must read as the expected prev_hash and seq, at the place link_fields reads them
        p = content.rfind('"prev_hash":"')
        link = f'"prev_hash":"{expect_prev}","seq":{pos},"severity":"'
        if p < 0 or not content.startswith(link, p):
            return None
        r = content.find('"', p + len(link))  # the end of the severity value
        if r < 0 or not content.startswith(_SIG_SEQ_KEY, r):
            return None
        e = content.find(",", r + len(_SIG_SEQ_KEY))
        closes_text = content[r + len(_SIG_SEQ_KEY) : e]
        if e < 0 or not (closes_text.isascii() and closes_text.isdigit()):
            return None
        closes = int(closes_text)
        q = content.find('"id":"')
        if q < 0 or not 0 <= content.find('"', q + 6) <= p:
            return None
        seq = pos
        if group is None or closes != group[1]:
            # a new signing group starts here: the previous one must have ended at its closer
            if (group is not None and group[1] != pos - 1) or closes < seq:
                return None
            try:
                sig_bytes = bytes.fromhex(sig)
            except ValueError:
                return None
            if len(sig_bytes) != 64 or sig_bytes.hex() != sig:
                return None
            group = [pos, closes, sig, ""]
            groups.append(group)
        elif sig != group[2]:
            return None
        if closes == seq:
            group[3] = chash
        add_leaf(sha(b"\x00" + digest + sig_bytes).digest())
        expect_prev = chash
        pos += 1
    tops = [root_of(leaves[i : i + BLOCK]) for i in range(0, len(leaves), BLOCK)]
    return _Chunk(lo, span.hi, groups, b"".join(leaves), tops)


def _run_chunks(text: str, spans: list[_Span]) -> list[_Chunk] | None:
    """Every span's clean pass, spans 1.. in forked children while this process does span 0.

    Why fork: the pass is pure Python over text this process already holds, so the GIL rules out
    threads, and a fork shares the text copy-on-write where a spawned worker would need it sent.
    A child only splits, slices and hashes strings, writes its result as one frame (``backends.frames``,
    the format of every parent-child pipe here) into a pipe and leaves with
    ``os._exit``. A child that dies, answers garbage or is not done long after this process finished
    its own span (a lock held by another thread at fork time could stall it) is killed, and its span
    is done here: at worst slower, never a different answer.
    """
    children: dict[int, tuple[int, int]] = {}  # span -> (pid, read end of its pipe)
    if len(spans) > 1 and hasattr(os, "fork"):
        for j in range(1, len(spans)):
            child = _fork_chunk(text, spans[j])
            if child is not None:
                children[j] = child
    began = time.monotonic()
    own = _clean_chunk(text, spans[0])
    if own is None:
        _reap(children.values())
        return None
    deadline = time.monotonic() + max(CHILD_PATIENCE_MIN, 4 * (time.monotonic() - began))
    results = [own]
    for j, span in enumerate(spans[1:], start=1):
        result = _collect(*children.pop(j), deadline) if j in children else None
        if result is None or (result.lo, result.hi) != (span.lo, span.hi):
            result = _clean_chunk(text, span)
        if result is None:
            _reap(children.values())
            return None
        results.append(result)
    return results


def _fork_chunk(text: str, span: _Span) -> tuple[int, int] | None:
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork with threads; see _run_chunks
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: compute, write, leave without running any of the parent's clean-up
        try:
            os.close(read_fd)
            view = memoryview(encode_frame(_clean_chunk(text, span)))  # the one parent-child frame format
            while view:
                view = view[os.write(write_fd, view) :]
        finally:
            os._exit(0)
    os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, read_fd: int, deadline: float) -> _Chunk | None:
    """A child's result, or None if it failed or missed the deadline (then it is killed)."""
    parts: list[bytes] = []
    try:
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([read_fd], [], [], wait)[0]:
                return None
            part = os.read(read_fd, 1 << 20)
            if not part:
                break
            parts.append(part)
        result = read_frame(io.BytesIO(b"".join(parts)))
        return result if isinstance(result, _Chunk) else None
    except Exception:  # noqa: BLE001 - a garbled answer: the span is done in this process instead
        return None
    finally:
        _reap([(pid, read_fd)])


def _reap(children: Iterable[tuple[int, int]]) -> None:
    for pid, read_fd in children:
        os.close(read_fd)
        try:
            os.kill(pid, signal.SIGKILL)  # done or not, it is not needed any more
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def _merge(chunks: list[_Chunk], n: int) -> list[list] | None:
    """The signing groups of the whole log, a group cut by a chunk boundary joined up; None if malformed."""
    groups: list[list] = []
    for chunk in chunks:
        for g in chunk.groups:
            if groups and groups[-1][1] == g[1]:  # the same group, continued past a chunk boundary
                if groups[-1][2] != g[2]:
                    return None
                groups[-1] = [groups[-1][0], g[1], g[2], g[3]]
            elif groups and groups[-1][1] != g[0] - 1:  # the group before did not end at its closer
                return None
            else:
                groups.append(g)
    return groups if groups and groups[-1][1] == n - 1 and groups[-1][3] else None


def _root(chunks: list[_Chunk]) -> bytes:
    """MTH of all leaves from the roots of aligned blocks of BLOCK leaves: bottom-up hashing never pairs
    across an aligned block boundary before the block is one node, so the root of the block roots (the
    last, short block reduced on its own) is the root of the leaves. A unit test holds this to root_of."""
    return root_of([top for chunk in chunks for top in chunk.tops])


def verify_clean_text(
    text: str,
    public_key: Ed25519PublicKey,
    trusted_checkpoints: Sequence[Checkpoint] = (),
    *,
    all_signatures: bool = True,
    workers: int | None = None,
) -> VerificationReport | None:
    """The clean report for a JSON-Lines export, or None when anything is out of clean shape.

    Exports of at least PARALLEL_MIN_CHARS are split over ``workers`` processes (default: the CPUs,
    at most 4); see :func:`_run_chunks`.
    """
    region = _entry_region(text)
    if region is None:
        return None
    end, checkpoints = region
    checkpoints = [*checkpoints, *trusted_checkpoints]
    if not checkpoints:
        return None
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if end >= PARALLEL_MIN_CHARS else 1
    chunks = _run_chunks(text, _spans(text, end, max(workers, 1)))
    if chunks is None:
        return None
    n = chunks[-1].hi
    groups = _merge(chunks, n)
    if groups is None:
        return None
    leaves: list[bytes] | None = None
    full_root = _root(chunks)
    leaves: list[bytes] | None = None
    verified: list[Checkpoint] = []
    covered = 0
    tree: MerkleTree | None = None
    for cp in checkpoints:
        if cp.size > n or not cp.verify(public_key):
            return None
        if cp.size == n:
            root = full_root
        else:
            if leaves is None:
                joined = b"".join(chunk.leaves for chunk in chunks)
                leaves = [joined[i : i + 32] for i in range(0, len(joined), 32)]
            tree = tree or MerkleTree(leaves)
            root = tree.root(cp.size)
        if root.hex() != cp.root:
            return None
        verified.append(cp)
        covered = max(covered, cp.size)

    start = 0 if all_signatures else covered
    todo = [g for g in groups if g[1] >= start]
    if failing_signatures(public_key, [(g[2], ENTRY_DOMAIN + bytes.fromhex(g[3])) for g in todo]):
        return None
    checked = sum(g[1] - max(g[0], start) + 1 for g in todo)
    return VerificationReport(ok=True, entries=n, root=full_root.hex(), checkpoints_verified=verified,
                              signatures_checked=checked, problems=[])
