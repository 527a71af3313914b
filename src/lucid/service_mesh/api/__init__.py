"""HTTP API of the service registry (FastAPI, JWT-protected, rate-limited)."""

from lucid.service_mesh.api.app import MeshRateLimits, create_app

__all__ = ["MeshRateLimits", "create_app"]
