"""Shared helpers for `make bench`: percentiles, rows, and the real engines started for the run."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
from collections.abc import Iterator
from typing import Any


def pct(values: list[float], q: int) -> float:
    """q-th percentile (1..99) of values."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile for q in [0, 1] (0.99 = p99)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def row(name: str, value: float, unit: str, baseline_name: str = "", baseline_value: float | None = None,
        goal: str = "", met: bool | None = None, **extra: Any) -> dict[str, Any]:
    """One benchmark figure beside the raw engine measured in the same run (ratio = value / baseline)."""
    ratio = (value / baseline_value) if baseline_value else None
    return {"name": name, "value": value, "unit": unit, "baseline_name": baseline_name,
            "baseline_value": baseline_value, "ratio": ratio, "goal": goal, "met": met, **extra}


@contextlib.contextmanager
def engines(*names: str) -> Iterator[dict[str, Any]]:
    """Start the named real engines (etcd, nats, postgres, rabbitmq) for one benchmark module, stop them after."""
    from backends.servers.etcd import EtcdServer
    from backends.servers.nats import NatsServer
    from backends.servers.postgres import PostgresServer
    from backends.servers.rabbitmq import RabbitMQServer

    factories = {"etcd": EtcdServer, "nats": NatsServer, "postgres": PostgresServer, "rabbitmq": RabbitMQServer}
    started: dict[str, Any] = {}
    try:
        for name in names:
            started[name] = factories[name]().start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def wait_http(url: str, proc: "subprocess.Popen[Any] | None" = None, timeout: float = 30.0) -> None:
    """Until ``url`` answers anything over HTTP; RuntimeError if ``proc`` exits or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: its process exited")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")
