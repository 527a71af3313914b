"""Node-management errors: every failure is a class carrying a Lucid ``error_code`` and a ``message``.

Codes follow SPEC.md (LUCID_ERR_5xxx for node management, 4291 for rate limiting). ``http_status`` is the
status the REST API answers with, so the mapping lives beside the error and not in every route.
"""

from __future__ import annotations

from backends.errors import PlatformError, RateLimited

__all__ = [
    "NodeManagementError", "ValidationError", "NodeNotFoundError", "PoolNotFoundError",
    "InvalidNodeStatusError", "NodePayoutsPendingError", "ResourceLimitError", "InvalidPoOTError",
    "NonceReplayError",
    "PayoutError", "PayoutNotFoundError", "NodeAlreadyExistsError", "PoolAlreadyExistsError",
    "InvalidAllocationError", "BatchOperationError", "BatchConflictError", "IdempotencyKeyConflictError",
    "InternalNodeError",
    "RateLimitExceededError", "AuthenticationError", "PermissionDeniedError", "TronConfigurationError",
    "TronNodeError", "TronNodeUnavailableError", "TronIntegrityError",
]


class NodeManagementError(PlatformError):
    """Base of every node-management error (LUCID_ERR_5000, generic)."""

    error_code = "LUCID_ERR_5000"
    http_status = 400
    default_message = "Node management error"


class ValidationError(NodeManagementError, ValueError):
    """Input failed validation at the boundary (bad wallet, amount, hardware info...)."""

    error_code = "LUCID_ERR_5000"
    http_status = 400
    default_message = "Invalid request"


class NodeNotFoundError(NodeManagementError):
    error_code = "LUCID_ERR_5001"
    http_status = 404
    default_message = "Node not found"


class PoolNotFoundError(NodeManagementError):
    error_code = "LUCID_ERR_5002"
    http_status = 404
    default_message = "Pool not found"


class InvalidNodeStatusError(NodeManagementError):
    error_code = "LUCID_ERR_5003"
    http_status = 409
    default_message = "Invalid node status for this operation"


class NodePayoutsPendingError(InvalidNodeStatusError):
    """DELETE of a node a payout is still pending or processing for: deleting it would leave a payment
    in flight to a node that is gone (409, the node-state conflict code)."""

    default_message = "Node has payouts pending or processing"


class ResourceLimitError(NodeManagementError):
    error_code = "LUCID_ERR_5004"
    http_status = 409
    default_message = "Resource limit exceeded"


class InvalidPoOTError(NodeManagementError):
    error_code = "LUCID_ERR_5005"
    http_status = 400
    default_message = "PoOT validation failed"


class NonceReplayError(InvalidPoOTError):
    """A nonce already used by this node in the last 24 h (the database's unique constraint said so)."""

    http_status = 409
    default_message = "Nonce already used"


class PayoutError(NodeManagementError):
    error_code = "LUCID_ERR_5006"
    http_status = 400
    default_message = "Payout processing failed"


class PayoutNotFoundError(PayoutError):
    http_status = 404
    default_message = "Payout batch not found"


class NodeAlreadyExistsError(NodeManagementError):
    error_code = "LUCID_ERR_5007"
    http_status = 409
    default_message = "Node already exists"


class PoolAlreadyExistsError(NodeManagementError):
    error_code = "LUCID_ERR_5008"
    http_status = 409
    default_message = "Pool already exists"


class InvalidAllocationError(NodeManagementError):
    error_code = "LUCID_ERR_5009"
    http_status = 400
    default_message = "Invalid resource allocation"


class BatchOperationError(NodeManagementError):
    error_code = "LUCID_ERR_5010"
    http_status = 400
    default_message = "Batch operation failed"


class BatchConflictError(BatchOperationError):
    """The batch id exists with a different payload: re-submitting must not change what is paid."""

    http_status = 409
    default_message = "Batch id already used with a different payload"


class IdempotencyKeyConflictError(BatchConflictError):
    """A payout's idempotency key is already in the ledger for another payout (other node, amount, wallet
    or batch): the key names one payment forever, so reusing it for a different one is refused."""

    default_message = "Idempotency key already used for a different payout"


class InternalNodeError(NodeManagementError):
    error_code = "LUCID_ERR_5999"
    http_status = 500
    default_message = "Internal error"


class GroupCommitError(InternalNodeError):
    """A group-committed transaction (concurrent PoOT saves or node creations written together) failed.
    Every caller of the group gets this error and nothing of the group was stored (the transaction rolled
    back), so each may retry; what was acknowledged before is untouched. The cause is chained."""

    default_message = "Storing a group of concurrent writes failed; none of them was stored"


class RateLimitExceededError(NodeManagementError, RateLimited):
    error_code = "LUCID_ERR_4291"
    http_status = 429
    default_message = "Rate limit exceeded"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, details={"retry_after": retry_after}, retry_after=retry_after)


class AuthenticationError(NodeManagementError):
    """Missing or invalid bearer token (SPEC: every JWT failure is a security policy violation)."""

    error_code = "LUCID_ERR_1203"
    http_status = 401
    default_message = "Authentication required"


class PermissionDeniedError(NodeManagementError):
    error_code = "LUCID_ERR_1203"
    http_status = 403
    default_message = "Permission denied"


# TRON client failures (lucid.node.tron): configuration, a node answer the flow cannot use, an unknown
# outcome (reconcile by txid later), and a txid that does not match its raw data.
class TronConfigurationError(InternalNodeError, RuntimeError):
    """The tronpy client cannot be built as configured (RuntimeError kept for older callers)."""

    default_message = "TRON client misconfigured"


class TronNodeError(PayoutError):
    """The TRON full node answered something the payout flow cannot use."""

    http_status = 502
    default_message = "TRON node error"


class TronNodeUnavailableError(TronNodeError):
    """The node could not be asked or did not decide: the outcome is unknown, reconcile by txid later."""

    http_status = 503
    default_message = "TRON node unavailable; outcome unknown"


class TronIntegrityError(TronNodeError):
    """A transaction id does not match the transaction's raw data: refused rather than signed or sent."""

    default_message = "TRON transaction id does not match its raw data"
