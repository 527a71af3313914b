"""One contract for every key-value implementation (embedded memory, SQLite, real etcd)."""

from __future__ import annotations

import asyncio

import pytest

from backends.errors import InvalidBackendURL, LeaseNotFound
from backends.kv import Compare, Delete, Get, KeyValueStore, Put, SyncKV, open_kv


async def test_put_get_delete_roundtrip(kv: KeyValueStore, ns: str) -> None:
    assert await kv.get(ns + "a") is None
    r1 = await kv.put(ns + "a", b"one")
    first = await kv.get(ns + "a")
    assert first is not None and first.value == b"one" and first.version == 1
    assert first.create_revision == first.mod_revision == r1
    r2 = await kv.put(ns + "a", "two")
    second = await kv.get(ns + "a")
    assert second is not None and second.value == b"two" and second.version == 2
    assert second.create_revision == r1 and second.mod_revision == r2 > r1
    assert await kv.delete(ns + "a") is True
    assert await kv.delete(ns + "a") is False
    assert await kv.get(ns + "a") is None


async def test_prefix_get_and_delete_touch_only_the_prefix(kv: KeyValueStore, ns: str) -> None:
    for key in ("b/2", "b/1", "b/3", "bb", "c"):
        await kv.put(ns + key, key)
    got = await kv.get_prefix(ns + "b/")
    assert [x.key for x in got] == [ns + "b/1", ns + "b/2", ns + "b/3"]
    assert await kv.delete_prefix(ns + "b/") == 3
    assert await kv.get_prefix(ns + "b/") == []
    assert (await kv.get(ns + "bb")) is not None and (await kv.get(ns + "c")) is not None


async def test_txn_compare_and_swap(kv: KeyValueStore, ns: str) -> None:
    key = ns + "owner"
    await kv.put(key, "unclaimed")
    won = await kv.txn([Compare.value(key, "unclaimed")], [Put(key, "s1")], [Get(key)])
    assert won.succeeded and won.results == [None]
    lost = await kv.txn([Compare.value(key, "unclaimed")], [Put(key, "s2")], [Get(key)])
    assert not lost.succeeded
    current = lost.results[0]
    assert isinstance(current, list) and current[0].value == b"s1"
    assert (await kv.get(key)).value == b"s1"  # type: ignore[union-attr]


async def test_txn_missing_and_revision_compares(kv: KeyValueStore, ns: str) -> None:
    key = ns + "k"
    created = await kv.txn([Compare.missing(key)], [Put(key, "v1")])
    assert created.succeeded
    again = await kv.txn([Compare.missing(key)], [Put(key, "v2")])
    assert not again.succeeded
    meta = await kv.get(key)
    assert meta is not None
    stale = await kv.txn([Compare.mod_revision(key, meta.mod_revision - 1)], [Put(key, "x")])
    assert not stale.succeeded
    fresh = await kv.txn([Compare.mod_revision(key, meta.mod_revision)], [Put(key, "v3")])
    assert fresh.succeeded and fresh.revision > meta.mod_revision
    assert (await kv.get(key)).value == b"v3"  # type: ignore[union-attr]
    assert (await kv.txn([Compare.version(key, 2)], [Delete(key)])).succeeded
    assert await kv.get(key) is None


async def test_txn_is_atomic_one_revision_for_all_ops(kv: KeyValueStore, ns: str) -> None:
    res = await kv.txn([], [Put(ns + "x", "1"), Put(ns + "y", "2"), Delete(ns + "none")])
    x, y = await kv.get(ns + "x"), await kv.get(ns + "y")
    assert x is not None and y is not None
    assert x.mod_revision == y.mod_revision == res.revision


async def test_concurrent_cas_has_exactly_one_winner(kv: KeyValueStore, ns: str) -> None:
    key = ns + "race"
    await kv.put(key, "unclaimed")
    results = await asyncio.gather(
        *[kv.txn([Compare.value(key, "unclaimed")], [Put(key, f"s{i}")]) for i in range(20)]
    )
    assert sum(r.succeeded for r in results) == 1


async def test_lease_expiry_deletes_keys(kv: KeyValueStore, ns: str) -> None:
    lease = await kv.grant_lease(1)
    await kv.put(ns + "leased", "v", lease=lease)
    meta = await kv.get(ns + "leased")
    assert meta is not None and meta.lease == lease
    deadline = asyncio.get_running_loop().time() + 6
    while await kv.get(ns + "leased") is not None:
        assert asyncio.get_running_loop().time() < deadline, "leased key outlived its TTL"
        await asyncio.sleep(0.1)
    with pytest.raises(LeaseNotFound):
        await kv.refresh_lease(lease)


async def test_lease_keepalive_keeps_keys_and_revoke_drops_them(kv: KeyValueStore, ns: str) -> None:
    lease = await kv.grant_lease(1)
    await kv.put(ns + "kept", "v", lease=lease)
    keeper = kv.keep_alive(lease, 1)
    await asyncio.sleep(2.2)  # longer than the TTL: only the keeper's refreshes keep the key
    assert await kv.get(ns + "kept") is not None
    assert keeper.alive
    await keeper.stop()
    await kv.revoke_lease(lease)
    assert await kv.get(ns + "kept") is None


async def test_lease_remaining_counts_down_refreshes_and_ends_with_the_lease(kv: KeyValueStore, ns: str) -> None:
    """What the console shows as a claim's lease expiry: seconds left, back to the TTL on refresh, None once gone."""
    lease = await kv.grant_lease(5)
    await kv.put(ns + "claimed", "v", lease=lease)
    left = await kv.lease_remaining(lease)
    assert left is not None and 3.0 <= left <= 5.0
    await asyncio.sleep(1.1)
    later = await kv.lease_remaining(lease)
    assert later is not None and later < 5.0 and later <= left
    await kv.refresh_lease(lease)
    refreshed = await kv.lease_remaining(lease)
    assert refreshed is not None and refreshed >= 4.0 and refreshed > later - 0.5
    await kv.revoke_lease(lease)
    assert await kv.lease_remaining(lease) is None
    assert await kv.lease_remaining(987654321) is None


async def test_put_with_unknown_lease_is_refused_and_writes_nothing(kv: KeyValueStore, ns: str) -> None:
    with pytest.raises(LeaseNotFound):
        await kv.put(ns + "orphan", "v", lease=987654321)
    assert await kv.get(ns + "orphan") is None


async def test_watch_sees_puts_and_deletes_in_order(kv: KeyValueStore, ns: str) -> None:
    async with kv.watch(ns, prefix=True) as watch:
        await kv.put(ns + "w1", "a")
        await kv.put(ns + "w2", "b")
        await kv.delete(ns + "w1")
        await kv.put(ns + "other-prefix-is-still-inside", "c")
        events = []
        it = watch.__aiter__()
        for _ in range(4):
            events.append(await asyncio.wait_for(it.__anext__(), 5))
    assert [(e.type, e.key.removeprefix(ns)) for e in events] == [
        ("put", "w1"),
        ("put", "w2"),
        ("delete", "w1"),
        ("put", "other-prefix-is-still-inside"),
    ]
    assert events[0].value == b"a"
    revs = [e.mod_revision for e in events]
    assert revs == sorted(revs)


async def test_closing_the_store_ends_its_open_watches(kv_url: str, ns: str) -> None:
    store = open_kv(kv_url)
    await store.connect()
    watch = await store.watch(ns, prefix=True).__aenter__()  # left open on purpose
    events = watch.__aiter__()
    await store.put(ns + "before-close", "v")
    first = await asyncio.wait_for(events.__anext__(), 5)
    assert first.key == ns + "before-close"
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(events.__anext__(), 5)
    await watch.cancel()  # idempotent after the close


async def test_watch_from_past_revision_replays(kv: KeyValueStore, ns: str) -> None:
    rev = await kv.put(ns + "r", "1")
    await kv.put(ns + "r", "2")
    async with kv.watch(ns + "r", start_revision=rev) as watch:
        it = watch.__aiter__()
        got = [await asyncio.wait_for(it.__anext__(), 5) for _ in range(2)]
    assert [e.value for e in got] == [b"1", b"2"]


async def test_status_reports_healthy(kv: KeyValueStore) -> None:
    status = await kv.status()
    assert status["healthy"] is True
    assert status["backend"] in ("memory", "sqlite", "etcd")
    assert isinstance(status["revision"], int)


async def test_sync_facade_works_inside_a_running_loop(kv: KeyValueStore, ns: str) -> None:
    facade = SyncKV(kv)
    try:
        facade.put(ns + "s", "unclaimed")
        value, meta = facade.get(ns + "s")
        assert value == b"unclaimed" and meta is not None
        assert facade.replace(ns + "s", "unclaimed", "me") is True
        assert facade.replace(ns + "s", "unclaimed", "you") is False
        assert (await kv.get(ns + "s")).value == b"me"  # type: ignore[union-attr]
        assert facade.get(ns + "missing") == (None, None)
        assert facade.delete_prefix(ns) >= 1
        assert facade.status()["healthy"] is True
    finally:
        facade.close()


def test_bad_urls_are_refused() -> None:
    for url in ("", "nothing", "redis://x", "etcd://", "etcd://host-without-port", "sqlite://"):
        with pytest.raises(InvalidBackendURL):
            open_kv(url)


async def test_sqlite_store_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from backends.kv.memory import drop_shared_core

    url = f"sqlite:///{tmp_path}/state.db"
    store = open_kv(url)
    await store.put("/k", "v1")
    await store.txn([Compare.value("/k", "v1")], [Put("/k", "v2"), Put("/k2", "x")])
    lease = await store.grant_lease(60)
    await store.put("/leased", "l", lease=lease)
    rev = (await store.status())["revision"]
    drop_shared_core(f"sqlite:{tmp_path}/state.db")  # the process "restarts": memory is gone
    reopened = open_kv(url)
    assert (await reopened.get("/k")).value == b"v2"  # type: ignore[union-attr]
    assert (await reopened.get("/k2")) is not None
    assert (await reopened.get("/leased")).lease == lease  # type: ignore[union-attr]
    assert (await reopened.status())["revision"] == rev
    assert await reopened.refresh_lease(lease) == 60
    next_lease = await reopened.grant_lease(5)
    assert next_lease != lease
    drop_shared_core(f"sqlite:{tmp_path}/state.db")


async def test_txn_many_runs_independent_transactions(kv: KeyValueStore, ns: str) -> None:
    await kv.put(ns + "taken", "someone")
    results = await kv.txn_many([
        ([Compare.missing(ns + "free")], [Put(ns + "free", "me")], [Get(ns + "free")]),
        ([Compare.missing(ns + "taken")], [Put(ns + "taken", "me")], [Get(ns + "taken")]),
    ])
    assert [r.succeeded for r in results] == [True, False]
    assert results[1].results[0][0].value == b"someone"  # type: ignore[index]
    assert (await kv.get(ns + "free")).value == b"me"  # type: ignore[union-attr]


async def test_create_many_is_put_if_absent_per_item(kv: KeyValueStore, ns: str) -> None:
    await kv.put(ns + "b", "old")
    out = await kv.create_many([(ns + "a", b"1", 0), (ns + "b", b"2", 0), (ns + "c", b"3", 0)])
    assert [created for created, _ in out] == [True, False, True]
    assert out[1][1] is not None and out[1][1].value == b"old"
    a = await kv.get(ns + "a")
    assert a is not None and out[0][1] is not None and out[0][1].mod_revision == a.mod_revision
    with pytest.raises(LeaseNotFound):
        await kv.create_many([(ns + "d", b"4", 0), (ns + "e", b"5", 424242)])
    if kv.backend != "etcd":  # embedded: the batch is checked before anything is written
        assert await kv.get(ns + "d") is None


async def test_watch_replay_includes_bulk_creates(kv: KeyValueStore, ns: str) -> None:
    out = await kv.create_many([(ns + "r1", b"1", 0), (ns + "r2", b"2", 0)])
    first_rev = min(kv_.mod_revision for _, kv_ in out)  # type: ignore[union-attr]  # etcd may order them either way
    await kv.delete(ns + "r1")
    async with kv.watch(ns, prefix=True, start_revision=first_rev) as watch:
        it = watch.__aiter__()
        got = [await asyncio.wait_for(it.__anext__(), 5) for _ in range(3)]
    seen = [(e.type, e.key.removeprefix(ns), e.value) for e in got]
    assert sorted(seen[:2]) == [("put", "r1", b"1"), ("put", "r2", b"2")]
    assert seen[2] == ("delete", "r1", b"")


async def test_read_only_txns_read_one_snapshot_and_decide_compares(kv: KeyValueStore, ns: str) -> None:
    """Transactions that only read (done as ranges at one revision on etcd, where a cancelled read-only
    Txn can crash a 3.5.1 member) answer exactly as a Txn: one revision, compares, both branches."""
    from backends.kv import Compare, Get

    first = await kv.put(f"{ns}/a", b"1")
    await kv.put(f"{ns}/dir/x", b"x")
    await kv.put(f"{ns}/dir/y", b"y")
    res = await kv.txn([], [Get(f"{ns}/a"), Get(f"{ns}/dir/", prefix=True), Get(f"{ns}/missing")])
    assert res.succeeded and res.revision >= first
    a, listing, missing = res.results
    assert [x.value for x in a] == [b"1"] and [x.key for x in listing] == [f"{ns}/dir/x", f"{ns}/dir/y"]
    assert missing == []
    yes = await kv.txn([Compare.value(f"{ns}/a", b"1"), Compare.missing(f"{ns}/missing"),
                        Compare.mod_revision(f"{ns}/a", first)], [Get(f"{ns}/dir/x")], [Get(f"{ns}/dir/y")])
    assert yes.succeeded and [x.value for x in yes.results[0]] == [b"x"]
    no = await kv.txn([Compare.value(f"{ns}/missing", b"1")], [Get(f"{ns}/dir/x")],
                      [Get(f"{ns}/dir/y"), Get(f"{ns}/a")])
    assert not no.succeeded and [[x.value for x in r] for r in no.results] == [[b"y"], [b"1"]]
    for op, operand, expected in (("<", first + 1, True), (">", first, False), ("!=", first, False)):
        r = await kv.txn([Compare(f"{ns}/a", "mod", op, operand)], [Get(f"{ns}/a")], [])
        assert r.succeeded is expected
    empty = await kv.txn([Compare.version(f"{ns}/missing", 0, ">")], [], [])
    assert not empty.succeeded and empty.results == []


async def test_many_leases_refreshed_at_once_each_get_their_own_answer(kv: KeyValueStore, ns: str) -> None:
    """A coordinator refreshes thousands of session leases: every refresh answers for its own lease (etcd
    carries them all on one stream), and an unknown lease among them fails alone."""
    leases = [await kv.grant_lease(30 + i % 7) for i in range(300)]
    answers = await asyncio.gather(*(kv.refresh_lease(lease) for lease in leases),
                                   kv.refresh_lease(987654321), return_exceptions=True)
    assert [a for a in answers[:-1]] == [30 + i % 7 for i in range(300)]
    assert isinstance(answers[-1], LeaseNotFound)
    for lease in leases:
        await kv.revoke_lease(lease)
