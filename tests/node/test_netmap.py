from __future__ import annotations

import pytest

from r1os.node import NetworkMap

HB = {"version": "0.1.0", "uptime": 1.0, "interval": 10.0, "url": "http://x"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_online_until_three_missed_heartbeats() -> None:
    clock = Clock()
    netmap = NetworkMap(missed_limit=3, clock=clock)
    netmap.observe("0xA", HB)
    clock.now += 29.9
    assert netmap.get("0xA").status == "online"  # type: ignore[union-attr]
    clock.now += 0.2
    assert netmap.get("0xA").status == "offline"  # type: ignore[union-attr]
    netmap.observe("0xA", HB)
    assert [p.status for p in netmap.peers()] == ["online"]
    assert netmap.get("0xA").heartbeats == 2  # type: ignore[union-attr]


def test_interval_comes_from_the_peer() -> None:
    clock = Clock()
    netmap = NetworkMap(clock=clock)
    netmap.observe("0xB", {**HB, "interval": 1.0})
    clock.now += 3.5
    assert netmap.online() == []


def test_bad_heartbeat_is_refused() -> None:
    netmap = NetworkMap()
    with pytest.raises(ValueError, match="bad heartbeat"):
        netmap.observe("0xC", {"version": 3})
    assert len(netmap) == 0
