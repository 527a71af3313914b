"""Plane isolation policy (SPEC.md): default deny, enforced on the caller's verified identity."""

from lucid.service_mesh.planes import CLUSTER_PLANE, PLANE_CLUSTERS, PLANES, plane_of
from lucid.service_mesh.policy.plane_policy import PlanePolicy, PolicyDecision

__all__ = ["CLUSTER_PLANE", "PLANE_CLUSTERS", "PLANES", "PlanePolicy", "PolicyDecision", "plane_of"]
