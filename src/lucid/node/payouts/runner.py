"""Run or resume a payout batch outside the API (operations tool, and the crash-injection target).

    python -m lucid.node.payouts.runner --db URL --ledger URL --batch-id ID [--requests FILE]

With ``--requests`` the batch is enqueued first (idempotent); then every ``processing`` payout is reconciled
and the batch's unfinished payouts are sent. Progress lines go to stdout so a supervisor can time a kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from ..db import NodeDatabase, SqlPayoutRepository
from ..models.payout_models import PayoutRequest
from ..tron import LocalLedgerTronClient
from .audit import WitnessAuditLogger
from .processor import PayoutProcessor


class _SlowAfterBroadcast(LocalLedgerTronClient):
    """Chaos hook: widen the window between "applied on chain" and "recorded in the ledger", the window
    a crash must not turn into a double payment, so a random kill lands in it often."""

    def __init__(self, url: str, delay: float) -> None:
        super().__init__(url)
        self.delay = delay

    async def broadcast_many(self, prepared):  # type: ignore[no-untyped-def, override]
        results = await super().broadcast_many(prepared)
        await asyncio.sleep(self.delay)
        return results


class _ProgressProcessor(PayoutProcessor):
    async def _run_chunk(self, stored):  # type: ignore[no-untyped-def, override]
        await super()._run_chunk(stored)
        sys.stdout.write(f"chunk {len(stored)}\n")
        sys.stdout.flush()


async def main(argv: list[str] | None = None) -> dict[str, int]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", required=True)
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--batch-id", required=True)
    ap.add_argument("--requests", type=Path)
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--fault-delay-after-broadcast", type=float, default=0.0,
                    help="chaos testing only: sleep this long between chain and ledger")
    args = ap.parse_args(argv)
    db = NodeDatabase(args.db)
    await db.create_all()
    ledger = (_SlowAfterBroadcast(args.ledger, args.fault_delay_after_broadcast)
              if args.fault_delay_after_broadcast > 0 else LocalLedgerTronClient(args.ledger))
    await ledger.initialize()
    repo = SqlPayoutRepository(db)
    proc = _ProgressProcessor(repo, ledger, WitnessAuditLogger(), chunk_size=args.chunk_size)
    try:
        if args.requests:
            reqs = [PayoutRequest.model_validate(r) for r in json.loads(args.requests.read_text())]
            await proc.enqueue_batch(reqs, args.batch_id)
            sys.stdout.write("enqueued\n")
            sys.stdout.flush()
        await proc.recover()
        await proc.run_batch(args.batch_id)
        counts = await repo.status_counts(args.batch_id)
    finally:
        await ledger.close()
        await db.dispose()
    sys.stdout.write(json.dumps(counts) + "\n")
    return counts


if __name__ == "__main__":
    asyncio.run(main())
