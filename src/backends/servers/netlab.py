"""Real network partitions on one Linux machine: a namespace per node on a bridge, links cut with routes.

Each node is a network namespace (``ip netns``) with one veth leg on a bridge the lab creates in the root
namespace. The bridge also has an address, so the test process (the observer, in the root namespace)
reaches every node. A partition between two nodes is a pair of blackhole routes, one in each namespace:
packets between them are dropped in both directions, and they still reach everyone else. ``delay`` and
``loss`` are ``tc netem`` on the node's leg. Processes run in a node with ``ip netns exec``. Only
namespaces, links and addresses the lab made are touched, and ``close`` removes them all. It needs root
(CAP_NET_ADMIN). SIGSTOP-style pauses stay with the process launchers. This is for partitions only.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from dataclasses import dataclass, field

from .errors import ServerError

__all__ = ["NetLab", "Node", "netlab_available"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=15)  # noqa: S603
    if check and res.returncode != 0:
        raise ServerError(f"ip {' '.join(args)}: {res.stderr.strip()}", error_code="NETLAB_FAILED")
    return res


def netlab_available() -> bool:
    """Whether this process may create network namespaces (root with CAP_NET_ADMIN and iproute2)."""
    if os.geteuid() != 0:
        return False
    name = f"ifprobe{secrets.token_hex(3)}"
    if _ip("netns", "add", name, check=False).returncode != 0:
        return False
    _ip("netns", "del", name, check=False)
    return True


@dataclass
class Node:
    name: str
    netns: str
    ip: str
    leg: str  # the veth end inside the namespace
    cut_from: set[str] = field(default_factory=set)

    def exec_prefix(self) -> list[str]:
        """Prefix an argv with this to run it inside the node's namespace."""
        return ["ip", "netns", "exec", self.netns]


class NetLab:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        # a /24 in 10.0.0.0/8 picked at random (two labs at once do not collide in practice; checked below)
        octets = secrets.randbelow(200) + 20, secrets.randbelow(250) + 1
        self.subnet = ipaddress.ip_network(f"10.{octets[0]}.{octets[1]}.0/24")
        self.bridge = f"ifbr{tag}"
        self.gateway = str(self.subnet.network_address + 1)
        self.nodes: dict[str, Node] = {}
        self._next = 10
        self._netem: bool | None = None
        existing = _ip("-o", "addr", "show").stdout
        if str(self.subnet.network_address)[:-1] in existing:
            raise ServerError(f"subnet {self.subnet} is in use here", error_code="NETLAB_FAILED")
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except ServerError:
            self.close()
            raise

    def add_node(self, name: str) -> Node:
        if name in self.nodes:
            raise ValueError(f"node {name} exists")
        index = len(self.nodes)
        netns, host_leg, leg = f"if{self.tag}-{name}"[:32], f"ifh{self.tag}{index}", f"ifn{self.tag}{index}"
        ip = str(self.subnet.network_address + self._next)
        self._next += 1
        _ip("netns", "add", netns)
        node = Node(name, netns, ip, leg)
        self.nodes[name] = node
        _ip("link", "add", host_leg, "type", "veth", "peer", "name", leg)
        _ip("link", "set", leg, "netns", netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", leg)
        _ip("-n", netns, "link", "set", leg, "up")
        _ip("link", "set", host_leg, "master", self.bridge)
        _ip("link", "set", host_leg, "up")
        return node

    # ------------------------------------------------------------------ faults
    def cut(self, a: str, b: str) -> None:
        """Drop every packet between nodes a and b (both directions); both still reach everyone else."""
        na, nb = self.nodes[a], self.nodes[b]
        if b in na.cut_from:
            return
        _ip("-n", na.netns, "route", "add", "blackhole", f"{nb.ip}/32")
        _ip("-n", nb.netns, "route", "add", "blackhole", f"{na.ip}/32")
        na.cut_from.add(b)
        nb.cut_from.add(a)

    def heal(self, a: str, b: str) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        if b not in na.cut_from:
            return
        _ip("-n", na.netns, "route", "del", "blackhole", f"{nb.ip}/32", check=False)
        _ip("-n", nb.netns, "route", "del", "blackhole", f"{na.ip}/32", check=False)
        na.cut_from.discard(b)
        nb.cut_from.discard(a)

    def isolate(self, name: str) -> None:
        """Cut one node from every other node (the observer in the root namespace still reaches it)."""
        for other in self.nodes:
            if other != name:
                self.cut(name, other)

    def heal_all(self) -> None:
        for a, node in self.nodes.items():
            for b in list(node.cut_from):
                self.heal(a, b)

    def netem_available(self) -> bool:
        """Whether this kernel has ``tc netem`` (sch_netem); some container kernels do not."""
        if self._netem is None:
            node = next(iter(self.nodes.values()), None)
            if node is None:
                return False
            try:
                self.netem(node.name, delay_ms=1)
                self.netem(node.name)
                self._netem = True
            except ServerError:
                self._netem = False
        return self._netem

    def netem(self, name: str, *, delay_ms: int = 0, loss_percent: float = 0.0) -> None:
        """Delay and/or drop a share of a node's packets (tc netem on its leg); zeros remove it."""
        node = self.nodes[name]
        tc = ["ip", "netns", "exec", node.netns, "tc", "qdisc"]
        if not delay_ms and not loss_percent:
            subprocess.run([*tc, "del", "dev", node.leg, "root"], capture_output=True, check=False)  # noqa: S603
            return
        args = [*tc, "replace", "dev", node.leg, "root", "netem"]
        if delay_ms:
            args += ["delay", f"{delay_ms}ms"]
        if loss_percent:
            args += ["loss", f"{loss_percent}%"]
        res = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
        if res.returncode != 0:
            raise ServerError(f"tc netem on {name}: {res.stderr.strip()}", error_code="NETLAB_FAILED")

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        for node in self.nodes.values():
            _ip("netns", "del", node.netns, check=False)  # takes its veth pair with it
        self.nodes.clear()
        _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> "NetLab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
