"""Prometheus metrics read straight from the node's parts at scrape time (no double bookkeeping)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from r1os.node._daemon import Node


def _by_label(
    name: str, help_text: str, label: str, counts: Iterable[tuple[str, float]]
) -> CounterMetricFamily:
    """A counter family with one sample per `(label value, count)`, in the order given."""
    family = CounterMetricFamily(name, help_text, labels=[label])
    for value, n in counts:
        family.add_metric([value], n)
    return family


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        node = self.node
        accepted = CounterMetricFamily("r1os_wire_accepted", "Messages that passed verification")
        accepted.add_metric([], node.verifier.accepted)
        yield accepted
        yield _by_label(
            "r1os_wire_rejected", "Messages dropped by the wire layer, by cause", "cause",
            sorted(node.verifier.rejections.items()),
        )  # fmt: skip
        own = CounterMetricFamily(
            "r1os_wire_own_dropped",
            "Messages naming this node as sender (its own, echoed back by the broker, or forged as it),"
            " dropped without a signature check",
        )
        own.add_metric([], node.verifier.own_dropped)
        yield own
        peers = GaugeMetricFamily("r1os_peers", "Known peers by status", labels=["status"])
        all_peers = node.netmap.peers()
        for status in ("online", "offline"):
            peers.add_metric([status], sum(1 for p in all_peers if p.status == status))
        yield peers
        stats = node.transport.stats
        for field, help_text in [
            ("published", "Messages handed to the broker"),
            ("received", "Messages received from the broker"),
            ("dropped_offline", "Messages dropped from the full offline queue"),
            ("reconnects", "Broker reconnections"),
            ("handler_errors", "Transport handler failures"),
        ]:
            c = CounterMetricFamily(f"r1os_transport_{field}", help_text)
            c.add_metric([], getattr(stats, field))
            yield c
        queued = GaugeMetricFamily("r1os_transport_queued", "Messages waiting while offline")
        queued.add_metric([], stats.queued)
        yield queued
        connected = GaugeMetricFamily("r1os_transport_connected", "1 while connected to the broker")
        connected.add_metric([], 1.0 if node.transport.connected else 0.0)
        yield connected
        hb = CounterMetricFamily("r1os_heartbeats_sent", "Heartbeats this node sent")
        hb.add_metric([], node.heartbeats_sent)
        yield hb
        errors = CounterMetricFamily("r1os_handler_errors", "Message handlers that raised")
        errors.add_metric([], node.handler_errors)
        yield errors
        too_large = node.body_limits.refused if node.body_limits else 0
        yield _by_label(
            "r1os_http_refused", "HTTP connections closed or requests refused by a bound, by cause", "cause",
            [*sorted(node.http_limits.refused.items()), ("too_large", too_large)],
        )  # fmt: skip
        if node.map_follower is not None:
            yield _by_label(
                "r1os_netmap_messages",
                "Network map messages an oracle published, by what this node did with them",
                "outcome", sorted(node.map_follower.outcomes.items()),
            )  # fmt: skip
        if (compact := node.compact_receiver) is not None:
            yield _by_label(
                "r1os_compact_heartbeats",
                "Compact heartbeats heard: expanded into the whole one held, or unmatched (one asked for)",
                "outcome", [("expanded", compact.expanded), ("unmatched", compact.unmatched)],
            )  # fmt: skip
        up = GaugeMetricFamily("r1os_uptime_seconds", "Seconds since the node started")
        up.add_metric([], node.uptime)
        yield up
