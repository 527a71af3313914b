"""Pick the TRON client from configuration: ``LUCID_TRON_CLIENT`` = ``local`` (default) or ``tronpy``.

tronpy reads ``LUCID_TRON_PRIVATE_KEY`` (required), ``LUCID_TRON_NETWORK`` (default nile),
``LUCID_TRON_USDT_CONTRACT`` (required off mainnet) and ``LUCID_TRON_API_KEY`` (TronGrid, optional).
"""

from __future__ import annotations

import os

from .base import TwoPhaseTronClient
from .local_ledger import LocalLedgerTronClient

__all__ = ["create_tron_client"]


def create_tron_client(kind: str | None = None, *, ledger_url: str | None = None) -> TwoPhaseTronClient:
    kind = kind or os.environ.get("LUCID_TRON_CLIENT", "local")
    if kind == "local":
        return LocalLedgerTronClient(ledger_url)
    if kind == "tronpy":
        from .tronpy_client import TronConfigurationError, TronpyClient

        key = os.environ.get("LUCID_TRON_PRIVATE_KEY")
        if not key:
            raise TronConfigurationError("LUCID_TRON_PRIVATE_KEY is required for the tronpy client")
        # the USDT contract differs per network; only mainnet has a built-in default
        return TronpyClient(private_key_hex=key, network=os.environ.get("LUCID_TRON_NETWORK", "nile"),
                            usdt_contract=os.environ.get("LUCID_TRON_USDT_CONTRACT") or None,
                            api_key=os.environ.get("LUCID_TRON_API_KEY") or None)
    raise ValueError(f"unknown TRON client {kind!r} (local | tronpy)")
