"""Exactly-once USDT payouts: ledger states, idempotency keys, crash recovery, audit."""

from .audit import WitnessAuditLogger  # noqa: F401
from .processor import PayoutProcessor  # noqa: F401
