"""Lease keep-alives on a real etcd: one stream for every lease (``backends.kv.etcd_keepalive``), a stream
that breaks under its waiters, and the same over TLS with a password (a token in the stream's metadata)."""

from __future__ import annotations

import asyncio
import os

import pytest

from backends.errors import BackendError, LeaseNotFound
from backends.kv import open_kv
from backends.kv.etcd import EtcdKV

pytestmark = pytest.mark.etcd


async def test_thousands_of_refreshes_share_one_stream(etcd_server) -> None:  # type: ignore[no-untyped-def]
    """Before, each refresh opened its own stream: 10,000 swarm sessions meant 3,000 stream set-ups a
    second, and the coordinator's calls beside them timed out."""
    kv = open_kv(etcd_server.url)
    assert isinstance(kv, EtcdKV)
    await kv.connect()
    try:
        leases = [await kv.grant_lease(20) for _ in range(100)]
        for _ in range(10):
            assert await asyncio.gather(*(kv.refresh_lease(lease) for lease in leases)) == [20] * 100
        assert kv._keepalive is not None and kv._keepalive.opened == 1
    finally:
        await kv.close()


async def test_a_stream_broken_under_its_waiters_fails_them_and_the_next_refresh_opens_another(
        etcd_server) -> None:  # type: ignore[no-untyped-def]
    kv = open_kv(etcd_server.url)
    assert isinstance(kv, EtcdKV)
    await kv.connect()
    try:
        lease = await kv.grant_lease(20)
        assert await kv.refresh_lease(lease) == 20
        stream = kv._keepalive
        assert stream is not None and stream._call is not None
        stream._call.cancel()  # as when the channel drops: reads and writes on the call end at once
        await asyncio.sleep(0.1)
        assert await kv.refresh_lease(lease) == 20  # a new stream, no caller left waiting for ever
        assert stream.opened == 2
        keeper = kv.keep_alive(lease, 0.3)  # the keeper rides it too, and still knows a lease that is gone
        await kv.revoke_lease(lease)
        async with asyncio.timeout(5):
            while keeper.alive:
                await asyncio.sleep(0.05)
        with pytest.raises(LeaseNotFound):
            await kv.refresh_lease(lease)
    finally:
        await kv.close()


async def test_refreshes_waiting_when_the_client_closes_are_told(etcd_server) -> None:  # type: ignore[no-untyped-def]
    kv = open_kv(etcd_server.url)
    await kv.connect()
    lease = await kv.grant_lease(20)
    await kv.refresh_lease(lease)
    assert isinstance(kv, EtcdKV) and kv._keepalive is not None
    stream = kv._keepalive
    waiter = asyncio.ensure_future(stream.refresh(lease, 5.0))
    await asyncio.sleep(0)  # asked, not answered yet (an answer is a round trip away)
    await kv.close()
    with pytest.raises(BackendError):
        await waiter


async def test_keepalives_over_tls_with_a_password(etcd_secure) -> None:  # type: ignore[no-untyped-def]
    url = (f"{etcd_secure.url}?ca={etcd_secure.ca_cert}&cert={etcd_secure.client_cert}"
           f"&key={etcd_secure.client_key}&username=root")
    os.environ["INFRAFABRIC_ETCD_PASSWORD"] = etcd_secure.root_password
    try:
        kv = open_kv(url)
        await kv.connect()
        try:
            leases = [await kv.grant_lease(15) for _ in range(20)]
            assert await asyncio.gather(*(kv.refresh_lease(lease) for lease in leases)) == [15] * 20
        finally:
            await kv.close()
    finally:
        del os.environ["INFRAFABRIC_ETCD_PASSWORD"]


async def test_a_stream_that_answers_nothing_is_dropped_at_the_timeout(etcd_server) -> None:  # type: ignore[no-untyped-def]
    """A member cut off from its leader keeps the stream open and answers nothing: refreshes on it must not
    wait on it for ever (the lease would expire while its keeper waited)."""
    kv = open_kv(etcd_server.url)
    assert isinstance(kv, EtcdKV)
    await kv.connect()
    try:
        lease = await kv.grant_lease(20)
        await kv.refresh_lease(lease)
        stream = kv._keepalive
        assert stream is not None
        stream._tasks[0].cancel()  # the writer stops: requests go nowhere, the stream stays open
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await stream.refresh(lease, 0.3)
        assert await kv.refresh_lease(lease) == 20 and stream.opened == 2
    finally:
        await kv.close()
