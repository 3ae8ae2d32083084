"""R1FS figures on the node's `/metrics`, read from the service at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

_COUNTERS = {
    "fetched_blocks": "Blocks pulled from other nodes (each verified)",
    "fetch_retries": "Block requests retried at another provider",
    "corrupt_from_peer": "Blocks a provider served that did not match their CID",
}


class R1fsCollector(Collector):
    def __init__(self, svc: R1fsService) -> None:
        self.svc = svc

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, text in _COUNTERS.items():
            c = CounterMetricFamily(f"r1os_r1fs_{name}", text)
            c.add_metric([], self.svc.counters[name])
            yield c
        pins = GaugeMetricFamily("r1os_r1fs_pins", "Files pinned on this node, by kind", labels=["kind"])
        for kind in ("user", "replica"):
            pins.add_metric([kind], sum(1 for p in self.svc.pins.values() if p.get("kind") == kind))
        yield pins
        pinned = GaugeMetricFamily("r1os_r1fs_pinned_bytes", "File bytes under this node's pins")
        pinned.add_metric([], sum(int(p.get("size", 0)) for p in self.svc.pins.values()))
        yield pinned
        fetching = GaugeMetricFamily("r1os_r1fs_fetches", "Files being fetched now")
        fetching.add_metric([], self.svc.fetcher.running)
        yield fetching
