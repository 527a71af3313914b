"""Witness error classes: every failure carries a stable ``error_code`` and a human ``message``."""

from __future__ import annotations

from infrafabric.errors import InfraFabricError


class WitnessError(InfraFabricError):
    """Base class of every IF.witness error."""

    error_code = "WITNESS_ERROR"


class WitnessInputError(WitnessError, ValueError):
    """A log call was given a bad component, operation, severity, trace id or params."""

    error_code = "WITNESS_INVALID_INPUT"
    http_status = 400


class WitnessKeyError(WitnessError):
    """The signing key is missing, unreadable, has unsafe permissions or does not match the log."""

    error_code = "WITNESS_KEY_ERROR"


class WitnessStorageError(WitnessError):
    """The backing store failed (connection, schema, commit)."""

    error_code = "WITNESS_STORAGE_ERROR"


class WitnessTimeoutError(WitnessError, TimeoutError):
    """A flush did not complete in time."""

    error_code = "WITNESS_TIMEOUT"


class WitnessClosedError(WitnessError):
    """The witness was closed; nothing more can be appended."""

    error_code = "WITNESS_CLOSED"


class WitnessFormatError(WitnessError, ValueError):
    """An exported log or checkpoint file cannot be parsed."""

    error_code = "WITNESS_BAD_FORMAT"
    http_status = 400


class WitnessProofError(WitnessError, ValueError):
    """A proof was requested for positions outside the log."""

    error_code = "WITNESS_BAD_PROOF_REQUEST"
    http_status = 400


class WitnessHeadUnprovenError(WitnessStorageError):
    """The log head found under the append lock is not one this writer sealed or has proven.

    Raised by the sealer before it signs anything; the writer then proves the head (a checkpoint signed
    by this witness's key over that head, and the entries since the last head it trusts extending it)
    and retries. Never signing an unproven head is what stops a key-less rewrite from being signed over.
    """

    error_code = "WITNESS_HEAD_UNPROVEN"


class WitnessHeadRewrittenError(WitnessStorageError):
    """The log head cannot be proven: it carries no valid checkpoint of this key, or the entries since
    the last trusted head do not extend it (RFC 9162 consistency). The writer refuses to sign after it."""

    error_code = "WITNESS_HEAD_REWRITTEN"
