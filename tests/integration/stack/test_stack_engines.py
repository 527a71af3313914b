"""The stack's engines on a state directory: a three-member etcd from the topology, and a resumed start
finds every engine's data where it left it (same ports, same keys, same databases)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from backends.kv import open_kv
from stack.engines import start_engines
from stack.state import StackState
from stack.topology import parse_topology


@pytest.fixture()
def state_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="ifstack-engines-"))
    os.chmod(base, 0o711)  # PostgreSQL runs as its own user under root
    yield base / "state"
    shutil.rmtree(base, ignore_errors=True)


def test_three_etcd_members_and_a_resumed_start_keeps_every_engines_data(state_dir: Path) -> None:
    topology = parse_topology("[engines.etcd]\nmembers = 3\n")
    state = StackState(state_dir)
    engines = start_engines(topology, state, log=lambda _: None)
    try:
        parts = urlsplit(engines.kv_url)
        assert parts.scheme == "etcds"  # the deployed etcd speaks TLS only, clients known by certificate
        endpoints = parts.netloc.split(",")
        assert len(endpoints) == 3
        etcd = [p for p in engines.started if p.name == "etcd"]
        members = etcd[0].etcdctl("member", "list").strip().splitlines()  # the cluster's own view
        assert len(etcd) == 3 and len(members) == 3 and all(", started, " in m for m in members), members

        async def write() -> None:
            async with open_kv(engines.kv_url) as kv:
                await kv.put("/stack-test/key", b"kept")

        asyncio.run(write())
        first = (engines.kv_url, engines.bus_url, engines.amqp_url, engines.node_db_url)
    finally:
        engines.stop()

    again = start_engines(topology, StackState(state_dir), log=lambda _: None)
    try:
        assert (again.kv_url, again.bus_url, again.amqp_url, again.node_db_url) == first  # same ports

        async def read() -> bytes | None:
            async with open_kv(again.kv_url) as kv:
                row = await kv.get("/stack-test/key")
                return None if row is None else row.value

        assert asyncio.run(read()) == b"kept"
        assert (state_dir / "secrets" / "pgpass").stat().st_mode & 0o777 == 0o600
    finally:
        again.stop()
