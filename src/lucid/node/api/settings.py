"""API settings from the environment (LUCID_NODE_*), overridable in code for tests and benchmarks."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

__all__ = ["NodeAPISettings", "RateLimits"]


@dataclass(frozen=True)
class RateLimits:
    """Requests per minute per tier (reference notes: public 100/IP, node 1000, admin 10000, PoOT 100,
    payouts 50)."""

    public: int = 100
    node: int = 1000
    admin: int = 10000
    poot: int = 100
    payout: int = 50


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class NodeAPISettings:
    db_url: str = field(default_factory=lambda: os.environ.get("LUCID_NODE_DB_URL",
                                                               "sqlite+aiosqlite:///./lucid_node.db"))
    ledger_url: str = field(default_factory=lambda: os.environ.get("LUCID_TRON_LEDGER_URL",
                                                                   "sqlite+aiosqlite:///./lucid_tron_ledger.db"))
    tron_client: str = field(default_factory=lambda: os.environ.get("LUCID_TRON_CLIENT", "local"))
    # HS256 shared secret (node tokens per the reference notes) or an Ed25519/RSA public key (PEM).
    jwt_secret: str | None = field(default_factory=lambda: os.environ.get("LUCID_NODE_JWT_SECRET"))
    jwt_public_key: str | None = field(default_factory=lambda: os.environ.get("LUCID_NODE_JWT_PUBLIC_KEY"))
    jwt_issuer: str = field(default_factory=lambda: os.environ.get("LUCID_NODE_JWT_ISSUER",
                                                                   "lucid-node-management"))
    jwt_audience: str | None = field(default_factory=lambda: os.environ.get("LUCID_NODE_JWT_AUDIENCE"))
    rate_limits: RateLimits = field(default_factory=lambda: RateLimits(
        public=_env_int("LUCID_NODE_RATE_PUBLIC", 100), node=_env_int("LUCID_NODE_RATE_NODE", 1000),
        admin=_env_int("LUCID_NODE_RATE_ADMIN", 10000), poot=_env_int("LUCID_NODE_RATE_POOT", 100),
        payout=_env_int("LUCID_NODE_RATE_PAYOUT", 50)))
    min_valid_score: float = 40.0
    payout_chunk_size: int = field(default_factory=lambda: _env_int("PAYOUT_BATCH_SIZE", 100))
    # the mesh registry this API registers itself in (LUCID_MESH_KV), at LUCID_MESH_ADVERTISE (host:port)
    mesh_kv: str | None = field(default_factory=lambda: os.environ.get("LUCID_MESH_KV") or None)
    mesh_advertise: str | None = field(default_factory=lambda: os.environ.get("LUCID_MESH_ADVERTISE") or None)
    monitor_interval: float = 3600.0  # seconds between prunes of resource samples past their retention
    scheduler_interval: float = 1.0
    max_body_bytes: int = 4 * 1024 * 1024
    recover_on_startup: bool = True
    # payouts left ``processing`` (a receipt not yet in a block, a TRON node that did not answer) are
    # reconciled this often, and unfinished batches resumed; 0 turns the periodic pass off
    reconcile_interval: float = field(default_factory=lambda: float(os.environ.get("LUCID_NODE_RECONCILE_INTERVAL", "30")))
    # node creation and PoOT validation served by hot_routes.py instead of FastAPI's request machinery
    # (same validation, answers and accounting; off: every request through FastAPI)
    hot_routes: bool = field(default_factory=lambda: os.environ.get("LUCID_NODE_HOT_ROUTES", "1") != "0")
    payout_confirm_timeout: float = 60.0  # how long a batch waits for receipts before leaving them to the pass above

    def effective_secret(self) -> str:
        """The configured secret, or a random one: with no configuration no token can be forged or guessed."""
        return self.jwt_secret or _RANDOM_SECRET


_RANDOM_SECRET = secrets.token_urlsafe(48)
