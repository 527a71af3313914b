"""Planes and the clusters that belong to them (SPEC.md, "Planes")."""

from __future__ import annotations

from typing import Final

PLANE_CLUSTERS: Final[dict[str, frozenset[str]]] = {
    "ops": frozenset(
        {
            "api-gateway",
            "admin-interface",
            "session-management",
            "rdp-services",
            "node-management",
            "authentication",
        }
    ),
    "chain": frozenset({"blockchain-core", "storage-database"}),
    "wallet": frozenset({"tron-payment"}),
}
PLANES: Final[frozenset[str]] = frozenset(PLANE_CLUSTERS)
CLUSTER_PLANE: Final[dict[str, str]] = {c: p for p, cs in PLANE_CLUSTERS.items() for c in cs}


def plane_of(cluster: str) -> str | None:
    """The plane a known cluster belongs to, or None for a cluster outside the Lucid map."""
    return CLUSTER_PLANE.get(cluster)
