"""How etcd's failures reach callers: a write etcd may have committed is OutcomeUnknown (re-read, never
resend blindly); a read, or a write refused before it was proposed, is plain unavailability."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from backends.errors import BackendUnavailable, OutcomeUnknown
from backends.kv.etcd import _Translate


def _error(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


@pytest.mark.parametrize("details", ["etcdserver: leader changed", "etcdserver: request timed out",
                                     "etcdserver: request timed out, possibly due to previous leader failure"])
def test_a_write_whose_proposal_may_have_committed_is_outcome_unknown(details: str) -> None:
    with pytest.raises(OutcomeUnknown):
        with _Translate("txn", write=True):
            raise _error(grpc.StatusCode.UNAVAILABLE, details)
    with pytest.raises(BackendUnavailable) as caught:  # a read: nothing to be unsure about
        with _Translate("range"):
            raise _error(grpc.StatusCode.UNAVAILABLE, details)
    assert not isinstance(caught.value, OutcomeUnknown)


def test_a_write_refused_before_any_proposal_is_plain_unavailability() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        with _Translate("txn", write=True):
            raise _error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    assert not isinstance(caught.value, OutcomeUnknown)
