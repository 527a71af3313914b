"""The audit log's health for Prometheus: entries this process made durable, entries still waiting, and how
old the newest checkpoint published outside the database is (a log that stopped publishing shows here)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .witness import Witness

__all__ = ["WitnessCollector"]


class WitnessCollector(Collector):
    """Reads the witness at scrape time; ``witness`` is a callable so the process's default log is found
    when it exists (it may be created after the metrics endpoint)."""

    def __init__(self, witness: Callable[[], Witness | None]) -> None:
        self._witness = witness

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        witness = self._witness()
        appends = CounterMetricFamily("if_witness_appends", "Audit entries this process made durable")
        pending = GaugeMetricFamily("if_witness_pending_entries", "Audit entries accepted, not yet durable")
        age = GaugeMetricFamily("if_witness_checkpoint_age_seconds",
                                "Seconds since the newest checkpoint was published outside the database "
                                "(NaN before the first)")
        newest = math.nan
        if witness is not None and not witness.closed:
            appends.add_metric([], witness.committed)
            pending.add_metric([], witness.pending)
            files = [name[len("file "):] for name in witness.publishers if name.startswith("file ")]
            stamps = [os.stat(f).st_mtime for f in files if os.path.isfile(f)]
            if stamps:
                newest = time.time() - max(stamps)
        else:
            appends.add_metric([], 0)
            pending.add_metric([], 0)
        age.add_metric([], newest)
        yield appends
        yield pending
        yield age
