"""Table definitions (SQLAlchemy Core). Uniqueness that protects money and proofs lives here:
``nodes.name``, ``poot_nonces (node_id, nonce)``, ``payouts.idempotency_key``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData,
    String, Table, Text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite has no time zones, PostgreSQL gets timestamptz-free
    columns so both engines round-trip identically."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


node_pools = Table(
    "node_pools", metadata,
    Column("pool_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("description", String(500)),
    Column("node_count", Integer, nullable=False, default=0),
    Column("max_nodes", Integer, nullable=False, default=100),
    Column("resource_limits", JSON),
    Column("auto_scaling", Boolean, nullable=False, default=False),
    Column("scaling_policy", JSON),
    Column("pricing", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("node_count >= 0 AND node_count <= max_nodes", name="ck_pool_capacity"),
)

nodes = Table(
    "nodes", metadata,
    Column("node_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("status", String(16), nullable=False, index=True),
    Column("node_type", String(16), nullable=False),
    Column("pool_id", String(64), ForeignKey("node_pools.pool_id"), index=True),
    Column("pool_priority", Integer, nullable=False, default=50),
    Column("hardware_info", JSON),
    Column("location", JSON),
    Column("configuration", JSON),
    Column("public_key", String(64)),
    Column("poot_score", Float, nullable=False, default=0.0),
    Column("last_heartbeat", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: Each node's own resource figures, as its heartbeats report them (history for charts; pruned by age).
node_resource_samples = Table(
    "node_resource_samples", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", String(64), nullable=False),
    Column("sampled_at", UTCDateTime, nullable=False),
    Column("cpu_percent", Float, nullable=False),
    Column("memory_percent", Float, nullable=False),
    Column("memory_used_bytes", BigInteger, nullable=False),
    Column("memory_total_bytes", BigInteger, nullable=False),
    Column("disk_percent", Float, nullable=False),
    Column("disk_used_bytes", BigInteger, nullable=False),
    Column("disk_total_bytes", BigInteger, nullable=False),
    Column("network_bytes_sent", BigInteger, nullable=False),
    Column("network_bytes_recv", BigInteger, nullable=False),
    Index("ix_node_resource_samples_node_time", "node_id", "sampled_at"),
)

poot_validations = Table(
    "poot_validations", metadata,
    Column("validation_id", String(36), primary_key=True),
    Column("node_id", String(64), nullable=False),
    Column("batch_id", String(64)),
    Column("output_data", Text),
    Column("output_hash", String(64), nullable=False),
    Column("timestamp", UTCDateTime),
    Column("nonce", String(128), nullable=False),
    Column("is_valid", Boolean, nullable=False),
    Column("score", Float, nullable=False),
    Column("score_parts", JSON),
    Column("confidence", Float, nullable=False),
    Column("validation_time_ms", Float, nullable=False),
    Column("errors", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_poot_node_created", "node_id", "created_at"),
    Index("ix_poot_score", "score"),
)

poot_nonces = Table(
    "poot_nonces", metadata,
    Column("node_id", String(64), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("used_at", UTCDateTime, nullable=False),
    # the key is the table: without a rowid, SQLite keeps one B-tree instead of a table plus an index
    # on (node_id, nonce), and a claim dirties half the pages
    sqlite_with_rowid=False,
)

payouts = Table(
    "payouts", metadata,
    Column("payout_id", String(64), primary_key=True),
    Column("idempotency_key", String(160), nullable=False, unique=True),
    Column("node_id", String(64), nullable=False, index=True),
    Column("batch_id", String(64), index=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("wallet_address", String(64), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("priority", String(8), nullable=False),
    Column("transaction_hash", String(128)),
    Column("tx_payload", JSON),
    Column("error_message", Text),
    Column("retry_count", Integer, nullable=False, default=0),
    Column("max_retries", Integer, nullable=False, default=3),
    Column("scheduled_at", UTCDateTime),
    Column("processed_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("amount_micros > 0", name="ck_payout_amount_positive"),
)

payout_batches = Table(
    "payout_batches", metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("successful", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("scheduled_at", UTCDateTime, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
)
