"""Pick the TRON client from configuration: ``LUCID_TRON_CLIENT`` = ``local`` (default), ``tronpy`` or ``mesh``.

mesh (the deployed form: payouts leave only through api-gateway → tron-payment) reads ``LUCID_MESH_KV``
(discovery store), ``LUCID_MESH_CA_DIR`` (the mesh CA that issues node-management's certificate) and
``LUCID_MESH_JWT_KEY`` (node-management's token key).

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
    if kind == "mesh":
        from .mesh import MeshGatewayCaller, MeshTronClient

        missing = [v for v in ("LUCID_MESH_KV", "LUCID_MESH_CA_DIR", "LUCID_MESH_JWT_KEY") if not os.environ.get(v)]
        if missing:
            raise ValueError(f"the mesh TRON client needs {', '.join(missing)}")
        return MeshTronClient(MeshGatewayCaller(os.environ["LUCID_MESH_KV"], os.environ["LUCID_MESH_CA_DIR"],
                                                os.environ["LUCID_MESH_JWT_KEY"]))
    raise ValueError(f"unknown TRON client {kind!r} (local | tronpy | mesh)")
