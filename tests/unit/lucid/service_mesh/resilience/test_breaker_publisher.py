"""Breaker states published to the mesh store: what an operator sees of breakers that live in other
processes. A trip shows within a round, a dead process's record goes with its lease, a lost lease is
granted again, and records written by a hostile or broken service are read as data, never trusted."""

from __future__ import annotations

import asyncio
import json

import pytest

from backends.kv import open_kv
from lucid.service_mesh.resilience import BreakerPublisher, BreakerRegistry, read_breakers
from lucid.service_mesh.resilience.published import breakers_key


def trip(registry: BreakerRegistry, destination: str, failures: int) -> None:
    def failing() -> None:
        raise ConnectionError("down")

    for _ in range(failures):
        with pytest.raises(ConnectionError):
            registry.get(destination).call(failing)


async def test_a_trip_is_published_and_a_graceful_stop_removes_the_record() -> None:
    async with open_kv("memory://") as kv:
        registry = BreakerRegistry(failure_threshold=2, recovery_timeout=60)
        registry.get("blockchain-core")  # used, still closed
        publisher = BreakerPublisher(kv, registry, service="api-gateway", service_id="gw-1", interval=0.02).start()
        seen = {}
        for _ in range(100):
            seen = await read_breakers(kv)
            if "gw-1" in seen:
                break
            await asyncio.sleep(0.02)
        assert seen["gw-1"].service == "api-gateway" and seen["gw-1"].breakers == {"blockchain-core": "closed"}
        trip(registry, "tron-payment", 2)
        for _ in range(100):
            seen = await read_breakers(kv)
            if seen["gw-1"].breakers.get("tron-payment") == "open":
                break
            await asyncio.sleep(0.02)
        assert seen["gw-1"].breakers == {"blockchain-core": "closed", "tron-payment": "open"}
        await publisher.stop()
        assert await read_breakers(kv) == {}


async def test_a_killed_process_record_leaves_with_its_lease_and_a_lost_lease_is_granted_again() -> None:
    async with open_kv("memory://") as kv:
        registry = BreakerRegistry(failure_threshold=1)
        trip(registry, "tron-payment", 1)
        publisher = BreakerPublisher(kv, registry, service="api-gateway", service_id="gw-2", ttl=1)
        await publisher.publish()
        assert (await read_breakers(kv))["gw-2"].breakers == {"tron-payment": "open"}
        # the store lost the lease (an etcd restart): the next round grants a new one and writes again
        lease = publisher._lease
        assert lease is not None
        await kv.revoke_lease(lease)
        assert await read_breakers(kv) == {}
        publisher._refreshed = 0.0  # due for a refresh now, not in ttl/3 seconds
        await publisher.publish()
        assert (await read_breakers(kv))["gw-2"].breakers == {"tron-payment": "open"}
        # killed: nobody refreshes the lease any more, so the record vanishes within its TTL
        deadline = asyncio.get_running_loop().time() + 5
        while await read_breakers(kv):
            assert asyncio.get_running_loop().time() < deadline, "a dead process's breakers outlived its lease"
            await asyncio.sleep(0.1)


async def test_records_from_a_hostile_or_broken_service_are_skipped_or_shown_as_unknown() -> None:
    async with open_kv("memory://") as kv:
        base = breakers_key("")
        await kv.put(base + "not-json", b"{")
        await kv.put(base + "a-list", json.dumps(["open"]))
        await kv.put(base + "no-table", json.dumps({"service": "x", "breakers": "open"}))
        await kv.put(base + "huge", json.dumps({"breakers": {"d": "open"}, "pad": "x" * 70_000}))
        await kv.put(base + "nested/id", json.dumps({"breakers": {"d": "open"}}))
        await kv.put(base + "odd", json.dumps({"service": "<b>x</b>" * 100, "updated_at": "Infinity",
                                               "breakers": {"<script>": "exploded", "y" * 500: "open",
                                                            "ok": "half-open", "n": None}}))
        await kv.put(base + "inf", b'{"breakers": {}, "updated_at": Infinity}')
        seen = await read_breakers(kv)
        assert set(seen) == {"odd", "inf"}
        odd = seen["odd"]
        assert odd.breakers["<script>"] == "unknown" and odd.breakers["ok"] == "half-open"
        assert odd.breakers["n"] == "unknown" and odd.breakers["y" * 200] == "open"
        assert len(odd.service) == 200 and odd.updated_at == 0.0 and seen["inf"].updated_at == 0.0
