"""FastAPI application of node management (port 8083)."""

from .app import create_app  # noqa: F401
from .settings import NodeAPISettings  # noqa: F401
