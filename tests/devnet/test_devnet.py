"""End-to-end: a real devnet of node processes over the embedded broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from r1os.devnet import Devnet
from r1os.devnet._state import pid_alive
from r1os.identity import NodeKey
from r1os.transport import MqttTransport, broadcast_topic
from r1os.transport.topics import oracle_topic
from r1os.wire import EnvelopeSigner
from tests.conftest import async_wait_for, wait_for

HB = 1.0  # fast heartbeats keep the test short; the logic is the same at 10 s


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # At <R1OS_HOME>/devnet, where the CLI looks for the devnet record (see test_the_cli_is_...).
    dn = Devnet(tmp_path_factory.mktemp("home") / "devnet")
    state = dn.up(nodes=4, oracles=2, heartbeat=HB, chain=False, timeout=60)
    yield dn, state
    dn.down()
    assert not any(pid_alive(n.pid) for n in state.nodes)


def peers(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/peers", timeout=2).json()


def rejections(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=2).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "r1os_wire_rejected":
            for s in fam.samples:
                out[s.labels["cause"]] = s.value
    return out


def test_every_node_sees_every_other(devnet: Any) -> None:
    _, state = devnet
    addresses = {n.address for n in state.nodes}
    for node in state.nodes:
        data = peers(node.url)
        assert data["self"] == node.address
        assert {p["address"] for p in data["peers"] if p["status"] == "online"} == addresses - {node.address}
        info = httpx.get(f"{node.url}/v1/node", timeout=2).json()
        assert info["address"] == node.address and info["oracle"] == node.oracle
        assert info["resources"]["cpu_cores"] >= 1
        assert httpx.get(f"{node.url}/v1/health", timeout=2).json()["status"] == "ok"


def test_status_json_cli(devnet: Any) -> None:
    dn, state = devnet
    out = subprocess.run(
        [sys.executable, "-m", "r1os", "devnet", "status", "--json", "--dir", str(dn.dir)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    data = json.loads(out.stdout)
    assert [n["address"] for n in data["nodes"]] == [n.address for n in state.nodes]
    assert all(n["status"] == "online" and n["url"].startswith("http://") for n in data["nodes"])


async def _hostile_traffic(broker: str, network: str, victim_url: str, victim_address: str) -> None:
    """Hostile copies of heartbeats, where heartbeats travel (to the oracles: the devnet's nodes know
    their oracles, so `heartbeat_mode` auto is oracle mode), and junk on the broadcast channel."""
    captured: list[bytes] = []

    async def grab(_topic: str, raw: bytes) -> None:
        # another node's heartbeat: the victim drops echoes of its own messages unchecked
        if orjson.loads(raw)["sender"] != victim_address:
            captured.append(raw)

    async with MqttTransport(broker, client_id="attacker") as t:
        topic = oracle_topic(network, "hb")
        sub = t.subscribe(topic, grab)
        await sub.ready()
        await async_wait_for(lambda: asyncio.sleep(0, bool(captured)), 10, "a heartbeat to capture")
        real = captured[0]
        attacker = NodeKey.generate()
        victim = NodeKey.generate()
        forged = EnvelopeSigner(attacker, network).seal("hb", {"version": "x"})
        forged = forged.replace(attacker.address.encode(), victim.address.encode())
        tampered = real.replace(b'"uptime":', b'"uptime":9')
        await t.publish(topic, forged)
        await t.publish(topic, real)  # replay of a message every node has already accepted
        await t.publish(topic, tampered)
        await t.publish(topic, b"{" + b" " * (1024 * 1024 + 10) + b"}")
        await t.publish(topic, os.urandom(300))
        await t.publish(broadcast_topic(network, "junk"), b"\x00\x01not json")

        def all_counted() -> Any:
            r = rejections(victim_url)
            ok = (
                r.get("bad_signature", 0) >= 2 and r.get("replayed", 0) >= 1
                and r.get("oversize", 0) >= 1 and r.get("malformed", 0) >= 2
            )  # fmt: skip
            return asyncio.sleep(0, ok)

        await async_wait_for(all_counted, 15, "rejection counters to show every hostile message")


def test_hostile_messages_are_dropped_and_counted(devnet: Any) -> None:
    _, state = devnet
    victim = next(n for n in state.nodes if n.oracle)  # the oracles hear the heartbeats
    asyncio.run(_hostile_traffic(state.broker_url, state.network, victim.url, victim.address))
    # The node keeps serving and still sees its peers.
    assert httpx.get(f"{victim.url}/v1/health", timeout=2).json()["status"] == "ok"
    assert peers(victim.url)["online"] == len(state.nodes) - 1
    # Its own heartbeats came back from the broker and were dropped unchecked, and counted apart.
    metrics = httpx.get(f"{victim.url}/metrics", timeout=2).text
    own = next(line for line in metrics.splitlines() if line.startswith("r1os_wire_own_dropped_total"))
    assert float(own.split()[-1]) >= 1


def netmap_outcomes(url: str) -> dict[str, float]:
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=2).text):
        if fam.name == "r1os_netmap_messages":
            return {s.labels["outcome"]: s.value for s in fam.samples if s.name.endswith("_total")}
    return {}


async def _forged_maps(broker: str, network: str, edge_url: str) -> None:
    attacker = NodeKey.generate()
    payload = {"v": 1, "stream": 1, "seq": 1, "full": True, "peers": {}, "gone": [], "count": 0,
               "digest": "0" * 16}  # fmt: skip
    before = netmap_outcomes(edge_url).get("refused", 0)
    async with MqttTransport(broker, client_id="attacker-maps") as t:
        # a whole map that empties the network, and a malformed one, signed by a node that is no oracle
        signer = EnvelopeSigner(attacker, network)
        await t.publish(broadcast_topic(network, "nm"), signer.seal("nm", payload))
        await t.publish(broadcast_topic(network, "nm"), signer.seal("nm", {"v": 9}))
        await async_wait_for(
            lambda: asyncio.sleep(0, netmap_outcomes(edge_url).get("refused", 0) >= before + 2),
            10, "forged maps refused",
        )  # fmt: skip


def test_edges_follow_the_oracles_map_and_refuse_forged_ones(devnet: Any) -> None:
    _, state = devnet
    edge = next(n for n in state.nodes if not n.oracle)
    info = httpx.get(f"{edge.url}/v1/node", timeout=2).json()
    assert info["heartbeat_mode"] == "oracle"  # auto: the devnet's nodes know their oracles
    # the oracles hear compact heartbeats between the whole ones and expand them
    oracle = next(n for n in state.nodes if n.oracle)

    def expanded() -> float:
        for fam in text_string_to_metric_families(httpx.get(f"{oracle.url}/metrics", timeout=2).text):
            if fam.name == "r1os_compact_heartbeats":
                return sum(s.value for s in fam.samples if s.labels.get("outcome") == "expanded")
        return 0.0

    wait_for(lambda: expanded() >= 3, 10, "an oracle to expand compact heartbeats")
    wait_for(lambda: netmap_outcomes(edge.url).get("applied", 0) >= 1, 10, "the edge to apply a map")
    asyncio.run(_forged_maps(state.broker_url, state.network, edge.url))
    # the edge's view of the network is untouched
    assert peers(edge.url)["online"] == len(state.nodes) - 1


def test_killed_node_goes_offline_then_returns_with_same_address(devnet: Any) -> None:
    dn, state = devnet
    target = state.nodes[-1]
    observer = state.nodes[0]
    assert target.pid is not None
    os.kill(target.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def offline() -> bool:
        entry = next(p for p in peers(observer.url)["peers"] if p["address"] == target.address)
        return entry["status"] == "offline"

    # Online until 3 heartbeats are missed: offline within 3 intervals of the kill (+ polling slack).
    wait_for(offline, 3 * HB + 1.0, "the killed node to be marked offline")
    assert time.monotonic() - killed_at >= HB  # and not before it really missed heartbeats

    restarted = dn.start_node(target.name)
    assert restarted.address == target.address
    wait_for(
        lambda: httpx.get(f"{target.url}/v1/node", timeout=1).json()["address"] == target.address,
        30, "the restarted node to answer",
    )  # fmt: skip
    wait_for(lambda: not offline(), 10, "the restarted node to be online again")
    wait_for(lambda: peers(target.url)["online"] == len(state.nodes) - 1, 10, "the restarted node's map")


def test_cstore_write_on_one_node_is_read_on_all(devnet: Any) -> None:
    from r1os import Session

    _, state = devnet
    key = NodeKey.generate()
    with Session(state.nodes[0].url, key=key) as s:
        s.cstore.set(s.cstore.namespace + "hello", {"from": "node-01"})
        k = s.cstore.namespace + "hello"
    for node in state.nodes:
        r = httpx.get(f"{node.url}/v1/cstore/wait", params={"key": k, "timeout": 10}, timeout=15)
        assert r.json()["value"] == {"from": "node-01"}


def test_acknowledged_write_survives_sigkill(devnet: Any) -> None:
    from r1os import Session
    from r1os.cstore._log import read_log

    dn, state = devnet
    target = state.nodes[1]
    key = NodeKey.generate()
    with Session(target.url, key=key) as s:
        k = s.cstore.namespace + "durable"
        s.cstore.set(k, "acked")  # returned: the node says it is on disk
    assert target.pid is not None
    os.kill(target.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(target.pid), 10, "the node to die")
    log_path = Path(target.home) / "services" / "cstore" / "batches.log"
    assert any(k.encode() in raw for raw in read_log(log_path)), "acknowledged batch missing from the log"
    target = dn.start_node(target.name)  # on its old port if still free, else on a new one

    def served() -> bool:
        return (
            httpx.get(f"{target.url}/v1/cstore/get", params={"key": k}, timeout=1).json()["value"] == "acked"
        )

    wait_for(served, 30, "the restarted node to serve the acknowledged write")


def test_the_cli_is_the_operator_of_a_devnet_node_without_a_flag(devnet: Any) -> None:
    dn, state = devnet
    node = state.nodes[2]
    # The CLI of whoever runs the devnet: its R1OS_HOME holds the devnet record, and no key or token is
    # given. It finds the node's home in the record and acts with the node's API token.
    env = {k: v for k, v in os.environ.items() if k not in ("R1OS_API_TOKEN", "R1OS_KEY", "R1OS_PRIVATE_KEY")}
    env["R1OS_HOME"] = str(dn.dir.parent)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "r1os", *args], capture_output=True, text=True, env=env,
                              timeout=60)  # fmt: skip

    key = f"node:{node.address.lower()}:operator"
    done = cli("cstore", "set", key, "42", "--node", node.url)
    assert done.returncode == 0, done.stderr
    r = httpx.get(f"{state.nodes[0].url}/v1/cstore/wait", params={"key": key, "timeout": 10}, timeout=15)
    assert r.json()["value"] == 42  # signed by the node for its operator, replicated
    assert cli("cstore", "get", key, "--node", node.url).stdout == "42\n"
    done = cli("fs", "gc", "--node", node.url)
    assert done.returncode == 0 and done.stdout.startswith("removed "), done.stderr
