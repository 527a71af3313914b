"""HTTP API of the service registry (FastAPI, JWT-protected)."""

from lucid.service_mesh.api.app import create_app

__all__ = ["create_app"]
