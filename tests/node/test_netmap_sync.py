"""The network map the oracles publish (heartbeat_mode "oracle"): the pure publisher and follower
(snapshots, deltas, digests, hostile messages), then real nodes over the in-memory transport (edges
hear no heartbeats, learn the network from the map, see a peer leave, refuse a forged map)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from r1os.identity import NodeKey, save_keystore
from r1os.node import Heartbeat, NetworkMap, Node, NodeConfig
from r1os.node._netmap_sync import (
    MAX_PARTS,
    MAX_PEERS,
    NETMAP,
    MapFollower,
    MapPublisher,
    map_digest,
    split_message,
)
from r1os.transport import MemoryHub, MemoryTransport
from r1os.transport.topics import broadcast_topic, topic_matches
from r1os.wire import EnvelopeSigner
from tests.conftest import async_wait_for

ORACLE = "0x" + "1" * 40
OTHER_ORACLE = "0x" + "2" * 40
EDGE = "0x" + "e" * 40


def _addr(i: int) -> str:
    return f"0x{i:040x}"


def _hb(i: int, **extra: Any) -> Heartbeat:
    return Heartbeat.model_validate(
        {
            "version": "0.1.0",
            "uptime": float(i),
            "interval": 10.0,
            "url": f"http://127.0.0.1:{20000 + i}",
            "services": ["cstore", "r1fs"],
            "resources": {"cpu_cores": 2, "cpu_load": 0.5, "memory_available_mb": 900 + i},
            **extra,
        }
    )


def _view(n: int) -> dict[str, tuple[Heartbeat, float]]:
    return {_addr(i): (_hb(i), 1.0) for i in range(1, n + 1)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _follower(clock: Clock, oracles: set[str] | None = None) -> tuple[MapFollower, NetworkMap]:
    netmap = NetworkMap(3, clock=clock)
    return MapFollower(EDGE, netmap, lambda: oracles or {ORACLE, OTHER_ORACLE}, 10.0, clock=clock), netmap


def test_snapshot_then_deltas_keep_the_follower_equal_to_the_publisher() -> None:
    clock = Clock()
    pub = MapPublisher(clock=clock)
    follower, netmap = _follower(clock)
    view = _view(5)
    first = pub.next_message(view)
    assert follower.accept(ORACLE, first) == "resync"  # a delta is no base: ask for a snapshot
    assert follower.accept(ORACLE, pub.snapshot()) == "applied"
    assert {p.address for p in netmap.online()} == set(view)
    # a peer changes what it offers, one leaves, one joins; uptime, load and free memory alone are no
    # change (they move every interval), a change of its memory's size is
    view[_addr(1)] = (_hb(1, services=["cstore"]), 0.5)
    del view[_addr(2)]
    view[_addr(9)] = (_hb(9), 0.0)
    view[_addr(3)] = (
        _hb(3, uptime=99.0, resources={"cpu_cores": 2, "cpu_load": 0.55, "memory_available_mb": 903}),
        0.0,
    )
    view[_addr(4)] = (_hb(4, resources={"cpu_cores": 2, "cpu_load": 1.9, "memory_total_mb": 4096}), 0.0)
    delta = pub.next_message(view)
    assert set(delta["peers"]) == {_addr(1), _addr(4), _addr(9)} and delta["gone"] == [_addr(2)]
    clock.now += 1
    assert follower.accept(ORACLE, delta) == "applied"
    assert {p.address for p in netmap.online()} == set(view)
    assert netmap.get(_addr(2)).status == "offline"  # type: ignore[union-attr]
    assert netmap.get(_addr(1)).heartbeat.services == ["cstore"]  # type: ignore[union-attr]
    assert netmap.get(_addr(4)).heartbeat.resources["memory_total_mb"] == 4096  # type: ignore[union-attr]
    # quiet intervals: empty deltas keep everyone online past the offline deadline
    for _ in range(5):
        clock.now += 10
        assert follower.accept(ORACLE, pub.next_message(view)) == "applied"
    assert len(netmap.online()) == len(view)
    # the follower's own entry is not a peer
    view[EDGE] = (_hb(50), 0.0)
    assert follower.accept(ORACLE, pub.next_message(view)) == "applied"
    assert netmap.get(EDGE) is None


def test_a_peer_uptime_runs_on_between_the_heartbeats_a_map_carries() -> None:
    # quiet deltas carry no heartbeat, so the uptime in the last one carried ages: the map extrapolates
    clock = Clock()
    pub = MapPublisher(clock=clock)
    follower, netmap = _follower(clock)
    view = {_addr(1): (_hb(1, uptime=100.0), 0.0)}
    pub.next_message(view)
    assert follower.accept(ORACLE, pub.snapshot()) == "applied"
    for _ in range(3):
        clock.now += 10
        view = {_addr(1): (_hb(1, uptime=view[_addr(1)][0].uptime + 10), 0.0)}
        assert follower.accept(ORACLE, pub.next_message(view)) == "applied"
    peer = netmap.get(_addr(1))
    assert peer is not None and peer.heartbeat.uptime == 100.0 and peer.uptime == 130.0


def test_a_publisher_that_counts_changes_differently_is_still_followed() -> None:
    # another version's oracle fingerprints heartbeats its own way: the map carries its fingerprints,
    # and the digest is over them, so a follower neither recomputes nor disagrees
    clock = Clock()
    pub = MapPublisher(clock=clock)
    follower, netmap = _follower(clock)
    pub.next_message(_view(4))
    snap = pub.snapshot()
    for i, entry in enumerate(snap["peers"].values()):
        entry["fp"] = f"{i:016x}"
    snap["digest"] = map_digest({a.lower(): e["fp"] for a, e in snap["peers"].items()})
    assert follower.accept(ORACLE, snap) == "applied"
    assert len(netmap.online()) == 4


def test_a_quiet_delta_is_the_same_size_at_10_and_1000_peers() -> None:
    sizes = {}
    for n in (10, 1000):
        pub = MapPublisher()
        view = _view(n)
        pub.next_message(view)
        sizes[n] = len(orjson.dumps(pub.next_message(view)))
    assert sizes[1000] <= sizes[10] + 4  # the count's extra digits


def test_replayed_old_and_gapped_messages() -> None:
    clock = Clock()
    pub = MapPublisher(clock=clock)
    follower, _ = _follower(clock)
    view = _view(3)
    pub.next_message(view)
    assert follower.accept(ORACLE, pub.snapshot()) == "applied"
    d2 = pub.next_message(view)
    assert follower.accept(ORACLE, d2) == "applied"
    assert follower.accept(ORACLE, d2) == "stale"  # replayed delta
    old_snapshot = copy.deepcopy(pub.snapshot())
    pub.next_message(view)
    d4 = pub.next_message(view)
    assert follower.accept(ORACLE, d4) == "resync"  # delta without its base (d3 lost)
    assert follower.accept(ORACLE, pub.snapshot()) == "applied"
    assert follower.accept(ORACLE, old_snapshot) == "stale"  # an older snapshot of the same stream
    other_stream = MapPublisher(clock=clock)
    other_stream.stream += 1
    other_stream.next_message(view)
    assert follower.accept(ORACLE, other_stream.next_message(view)) == "resync"  # restarted publisher


def test_forged_and_malformed_maps_are_refused() -> None:
    clock = Clock()
    pub = MapPublisher(clock=clock)
    follower, netmap = _follower(clock)
    pub.next_message(_view(3))
    snap = pub.snapshot()
    assert follower.accept(EDGE, snap) == "refused"  # not an oracle
    assert follower.accept(_addr(77), snap) == "refused"
    bad: list[dict[str, Any]] = [
        {**snap, "digest": "0" * 16},  # does not match its peers
        {**snap, "count": 99},
        {**snap, "peers": {"not-an-address": snap["peers"][_addr(1)]}, "count": 1},
        {**snap, "peers": {_addr(1): {"hb": {"version": 3}}}},
        {**snap, "seq": -1},
        {**snap, "v": 1},  # the earlier format, whose entries carried no fingerprint
        {**snap, "extra": "field"},
        {**snap, "gone": "0x00"},
        {"peers": []},
        {},
    ]
    for payload in bad:
        assert follower.accept(ORACLE, payload) == "malformed", payload
    assert len(netmap) == 0
    assert follower.accept(ORACLE, snap) == "applied"


def test_the_lowest_publishing_oracle_is_followed() -> None:
    clock = Clock()
    low, high = MapPublisher(clock=clock), MapPublisher(clock=clock)
    follower, _ = _follower(clock)
    view = _view(2)
    for p in (low, high):
        p.next_message(view)
    assert follower.accept(OTHER_ORACLE, high.snapshot()) == "applied"
    assert follower.accept(ORACLE, low.snapshot()) == "applied"  # lower: switch
    assert follower.accept(OTHER_ORACLE, high.next_message(view)) == "ignored"
    assert follower.accept(ORACLE, low.next_message(view)) == "applied"
    clock.now += 31  # the lower one went quiet: the next one takes over (from a snapshot)
    assert follower.accept(OTHER_ORACLE, high.next_message(view)) == "resync"
    assert follower.source == OTHER_ORACLE
    assert follower.accept(OTHER_ORACLE, high.snapshot()) == "applied"


def test_a_map_too_big_for_one_message_travels_in_parts() -> None:
    clock = Clock()
    pub = MapPublisher(clock=clock)
    follower, netmap = _follower(clock)
    view = _view(3000)  # ~0.75 MB as one message: over what one part may carry
    pub.next_message(view)
    snapshot = pub.snapshot()
    assert split_message(snapshot) != [snapshot]
    parts = split_message(snapshot, budget=200_000)
    assert 3 <= len(parts) <= MAX_PARTS
    assert all(len(orjson.dumps(p)) <= 200_000 + 1000 for p in parts)  # the budget, plus the header
    assert sum(len(p["peers"]) for p in parts) == 3000
    # in any order; nothing applied until the last part is in, a repeated part changes nothing
    for part in [*reversed(parts[1:]), parts[-1]]:
        assert follower.accept(ORACLE, part) == "partial"
    assert len(netmap) == 0
    assert follower.accept(ORACLE, parts[0]) == "applied"
    assert len(netmap.online()) == 3000
    # a mass join makes a big delta: split too, and applied on top of the snapshot
    for i in range(3001, 5001):
        view[_addr(i)] = (_hb(i), 0.0)
    delta = split_message(pub.next_message(view), budget=200_000)
    assert len(delta) > 1
    outcomes = [follower.accept(ORACLE, p) for p in delta]
    assert outcomes == ["partial"] * (len(delta) - 1) + ["applied"]
    assert len(netmap.online()) == 5000
    # a small message stays one message, without part fields (what a node that splits nothing sends)
    quiet = pub.next_message(view)
    assert split_message(quiet) == [quiet] and "parts" not in quiet


def test_parts_that_disagree_or_never_complete_are_dropped() -> None:
    clock = Clock()
    pub = MapPublisher(clock=clock)
    follower, netmap = _follower(clock)
    pub.next_message(_view(50))
    parts = split_message(pub.snapshot(), budget=5_000)
    assert follower.accept(ORACLE, parts[0]) == "partial"
    assert follower.accept(ORACLE, {**parts[1], "digest": "f" * 16}) == "malformed"  # not the same map
    assert follower.accept(EDGE, parts[1]) == "refused"  # parts from a node that is no oracle
    for bad in ({**parts[1], "part": parts[1]["parts"]}, {**parts[1], "parts": MAX_PARTS + 1}):
        assert follower.accept(ORACLE, bad) == "malformed"
    # two newer split messages started: the oldest unfinished one is given up, so its late parts
    # start it again from nothing
    assert follower.accept(ORACLE, parts[0]) == "partial"
    for n in (40, 45):
        other = MapPublisher(clock=clock)
        other.next_message(_view(n))
        assert follower.accept(ORACLE, split_message(other.snapshot(), budget=5_000)[0]) == "partial"
    for part in parts[1:]:
        assert follower.accept(ORACLE, part) == "partial"
    assert len(netmap) == 0
    assert follower.accept(ORACLE, parts[0]) == "applied"  # now complete again
    assert len(netmap.online()) == 50
    pub.next_message(_view(MAX_PARTS + 1))
    with pytest.raises(ValueError, match="parts"):
        split_message(pub.snapshot(), budget=100)  # one peer a part: one part too many


# -- real nodes ---------------------------------------------------------------------------------


def _node(
    home: Path, hub: MemoryHub, oracles: list[str], *, oracle: bool = False, max_message_size: int = 1 << 20
) -> Node:
    config = NodeConfig(
        home=home, name=home.name, network="test", http="127.0.0.1:0", heartbeat_interval=0.2,
        key_strength="light", heartbeat_mode="oracle", oracle=oracle, oracles=oracles,
        max_message_size=max_message_size,
    )  # fmt: skip
    return Node(config, password="pw", transport=MemoryTransport(hub))


class Tap:
    """Counts the topics published on a hub."""

    def __init__(self, hub: MemoryHub) -> None:
        self.topics: list[str] = []
        route = hub.route

        def counting(topic: str, payload: bytes) -> None:
            self.topics.append(topic)
            route(topic, payload)

        hub.route = counting  # type: ignore[method-assign]


async def test_edges_learn_the_network_from_the_oracles_map(tmp_path: Path) -> None:
    hub = MemoryHub()
    tap = Tap(hub)
    oracle_key = NodeKey.generate()
    oracle_home = tmp_path / "o"
    save_keystore(oracle_key, oracle_home / "keys" / "node.json", "pw", strength="light")
    oracles = [oracle_key.address]
    o = _node(oracle_home, hub, oracles, oracle=True)
    a = _node(tmp_path / "a", hub, oracles)
    b = _node(tmp_path / "b", hub, oracles)
    for n in (o, a, b):
        await n.start()
    late: Node | None = None
    try:

        async def a_sees(expected: set[str]) -> bool:
            return {p.address for p in a.netmap.online()} == expected

        await async_wait_for(lambda: a_sees({o.address, b.address}), 10, "a learns o and b")
        # the HTTP API lists peers from the map
        async with httpx.AsyncClient(base_url=a.url) as http:
            peers = (await http.get("/v1/peers")).json()
        assert {p["address"] for p in peers["peers"]} == {o.address, b.address}
        assert next(p for p in peers["peers"] if p["address"] == o.address)["oracle"] is True
        # heartbeats go to the oracle topic only, which edges do not subscribe to
        hb_topics = {t for t in tap.topics if t.endswith("/hb")}
        assert hb_topics and all("/o/" in t or "/n/" in t for t in hb_topics)
        assert not any(topic_matches("r1/test/b/+", t) for t in hb_topics)
        assert a.verifier.stats()["accepted"] > 0 and a.map_follower is not None
        assert a.map_follower.outcomes.get("applied", 0) >= 2
        # a node joining gets the whole map at once
        late = _node(tmp_path / "late", hub, oracles)
        await late.start()

        async def late_sees() -> bool:
            assert late is not None
            return {p.address for p in late.netmap.online()} == {o.address, a.address, b.address}

        await async_wait_for(late_sees, 10, "the late node learns the network")
        await async_wait_for(
            lambda: a_sees({o.address, b.address, late.address}), 10, "a learns the late node"
        )
        # a node leaves: the oracle stops listing it, edges mark it offline
        await b.stop()
        await async_wait_for(lambda: a_sees({o.address, late.address}), 10, "a sees b gone")
        # a map forged by an edge (well signed, but not an oracle) is refused
        forged = MapPublisher()
        forged.next_message({a.address: (Heartbeat(version="x", uptime=0, interval=1), 0.0)})
        raw = EnvelopeSigner(late.key, "test").seal(NETMAP, forged.snapshot())
        refused = a.map_follower.outcomes.get("refused", 0)
        await late.transport.publish(broadcast_topic("test", NETMAP), raw)
        await async_wait_for(
            lambda: _true(a.map_follower.outcomes.get("refused", 0) > refused), 5, "forged map refused"
        )
        assert a.netmap.get(a.address) is None
    finally:
        for n in (late, b, a, o):
            if n is not None:
                await n.stop()


async def test_real_nodes_follow_a_map_sent_in_parts(tmp_path: Path) -> None:
    # 2 KiB envelopes: a map of a handful of peers no longer fits one, as ~1,500 peers do not fit 1 MiB
    hub = MemoryHub()
    oracle_key = NodeKey.generate()
    save_keystore(oracle_key, tmp_path / "o" / "keys" / "node.json", "pw", strength="light")
    oracles = [oracle_key.address]
    nodes = [_node(tmp_path / "o", hub, oracles, oracle=True, max_message_size=2048)]
    nodes += [_node(tmp_path / f"e{i}", hub, oracles, max_message_size=2048) for i in range(5)]
    try:
        for n in nodes:
            await n.start()
        everyone = {n.address for n in nodes}

        async def all_see_all() -> bool:
            return all({p.address for p in n.netmap.online()} == everyone - {n.address} for n in nodes)

        await async_wait_for(all_see_all, 15, "every node to learn the network")
        # a node joining now gets the whole map as a snapshot: too big for one message
        late = _node(tmp_path / "late", hub, oracles, max_message_size=2048)
        nodes.append(late)
        await late.start()
        everyone.add(late.address)
        await async_wait_for(all_see_all, 15, "the late node to learn the network from a map in parts")
        follower = late.map_follower
        assert follower is not None and follower.outcomes.get("partial", 0) >= 1
        assert follower.outcomes.get("malformed", 0) == 0
    finally:
        for n in reversed(nodes):
            await n.stop()


async def test_without_a_publishing_oracle_nodes_broadcast_until_one_is_back(tmp_path: Path) -> None:
    # Every oracle gone: the map stops, and peers would go offline. The nodes broadcast their
    # heartbeats instead (after 2 quiet intervals, before the map's peers expire at 3), keep each other
    # online, and go back to the oracles' channel once an oracle publishes again.
    hub = MemoryHub()
    tap = Tap(hub)
    oracle_key = NodeKey.generate()
    save_keystore(oracle_key, tmp_path / "o" / "keys" / "node.json", "pw", strength="light")
    oracles = [oracle_key.address]
    o: Node | None = _node(tmp_path / "o", hub, oracles, oracle=True)
    a, b = _node(tmp_path / "a", hub, oracles), _node(tmp_path / "b", hub, oracles)
    assert o is not None
    try:
        for n in (o, a, b):
            await n.start()

        async def sees(n: Node, others: set[str]) -> bool:
            return {p.address for p in n.netmap.online()} == others

        await async_wait_for(lambda: sees(a, {o.address, b.address}), 10, "a learns the network")  # type: ignore[union-attr]
        assert not any(t == "r1/test/b/hb" for t in tap.topics)  # oracle mode: no broadcast heartbeat
        await o.stop()
        o = None
        await async_wait_for(lambda: _true("r1/test/b/hb" in tap.topics), 10, "broadcast heartbeats")
        # many intervals later (0.2 s each) a and b still see each other online, from their heartbeats
        for _ in range(3):
            await async_wait_for(lambda: _true(tap.topics.count("r1/test/b/hb") >= 20), 10, "more beats")
            assert b.address in {p.address for p in a.netmap.online()}
            assert a.address in {p.address for p in b.netmap.online()}
            tap.topics.clear()
        # an oracle again (same key, restarted): it publishes, and the nodes go back to its channel
        o = _node(tmp_path / "o", hub, oracles, oracle=True)
        await o.start()

        async def back() -> bool:
            return all(n.map_follower is not None and not n.map_follower.quiet(1) for n in (a, b))

        await async_wait_for(back, 10, "a and b to follow the oracle's map again")
        # (a node decides where a heartbeat goes and hands it to the hub without yielding in between:
        # none decided before this point is still on its way)
        tap.topics.clear()
        await async_wait_for(lambda: _true(tap.topics.count("r1/test/o/hb") >= 6), 10, "beats to the oracle")
        assert "r1/test/b/hb" not in tap.topics
        await async_wait_for(lambda: sees(o, {a.address, b.address}), 10, "the oracle hears both")  # type: ignore[union-attr]
    finally:
        for n in (b, a, o):
            if n is not None:
                await n.stop()


async def _true(value: bool) -> bool:
    return value


def test_heartbeat_mode_is_validated() -> None:
    with pytest.raises(ValueError):
        NodeConfig(heartbeat_mode="gossip")  # type: ignore[arg-type]


def test_oversized_map_is_refused() -> None:
    clock = Clock()
    follower, _ = _follower(clock)
    pub = MapPublisher(clock=clock)
    pub.next_message(_view(1))
    huge = {**pub.snapshot(), "gone": [_addr(1)] * (MAX_PEERS + 1)}
    assert follower.accept(ORACLE, huge) == "malformed"
