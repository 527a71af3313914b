"""Witness error classes: every failure carries a stable ``error_code`` and a human ``message``."""

from __future__ import annotations

from infrafabric.errors import InfraFabricError


class WitnessError(InfraFabricError):
    """Base class of every IF.witness error."""

    error_code = "WITNESS_ERROR"


class WitnessInputError(WitnessError, ValueError):
    """A log call was given a bad component, operation, severity, trace id or params."""

    error_code = "WITNESS_INVALID_INPUT"


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


class WitnessProofError(WitnessError, ValueError):
    """A proof was requested for positions outside the log."""

    error_code = "WITNESS_BAD_PROOF_REQUEST"
