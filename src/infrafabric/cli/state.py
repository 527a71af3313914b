"""Where CLI commands find the coordination state: --kv/--bus, the environment, or a local SQLite file."""

from __future__ import annotations

import os
from pathlib import Path


def default_kv_url() -> str:
    env = os.environ.get("INFRAFABRIC_KV_URL")
    if env:
        return env
    home = Path(os.environ.get("INFRAFABRIC_HOME", Path.home() / ".infrafabric"))
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'coordination.db'}"


def default_bus_url() -> str:
    return os.environ.get("INFRAFABRIC_BUS_URL", "memory://")
