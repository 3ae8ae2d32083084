"""Compact heartbeats (oracle mode): the pure sender and receiver, then real nodes over the in-memory
transport (an edge sends whole heartbeats only on change, the oracle expands compact ones into the
same availability and map, a restarted oracle asks for a whole one and gets it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from r1os.identity import NodeKey, save_keystore
from r1os.node import Heartbeat, Node, NodeConfig
from r1os.node._compact import FULL_EVERY, CompactReceiver, CompactSender
from r1os.node._netmap_sync import fingerprint
from r1os.transport import MemoryHub, MemoryTransport
from r1os.wire import EnvelopeSigner
from tests.conftest import async_wait_for

EDGE = "0x" + "e" * 40


def _payload(uptime: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "uptime": uptime,
        "interval": 10.0,
        "url": "http://127.0.0.1:20001",
        "services": ["cstore", "r1fs", "deeploy"],
        "resources": {
            "cpu_cores": 2,
            "cpu_load": 0.5,
            "memory_total_mb": 4096,
            "memory_available_mb": 900,
            "disk_total_gb": 50.0,
            "disk_free_gb": 20.0,
        },  # fmt: skip
        "services_info": {"deeploy": {"runtimes": ["process"], "replicas": []}},
        **extra,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_whole_on_change_and_every_full_every_beats_compact_in_between() -> None:
    sender = CompactSender()
    kinds = []
    for i in range(FULL_EVERY * 2):
        kind, body = sender.next(_payload(uptime=10.0 * i, resources={"cpu_cores": 2, "cpu_load": i / 10}))
        kinds.append(kind)
    assert kinds[0] == "hb" and kinds[FULL_EVERY] == "hb"
    assert kinds.count("hb") == 2 and kinds.count("hbc") == 2 * FULL_EVERY - 2
    kind, body = sender.next(_payload(services=["cstore"]))  # what it offers changed: whole at once
    assert kind == "hb" and body["fp"] == fingerprint(Heartbeat.model_validate(body))
    kind, body = sender.next(_payload(uptime=99.0, services=["cstore"]))
    assert kind == "hbc" and set(body) == {"uptime", "fp", "resources"}
    assert set(body["resources"]) == {"cpu_load", "memory_available_mb", "disk_free_gb"}
    sender.ask()
    assert sender.next(_payload(services=["cstore"]))[0] == "hb"
    # the compact one is under half the whole one (and the envelope around each is the same)
    whole = sender.next(_payload(services=["cstore", "r1fs"]))[1]
    compact = sender.next(_payload(services=["cstore", "r1fs"]))[1]
    assert len(orjson.dumps(compact)) * 2 < len(orjson.dumps(whole))


def test_the_receiver_expands_only_what_it_holds() -> None:
    clock = Clock()
    sender, receiver = CompactSender(), CompactReceiver(10.0, clock=clock)
    _, whole = sender.next(_payload())
    _, compact = sender.next(_payload(uptime=20.0, resources={**_payload()["resources"], "cpu_load": 1.5}))
    known = Heartbeat.model_validate(whole)
    assert receiver.expand(EDGE, known, compact) is None  # no whole heartbeat heard yet: ask for one
    assert receiver.should_ask(EDGE) and not receiver.should_ask(EDGE)  # once per interval
    clock.now += 10
    assert receiver.should_ask(EDGE)
    receiver.whole(EDGE, whole)
    out = receiver.expand(EDGE, known, compact)
    assert out is not None and out["uptime"] == 20.0 and out["resources"]["cpu_load"] == 1.5
    assert out["services_info"] == whole["services_info"] and out["url"] == whole["url"]
    assert receiver.expand(EDGE, None, compact) is None  # the map lost the peer: ask again
    # a whole heartbeat without a fingerprint (an inbox reply) keeps the one held
    receiver.whole(EDGE, {**_payload(), "reply": True})
    assert receiver.expand(EDGE, known, compact) is not None
    # another sender's fingerprint does not stand for this one's heartbeat
    assert receiver.expand("0x" + "f" * 40, known, compact) is None


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"uptime": 1.0},
        {"uptime": 1.0, "fp": "zz" * 8},
        {"uptime": -1.0, "fp": "0" * 16},
        {"uptime": 1.0, "fp": "0" * 16, "resources": {"cpu_cores": 64}},  # not a moving figure
        {"uptime": 1.0, "fp": "0" * 16, "resources": {"cpu_load": "high"}},
        {"uptime": 1.0, "fp": "0" * 16, "services": ["evil"]},
        {"uptime": 1.0, "fp": "0" * 16, "resources": [1, 2]},
    ],
)
def test_malformed_compact_heartbeats_are_refused(bad: dict[str, Any]) -> None:
    receiver = CompactReceiver(10.0)
    with pytest.raises(ValueError, match="bad compact heartbeat"):
        receiver.expand(EDGE, Heartbeat.model_validate(_payload()), bad)


# -- real nodes ---------------------------------------------------------------------------------


def _node(home: Path, hub: MemoryHub, oracles: list[str], *, oracle: bool = False) -> Node:
    config = NodeConfig(
        home=home, name=home.name, network="test", http="127.0.0.1:0", heartbeat_interval=0.1,
        key_strength="light", oracle=oracle, oracles=oracles,
    )  # fmt: skip
    return Node(config, password="pw", transport=MemoryTransport(hub))


async def test_oracles_count_compact_heartbeats_and_ask_for_a_whole_one_after_a_restart(
    tmp_path: Path,
) -> None:
    hub = MemoryHub()
    oracle_key = NodeKey.generate()
    save_keystore(oracle_key, tmp_path / "o" / "keys" / "node.json", "pw", strength="light")
    oracles = [oracle_key.address]
    o = _node(tmp_path / "o", hub, oracles, oracle=True)
    edge = _node(tmp_path / "e", hub, oracles)
    o2: Node | None = None
    try:
        for n in (o, edge):
            await n.start()
        assert edge.compact_sender is not None and o.compact_receiver is not None
        receiver = o.compact_receiver

        async def expanded(r: CompactReceiver, n: int) -> bool:
            return r.expanded >= n

        await async_wait_for(lambda: expanded(receiver, 5), 10, "compact heartbeats expanded by the oracle")
        assert edge.compact_sender.sent["hbc"] >= 5 and edge.compact_sender.sent["hb"] >= 1
        peer = o.netmap.get(edge.address)
        assert peer is not None and peer.status == "online" and peer.heartbeat.url == edge.url
        seen_uptime = peer.heartbeat.uptime

        async def uptime_moves() -> bool:
            p = o.netmap.get(edge.address)
            return p is not None and p.heartbeat.uptime > seen_uptime

        await async_wait_for(uptime_moves, 5, "the oracle's map to follow the compact heartbeats' uptime")
        # a second oracle that starts now has no whole heartbeat of the edge: it asks, the edge answers
        o2_key = NodeKey.generate()
        save_keystore(o2_key, tmp_path / "o2" / "keys" / "node.json", "pw", strength="light")
        o2 = _node(tmp_path / "o2", hub, [*oracles, o2_key.address], oracle=True)
        edge.config.oracles.append(o2_key.address)  # the edge learns of it (as from dAuth's registry)
        await o2.start()
        assert o2.compact_receiver is not None
        await async_wait_for(lambda: expanded(o2.compact_receiver, 3), 10, "the new oracle to expand")  # type: ignore[arg-type]
        assert o2.netmap.get(edge.address) is not None
        # a compact heartbeat forged with the edge's fingerprint but another key is the forger's own:
        # it stands for nothing the oracle holds, so nothing of the edge changes
        forger = NodeKey.generate()
        fp = receiver.fps[edge.address]
        raw = EnvelopeSigner(forger, "test").seal("hbc", {"uptime": 1.0, "fp": fp, "resources": {}})
        unmatched = receiver.unmatched
        await edge.transport.publish("r1/test/o/hb", raw)

        async def unmatched_grew() -> bool:
            return receiver.unmatched > unmatched

        await async_wait_for(unmatched_grew, 5, "the forged compact heartbeat to stand for nothing")
        assert o.netmap.get(forger.address) is None
    finally:
        for n in (o2, edge, o):
            if n is not None:
                await n.stop()
