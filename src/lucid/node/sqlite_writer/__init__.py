"""The node database's standard-library-only SQLite code: the PoOT group transaction (``poot_sqlite``), the
SQL text helpers it and the node writes use (``sqlite_text``), and the PoOT writer process's entry point
(``poot_writer_child``).

Why a package of its own: the writer process imports only this (and ``lucid.node.poot_rules``), so it
starts in tens of milliseconds; ``lucid.node.db`` loads SQLAlchemy and pydantic.
"""
