"""Two mosquitto brokers bridged with mosquitto's own bridge configuration, and the admission gate
that puts a CONNECT check in front of a mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from r1os.transport import MosquittoBroker, MqttTransport, find_mosquitto
from r1os.transport.gate import MAX_CONNECT_BYTES, BadConnect, MqttGate, parse_connect
from r1os.transport.mosquitto import BridgeSpec, mosquitto_config
from r1os.transport.mosquitto import free_port as mosquitto_free_port

from .conftest import HAVE_MOSQUITTO, Collector, wait_until

pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto binary not installed"),
]
TOPIC = "r1/bridged/b/hb"


@pytest.fixture
async def bridged() -> AsyncIterator[tuple[MosquittoBroker, MosquittoBroker]]:
    bridge_port = mosquitto_free_port()
    a = MosquittoBroker(bridge_port=bridge_port, bridge_users={"bridge": "s3cret"})
    b = MosquittoBroker(bridges=[BridgeSpec("r1os-bridge-b", f"127.0.0.1:{bridge_port}", "bridge", "s3cret")])
    await a.start()
    await b.start()
    yield a, b
    for x in (b, a):
        await x.stop()
        x.cleanup()


async def crossed(pub: MqttTransport, got: Collector, payload: bytes) -> None:
    """Publish `payload` until it arrives on the other side (the bridge connects asynchronously)."""
    for _ in range(100):
        await pub.publish(TOPIC, payload, qos=1)
        with contextlib.suppress(AssertionError):
            await got.wait_for(1, timeout=0.1)
            return
    raise AssertionError("nothing crossed the bridge in 10 s")


async def test_clients_on_two_bridged_brokers_see_each_other_once(
    bridged: tuple[MosquittoBroker, MosquittoBroker],
) -> None:
    a, b = bridged
    on_a, on_b = Collector(), Collector()
    async with MqttTransport(a.url, "client-a") as ta, MqttTransport(b.url, "client-b") as tb:
        await ta.subscribe("r1/bridged/#", on_a, qos=1).ready()
        await tb.subscribe("r1/bridged/#", on_b, qos=1).ready()
        await ta.wait_connected()
        await tb.wait_connected()
        await crossed(tb, on_a, b"probe")  # B -> A once the bridge is up
        on_a.items.clear()
        on_b.items.clear()
        await ta.publish(TOPIC, b"from-a", qos=1)
        await tb.publish(TOPIC, b"from-b", qos=1)
        await on_a.wait_for(2)
        await on_b.wait_for(2)
        # markers after them on both paths: a copy looping back over the bridge would precede them
        await ta.publish(TOPIC, b"end-a", qos=1)
        await tb.publish(TOPIC, b"end-b", qos=1)
        await on_a.wait_for(4)
        await on_b.wait_for(4)
        want = [b"end-a", b"end-b", b"from-a", b"from-b"]
        assert sorted(on_a.payloads) == sorted(on_b.payloads) == want


async def test_a_bridge_with_wrong_credentials_is_refused(tmp_path: Path) -> None:
    bridge_port = mosquitto_free_port()
    a = MosquittoBroker(bridge_port=bridge_port, bridge_users={"bridge": "s3cret"})
    b = MosquittoBroker(bridges=[BridgeSpec("r1os-bridge-x", f"127.0.0.1:{bridge_port}", "bridge", "wrong")])
    async with a, b:
        await wait_until(lambda: "not authorised" in a.log_path.read_text(), 10, "a refused bridge login")
        got = Collector()
        async with MqttTransport(a.url, "client-a") as ta, MqttTransport(b.url, "client-b") as tb:
            await ta.subscribe("r1/#", got, qos=1).ready()
            await tb.wait_connected()
            await tb.publish(TOPIC, b"x", qos=1)
            with pytest.raises(AssertionError):
                await got.wait_for(1, timeout=1.0)


def test_bridge_settings_with_spaces_are_refused() -> None:
    with pytest.raises(Exception, match="spaces"):
        BridgeSpec("n", "127.0.0.1:1", "user", "pass word").config_lines()
    text = mosquitto_config(port=1, log_path=Path("/tmp/x.log"),
                            bridges=[BridgeSpec("n", "h:1", "u", "p")])  # fmt: skip
    assert "topic r1/# both 1" in text and "remote_username u" in text


# -- the gate --------------------------------------------------------------------------------------


def connect_packet(client_id: str, username: str | None = None, password: bytes | None = None) -> bytes:
    def s(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = s(b"MQTT") + bytes([4, flags]) + (15).to_bytes(2, "big") + s(client_id.encode())
    if username is not None:
        body += s(username.encode())
    if password is not None:
        body += s(password)
    n, length = len(body), b""
    while True:
        byte, n = n & 0x7F, n >> 7
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return b"\x10" + length + body


def test_parse_connect_reads_credentials_and_refuses_garbage() -> None:
    info = parse_connect(connect_packet("r1os-0xab", "0xab", b"pw"))
    assert (info.level, info.client_id, info.username, info.password) == (4, "r1os-0xab", "0xab", b"pw")
    assert parse_connect(connect_packet("anon")).username is None
    for bad in (b"\x30\x00", connect_packet("x")[:-1], b"\x10\x02\x00\x04", b"\x10\xff\xff\xff\xff\x01"):
        with pytest.raises(BadConnect):
            parse_connect(bad)


@pytest.fixture
async def gated() -> AsyncIterator[dict[str, Any]]:
    admitted = {"good"}

    def authorize(client_id: str, username: str | None, password: bytes | None) -> bool:
        return username in admitted and password == b"pw"

    broker = MosquittoBroker()
    await broker.start()
    gate = MqttGate(("127.0.0.1", broker.port), authorize, allowed=lambda u: u in admitted, sweep_s=0.1)
    await gate.start()
    yield {"gate": gate, "broker": broker, "admitted": admitted}
    await gate.stop()
    await broker.stop()
    broker.cleanup()


async def raw_exchange(gate: MqttGate, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(gate.host, gate.port)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read(100)
    except ConnectionResetError:  # closed before reading what we sent
        return b""
    finally:
        writer.close()


async def test_gate_admits_passes_traffic_and_refuses_others(gated: dict[str, Any]) -> None:
    gate: MqttGate = gated["gate"]
    got = Collector()
    async with MqttTransport(gate.url, "c1", username="good", password="pw") as t:
        await t.subscribe("r1/g/#", got, qos=1).ready()
        await t.publish("r1/g/b/x", b"hello", qos=1)
        await got.wait_for(1)
    assert gate.stats.accepted == 1 and gate.stats.bytes_to_clients["good"] > 5
    # refused logins get CONNACK 5 and a closed connection
    assert await raw_exchange(gate, connect_packet("c2", "good", b"nope")) == b"\x20\x02\x00\x05"
    assert await raw_exchange(gate, connect_packet("c3", "stranger", b"pw")) == b"\x20\x02\x00\x05"
    assert await raw_exchange(gate, connect_packet("c4")) == b"\x20\x02\x00\x05"
    assert gate.stats.refused == 3
    # not a CONNECT, or one larger than allowed: closed without an answer
    assert await raw_exchange(gate, b"\x30\x05hello") == b""
    assert await raw_exchange(gate, b"\x10" + bytes([0xFF, 0xFF, 0x7F])) == b""
    assert MAX_CONNECT_BYTES < 0x1FFFFF and gate.stats.malformed == 2


async def test_gate_closes_a_revoked_client(gated: dict[str, Any]) -> None:
    gate: MqttGate = gated["gate"]
    t = MqttTransport(gate.url, "c1", username="good", password="pw", backoff_initial=5, backoff_max=5)
    async with t:
        await t.wait_connected()
        gated["admitted"].clear()
        await wait_until(lambda: not t.connected, 5, "the revoked client dropped")
    assert gate.stats.closed_revoked == 1


async def test_gate_bounds_connections_waiting_for_their_login(gated: dict[str, Any]) -> None:
    broker: MosquittoBroker = gated["broker"]
    gate = MqttGate(("127.0.0.1", broker.port), lambda *_: True, max_pending=1, connect_timeout=30)
    await gate.start()
    try:
        _, idle = await asyncio.open_connection(gate.host, gate.port)  # says nothing: holds the slot
        await wait_until(lambda: gate._pending == 1, 5, "the idle connection counted")
        assert await raw_exchange(gate, connect_packet("c1", "good", b"pw")) == b""
        assert gate.stats.malformed == 1
        idle.close()
        await wait_until(lambda: gate._pending == 0, 5, "the slot freed")
        assert await raw_exchange(gate, connect_packet("c2", "good", b"pw")) == b"\x20\x02\x00\x00"
    finally:
        await gate.stop()


async def test_gate_in_front_of_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "m.sock"
    conf = tmp_path / "m.conf"
    conf.write_text(mosquitto_config(port=None, socket_path=sock, log_path=tmp_path / "m.log"))
    proc = await asyncio.create_subprocess_exec(find_mosquitto() or "mosquitto", "-c", str(conf))
    try:
        await wait_until(sock.exists, 10, "mosquitto's socket")
        async with MqttGate(str(sock), lambda *_: True) as gate:
            got = Collector()
            async with MqttTransport(gate.url, "c1") as t:
                await t.subscribe("r1/u/#", got, qos=1).ready()
                await t.publish("r1/u/b/x", b"via the socket", qos=1)
                await got.wait_for(1)
    finally:
        proc.terminate()
        await proc.wait()
