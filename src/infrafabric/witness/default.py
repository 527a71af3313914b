"""The process-wide default witness behind ``log_operation`` / ``get_logs``.

Configuration (read when the default is first used):
- ``INFRAFABRIC_WITNESS_URL``: ``sqlite:///path.db`` (default: ``<state dir>/witness.db``),
  ``postgresql://user@host:port/db``, or ``memory://[name]`` (in-process, not durable).
- ``INFRAFABRIC_WITNESS_KEY_DIR``: directory of the Ed25519 key pair (default ``<state dir>/witness-keys``).
- state dir: ``INFRAFABRIC_STATE_DIR``, else ``$XDG_STATE_HOME/infrafabric``, else ``~/.local/state/infrafabric``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .witness import Witness

URL_ENV = "INFRAFABRIC_WITNESS_URL"
KEY_DIR_ENV = "INFRAFABRIC_WITNESS_KEY_DIR"
STATE_DIR_ENV = "INFRAFABRIC_STATE_DIR"

_default: Witness | None = None
_lock = threading.Lock()


def state_dir() -> Path:
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "infrafabric"


def default_url() -> str:
    return os.environ.get(URL_ENV) or f"sqlite:///{state_dir() / 'witness.db'}"


def default_key_dir() -> Path:
    explicit = os.environ.get(KEY_DIR_ENV)
    return Path(explicit).expanduser() if explicit else state_dir() / "witness-keys"


def _key_dir_for(url: str, key_dir: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    if key_dir is not None:
        return key_dir
    if url.startswith("memory") and not os.environ.get(KEY_DIR_ENV):
        return None  # an in-memory log gets an ephemeral key
    return default_key_dir()


def get_default_witness() -> Witness:
    """The default witness, created from the environment on first use."""
    global _default
    witness = _default
    if witness is not None and not witness.closed:
        return witness
    with _lock:
        if _default is None or _default.closed:
            url = default_url()
            _default = Witness(url, _key_dir_for(url, None))
        return _default


def current_default_witness() -> Witness | None:
    """The default witness if this process has opened it, without opening one (for metrics)."""
    witness = _default
    return witness if witness is not None and not witness.closed else None


def configure(url: str | None = None, key_dir: str | os.PathLike[str] | None = None, **options: Any) -> Witness:
    """Replace the default witness (the old one is flushed and closed)."""
    global _default
    url = url or default_url()
    new = Witness(url, _key_dir_for(url, key_dir), **options)
    with _lock:
        old, _default = _default, new
    if old is not None:
        old.close()
    return new


def set_default_witness(witness: Witness) -> Witness | None:
    """Install an existing witness as the default; returns the previous one (not closed)."""
    global _default
    with _lock:
        old, _default = _default, witness
    return old


def reset_default_witness() -> None:
    """Close the default witness; the next use creates a new one from the environment."""
    global _default
    with _lock:
        old, _default = _default, None
    if old is not None:
        old.close()


def _after_fork_in_child() -> None:
    # the writer thread does not survive fork: the child starts a fresh default on first use
    global _default, _lock
    _default = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
