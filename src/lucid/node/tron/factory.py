"""Pick the TRON client from configuration: ``LUCID_TRON_CLIENT`` = ``local`` (default), ``tronpy`` or ``mesh``.

mesh (the deployed form: payouts leave only through api-gateway → tron-payment) reads ``LUCID_MESH_KV``
(discovery store), ``LUCID_MESH_TRUST_DIR`` (the mesh CA's public certificates), ``LUCID_MESH_CERT`` and
``LUCID_MESH_KEY`` (node-management's certificate from the mesh CA) and ``LUCID_MESH_JWT_KEY`` (its token key).

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
        from lucid.service_mesh.policy.caller import MeshCaller

        from .mesh import MeshTronClient, gateway_call

        names = ("LUCID_MESH_KV", "LUCID_MESH_TRUST_DIR", "LUCID_MESH_CERT", "LUCID_MESH_KEY", "LUCID_MESH_JWT_KEY")
        missing = [v for v in names if not os.environ.get(v)]
        if missing:
            raise ValueError(f"the mesh TRON client needs {', '.join(missing)}")
        env = os.environ
        caller = MeshCaller(env["LUCID_MESH_KV"], trust_dir=env["LUCID_MESH_TRUST_DIR"], cert=env["LUCID_MESH_CERT"],
                            key=env["LUCID_MESH_KEY"], jwt_key=env["LUCID_MESH_JWT_KEY"],
                            service_name="node-management", cluster="node-management", plane="ops")
        return MeshTronClient(gateway_call(caller))
    raise ValueError(f"unknown TRON client {kind!r} (local | tronpy | mesh)")
