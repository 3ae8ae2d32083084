"""A devnet over two bridged mosquitto brokers (`r1os devnet up --brokers 2`): 3 oracles and 2 edge
nodes spread over both, with the chain and dAuth. Nodes on either broker see each other, replicate
CSTORE and fetch each other's R1FS files, and each broker's dAuth gate refuses unadmitted logins."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.dauth import broker_client_id, broker_password
from r1os.devnet import Devnet
from r1os.identity import NodeKey
from r1os.transport import find_mosquitto, parse_broker_url
from tests.conftest import wait_for
from tests.transport.test_bridge import connect_packet

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not installed"),
]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    dn = Devnet(tmp_path_factory.mktemp("bridged") / "devnet")
    try:
        state = dn.up(nodes=5, oracles=3, brokers=2, heartbeat=1.0, epoch_seconds=30, timeout=60)
        yield dn, state
    finally:
        dn.down()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "r1os", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ})  # fmt: skip


def test_nodes_on_both_brokers_see_each_other(devnet: Any) -> None:
    dn, state = devnet
    assert len(state.brokers) == 2
    assert {n.broker_url for n in state.nodes} == {b.url for b in state.brokers}
    edges = [n for n in state.nodes if not n.oracle]
    assert edges[0].broker_url != edges[1].broker_url  # one edge on each broker
    everyone = {n.address for n in state.nodes}
    for node in state.nodes:
        data = httpx.get(f"{node.url}/v1/peers", timeout=3).json()
        online = {p["address"] for p in data["peers"] if p["status"] == "online"}
        assert online == everyone - {node.address}
    status = dn.status()
    assert [b["running"] for b in status["brokers"]] == [True, True]


def test_cstore_and_r1fs_cross_the_bridge(devnet: Any, tmp_path: Path) -> None:
    _, state = devnet
    a, b = [n for n in state.nodes if not n.oracle]
    out = cli("cstore", "set", "bridged", '"over the bridge"', "--node", a.url)
    assert out.returncode == 0, out.stderr
    key = f"node:{a.address.lower()}:bridged"
    wait_for(lambda: cli("cstore", "get", key, "--node", b.url).stdout.strip() == "over the bridge", 20,
             "the CSTORE value on the other broker's node")  # fmt: skip

    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(300_000))
    out = cli("fs", "add", str(src), "--node", a.url, "--json")
    assert out.returncode == 0, out.stderr
    cid = json.loads(out.stdout)["cid"]
    dst = tmp_path / "back.bin"
    out = cli("fs", "get", cid, "-o", str(dst), "--node", b.url)
    assert out.returncode == 0, out.stderr
    assert dst.read_bytes() == src.read_bytes()


async def connack(url: str, packet: bytes) -> bytes:
    addr = parse_broker_url(url)
    reader, writer = await asyncio.open_connection(addr.host, addr.port)
    writer.write(packet)
    await writer.drain()
    try:
        async with asyncio.timeout(10):
            return await reader.read(4)
    finally:
        writer.close()


def test_dauth_gates_logins_on_each_broker(devnet: Any) -> None:
    dn, state = devnet
    stranger = NodeKey.generate()
    login = connect_packet(broker_client_id(stranger.address), stranger.address,
                           broker_password(stranger, state.network).encode())  # fmt: skip
    for broker in state.brokers:
        # a valid login of an unlicensed key, and no login at all: both refused (CONNACK 5)
        assert asyncio.run(connack(broker.url, login)) == b"\x20\x02\x00\x05"
        assert asyncio.run(connack(broker.url, connect_packet("anonymous"))) == b"\x20\x02\x00\x05"
        log = (Path(broker.dir) / "gate.log").read_text()
        assert f"refused MQTT client {stranger.address.lower()}: not admitted by dAuth" in log
        # the bridge listener wants the bridge user's password
        anon = connect_packet("not-a-bridge")
        assert asyncio.run(connack(f"mqtt://127.0.0.1:{broker.bridge_port}", anon))[:3] == b"\x20\x02\x00"
        assert asyncio.run(connack(f"mqtt://127.0.0.1:{broker.bridge_port}", anon)) != b"\x20\x02\x00\x00"
    for broker in state.brokers:  # mosquitto's client listener is a socket only the gate uses
        assert broker.mosquitto_url == f"unix://{Path(broker.dir) / 'mqtt.sock'}"
        conf = Path(broker.dir) / "mosquitto.conf"
        listeners = [line for line in conf.read_text().splitlines() if line.startswith("listener ")]
        assert listeners == [
            f"listener 0 {Path(broker.dir) / 'mqtt.sock'}",
            f"listener {broker.bridge_port} 127.0.0.1",
        ]
        assert conf.stat().st_mode & 0o077 == 0  # it holds the bridge password
