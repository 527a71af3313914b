"""Wiring: one object holding the database, services, processor and background tasks of an app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from backends.periodic import Periodic

from ..db import NodeDatabase, SqlNodeRepository, SqlPayoutRepository, SqlPoolRepository, SqlPoOTRepository
from ..db.resource_repo import SqlResourceSampleRepository
from ..payouts import PayoutProcessor, WitnessAuditLogger
from ..poot import PoOTValidator
from ..services import NodeService, PoolService, ResourceMonitor
from ..tron import create_tron_client
from ..tron.base import TwoPhaseTronClient
from ..validators import NodeValidator
from .auth import JWTVerifier
from .observability import NodeMetrics
from .rate_limit import RateLimiter
from .settings import NodeAPISettings

__all__ = ["NodeContainer"]

_log = logging.getLogger("lucid.node.api")


class NodeContainer:
    def __init__(self, settings: NodeAPISettings, *, tron_client: TwoPhaseTronClient | None = None) -> None:
        self.settings = settings
        self.db = NodeDatabase(settings.db_url)
        self.node_repo = SqlNodeRepository(self.db)
        self.pool_repo = SqlPoolRepository(self.db)
        self.poot_repo = SqlPoOTRepository(self.db)
        self.payout_repo = SqlPayoutRepository(self.db)
        self.monitor = ResourceMonitor(SqlResourceSampleRepository(self.db), interval=settings.monitor_interval)
        self.nodes = NodeService(self.node_repo, self.monitor, NodeValidator())
        self.pools = PoolService(self.pool_repo, self.node_repo)
        self.poot = PoOTValidator(self.poot_repo, min_valid_score=settings.min_valid_score)
        if tron_client is None:
            tron_client = (create_tron_client("local", ledger_url=settings.ledger_url)
                           if settings.tron_client == "local" else create_tron_client(settings.tron_client))
        self.tron = tron_client
        self.payouts = PayoutProcessor(self.payout_repo, self.tron, WitnessAuditLogger(),
                                       chunk_size=settings.payout_chunk_size,
                                       confirm_timeout=settings.payout_confirm_timeout)
        self.verifier = JWTVerifier(settings)
        self.limiter = RateLimiter()
        self.metrics = NodeMetrics()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running_batches: set[str] = set()
        self._registration: Any = None
        # batches scheduled for later start when due; the reconciler settles what a batch could not finish
        # (receipts still to come, a chain that did not answer)
        self._scheduler = Periodic(self._run_due_batches, settings.scheduler_interval, name="payout-scheduler",
                                   first_delay=0, logger=_log)
        self._reconciler = Periodic(self._recover, settings.reconcile_interval or 1.0, name="payout-reconciler",
                                    logger=_log)

    async def start(self) -> None:
        await self.db.create_all()
        if self.settings.mesh_kv and self.settings.mesh_advertise:
            from lucid.service_mesh.discovery.health import SelfRegistration

            host, _, port = self.settings.mesh_advertise.rpartition(":")
            self._registration = await SelfRegistration(self.settings.mesh_kv, "node-management", "node-management",
                                                        "ops", host, int(port)).start()
        initialize = getattr(self.tron, "initialize", None)
        if initialize is not None:
            await initialize()
        self.monitor.start()
        if self.settings.recover_on_startup:
            self.spawn(self._recover(), "payout-recovery")
        self._scheduler.start()
        if self.settings.reconcile_interval > 0:
            self._reconciler.start()

    async def stop(self) -> None:
        if self._registration is not None:
            await self._registration.stop()  # leaves discovery at once on a clean stop
        await self._scheduler.stop()
        await self._reconciler.stop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.monitor.close()
        await self.tron.close()
        await self.db.dispose()

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ payout batches
    def run_batch_soon(self, batch_id: str) -> None:
        if batch_id in self._running_batches:
            return
        self._running_batches.add(batch_id)
        self.spawn(self._run_batch(batch_id), f"payout-batch-{batch_id}")

    async def _run_batch(self, batch_id: str) -> None:
        self.metrics.background.inc()
        try:
            await self.payout_repo.update_batch(batch_id, status="processing", successful=0, failed=0)
            await self.payouts.run_batch(batch_id)
            counts = await self.payout_repo.status_counts(batch_id)
            # a cancelled payout (its node was deleted before it was sent) was not paid: it counts as failed
            ok, bad = counts.get("completed", 0), counts.get("failed", 0) + counts.get("cancelled", 0)
            unfinished = counts.get("pending", 0) + counts.get("processing", 0)
            for status, n in counts.items():
                if status in ("completed", "failed", "cancelled"):
                    self.metrics.payouts.labels(status).inc(n)
            status = "processing" if unfinished else ("completed" if bad == 0 else ("failed" if ok == 0 else "partial"))
            await self.payout_repo.update_batch(batch_id, status=status, successful=ok, failed=bad,
                                                done=not unfinished)
        except Exception:
            _log.exception("payout batch %s stopped; recovery resumes it", batch_id)
        finally:
            self._running_batches.discard(batch_id)
            self.metrics.background.dec()

    async def _recover(self) -> None:
        try:
            report = await self.payouts.recover()
            for batch_id in await self.payout_repo.unfinished_batches():
                self.run_batch_soon(batch_id)
            if any(report.values()):
                _log.warning("payout recovery: %s", report)
        except Exception:
            _log.exception("payout recovery failed")

    async def _run_due_batches(self) -> None:
        for batch_id in await self.payout_repo.due_scheduled_batches():
            self.run_batch_soon(batch_id)
