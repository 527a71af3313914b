"""Boundary fuzzing: identities and tokens from the wire either parse or fail with the mesh's own error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lucid.service_mesh.errors import AuthenticationError, MTLSVerificationError
from lucid.service_mesh.policy import PlanePolicy
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.identity import ServiceIdentity

pytestmark = pytest.mark.security
PROVIDER = ServiceAuthProvider()
segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/._:%", min_size=0, max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=120), st.builds(lambda a, b, c: f"spiffe://lucid.onion/{a}/{b}/{c}",
                                                  segment, segment, segment)))
def test_spiffe_parsing_never_crashes(uri: str) -> None:
    try:
        ident = ServiceIdentity.from_spiffe_id(uri)
    except MTLSVerificationError as exc:
        assert exc.error_code == "LUCID_ERR_1204"
        return
    assert ident.spiffe_id == uri  # only canonical ids are accepted


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=60), min_size=3, max_size=3).map(".".join)))
def test_token_verification_only_raises_1203(token: str) -> None:
    with pytest.raises(AuthenticationError) as exc_info:
        PROVIDER.verify_service_token(token)
    assert exc_info.value.error_code == "LUCID_ERR_1203"


planes = st.sampled_from(["ops", "chain", "wallet", "moon", ""])
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(names, names, planes, names, names, planes, st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_policy_default_deny_for_unknown_identities(s_svc, s_cl, s_pl, d_svc, d_cl, d_pl, method) -> None:
    """Anything outside the Lucid cluster map is denied, whatever plane it claims."""
    from lucid.service_mesh.policy import CLUSTER_PLANE

    src, dst = ServiceIdentity(s_svc, s_cl, s_pl), ServiceIdentity(d_svc, d_cl, d_pl)
    decision = PlanePolicy().decide(src, dst, method)
    if CLUSTER_PLANE.get(s_cl) != s_pl or CLUSTER_PLANE.get(d_cl) != d_pl:
        assert not decision.allowed
