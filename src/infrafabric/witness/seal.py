"""Sealing: chain a batch of queued entries after the log head, sign them in groups, extend the tree edge.

One function for both writers: the witness's seal thread (``memory://``, PostgreSQL, or
``writer="thread"``) and the SQLite writer process (``writer_child``). Entries are signed in groups
of up to ``entries_per_signature`` consecutive entries of one batch: the group's signature covers the
content hash of its last entry, which commits to every entry of the group through the hash chain, so
every acknowledged entry is signed while one Ed25519 signature is paid per group.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from .canonical import SEAL_TEMPLATE, format_timestamp
from .checkpoint import Checkpoint
from .keys import WitnessKeys
from .merkle import CompactRange
from .store.base import PendingEntry, Row, Sealed
from .trust import HeadTrust

_sha256 = hashlib.sha256


class EntrySealer:
    """Seals batches for one witness key, only after heads its ``trust`` knows (see ``trust.py``)."""

    def __init__(self, keys: WitnessKeys, entries_per_signature: int = 256, signers: Executor | None = None) -> None:
        self.keys = keys
        self.group = entries_per_signature
        self.signers = signers  # a second thread for the signatures of large batches, or None
        self.trust = HeadTrust(keys.public_key)

    @property
    def high_water(self) -> int:
        """The largest log size trusted (committed, proven or published): the log never shrinks below it."""
        return self.trust.high_water

    @high_water.setter
    def high_water(self, value: int) -> None:
        self.trust.high_water = max(self.trust.high_water, value)

    def seal(self, size: int, head_hash: str, frontier: CompactRange, batch: Sequence[PendingEntry]) -> Sealed:
        """Runs under the store lock: chain ``batch`` after the head, sign it, extend the tree edge.

        Refuses (``WitnessHeadUnprovenError``) a head this writer neither sealed nor proved: signing after
        a head rewritten without the key would put the witness's signature on the rewrite.
        """
        self.trust.check(size, head_hash, frontier)
        template, sha, group = SEAL_TEMPLATE, _sha256, self.group
        n = len(batch)
        rows: list[Row] = []
        digests: list[bytes] = []
        prev = head_hash
        seq = size
        last_second, base = -1, ""
        end = size + n
        group_end = size  # signing groups: ``group`` consecutive entries; the last one closes the group
        sig_seq = size - 1
        for entry_id, ts_ns, component, operation, params_json, severity, trace in batch:
            if seq == group_end:
                group_end = min(seq + group, end)
                sig_seq = group_end - 1
            second, rest = divmod(ts_ns, 1_000_000_000)
            if second != last_second:  # the date part changes once a second
                last_second, base = second, format_timestamp(ts_ns)[:-8]
            ts = f"{base}.{rest // 1000:06d}Z"
            # the canonical content (content_text's bytes; a unit test holds SEAL_TEMPLATE to that)
            digest = sha((template % (
                component, entry_id, operation, params_json, prev, seq, severity, sig_seq, ts,
                "null" if trace is None else '"' + trace + '"')).encode("ascii")).digest()
            hex_digest = digest.hex()
            # the signature (index 10) is filled in once the group's closer is signed
            rows.append([seq, entry_id, ts, component, operation, params_json, severity, trace, prev, hex_digest,
                         "", sig_seq])
            digests.append(digest)
            prev = hex_digest
            seq += 1
        signatures = self._sign_all(digests[group - 1 :: group] if n % group == 0 else
                                    digests[group - 1 :: group] + [digests[-1]])
        leaves: list[bytes] = []
        for g, sig in enumerate(signatures):  # rows and RFC 9162 leaves (hash ‖ signature)
            sig_hex = sig.hex()
            for i in range(g * group, min(g * group + group, n)):
                rows[i][10] = sig_hex
                leaves.append(sha(b"\x00" + digests[i] + sig).digest())
        frontier.extend(leaves)
        checkpoint = Checkpoint.create(self.keys, frontier.size, frontier.root(), format_timestamp(time.time_ns()))
        self.trust.sealed(frontier.size, prev, checkpoint.root, frontier)
        return Sealed(size, head_hash, rows, checkpoint, frontier)

    def _sign_all(self, hashes: list[bytes]) -> list[bytes]:
        sign = self.keys.sign_entry
        if self.signers is None or len(hashes) < 64:
            return [sign(h) for h in hashes]
        half = len(hashes) // 2  # Ed25519 signing releases the GIL: sign half on a second thread
        try:
            future = self.signers.submit(lambda: [sign(h) for h in hashes[half:]])
        except RuntimeError:  # executor refuses work at interpreter shutdown: sign inline
            return [sign(h) for h in hashes]
        first = [sign(h) for h in hashes[:half]]
        return first + future.result()
