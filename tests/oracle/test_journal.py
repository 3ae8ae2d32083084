"""The oracle's heartbeat journal: what it heard survives a restart; a damaged file invents nothing."""

from __future__ import annotations

import logging
import math
import struct
import time
from pathlib import Path

import pytest

from r1os.identity import normalize_address
from r1os.node import Node, NodeConfig
from r1os.oracle import HeartbeatLog, OracleSettings, OracleSyncService
from r1os.oracle._journal import HeartbeatJournal
from r1os.transport import MemoryHub, MemoryTransport

NODE = normalize_address("0x" + "ab" * 20)


def test_round_trip_and_rewrite(tmp_path: Path) -> None:
    j = HeartbeatJournal(tmp_path / "hb.bin")
    now = time.time()
    times = [now - 30 + i for i in range(20)]
    for t in times:
        j.add(NODE, t)
    j.add("not an address", now)
    j.flush()
    back = HeartbeatLog()
    assert j.load(back, since=now - 25) == 15
    assert list(back.times[NODE]) == times[5:]
    back.prune(now - 12)
    j.rewrite(back)
    again = HeartbeatLog()
    assert j.load(again, since=0) == len(back.times[NODE]) == 2


def test_damaged_records_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "hb.bin"
    now = time.time()
    good = struct.pack("<20sd", bytes.fromhex("ab" * 20), now - 5)
    nan = struct.pack("<20sd", bytes.fromhex("ab" * 20), math.nan)
    future = struct.pack("<20sd", bytes.fromhex("ab" * 20), now + 3600)
    path.write_bytes(good + nan + future + good[:11])
    with caplog.at_level(logging.WARNING):
        into = HeartbeatLog()
        assert HeartbeatJournal(path).load(into, since=0) == 1
    assert list(into.times[NODE]) == [now - 5]
    assert "2 bad records, 11 torn bytes" in caplog.text


async def test_an_oracle_restarted_mid_epoch_keeps_what_it_heard(tmp_path: Path) -> None:
    now = time.time()
    settings = OracleSettings(genesis_time=now - 60, epoch_seconds=120.0, heartbeat=1.0)
    first = OracleSyncService(settings)
    node = oracle_node(tmp_path, first)
    await node.start()
    try:
        for i in range(60):  # a node heard every second since the epoch began
            first.heard(NODE, now - 60 + i)
    finally:
        await node.stop()  # the service's stop writes what its last tick did not
    second = OracleSyncService(settings)
    node = oracle_node(tmp_path, second)
    await node.start()
    try:
        assert len(second.hb.times[NODE]) == 60
        heard = second.hb.window(NODE, now - 61, now)
        assert heard[0] == pytest.approx(now - 60) and heard[-1] == pytest.approx(now - 1)
    finally:
        await node.stop()


def oracle_node(home: Path, svc: OracleSyncService) -> Node:
    """A node with no broker (in-memory transport) running one oracle service; same home, same key."""
    config = NodeConfig(home=home, network="test", http="127.0.0.1:0", oracle=True, heartbeat_interval=1.0,
                        key_strength="light")  # fmt: skip
    return Node(config, password="pw", services=[svc], transport=MemoryTransport(MemoryHub()))


def test_interleaved_records_of_lookalike_addresses_load_apart(tmp_path: Path) -> None:
    # two addresses sharing their first 8 bytes, one ending in zero bytes, records interleaved and
    # slightly out of order, as ticks append them
    a = normalize_address("0x" + "11" * 8 + "22" * 10 + "0000")
    b = normalize_address("0x" + "11" * 8 + "33" * 12)
    now = time.time()
    j = HeartbeatJournal(tmp_path / "hb.bin")
    for i in range(50):
        j.add(a, now - 100 + i)
        j.add(b, now - 100 + i + 0.5)
    j.add(a, now - 100 + 10.5)  # a late arrival
    j.flush()
    into = HeartbeatLog()
    assert j.load(into, since=0) == 101
    assert list(into.times[a]) == sorted([now - 100 + i for i in range(50)] + [now - 100 + 10.5])
    assert list(into.times[b]) == [now - 100 + i + 0.5 for i in range(50)]
    j.rewrite(into)
    again = HeartbeatLog()
    assert j.load(again, since=0) == 101 and list(again.times[a]) == list(into.times[a])
