"""Free TCP ports on 127.0.0.1 for the real-engine launchers."""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_ports", "port_is_free"]


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct free ports; the sockets stay bound until all are chosen so none repeats."""
    if n < 1:
        raise ValueError("n must be >= 1")
    socks: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in ports:
                ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """Return one free port on 127.0.0.1."""
    return free_ports(1)[0]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (a connect is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0
