"""The topology file: which engines to start (or use by URL), which services run here, which swarms exist.

TOML, validated on load into frozen dataclasses: a typo in a service name or a port out of range is a
``TopologyError`` with the offending key, before anything starts.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrafabric.errors import InfraFabricError

__all__ = ["ENGINES", "SERVICES", "EngineConf", "ServiceConf", "SwarmConf", "Topology", "TopologyError",
           "load_topology"]

ENGINES = ("etcd", "nats", "rabbitmq", "postgres", "prometheus")
#: Every service the stack knows, in start order (each one's dependencies come before it).
SERVICES = ("discovery", "coordinator", "governor", "chassis-pool", "model-gateway", "blockchain-core",
            "tron-payment", "api-gateway", "node-management", "console")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "deploy" / "topology.toml"


class TopologyError(InfraFabricError):
    error_code = "STACK_ERR_TOPOLOGY"


@dataclass(frozen=True, slots=True)
class EngineConf:
    name: str
    url: str | None = None  # given: used, not started
    members: int = 1
    port: int = 0


@dataclass(frozen=True, slots=True)
class ServiceConf:
    name: str
    port: int = 0
    enabled: bool = True
    config: Path | None = None  # a service's own configuration file (the model gateway's TOML)


@dataclass(frozen=True, slots=True)
class SwarmConf:
    swarm_id: str
    capabilities: tuple[str, ...]
    cost: float
    budget: float


@dataclass(frozen=True, slots=True)
class Topology:
    host: str = "127.0.0.1"
    engines: dict[str, EngineConf] = field(default_factory=dict)
    services: dict[str, ServiceConf] = field(default_factory=dict)
    swarms: dict[str, SwarmConf] = field(default_factory=dict)

    def service_names(self) -> list[str]:
        """Enabled services plus one worker per swarm, in start order."""
        names = [s for s in SERVICES if s in self.services and self.services[s].enabled]
        return names + [f"swarm-{s}" for s in self.swarms]


def _port(where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise TopologyError(f"{where}: port must be an integer from 0 to 65535")
    return value


def _parse(data: dict[str, Any], base: Path | None = None) -> Topology:
    unknown = set(data) - {"stack", "engines", "services", "swarms"}
    if unknown:
        raise TopologyError(f"unknown section(s) {sorted(unknown)}")
    host = data.get("stack", {}).get("host", "127.0.0.1")
    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", host):
        raise TopologyError("stack.host must be a host name or address")
    engines: dict[str, EngineConf] = {}
    for name, conf in data.get("engines", {}).items():
        if name not in ENGINES:
            raise TopologyError(f"engines.{name}: unknown engine (known: {', '.join(ENGINES)})")
        members = conf.get("members", 1)
        if members not in (1, 3):
            raise TopologyError(f"engines.{name}.members must be 1 or 3")
        url = conf.get("url")
        if url is not None and not isinstance(url, str):
            raise TopologyError(f"engines.{name}.url must be a string")
        engines[name] = EngineConf(name, url, members, _port(f"engines.{name}", conf.get("port", 0)))
    services: dict[str, ServiceConf] = {}
    for name, conf in data.get("services", {}).items():
        if name not in SERVICES:
            raise TopologyError(f"services.{name}: unknown service (known: {', '.join(SERVICES)})")
        config = conf.get("config")
        if config is not None and not isinstance(config, str):
            raise TopologyError(f"services.{name}.config must be a path")
        path = None if config is None else (Path(config) if Path(config).is_absolute() or base is None
                                            else base / config)
        enabled = conf.get("enabled", True)
        if not isinstance(enabled, bool):
            raise TopologyError(f"services.{name}.enabled must be true or false")
        if name == "model-gateway" and enabled and path is None:
            raise TopologyError("services.model-gateway needs config = \"gateway.toml\" (prices, providers)")
        services[name] = ServiceConf(name, _port(f"services.{name}", conf.get("port", 0)), enabled, path)
    swarms: dict[str, SwarmConf] = {}
    for swarm_id, conf in data.get("swarms", {}).items():
        if not _NAME.match(swarm_id):
            raise TopologyError(f"swarms.{swarm_id}: a swarm id is [a-z0-9-], at most 63 characters")
        caps = conf.get("capabilities", [])
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise TopologyError(f"swarms.{swarm_id}.capabilities must be a list of strings")
        try:
            cost, budget = float(conf.get("cost", 1.0)), float(conf.get("budget", 10.0))
        except (TypeError, ValueError):
            raise TopologyError(f"swarms.{swarm_id}: cost and budget must be numbers") from None
        if not (0 < cost < 1e6 and 0 <= budget < 1e9):
            raise TopologyError(f"swarms.{swarm_id}: cost must be positive and budget not negative")
        swarms[swarm_id] = SwarmConf(swarm_id, tuple(caps), cost, budget)
    return Topology(host, engines, services, swarms)


def load_topology(path: str | Path | None = None) -> Topology:
    """The topology in ``path`` (default: deploy/topology.toml, one machine)."""
    source = Path(path) if path is not None else DEFAULT_TOPOLOGY
    try:
        data = tomllib.loads(source.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopologyError(f"cannot read topology {source}: {exc}") from exc
    return _parse(data, source.resolve().parent)


def parse_topology(text: str) -> Topology:
    try:
        return _parse(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"invalid TOML: {exc}") from exc
