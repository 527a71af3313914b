"""The request id of the request being served (a context variable): set by the request middleware, read
by the error envelopes and the log records, so neither has to import the other."""

from __future__ import annotations

import contextvars

__all__ = ["request_id_var"]

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("lucid_request_id", default="-")
