"""IF.coordinator and IF.governor benchmarks, each beside the raw engine measured in the same run.

`python -m benchmarks.bench_coordinator` prints the table; `make bench` collects it with the others.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import uuid
from typing import Any

from benchmarks.common import engines, pct, row
from infrafabric.coordinator import IFCoordinator
from infrafabric.governor import Capability, IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.governor.responder import BlockerResponder

N_LAT = 3000


class Pair:
    """Samples of our call and of the raw engine call, taken alternately so load drift hits both alike."""

    def __init__(self) -> None:
        self.ours: list[float] = []
        self.raw: list[float] = []

    async def run(self, n: int, ours, raw) -> "Pair":  # type: ignore[no-untyped-def]
        settle_heap()
        for i in range(n):
            for fn, out in ((ours, self.ours), (raw, self.raw)) if i % 2 else ((raw, self.raw), (ours, self.ours)):
                t0 = time.perf_counter()
                await fn(i)
                out.append(time.perf_counter() - t0)
        return self


async def queue_echo() -> tuple[Any, asyncio.Task[None]]:
    """A raw cross-task round trip through two asyncio.Queues (the embedded engine's floor)."""
    req: asyncio.Queue[int] = asyncio.Queue()
    rep: asyncio.Queue[int] = asyncio.Queue()

    async def echo() -> None:
        while True:
            rep.put_nowait(await req.get())

    async def roundtrip(i: int) -> None:
        req.put_nowait(i)
        await rep.get()

    return roundtrip, asyncio.create_task(echo())


async def pusher(coord: IFCoordinator) -> Any:
    swarm = f"bench-{uuid.uuid4().hex[:6]}"
    queue = await coord.register_swarm(swarm, [])

    async def push(i: int) -> None:
        await coord.push_task_to_swarm(swarm, {"id": f"t-{i}", "action": "noop"})
        queue.get_nowait()

    return push


async def nats_requester(url: str) -> tuple[Any, Any]:
    import nats

    nc = await nats.connect(url)
    subject = f"raw.{uuid.uuid4().hex[:6]}"

    async def reply(msg: Any) -> None:
        await msg.respond(b"ok")

    await nc.subscribe(subject, cb=reply)
    await nc.flush()

    async def request(i: int) -> None:
        await nc.request(subject, b'{"id":"t-0","action":"noop"}', timeout=2)

    return request, nc


async def claimer(coord: IFCoordinator) -> Any:
    run = uuid.uuid4().hex[:6]
    await coord.claim_task("bench-swarm", f"warm-{run}")  # the session lease is granted once per swarm

    async def claim(i: int) -> None:
        assert await coord.claim_task("bench-swarm", f"c-{run}-{i}")

    return claim


async def etcd_txner(client: Any) -> Any:
    from etcd3aio.kv import KVService

    run = uuid.uuid4().hex[:6]

    async def txn(i: int) -> None:
        key = f"/raw/{run}/{i}/owner"
        await client.kv.txn([KVService.txn_compare_version(key, 0)], [KVService.txn_op_put(key, b"bench")],
                            [KVService.txn_op_get(key)], timeout=5, max_attempts=1)

    return txn


async def push_and_claim_throughput(coord: IFCoordinator, n: int, concurrency: int) -> float:
    swarm = f"tp-{uuid.uuid4().hex[:6]}"
    queue = await coord.register_swarm(swarm, [])
    run = uuid.uuid4().hex[:6]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await coord.push_task_to_swarm(swarm, {"id": f"tp-{run}-{i}"})
            task = queue.get_nowait()
            assert await coord.claim_task(swarm, task["id"])

    t0 = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(n)])
    return n / (time.perf_counter() - t0)


def settle_heap() -> None:
    """Collect, then freeze what is left, so earlier sections' objects do not slow either side's GC."""
    gc.collect()
    gc.freeze()


async def batched_throughput(coord: IFCoordinator, n: int, batch: int) -> float:
    """Push in batches (one message each) and claim in batches (one CAS per task, sent together)."""
    settle_heap()
    swarm = f"bt-{uuid.uuid4().hex[:6]}"
    queue = await coord.register_swarm(swarm, [])
    run = uuid.uuid4().hex[:6]
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        await coord.push_tasks_to_swarm(swarm, [{"id": f"bt-{run}-{i}"} for i in range(start, start + batch)])
        ids = [queue.get_nowait()["id"] for _ in range(batch)]
        assert all(await coord.claim_tasks(swarm, ids))
    return n / (time.perf_counter() - t0)


async def raw_engine_throughput(etcd_endpoint: str, nats_url: str, n: int, concurrency: int) -> float:
    """The same work on the raw clients: a NATS request/reply plus an etcd CAS txn per task."""
    import nats
    from etcd3aio import Etcd3Client
    from etcd3aio.kv import KVService

    nc = await nats.connect(nats_url)
    subject = f"rawtp.{uuid.uuid4().hex[:6]}"

    async def reply(msg: Any) -> None:
        await msg.respond(b"ok")

    await nc.subscribe(subject, cb=reply, pending_msgs_limit=1_000_000)
    await nc.flush()
    sem = asyncio.Semaphore(concurrency)
    run = uuid.uuid4().hex[:6]
    async with Etcd3Client([etcd_endpoint]) as client:
        assert client.kv is not None
        kv = client.kv

        async def one(i: int) -> None:
            async with sem:
                await nc.request(subject, b'{"id":"x"}', timeout=5)
                key = f"/rawtp/{run}/{i}"
                await kv.txn([KVService.txn_compare_version(key, 0)], [KVService.txn_op_put(key, b"s")],
                             [KVService.txn_op_get(key)], timeout=5, max_attempts=1)

        t0 = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(n)])
        elapsed = time.perf_counter() - t0
    await nc.drain()
    return n / elapsed


async def raw_embedded_throughput(n: int) -> float:
    """Raw in-process floor: queue put/get plus a dict compare-and-set per task."""
    settle_heap()
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    owners: dict[str, str] = {}
    t0 = time.perf_counter()
    for i in range(n):
        queue.put_nowait({"id": f"t-{i}"})
        task = queue.get_nowait()
        if owners.get(task["id"]) is None:
            owners[task["id"]] = "s"
    return n / (time.perf_counter() - t0)


async def register_many(coord: IFCoordinator, n: int) -> float:
    """Seconds to register ``n`` swarms at once; they are deregistered afterwards (not timed), so the rows
    measured after this one do not run beside ``n`` sessions' lease keep-alives."""
    prefix = uuid.uuid4().hex[:6]
    names = [f"r{prefix}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    await asyncio.gather(*[coord.register_swarm(name, [f"cap-{i % 10}"]) for i, name in enumerate(names)])
    took = time.perf_counter() - t0
    for start in range(0, n, 500):
        await asyncio.gather(*(coord.deregister_swarm(name) for name in names[start:start + 500]))
    return took


async def raw_register_many(etcd_endpoint: str | None, n: int) -> float:
    """Floor: the same number of etcd puts (or dict inserts + queues embedded)."""
    if etcd_endpoint is None:
        t0 = time.perf_counter()
        d = {f"s-{i}": asyncio.Queue() for i in range(n)}
        assert len(d) == n
        return time.perf_counter() - t0
    from etcd3aio import Etcd3Client

    prefix = uuid.uuid4().hex[:6]
    async with Etcd3Client([etcd_endpoint]) as client:
        assert client.kv is not None
        kv = client.kv
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(256)

        async def put(i: int) -> None:
            async with sem:
                await kv.put(f"/rawreg/{prefix}/{i}", b"[\"cap\"]", timeout=30)

        await asyncio.gather(*[put(i) for i in range(n)])
        return time.perf_counter() - t0


def bench_find_qualified(n_swarms: int = 10_000, queries: int = 2000) -> tuple[list[float], list[float]]:
    governor = IFGovernor(audit=None, cost_sink=None)
    profiles = []
    for i in range(n_swarms):
        p = SwarmProfile(f"s-{i}", [Capability(f"cap-{i % 10}"), Capability(f"area-{i % 7}")],
                         1.0 + (i % 13), 0.5 + (i % 50) / 100, 10.0)
        governor.register_swarm(p)
        profiles.append(p)
    single, multi = [], []
    for q in range(queries):
        t0 = time.perf_counter()
        governor.find_qualified_swarm([Capability(f"cap-{q % 10}")], max_cost=5.0)
        single.append(time.perf_counter() - t0)
    for q in range(queries // 4):
        t0 = time.perf_counter()
        governor.find_qualified_swarm([Capability(f"cap-{q % 10}"), Capability(f"area-{q % 7}")], max_cost=5.0)
        multi.append(time.perf_counter() - t0)
    brute = []
    for q in range(50):  # the naive scan the index replaces
        t0 = time.perf_counter()
        want = {f"cap-{q % 10}"}
        best = max(((1.0 * p.reputation_score / p.cost_per_hour, p.swarm_id) for p in profiles
                    if want & set(p.capabilities) and p.cost_per_hour <= 5.0), default=None)
        assert best is not None
        brute.append(time.perf_counter() - t0)
    return single + multi, brute


async def gang_up(coord: IFCoordinator, rounds: int) -> list[float]:
    governor = IFGovernor(coord, ResourcePolicy(), cost_sink=None)
    queues = {}
    tag = uuid.uuid4().hex[:4]
    sessions = [(f"s1-{tag}", ["integration:ndi"]), (f"s2-{tag}", ["integration:webrtc"]),
                (f"s4-{tag}", ["integration:sip"]), (f"s6-{tag}", ["architecture:patterns"])]
    for swarm_id, caps in sessions:
        queues[swarm_id] = await coord.register_swarm(swarm_id, caps)
        governor.register_swarm(SwarmProfile(swarm_id, caps, 2.0, 1.0, 1e9))
    responder = await BlockerResponder(governor).start()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await coord.detect_blocker(f"s4-{tag}", {"required_capabilities": ["integration:sip", "integration:ndi",
                                                                             "integration:webrtc"]})
        assignment = await asyncio.wait_for(responder.assignments.get(), 5)
        for helper in assignment["team"]:
            await asyncio.wait_for(queues[helper].get(), 5)
        out.append(time.perf_counter() - t0)
    await responder.stop()
    await governor.close()
    return out


async def raw_gang_up_floor(etcd_endpoint: str, nats_url: str, rounds: int) -> list[float]:
    """The engine work a gang-up needs at least: persist the blocker (etcd put), then 3 NATS round trips."""
    import nats
    from etcd3aio import Etcd3Client

    nc = await nats.connect(nats_url)
    subject = f"rawgang.{uuid.uuid4().hex[:6]}"

    async def reply(msg: Any) -> None:
        await msg.respond(b"ok")

    await nc.subscribe(subject, cb=reply)
    await nc.flush()
    out = []
    async with Etcd3Client([etcd_endpoint]) as client:
        assert client.kv is not None
        for i in range(rounds):
            t0 = time.perf_counter()
            await client.kv.put(f"/rawgang/{i}", b"{}", timeout=5)
            for _ in range(3):
                await nc.request(subject, b"{}", timeout=5)
            out.append(time.perf_counter() - t0)
    await nc.drain()
    return out


def memory_per_swarm(n: int = 5000) -> float:
    async def go() -> float:
        coord = IFCoordinator(audit=None)
        governor = IFGovernor(coord, audit=None, cost_sink=None)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            await coord.register_swarm(f"m-{i}", ["cap-1", "cap-2"])
            governor.register_swarm(SwarmProfile(f"m-{i}", ["cap-1", "cap-2"], 2.0, 1.0, 10.0))
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        await coord.close()
        return used / n

    return asyncio.run(go())


class SwarmAPIProcess:
    """``infrafabric coordinator serve --listen`` in its own process (as deployed), with a credential authority."""

    def __init__(self, kv_url: str, bus_url: str) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        from backends.servers.ports import free_port
        from infrafabric.coordinator.credentials import PUBLIC_FILE, CredentialAuthority

        self.dir = tempfile.mkdtemp(prefix="bench-swarm-api-")
        self.authority = CredentialAuthority.load_or_create(f"{self.dir}/authority")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "INFRAFABRIC_WITNESS_URL": "memory://", "INFRAFABRIC_HOME": self.dir}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from infrafabric.cli.main import app; app()", "coordinator", "serve",
             "--kv", kv_url, "--bus", bus_url, "--listen", f"127.0.0.1:{port}",
             "--authority-key", f"{self.dir}/authority/{PUBLIC_FILE}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout is not None
        while "swarm API on" not in (line := self.proc.stdout.readline()):
            if not line:
                raise RuntimeError("coordinator serve did not start")

    def stop(self) -> None:
        import shutil

        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


async def swarm_throughput(platform: IFCoordinator, swarm: Any, n: int, batch: int) -> float:
    """Tasks pushed by the platform in batches, received by a swarm, claimed and completed in batches."""
    settle_heap()
    run = uuid.uuid4().hex[:6]
    done = 0

    async def consume() -> None:
        nonlocal done
        while done < n:
            tasks = [await swarm.next_task(30)]
            while len(tasks) < batch and not swarm.tasks.empty():
                tasks.append(swarm.tasks.get_nowait())
            ids = [t["id"] for t in tasks]
            claims = await swarm.claim_many(ids)
            assert all(claims)
            if hasattr(swarm, "complete_many"):
                outcomes = await swarm.complete_many({t: None for t in ids})
                assert all(isinstance(v, int) for v in outcomes.values())
            else:
                await asyncio.gather(*(swarm.complete(c.task_id, None, c) for c in claims))
            done += len(ids)

    t0 = time.perf_counter()
    consumer = asyncio.create_task(consume())
    for start in range(0, n, batch):
        await platform.push_tasks_to_swarm(swarm.swarm_id, [{"id": f"st-{run}-{i}"} for i in range(start, start + batch)])
    await consumer
    return n / (time.perf_counter() - t0)


async def gateway_rows(etcd_url: str, bus_url: str) -> list[dict[str, Any]]:
    """The cost of a swarm working through the coordinator service instead of on the engines directly."""
    from infrafabric.coordinator.client import SwarmClient
    from infrafabric.coordinator.remote import RemoteSwarmClient

    rows: list[dict[str, Any]] = []
    api = SwarmAPIProcess(etcd_url, bus_url)
    try:
        platform = IFCoordinator(kv_url=etcd_url, bus_url=bus_url, audit=None)
        async with platform:
            remote = await RemoteSwarmClient(api.url, [], credential=api.authority.issue(
                "swarm", f"gw-{uuid.uuid4().hex[:6]}")).start()
            direct = await SwarmClient(f"direct-{uuid.uuid4().hex[:6]}", [], kv_url=etcd_url, bus_url=bus_url).start()
            from infrafabric.witness import Witness

            witness = Witness("memory://", writer="thread")  # both sides audit into a memory witness, as
            direct.core._audit = witness.log  # the service does with INFRAFABRIC_WITNESS_URL=memory://
            run = uuid.uuid4().hex[:6]

            async def claim_remote(i: int) -> None:
                assert await remote.claim(f"gr-{run}-{i}")

            async def claim_direct(i: int) -> None:
                assert await direct.claim(f"gd-{run}-{i}")

            pair = await Pair().run(3000, claim_remote, claim_direct)
            rows.append(row("claim p99 through the coordinator service (etcd)", us(pair.ours, 99), "µs",
                            "the same claim on etcd directly, p99", us(pair.raw, 99), "<= 1.3x direct",
                            us(pair.ours, 99) <= 1.3 * us(pair.raw, 99), p50=us(pair.ours, 50),
                            raw_p50=us(pair.raw, 50)))
            tp_direct = await swarm_throughput(platform, direct, 20_000, 500)
            tp_remote = await swarm_throughput(platform, remote, 20_000, 500)
            rows.append(row("tasks/s pushed, claimed and completed in batches of 500 through the service",
                            tp_remote, "tasks/s", "the same swarm on etcd + NATS directly", tp_direct,
                            ">= 1/1.3 of direct", tp_remote >= tp_direct / 1.3))
            await remote.stop()
            await direct.stop()
            witness.close()
    finally:
        api.stop()
    return rows


def us(values: list[float], q: int) -> float:
    return pct(values, q) * 1e6


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    async def embedded() -> None:
        coord = IFCoordinator(audit=None)
        async with coord:
            roundtrip, echo = await queue_echo()
            pair = await Pair().run(N_LAT, await pusher(coord), roundtrip)
            echo.cancel()
            push, raw = pair.ours, pair.raw
            p99, raw99 = us(push, 99), us(raw, 99)
            rows.append(row("push p99, embedded", p99, "µs", "asyncio.Queue round trip p99", raw99,
                            "< 100 µs and <= 5x raw", p99 < 100 and p99 <= 5 * raw99, p50=us(push, 50)))
            raw_tp = await raw_embedded_throughput(100_000)
            tp = await push_and_claim_throughput(coord, 30_000, 1000)
            rows.append(row("tasks/s pushed and claimed one by one, embedded", tp, "tasks/s",
                            "queue + dict CAS", raw_tp, "reported"))
            tp = await batched_throughput(coord, 200_000, 1000)
            rows.append(row("tasks/s pushed and claimed in batches of 1000, embedded", tp, "tasks/s",
                            "queue + dict CAS", raw_tp, ">= 200k/s", tp >= 200_000))
            reg = await register_many(coord, 10_000)
            raw_reg = await raw_register_many(None, 10_000)
            rows.append(row("10,000 swarms registered, embedded", reg, "s", "dict + queues", raw_reg, "< 1 s",
                            reg < 1.0))
            gang = await gang_up(coord, 200)
            rows.append(row("gang-up detect -> team told, embedded, p99", us(gang, 99) / 1000, "ms", "", None,
                            "< 5 ms", us(gang, 99) / 1000 < 5, p50=us(gang, 50) / 1000))
        coord_audited = IFCoordinator()
        async with coord_audited:
            tp_audited = await push_and_claim_throughput(coord_audited, 5_000, 500)
        rows.append(row("tasks/s pushed and claimed, embedded, every claim audited", tp_audited, "tasks/s",
                        "queue + dict CAS", raw_tp, "reported"))

    asyncio.run(embedded())
    lat, brute = bench_find_qualified()
    rows.append(row("find_qualified_swarm p99 at 10,000 swarms", us(lat, 99), "µs", "linear scan p99",
                    us(brute, 99), "< 1000 µs", us(lat, 99) < 1000, p50=us(lat, 50)))

    with engines("etcd", "nats") as servers:
        etcd, nats_server = servers["etcd"], servers["nats"]

        async def distributed() -> None:
            coord = IFCoordinator(kv_url=etcd.url, bus_url=nats_server.url, audit=None)
            async with coord:
                request, nc = await nats_requester(nats_server.url)
                pair = await Pair().run(N_LAT, await pusher(coord), request)
                await nc.drain()
                push, raw = pair.ours, pair.raw
                rows.append(row("push p99 over NATS", us(push, 99), "µs", "raw nats-py request p99", us(raw, 99),
                                "<= 1.5x raw", us(push, 99) <= 1.5 * us(raw, 99), p50=us(push, 50),
                                raw_p50=us(raw, 50)))
                from etcd3aio import Etcd3Client

                async with Etcd3Client([etcd.endpoint]) as raw_client:
                    pair = await Pair().run(4000, await claimer(coord), await etcd_txner(raw_client))
                claim, raw_c = pair.ours, pair.raw
                rows.append(row("claim p99 on etcd", us(claim, 99), "µs", "raw etcd3aio txn p99", us(raw_c, 99),
                                "<= 1.2x raw", us(claim, 99) <= 1.2 * us(raw_c, 99), p50=us(claim, 50),
                                raw_p50=us(raw_c, 50)))
                raw_tp = await raw_engine_throughput(etcd.endpoint, nats_server.url, 5000, 64)
                tp = await push_and_claim_throughput(coord, 5000, 64)
                rows.append(row("tasks/s pushed and claimed, etcd + NATS", tp, "tasks/s",
                                "raw NATS request + etcd txn", raw_tp, ">= 0.7x raw", tp >= 0.7 * raw_tp))
                tp = await batched_throughput(coord, 20_000, 500)
                rows.append(row("tasks/s pushed and claimed in batches of 500, etcd + NATS", tp, "tasks/s",
                                "raw NATS request + etcd txn", raw_tp, "reported"))
                reg = await register_many(coord, 10_000)
                raw_reg = await raw_register_many(etcd.endpoint, 10_000)
                rows.append(row("10,000 swarms registered, etcd + NATS", reg, "s", "raw etcd puts", raw_reg,
                                "< 10 s", reg < 10))
                rows.extend(await gateway_rows(etcd.url, nats_server.url))
                gang = await gang_up(coord, 200)
                raw_g = await raw_gang_up_floor(etcd.endpoint, nats_server.url, 200)
                rows.append(row("gang-up detect -> team told, etcd + NATS, p99", us(gang, 99) / 1000, "ms",
                                "etcd put + 3 NATS round trips p99", us(raw_g, 99) / 1000, "< 20 ms",
                                us(gang, 99) / 1000 < 20, p50=us(gang, 50) / 1000))

        asyncio.run(distributed())
    rows.append(row("memory per registered swarm (coordinator + governor)", memory_per_swarm(), "bytes", "", None,
                    "reported"))
    return rows


def main() -> None:
    from benchmarks.run import print_rows

    print_rows("coordinator", run())


if __name__ == "__main__":
    main()
