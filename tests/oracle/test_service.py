"""OracleSync services on real nodes over the embedded broker (no chain), closing an epoch on demand
with synthetic heartbeat logs: the phase timing between an oracle that has every table early and one
that waits out a silent peer, and a lying oracle outvoted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from r1os.cstore import CStoreService
from r1os.identity import NodeKey, normalize_address, save_keystore
from r1os.node import Node, NodeConfig
from r1os.oracle import (
    EPOCH_KEY,
    HeartbeatLog,
    OracleSettings,
    OracleSignatures,
    OracleSyncService,
    Table,
    compact,
    sign_table,
)
from r1os.oracle._poai import SignedAttestation
from r1os.transport import EmbeddedBroker, MqttTransport, inbox_topic
from r1os.wire import EnvelopeSigner
from tests.conftest import async_wait_for

NET = "oracletest"
EPOCH = 100.0
HB = 1.0
EDGE, HALF = normalize_address("0x" + "e" * 40), normalize_address("0x" + "f" * 40)


def full_log(nodes: list[str], genesis: float, half: str | None = None) -> HeartbeatLog:
    log = HeartbeatLog()
    for n in nodes:
        t = genesis - 2
        while t < genesis + EPOCH + 2:
            if n != half or not genesis + 25 <= t < genesis + 75:
                log.record(n, t)
            t += HB
    return log


class Liar(OracleSyncService):
    def local_table(self, epoch: int) -> Table:
        return {**super().local_table(epoch), EDGE: 0, HALF: 255}


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    broker = EmbeddedBroker(port=0)
    await broker.start()
    keys = [NodeKey.generate() for _ in range(3)]
    oracles = [k.address for k in keys]
    running: list[Node] = []
    # epoch 0 ended a moment ago; the loops wait for epoch 1, tests close epoch 0 by hand
    genesis = time.time() - EPOCH - 1

    async def start(
        i: int, cls: type[OracleSyncService] = OracleSyncService, timeout: float = 1.0, cstore: bool = False
    ) -> OracleSyncService:
        home = tmp_path / f"o{i}"
        save_keystore(keys[i], home / "keys" / "node.json", "pw", strength="light")
        svc = cls(OracleSettings(genesis_time=genesis, epoch_seconds=EPOCH, heartbeat=HB, oracles=oracles,
                                 phase_timeout=timeout))  # fmt: skip
        svc.hb = full_log([*oracles, EDGE, HALF], genesis, half=HALF)
        cfg = NodeConfig(home=home, network=NET, broker=broker.url, http="127.0.0.1:0", oracle=True,
                         heartbeat_interval=HB, oracles=oracles, key_strength="light")  # fmt: skip
        services: list[Any] = [svc]
        if cstore:
            allowed = frozenset(o.lower() for o in oracles)
            services.insert(0, CStoreService(sync_interval=0.3, fsync=False, oracles=allowed))
        node = Node(cfg, password="pw", services=services)
        await node.start()
        running.append(node)
        return svc

    yield {"broker": broker, "keys": keys, "oracles": oracles, "start": start}
    for node in running:
        await node.stop()
    await broker.stop()


async def test_early_oracle_waits_for_one_that_waited_out_a_silent_peer(net: dict[str, Any]) -> None:
    o1, o2 = await net["start"](0), await net["start"](1)
    # o1 alone gets a table from the third oracle, which then says nothing more: o1 has every table
    # at once and moves on, o2 waits the phase out. Both must still agree.
    k3 = await _third_table_to(net, o1)
    r1, r2 = await asyncio.gather(o1.close_epoch(0), o2.close_epoch(0))
    assert r1 is not None and r2 is not None, (o1.failures, o2.failures)
    assert r1.table_hash == r2.table_hash  # o1 counted the third table, o2 never saw it
    assert set(r2.voters) == {o1.me, o2.me} and set(r1.voters) == {o1.me, o2.me, k3.address}
    assert sorted(r1.signatures) == sorted([o1.me, o2.me])
    assert r1.values[EDGE] == 255 and abs(r1.values[HALF] - 128) <= 3


async def test_oracle_whose_median_phase_ended_early_joins_the_table_it_computed(
    net: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # o1 has every table at once and a short phase timeout: its median phase ends (t0 + 1.4 s)
    # before o2, waiting out the third oracle for 1.5 s, sends its median. o1 then finds no quorum of
    # medians, but o2 signs the same table o1 computed, so o1 joins it instead of failing the epoch.
    caplog.set_level(logging.INFO, logger="r1os.oracle")
    o1, o2 = await net["start"](0, timeout=0.7), await net["start"](1, timeout=1.5)
    await _third_table_to(net, o1)
    r1, r2 = await asyncio.gather(o1.close_epoch(0), o2.close_epoch(0))
    assert r1 is not None and r2 is not None, (o1.failures, o2.failures)
    assert r1.table_hash == r2.table_hash
    assert sorted(r1.signatures) == sorted(r2.signatures) == sorted([o1.me, o2.me])
    assert "joined the table 1 oracle(s) agreed on" in caplog.text


async def test_lying_oracle_is_outvoted(net: dict[str, Any]) -> None:
    svcs = [await net["start"](0), await net["start"](1), await net["start"](2, Liar)]
    recs = await asyncio.gather(*(s.close_epoch(0) for s in svcs))
    assert all(r is not None for r in recs)
    hashes = {r.table_hash for r in recs if r is not None}
    assert len(hashes) == 1
    rec = recs[0]
    assert rec is not None and rec.values[EDGE] == 255 and abs(rec.values[HALF] - 128) <= 3
    assert len(rec.voters) == 3 and len(rec.signatures) == 3


async def _third_table_to(net: dict[str, Any], o1: OracleSyncService) -> NodeKey:
    k3 = net["keys"][2]
    values = {EDGE: 255}
    async with MqttTransport(net["broker"].url, client_id="third") as t:
        await t.wait_connected()
        raw = EnvelopeSigner(k3, NET).seal(
            "oracle.table", {"epoch": 0, "values": values, "sig": sign_table(k3, "table", NET, 0, values)}
        )
        await t.publish(inbox_topic(NET, o1.me), raw, qos=1)
    await async_wait_for(lambda: _now(k3.address in o1.inbox(0).tables), 5, "the third table on o1")
    return k3  # type: ignore[no-any-return]


async def _now(value: bool) -> bool:
    return value


def cstore_of(svc: OracleSyncService) -> CStoreService:
    cstore = svc.archive.cstore
    assert cstore is not None
    return cstore


async def test_oracle_that_was_down_adopts_a_quorum_record_never_a_forged_one(net: dict[str, Any]) -> None:
    o1, o2 = await net["start"](0, cstore=True), await net["start"](1, cstore=True)
    r1, r2 = await asyncio.gather(o1.close_epoch(0), o2.close_epoch(0))
    assert r1 is not None and r2 is not None
    # o1 then rewrites its own CSTORE record with other values, signed by itself alone
    k1 = net["keys"][0]
    forged = r1.model_copy(deep=True)
    forged.values[EDGE] = 0
    forged.signatures = {o1.me: OracleSignatures(table_sig=sign_table(k1, "agreed", NET, 0, forged.values))}
    await cstore_of(o1).hset(EPOCH_KEY.format(0), o1.me, compact(forged))

    o3 = await net["start"](2, cstore=True)  # it was down during the close
    await async_wait_for(
        lambda: _now(len(cstore_of(o3).state.hgetall(EPOCH_KEY.format(0), 2**62)) == 2), 15, "records on o3"
    )
    per = await o3.availability(EDGE, 0, 0)
    assert per[0].value == 255 and per[0].measured
    assert o3.records[0].table_hash == r2.table_hash
    claim = await o3.sign_range(HALF, 0, 0)
    assert claim.availabilities == [r2.values[HALF]]
    # a record only its writer signed is never adopted
    alone = forged.model_copy(update={"epoch": 5})
    alone.signatures = {o1.me: OracleSignatures(table_sig=sign_table(k1, "agreed", NET, 5, alone.values))}
    await cstore_of(o1).hset(EPOCH_KEY.format(5), o1.me, compact(alone))
    await async_wait_for(
        lambda: _now(bool(cstore_of(o3).state.hgetall(EPOCH_KEY.format(5), 2**62))), 15, "it"
    )
    assert await o3.adopt(5) is None and 5 not in o3.records


class Reporter(OracleSyncService):
    """An oracle whose PoAI report is set by the test (what it saw of the nodes' replicas)."""

    report: dict[str, list[str]] = {}

    async def local_served(self, epoch: int) -> dict[str, list[str]]:
        return self.report


async def test_poai_reports_ride_on_the_tables_and_the_majority_decides(net: dict[str, Any]) -> None:
    a, b, c = sorted(normalize_address("0x" + ch * 40) for ch in "abc")
    svcs = [await net["start"](i, Reporter) for i in range(3)]
    reports = [{"7": [a, b]}, {"7": [a]}, {"7": [a, b, c], "9": [c]}]  # the third one is generous
    signed: dict[str, dict[str, list[str]]] = {}
    for svc, report in zip(svcs, reports, strict=True):
        svc.report = report

        async def sign(epoch: int, agreed: Table, served: Any, me: str = svc.me) -> dict[str, Any]:
            signed[me] = dict(served)
            return {j: SignedAttestation(nodes=n, sig=f"0x{me}") for j, n in served.items()}

        svc.poai.sign = sign  # type: ignore[method-assign]
        svc.poai.signed_by = lambda *_: True  # type: ignore[method-assign]
    recs = await asyncio.gather(*(s.close_epoch(0) for s in svcs))
    assert all(r is not None for r in recs)
    # every oracle counted the three reports: a by all, b by two of three, c by one
    assert list(signed.values()) == [{"7": [a, b]}] * 3
    rec = recs[0]
    assert rec is not None and rec.tables[svcs[2].me].served == reports[2]
    att = rec.attestations["7"]
    assert att.nodes == [a, b] and sorted(att.signatures) == sorted(s.me for s in svcs)
