"""The PoOT group rules (lucid.node.poot_rules) on their own, with the I/O given as plain functions: every
group hypothesis makes is decided as the rules in the module's docstring say, and the cheaper
"all as checked" query never changes a decision."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lucid.node import poot_rules as rules

NODES, NONCES, KEYS = ["n1", "n2", "n3"], ["a", "b", "c"], ["k1", "k2", None]

proofs = st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(NONCES), st.booleans(),
                            st.one_of(st.none(), st.tuples(st.sampled_from(KEYS)))), max_size=12)
states = st.dictionaries(st.sampled_from(NODES), st.tuples(st.sampled_from(["active", "inactive"]),
                                                           st.sampled_from(KEYS)))
used = st.sets(st.tuples(st.sampled_from(NODES), st.sampled_from(NONCES)))


def _decide(group, node_states, used_keys, shortcut: bool):
    claimed: list[list[tuple[str, str]]] = []

    def claim(keys):
        claimed.append(list(keys))
        return {k for k in keys if k not in used_keys}

    def all_as_checked(pairs):
        return all(rules.node_refusal(node_states.get(n), k, "active") is None for n, k in pairs)

    codes = rules.decide_group(group, states=lambda ids: {n: node_states[n] for n in ids if n in node_states},
                               claim=claim, active="active", all_as_checked=all_as_checked if shortcut else None)
    return codes, claimed


@settings(max_examples=400)
@given(group=proofs, node_states=states, used_keys=used)
def test_each_proof_is_decided_by_the_rules(group, node_states, used_keys) -> None:
    codes, claimed = _decide(group, node_states, used_keys, shortcut=False)
    first: dict[tuple[str, str], int] = {}
    for i, (node, nonce, wants, against) in enumerate(group):
        if not wants:
            assert i not in codes  # a proof that claims nothing is stored as it is
            continue
        if (node, nonce) in first:
            assert codes[i] == rules.REPLAY  # the same nonce again in one group
            continue
        first[(node, nonce)] = i
        refusal = None if against is None else rules.node_refusal(node_states.get(node), against[0], "active")
        if refusal is not None:
            assert codes[i] == refusal
        elif (node, nonce) in used_keys:
            assert codes[i] == rules.REPLAY
        else:
            assert i not in codes
    # only the first claim of a key that passed its node check is sent to the store, once
    sent = [k for call in claimed for k in call]
    assert len(sent) == len(set(sent))
    assert all(codes.get(first[k]) in (None, rules.REPLAY) for k in sent)


@settings(max_examples=200)
@given(group=proofs, node_states=states, used_keys=used)
def test_the_cheaper_check_never_changes_a_decision(group, node_states, used_keys) -> None:
    assert _decide(group, node_states, used_keys, True)[0] == _decide(group, node_states, used_keys, False)[0]


def test_what_a_decided_group_writes() -> None:
    rows, scores = rules.stored_rows([("n1", True, 50.0), ("n1", True, 70.0), ("n2", False, 0.0),
                                      ("n2", True, 90.0), ("n3", True, 10.0)],
                                     {2: rules.REPLAY, 3: rules.BAD_KEY})
    assert rows == [(0, False), (1, False), (2, True), (4, False)]  # a refused proof leaves nothing
    assert scores == {"n1": 70.0, "n3": 10.0}  # the last stored valid proof sets the score


def test_reconciliation_rules() -> None:
    assert rules.refusal_of_unstored(None, "active") == rules.INACTIVE
    assert rules.refusal_of_unstored(("inactive", "k"), "active") == rules.INACTIVE
    assert rules.refusal_of_unstored(("active", "k"), "active") == rules.BAD_KEY
    assert rules.is_replay_record(rules.REPLAY_ERRORS, []) and not rules.is_replay_record([], [])
    assert not rules.is_replay_record(rules.REPLAY_ERRORS, rules.REPLAY_ERRORS)  # its own failed attempt
