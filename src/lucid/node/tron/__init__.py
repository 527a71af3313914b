"""TRON clients: an interface, a persistent local ledger (default) and a tronpy client (configured)."""

from .base import PreparedTransfer, TwoPhaseTronClient  # noqa: F401
from .local_ledger import LocalLedgerTronClient, treasury_address  # noqa: F401
from .factory import create_tron_client  # noqa: F401
