"""The message queue's metrics, read from a client's plain counters at scrape time, plus the depth of the
destinations a service consumes (refreshed by that service: a broker round trip never runs in a scrape)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .message_queue import AsyncMessageQueueClient

__all__ = ["MQCollector"]


class MQCollector(Collector):
    def __init__(self, client: AsyncMessageQueueClient) -> None:
        self.client = client
        self.depths: dict[str, int] = {}  # destination -> messages waiting, as last measured

    async def refresh_depth(self, destination: str) -> int:
        self.depths[destination] = await self.client.depth(destination)
        return self.depths[destination]

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self.client
        # every destination this client has used appears in every family (at 0 until it moves)
        destinations = sorted(set(c.sent) | set(c.confirmed) | set(c.received) | set(c.redelivered))
        for name, counts, text in (
                ("lucid_mq_messages_sent", c.sent, "Messages handed to the broker, by destination"),
                ("lucid_mq_messages_confirmed", c.confirmed, "Messages the broker confirmed, by destination"),
                ("lucid_mq_messages_received", c.received, "Messages received, by destination"),
                ("lucid_mq_messages_redelivered", c.redelivered, "Messages received again after a consumer "
                                                                  "failed to settle them, by destination")):
            family = CounterMetricFamily(name, text, labels=["destination"])
            for destination in destinations:
                family.add_metric([destination], counts.get(destination, 0))
            yield family
        depth = GaugeMetricFamily("lucid_mq_queue_depth", "Messages waiting in a destination's queue",
                                  labels=["destination"])
        for destination, n in sorted(dict(self.depths).items()):
            depth.add_metric([destination], n)
        yield depth
