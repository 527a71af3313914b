"""Pick the TRON client from configuration: ``LUCID_TRON_CLIENT`` = ``local`` (default) or ``tronpy``."""

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
        from .tronpy_client import TronpyClient

        key = os.environ.get("LUCID_TRON_PRIVATE_KEY")
        if not key:
            raise RuntimeError("LUCID_TRON_PRIVATE_KEY is required for the tronpy client")
        return TronpyClient(private_key_hex=key, network=os.environ.get("LUCID_TRON_NETWORK", "nile"),
                            api_key=os.environ.get("LUCID_TRON_API_KEY"))
    raise ValueError(f"unknown TRON client {kind!r} (local | tronpy)")
