"""The PoOT acceptance rules for a group of proofs written together, once, as pure functions.

Three places decide whether a proof is stored: the SQLite group transaction (``sqlite_writer.poot_sqlite``, in the
writer thread or the writer process), the SQLAlchemy transaction used on PostgreSQL (``db.poot_repo``),
and the reconciliation after a writer process died mid-group (``db.poot_repo``). Each does its own I/O
(SQL text on a cursor, SQLAlchemy Core, a read-back) and calls these functions for every decision, so a
rule is changed here and nowhere else. Standard library only: the writer process imports this module.

The rules:
- The same (node, nonce) claimed twice in one group: the later claim is a replay.
- A proof checked against a node's key is refused when that node is no longer active (INACTIVE) or no
  longer has that key (BAD_KEY); a refused proof claims no nonce and leaves nothing on record.
- A claim that loses (the nonce was used within the window) is a replay, kept on record as a failed attempt.
- Every other proof is stored; a valid one sets its node's score (the group's last valid one wins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

__all__ = ["REPLAY", "INACTIVE", "BAD_KEY", "REPLAY_ERRORS", "Proof", "NodeState", "decide_group",
           "node_refusal", "refusal_of_unstored", "is_replay_record", "stored_rows"]

# rejection codes (turned into exceptions by the repository)
REPLAY, INACTIVE, BAD_KEY = "replay", "inactive", "bad_key"
REPLAY_ERRORS = ["Nonce already used"]  # the errors a replay's failed attempt is stored with

# (node_id, nonce, claims its nonce, the key it was checked against: (key or None,) / None if unchecked)
Proof = tuple[str, str, bool, "tuple[str | None] | None"]
NodeState = tuple[str, "str | None"]  # (status, public key or None)
Key = tuple[str, str]


def node_refusal(state: NodeState | None, checked_key: str | None, active: str) -> str | None:
    """Why a proof checked against ``checked_key`` is refused given its node's current state, or None."""
    if state is None or state[0] != active:
        return INACTIVE
    if state[1] != checked_key:
        return BAD_KEY
    return None


def decide_group(proofs: Sequence[Proof], *, states: Callable[[list[str]], dict[str, NodeState]],
                 claim: Callable[[list[Key]], set[Key]], active: str,
                 all_as_checked: Callable[[set[tuple[str, str | None]]], bool] | None = None) -> dict[int, str]:
    """{index: rejection code} for a group, inside the caller's transaction.

    The I/O is the caller's: ``states`` reads nodes' (status, key), ``claim`` claims nonces and returns the
    winners, and ``all_as_checked`` (optional, a cheaper query) says whether every checked pair still holds,
    so ``states`` is read only when one does not."""
    claims: dict[Key, int] = {}
    rejected: dict[int, str] = {}
    for i, (node, nonce, wants, _) in enumerate(proofs):
        if wants:
            if (node, nonce) in claims:
                rejected[i] = REPLAY
            else:
                claims[(node, nonce)] = i
    checked = {(node, against[0]) for i, (node, _, wants, against) in enumerate(proofs)
               if wants and against is not None and i not in rejected}
    if checked and not (all_as_checked is not None and all_as_checked(checked)):
        state = states(list({node for node, _ in checked}))
        for i, (node, nonce, wants, against) in enumerate(proofs):
            if not wants or against is None or i in rejected:
                continue
            code = node_refusal(state.get(node), against[0], active)
            if code is not None:
                rejected[i] = code
                claims.pop((node, nonce), None)
    if claims:
        won = claim(list(claims))
        for key, i in claims.items():
            if key not in won:
                rejected[i] = REPLAY
    return rejected


def stored_rows(valid_scores: Iterable[tuple[str, bool, float]], rejected: dict[int, str]
                ) -> tuple[list[tuple[int, bool]], dict[str, float]]:
    """What a decided group writes: (index, as a replay's failed attempt) per row, and the scores to set
    (node -> score of its last stored valid proof). ``valid_scores`` is (node_id, is_valid, score) per proof."""
    rows: list[tuple[int, bool]] = []
    scores: dict[str, float] = {}
    for i, (node, valid, score) in enumerate(valid_scores):
        code = rejected.get(i)
        if code is None:
            rows.append((i, False))
            if valid:
                scores[node] = score
        elif code == REPLAY:
            rows.append((i, True))
    return rows, scores


def refusal_of_unstored(state: NodeState | None, active: str) -> str:
    """Reconciliation: a proof of a committed group that left no row was refused by its node's state."""
    return INACTIVE if state is None or state[0] != active else BAD_KEY


def is_replay_record(stored_errors: object, own_errors: object) -> bool:
    """Reconciliation: a committed row carrying the replay's errors, for a proof that did not fail so
    itself, is the record of a replay."""
    return stored_errors == REPLAY_ERRORS and own_errors != REPLAY_ERRORS
