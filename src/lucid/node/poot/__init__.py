"""PoOT (proof of observation time) validation."""

from .signing import poot_signing_message, sign_poot  # noqa: F401
from .validator import PoOTValidator  # noqa: F401
