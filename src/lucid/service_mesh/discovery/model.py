"""Registration records and their validation (the API's rules from 01-api-specification).

A cluster of the Lucid plane map (``planes.CLUSTER_PLANE``) may be registered only in its own plane
(LUCID_ERR_1203, as every plane violation): discovery filters by the declared plane, so a wallet service
declared in ops would otherwise be handed to ops callers as one of theirs. Clusters outside the map
(applications of their own) may declare any plane."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from backends.jsonsafe import json_depth_exceeds
from lucid.service_mesh.errors import InvalidServiceConfigError, SecurityPolicyViolation
from lucid.service_mesh.planes import CLUSTER_PLANE, PLANES

NAME_RE = re.compile(r"^[a-z0-9-]{3,50}\Z")
CLUSTER_RE = re.compile(r"^[a-z0-9-]{1,63}\Z")
SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?\Z")
HOST_RE = re.compile(r"^[A-Za-z0-9.:-]{1,253}\Z")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
PROTOCOLS = ("http", "https", "grpc", "grpcs")
CHECK_STATUSES = ("passing", "warning", "critical")
MAX_METADATA_DEPTH = 32  # deep enough for any real metadata; far from the recursion limit
STATUS_MAP = {"passing": "healthy", "warning": "degraded", "critical": "unhealthy"}


def parse_duration(value: str | int | float, what: str) -> float:
    """'30s', '2m', '500ms' or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", value.strip())
        if not m:
            raise InvalidServiceConfigError(f"{what}: bad duration {value!r}")
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    else:
        raise InvalidServiceConfigError(f"{what}: bad duration {value!r}")
    if seconds <= 0:
        raise InvalidServiceConfigError(f"{what} must be positive")
    return seconds


@dataclass
class Registration:
    """What one registered instance declares (stored as JSON under services/<name>/<id>)."""

    service_id: str
    service_name: str
    cluster: str
    plane: str
    host: str
    port: int
    version: str
    protocol: str = "https"
    health_check_path: str | None = "/health"
    health_check_interval: float = 30.0
    health_check_timeout: float = 10.0
    ttl: float = 30.0
    deregister_critical_after: float = 90.0
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    registered_at: str = ""

    def validate(self) -> "Registration":
        problems = []
        if not isinstance(self.service_name, str) or not NAME_RE.match(self.service_name):
            problems.append("service_name must match ^[a-z0-9-]+$ with 3-50 characters")
        if not isinstance(self.cluster, str) or not CLUSTER_RE.match(self.cluster):
            problems.append("cluster must match ^[a-z0-9-]+$")
        if self.plane not in PLANES:
            problems.append(f"plane must be one of {sorted(PLANES)}")
        if not isinstance(self.host, str) or not HOST_RE.match(self.host):
            problems.append("host is not a host name or address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            problems.append("port must be an integer 1-65535")
        if not isinstance(self.version, str) or not SEMVER_RE.match(self.version):
            problems.append("version must be semver (e.g. 1.0.0)")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol must be one of {PROTOCOLS}")
        if not ID_RE.match(self.service_id or ""):
            problems.append("service_id has invalid characters")
        if self.health_check_path is not None and not (
            isinstance(self.health_check_path, str) and self.health_check_path.startswith("/")
            and len(self.health_check_path) <= 256
        ):
            problems.append("health_check_path must start with '/'")
        if not 1 <= self.ttl <= 3600:
            problems.append("ttl must be within 1-3600 s")
        if not 1 <= self.deregister_critical_after <= 86400:
            problems.append("deregister_critical_after must be within 1-86400 s")
        if not 0.1 <= self.health_check_interval <= 300:
            problems.append("health_check_interval must be within 0.1-300 s")
        if not 0.1 <= self.health_check_timeout <= 60:
            problems.append("health_check_timeout must be within 0.1-60 s")
        if json_depth_exceeds(self.metadata, MAX_METADATA_DEPTH):
            problems.append(f"metadata nested deeper than {MAX_METADATA_DEPTH} levels")
        else:  # only then is json.dumps safe from the recursion limit
            try:
                if len(json.dumps(self.metadata)) > 16384:
                    problems.append("metadata larger than 16 KiB")
            except (TypeError, ValueError):
                problems.append("metadata must be JSON-serialisable")
        if problems:
            raise InvalidServiceConfigError("; ".join(problems), details={"problems": problems})
        home = CLUSTER_PLANE.get(self.cluster)
        if home is not None and home != self.plane:
            # a Lucid cluster lives in its own plane only: discovery filtered by plane (and the plane policy
            # callers apply to what it returns) must never list a wallet or chain service as ops
            raise InvalidServiceConfigError(
                f"cluster {self.cluster!r} belongs to plane {home!r}, not {self.plane!r}",
                error_code=SecurityPolicyViolation.error_code,
                details={"cluster": self.cluster, "plane": self.plane, "expected_plane": home})
        return self

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Registration":
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class HealthRecord:
    """The latest check result of one instance (stored under health/<id> on the TTL lease)."""

    status: str
    output: str
    updated_at: str
    source: str = "ttl"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "HealthRecord":
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Instance:
    """A registration joined with its health: what discovery hands out."""

    reg: Registration
    health: HealthRecord | None

    @property
    def check_status(self) -> str:
        """passing / warning / critical; a missing health record means the TTL ran out (critical)."""
        return self.health.status if self.health is not None else "critical"

    @property
    def status(self) -> str:
        return STATUS_MAP[self.check_status]

    def to_discovery_dict(self) -> dict[str, Any]:
        r = self.reg
        return {
            "serviceId": r.service_id,
            "serviceName": r.service_name,
            "cluster": r.cluster,
            "plane": r.plane,
            "endpoint": {"host": r.host, "port": r.port, "protocol": r.protocol},
            "version": r.version,
            "status": self.status,
            "checkStatus": self.check_status,
            "lastHealthCheck": self.health.updated_at if self.health else None,
            "metadata": r.metadata,
            "tags": r.tags,
        }

    def to_resolve_dict(self) -> dict[str, Any]:
        r = self.reg
        return {
            "serviceId": r.service_id,
            "serviceName": r.service_name,
            "endpoint": {"host": r.host, "port": r.port, "protocol": r.protocol},
            "version": r.version,
            "cluster": r.cluster,
            "plane": r.plane,
            "status": self.status,
        }
