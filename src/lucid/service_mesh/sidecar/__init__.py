"""Seed module path ``lucid.service_mesh.sidecar``: the breaker lives in ``resilience``."""
