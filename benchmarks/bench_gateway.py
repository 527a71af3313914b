"""IF.gateway: what metering costs a model call, and how fast the ledger reserves and settles.

- Added latency: the same call to a local provider (a separate process answering OpenAI's shapes) straight
  and through ``infrafabric gateway serve`` (its own process, ledger on a real etcd), alternating, one at a
  time; p50/p99 of each and the difference. Streaming and not.
- Throughput: the same calls with 32 in flight, direct vs through the gateway.
- Ledger: reserve + settle cycles per second with 64 in flight over 64 swarms, on the embedded store and
  on etcd, beside etcd3aio doing the same reads and compare-and-swap transactions by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import engines, pct, row, wait_http

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = """
import sys, uvicorn
sys.path.insert(0, sys.argv[2])
from tests.fixtures.llm_upstream import create_upstream
uvicorn.run(create_upstream([]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
"""


async def _latencies(direct: str, gateway: str, key: str, n: int, stream: bool) -> tuple[list[float], list[float]]:
    from tests.fixtures.llm_upstream import OPENAI_KEY

    body = {"model": "gpt-4o-mini", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "benchmark prompt " * 8}]}
    ours: list[float] = []
    raw: list[float] = []
    async with httpx.AsyncClient(timeout=30) as http:
        async def call(url: str, auth: str) -> float:
            t0 = time.perf_counter()
            if stream:
                async with http.stream("POST", url, json=body, headers={"Authorization": f"Bearer {auth}"}) as r:
                    async for _ in r.aiter_raw():
                        pass
                    assert r.status_code == 200
            else:
                r = await http.post(url, json=body, headers={"Authorization": f"Bearer {auth}"})
                assert r.status_code == 200, r.text
            return time.perf_counter() - t0

        for _ in range(50):  # warm both paths
            await call(f"{direct}/v1/chat/completions", OPENAI_KEY)
            await call(f"{gateway}/v1/chat/completions", key)
        for _ in range(n):
            raw.append(await call(f"{direct}/v1/chat/completions", OPENAI_KEY))
            ours.append(await call(f"{gateway}/v1/chat/completions", key))
    return ours, raw


async def _throughput(url: str, key: str, n: int, concurrency: int) -> float:
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "benchmark " * 8}]}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as http:
        async def one() -> None:
            async with sem:
                r = await http.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 200, r.text

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - t0)


async def _ledger_rate(kv_url: str, n: int, concurrency: int) -> float:
    from backends.kv import open_kv
    from infrafabric.gateway.reservations import ReservationLedger

    async with open_kv(kv_url) as kv:
        swarms = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(concurrency)]
        for s in swarms:
            await kv.put(f"/governor/budgets/{s}", json.dumps({"budget": "1000000", "spent": "0"}))
        ledger = ReservationLedger(kv)
        lease = await kv.grant_lease(60)

        async def worker(s: str) -> None:
            for i in range(n // concurrency):
                hold = await ledger.reserve(s, f"{s}-{i}", Decimal("0.01"), lease)
                await ledger.settle(hold, Decimal("0.005"))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in swarms))
        return (n // concurrency * concurrency) / (time.perf_counter() - t0)


async def _raw_etcd_rates(endpoint: str, n: int, concurrency: int) -> tuple[float, float]:
    """etcd3aio by hand: (single compare-and-put transactions/s, and the reserve + settle pattern by hand/s:
    a read of three keys then a guarded write of two; a read of three then a guarded write of three)."""
    from etcd3aio import Etcd3Client
    from etcd3aio.kv import KVService as T

    async with Etcd3Client([endpoint]) as client:
        kv = client.kv
        assert kv is not None
        keys = [f"/rawbench/{uuid.uuid4().hex[:8]}" for _ in range(concurrency)]

        async def single(k: str) -> None:
            for i in range(n // concurrency):
                await kv.txn([T.txn_compare_version(k, i)], [T.txn_op_put(k, b"x")], timeout=5, max_attempts=1)

        t0 = time.perf_counter()
        await asyncio.gather(*(single(k) for k in keys))
        txn_rate = (n // concurrency * concurrency) / (time.perf_counter() - t0)

        async def pattern(k: str) -> None:
            names = [f"{k}/{x}" for x in "abc"]
            versions = [0, 0, 0]
            for _ in range(n // concurrency):
                for writes in (2, 3):
                    await kv.txn([], [T.txn_op_get(name) for name in names], timeout=5, max_attempts=1)
                    res = await kv.txn([T.txn_compare_version(name, v) for name, v in zip(names, versions)],
                                       [T.txn_op_put(name, b"x") for name in names[:writes]], timeout=5,
                                       max_attempts=1)
                    assert res.succeeded
                    versions = [v + (1 if j < writes else 0) for j, v in enumerate(versions)]

        t0 = time.perf_counter()
        await asyncio.gather(*(pattern(k) for k in keys))
        return txn_rate, (n // concurrency * concurrency) / (time.perf_counter() - t0)


def run() -> list[dict[str, Any]]:
    from backends.servers.ports import free_port
    from infrafabric.coordinator.credentials import PUBLIC_FILE, CredentialAuthority
    from tests.fixtures.llm_upstream import ANTHROPIC_KEY, OPENAI_KEY
    from tests.chaos.test_gateway_replicas import _register, _toml
    from tests.integration.infrafabric.gateway.test_gateway import gateway_config

    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    with engines("etcd") as started:
        etcd = started["etcd"]
        embedded = asyncio.run(_ledger_rate("memory://", 4000, 64))
        on_etcd = asyncio.run(_ledger_rate(etcd.url, 4000, 64))
        raw_txn, raw_pattern = asyncio.run(_raw_etcd_rates(etcd.endpoint, 4000, 64))
        rows.append(row("gateway ledger reserve+settle/s on etcd (64 in flight)", on_etcd, "cycles/s",
                        "etcd3aio: the same reads and CAS writes by hand", raw_pattern, ">= 1/1.2 of raw",
                        on_etcd >= raw_pattern / 1.2, raw_single_txn_per_s=raw_txn))
        rows.append(row("gateway ledger reserve+settle/s embedded (64 in flight)", embedded, "cycles/s",
                        "etcd3aio single CAS txn/s", raw_txn, "reported"))

        up_port, gw_port = free_port(), free_port()
        upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port), str(ROOT)],
                                    env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"})
        gateway = None
        try:
            direct = f"http://127.0.0.1:{up_port}"
            wait_http(direct, upstream)
            config = gateway_config(direct)
            config.pop("ledger", None)  # the production defaults
            (tmp / "gateway.toml").write_text(_toml(config))
            authority = CredentialAuthority.load_or_create(tmp / "authority")
            swarm = f"bench-{uuid.uuid4().hex[:8]}"
            asyncio.run(_register(etcd.url, swarm, 1_000_000.0))
            gateway = subprocess.Popen(
                [sys.executable, "-c", "from infrafabric.cli.main import app; app()", "gateway", "serve",
                 "--config", str(tmp / "gateway.toml"), "--authority-key", str(tmp / "authority" / PUBLIC_FILE),
                 "--kv", etcd.url, "--listen", f"127.0.0.1:{gw_port}"],
                env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "T_OPENAI": OPENAI_KEY, "T_ANTHROPIC": ANTHROPIC_KEY,
                     "INFRAFABRIC_WITNESS_URL": "memory://", "INFRAFABRIC_HOME": str(tmp)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            through = f"http://127.0.0.1:{gw_port}"
            wait_http(through, gateway)
            key = authority.issue("swarm", swarm, 3600)
            for stream in (False, True):
                ours, raw = asyncio.run(_latencies(direct, through, key, 1000, stream))
                kind = "streaming" if stream else "non-streaming"
                added = (pct(ours, 99) - pct(raw, 99)) * 1e3
                rows.append(row(f"gateway added latency p99, {kind} (etcd ledger)", added, "ms",
                                f"direct to the provider p99 {pct(raw, 99) * 1e3:.2f} ms", None, "<= 1 ms added",
                                added <= 1.0, p50_added_ms=(pct(ours, 50) - pct(raw, 50)) * 1e3,
                                through_p99_ms=pct(ours, 99) * 1e3))
            tp_raw = asyncio.run(_throughput(direct, OPENAI_KEY, 2000, 32))
            tp = asyncio.run(_throughput(through, key, 2000, 32))
            rows.append(row("gateway calls/s (32 in flight, etcd ledger)", tp, "calls/s", "direct to the provider",
                            tp_raw, ">= 0.8x direct", tp >= 0.8 * tp_raw))
        finally:
            for proc in (gateway, upstream):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
    return rows


def main() -> None:
    for r in run():
        print(json.dumps(r))


if __name__ == "__main__":
    main()
