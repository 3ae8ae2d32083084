"""Tables past one wire envelope: a 10,000-node epoch closed by three oracles over the embedded broker
(the per-node signatures go as signed parts), and the part assembler against hostile input."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from r1os.identity import NodeKey, save_keystore
from r1os.node import Node, NodeConfig
from r1os.oracle import HeartbeatLog, OracleSettings, OracleSyncService, claim_digests, sign_table
from r1os.oracle._parts import (
    MAX_PARTS,
    MSG_PART,
    PART_BYTES,
    SINGLE_MAX,
    Assembler,
    PartRefused,
    split,
)
from r1os.transport import EmbeddedBroker, MqttTransport, inbox_topic
from r1os.wire import DEFAULT_MAX_SIZE, EnvelopeSigner, canonical_bytes
from tests.conftest import async_wait_for

NET = "bigtables"
EPOCH = 100.0
HB = 1.0
N_NODES = 10_000
KINDS = ("oracle.table", "oracle.median", "oracle.sigs")
A, B = "0x" + "a" * 40, "0x" + "b" * 40


def big_payload(n: int = 12_000) -> dict[str, Any]:
    """An `oracle.sigs`-shaped payload of n nodes (~2 MB)."""
    nodes = {f"0x{i:040x}": "0x" + f"{i:02x}" * 65 for i in range(n)}
    return {"epoch": 3, "table_hash": "0x" + "1" * 64, "table_sig": "0x" + "2" * 130, "nodes": nodes}


def _now(value: bool) -> Any:
    async def f() -> bool:
        return value

    return f()


# -- the assembler (pure) ------------------------------------------------------------------------


def test_a_small_message_is_not_split_and_a_large_one_fits_envelopes_and_rejoins() -> None:
    assert split("oracle.sigs", {"epoch": 1, "nodes": {}}) == []
    payload = big_payload()
    parts = split("oracle.sigs", payload)
    assert len(parts) >= 2
    for p in parts:  # each part, sealed, fits the wire's limit
        assert len(canonical_bytes(p)) + 400 < DEFAULT_MAX_SIZE
    asm = Assembler(KINDS)
    for p in reversed(parts[1:]):  # any order; a repeat with the same bytes is harmless
        assert asm.add(A, p, 0.0) is None
        assert asm.add(A, p, 0.0) is None
    got = asm.add(A, parts[0], 0.0)
    assert got == ("oracle.sigs", payload)
    assert asm.pending() == 0


def test_a_missing_part_never_completes_and_expires() -> None:
    parts = split("oracle.sigs", big_payload())
    asm = Assembler(KINDS, ttl=60)
    for p in parts[:-1]:
        assert asm.add(A, p, 0.0) is None
    assert asm.pending(A) == 1
    with pytest.raises(PartRefused):  # any later part triggers the expiry first
        asm.add(B, {"kind": "nope"}, 61.0)
    assert asm.pending(A) == 0
    assert asm.add(A, parts[-1], 61.0) is None  # the last part alone starts a new, unfinished message


def test_a_part_repeated_with_other_bytes_drops_the_message() -> None:
    parts = split("oracle.sigs", big_payload())
    asm = Assembler(KINDS)
    asm.add(A, parts[0], 0.0)
    other = dict(parts[0], data=base64.b64encode(b"x" * PART_BYTES).decode())
    with pytest.raises(PartRefused, match="different bytes"):
        asm.add(A, other, 0.0)
    assert asm.pending(A) == 0


def test_forged_content_does_not_hash_to_the_id() -> None:
    # the sender's own envelope signs every part, so a forgery can only come from the sender itself:
    # parts whose bytes are not the message their id names are refused when joined
    parts = split("oracle.sigs", big_payload())
    raw = bytearray(base64.b64decode(parts[0]["data"]))
    raw[100] ^= 1
    parts[0] = dict(parts[0], data=base64.b64encode(bytes(raw)).decode())
    asm = Assembler(KINDS)
    with pytest.raises(PartRefused, match="do not hash"):
        for p in parts:
            asm.add(A, p, 0.0)
    assert asm.pending() == 0


def test_a_whole_that_is_not_the_phase_message_it_claims_is_refused() -> None:
    body = canonical_bytes({"type": "oracle.table", "payload": big_payload()})
    n = -(-len(body) // PART_BYTES)
    mid = hashlib.sha256(body).hexdigest()
    asm = Assembler(KINDS)
    with pytest.raises(PartRefused, match="not one oracle.sigs message"):
        for i in range(n):
            chunk = body[i * PART_BYTES : (i + 1) * PART_BYTES]
            asm.add(A, {"kind": "oracle.sigs", "id": mid, "part": i, "parts": n, "size": len(body),
                        "data": base64.b64encode(chunk).decode()}, 0.0)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kind": "cstore.set"}, "not a phase message"),
        ({"id": "XYZ"}, "id must be"),
        ({"parts": MAX_PARTS + 1}, "parts must be"),
        ({"parts": 1}, "parts must be"),
        ({"part": 99}, "part must be"),
        ({"part": True}, "part must be"),
        ({"size": 10}, "size must be"),
        ({"size": MAX_PARTS * PART_BYTES * 4}, "size must be"),
        ({"data": "!!not base64!!"}, "not base64"),
        ({"data": "A" * (PART_BYTES * 2)}, "at most one part"),
        ({"data": base64.b64encode(b"short").decode()}, "holds 5 bytes"),
        ({"data": None}, "data must be"),
    ],
)
def test_malformed_and_oversized_parts_are_refused(change: dict[str, Any], reason: str) -> None:
    part = split("oracle.sigs", big_payload())[0]
    with pytest.raises(PartRefused, match=reason):
        Assembler(KINDS).add(A, {**part, **change}, 0.0)


def test_unfinished_messages_per_sender_are_bounded() -> None:
    asm = Assembler(KINDS, max_pending=2)
    firsts = [split("oracle.sigs", big_payload(12_000 + i))[0] for i in range(4)]
    for p in firsts:
        asm.add(A, p, float(p["size"] % 7))
    assert asm.pending(A) == 2
    asm.add(B, firsts[0], 0.0)
    assert asm.pending(B) == 1 and asm.pending() == 3  # one sender cannot crowd out another


def test_a_message_too_large_even_for_parts_is_refused_at_the_sender() -> None:
    huge = {"blob": "x" * (MAX_PARTS * PART_BYTES + 1)}
    with pytest.raises(ValueError, match="more than"):
        split("oracle.sigs", huge)


# -- 10,000 nodes through the real services ------------------------------------------------------


def synthetic_log(nodes: list[str], genesis: float) -> HeartbeatLog:
    log = HeartbeatLog()
    rng = np.random.default_rng(7)
    for i, n in enumerate(nodes):
        t = genesis - 2 + np.arange(0, EPOCH + 4, HB)
        if i % 5 == 0 and i < N_NODES:  # a fifth of the nodes (no oracle) were away for a while
            a = rng.uniform(0, EPOCH)
            t = t[(t < genesis + a) | (t >= genesis + a + rng.uniform(10, 50))]
        log.times[n] = array("d", t.tobytes())
    return log


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    broker = EmbeddedBroker(port=0)
    await broker.start()
    keys = [NodeKey.generate() for _ in range(3)]
    oracles = [k.address for k in keys]
    genesis = time.time() - EPOCH - 1  # epoch 0 ended a moment ago; the tests close it by hand
    nodes = [f"0x{i:040x}" for i in range(1, N_NODES + 1)] + oracles
    base = synthetic_log(nodes, genesis)
    running: list[Node] = []
    svcs: list[OracleSyncService] = []

    async def start(i: int) -> OracleSyncService:
        home = tmp_path / f"o{i}"
        save_keystore(keys[i], home / "keys" / "node.json", "pw", strength="light")
        svc = OracleSyncService(OracleSettings(genesis_time=genesis, epoch_seconds=EPOCH, heartbeat=HB,
                                               oracles=oracles, phase_timeout=20))  # fmt: skip
        cfg = NodeConfig(home=home, network=NET, broker=broker.url, http="127.0.0.1:0", oracle=True,
                         heartbeat_interval=HB, oracles=oracles, key_strength="light")  # fmt: skip
        node = Node(cfg, password="pw", services=[svc])
        await node.start()
        # after start: the journal on disk need not hold a million synthetic heartbeats
        svc.hb = HeartbeatLog({n: array("d", ts) for n, ts in base.times.items()})
        running.append(node)
        svcs.append(svc)
        return svc

    yield {"broker": broker, "keys": keys, "oracles": oracles, "start": start, "nodes": nodes}
    for node in running:
        await node.stop()
    await broker.stop()


async def test_three_oracles_close_a_10000_node_epoch_with_parts(three: dict[str, Any]) -> None:
    svcs = [await three["start"](i) for i in range(3)]
    recs = await asyncio.gather(*(s.close_epoch(0) for s in svcs))
    assert all(r is not None for r in recs), [s.failures for s in svcs]
    assert len({r.table_hash for r in recs if r is not None}) == 1
    rec = recs[0]
    assert rec is not None and len(rec.values) == N_NODES + 3
    assert len(rec.voters) == 3 and sorted(rec.signatures) == sorted(three["oracles"])
    # every oracle's per-node signatures arrived whole and were checked (they did not fit one envelope)
    sigs_json = orjson.dumps(rec.signatures[three["oracles"][1]].nodes)
    assert len(sigs_json) > SINGLE_MAX
    assert all(len(s.nodes) == N_NODES + 3 for s in rec.signatures.values())
    digests = claim_digests(0, rec.values)
    assert all(svcs[0]._node_sigs_ok(rec, o, s, digests) for o, s in rec.signatures.items())
    assert rec.values[three["nodes"][1]] == 255 and rec.values[three["nodes"][0]] < 255


async def test_parts_of_a_table_from_a_non_oracle_or_incomplete_never_count(
    three: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="r1os.oracle")
    o1 = await three["start"](0)
    k3, stranger = three["keys"][2], NodeKey.generate()
    values = {f"0x{i:040x}": i % 256 for i in range(1, 17_001)}  # ~0.9 MB: needs parts
    payload = {"epoch": 0, "values": values, "sig": sign_table(k3, "table", NET, 0, values)}
    parts = split("oracle.table", payload)
    assert len(parts) >= 2
    async with MqttTransport(three["broker"].url, client_id="sender") as t:
        await t.wait_connected()
        for key in (stranger, k3):  # a stranger's parts are refused; the oracle's all but one sent
            signer = EnvelopeSigner(key, NET)
            for p in parts if key is stranger else parts[:-1]:
                await t.publish(inbox_topic(NET, o1.me), signer.seal(MSG_PART, p), qos=1)
        await async_wait_for(lambda: _now(o1._parts.pending(k3.address) == 1), 10, "the parts on o1")
        assert k3.address not in o1.inbox(0).tables and o1._parts.pending(stranger.address) == 0
        assert f"oracle.part from {stranger.address} refused: not an oracle" in caplog.text
        await t.publish(inbox_topic(NET, o1.me), EnvelopeSigner(k3, NET).seal(MSG_PART, parts[-1]), qos=1)
        await async_wait_for(lambda: _now(k3.address in o1.inbox(0).tables), 10, "the whole table on o1")
    assert o1.inbox(0).tables[k3.address].values == values
