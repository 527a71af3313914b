"""Capabilities: an open vocabulary (SPEC), with the eight names of the S2 design as constants.

A `Capability` is a validated `str`, so constants, `Capability('cap-1')` and plain strings compare equal
and hash alike; anything that could not be a capability name (spaces, control characters, empty) is a
ValueError at the boundary.
"""

from __future__ import annotations

import re
from typing import ClassVar

from infrafabric.errors import InvalidCapabilityError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(:[A-Za-z0-9_.+-]+)*")
MAX_LENGTH = 128


class Capability(str):
    CODE_ANALYSIS_RUST: ClassVar["Capability"]
    CODE_ANALYSIS_PYTHON: ClassVar["Capability"]
    INTEGRATION_SIP: ClassVar["Capability"]
    INTEGRATION_NDI: ClassVar["Capability"]
    INTEGRATION_WEBRTC: ClassVar["Capability"]
    CONTRACT_REVIEW_NDA: ClassVar["Capability"]
    CLI_DESIGN: ClassVar["Capability"]
    ARCHITECTURE_PATTERNS: ClassVar["Capability"]

    __slots__ = ()

    def __new__(cls, value: object) -> "Capability":
        if isinstance(value, Capability):
            return value
        if not isinstance(value, str) or len(value) > MAX_LENGTH or not _NAME.fullmatch(value):
            raise InvalidCapabilityError(f"malformed capability {value!r}")
        return super().__new__(cls, value)

    @property
    def value(self) -> str:
        """The plain string (enum-style access used by the design documents)."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Capability({str.__repr__(self)})"


Capability.CODE_ANALYSIS_RUST = Capability("code-analysis:rust")
Capability.CODE_ANALYSIS_PYTHON = Capability("code-analysis:python")
Capability.INTEGRATION_SIP = Capability("integration:sip")
Capability.INTEGRATION_NDI = Capability("integration:ndi")
Capability.INTEGRATION_WEBRTC = Capability("integration:webrtc")
Capability.CONTRACT_REVIEW_NDA = Capability("contract-review:nda")
Capability.CLI_DESIGN = Capability("cli:design")
Capability.ARCHITECTURE_PATTERNS = Capability("architecture:patterns")

NAMED_CAPABILITIES: tuple[Capability, ...] = (
    Capability.CODE_ANALYSIS_RUST,
    Capability.CODE_ANALYSIS_PYTHON,
    Capability.INTEGRATION_SIP,
    Capability.INTEGRATION_NDI,
    Capability.INTEGRATION_WEBRTC,
    Capability.CONTRACT_REVIEW_NDA,
    Capability.CLI_DESIGN,
    Capability.ARCHITECTURE_PATTERNS,
)


def parse_capabilities(values: object) -> list[Capability]:
    """Validate a list of capabilities, dropping duplicates but keeping order."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidCapabilityError("capabilities must be a list of capability names")
    seen: dict[Capability, None] = {}
    for v in values:  # type: ignore[attr-defined]
        seen.setdefault(Capability(v), None)
    return list(seen)
