"""Lucid node management: nodes and pools, PoOT validation, exactly-once USDT payouts, REST API (8083).

Persistence is SQLAlchemy 2 async (SQLite by default, PostgreSQL by URL: ``LUCID_NODE_DB_URL``); the TRON
client is a persistent local ledger by default (``LUCID_TRON_CLIENT=tronpy`` for the real network).
"""
