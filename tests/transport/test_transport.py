"""The MQTT transport against real brokers: the embedded amqtt broker and a mosquitto process.

Every test here that takes `broker` runs once per broker kind.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from r1os.errors import TransportError
from r1os.transport import MqttTransport, broadcast_topic, heartbeat_topic, inbox_topic
from r1os.transport.mosquitto import free_port

from .conftest import BrokerUnderTest, Collector, TransportFactory, wait_until

NET = "testnet"
ADDRS = [f"0x{i:040x}" for i in range(1, 6)]


async def started(*transports: MqttTransport) -> None:
    for t in transports:
        await t.start()
    for t in transports:
        await t.wait_connected(10)


async def test_broadcast_reaches_every_client(make_transport: TransportFactory) -> None:
    nodes = [make_transport(f"node-{i}") for i in range(4)]
    collectors = [Collector() for _ in nodes]
    for node, col in zip(nodes, collectors, strict=True):
        node.subscribe(heartbeat_topic(NET), col)
    await started(*nodes)

    for i, node in enumerate(nodes):
        await node.publish(heartbeat_topic(NET), f"hb-{i}".encode())

    for col in collectors:
        await col.wait_for(4)
        assert sorted(col.payloads) == [b"hb-0", b"hb-1", b"hb-2", b"hb-3"]
        assert {t for t, _ in col.items} == {"r1/testnet/b/hb"}
    assert all(n.stats.published == 1 and n.stats.received == 4 for n in nodes)


async def test_inbox_delivers_only_to_its_node(make_transport: TransportFactory) -> None:
    sender, bob, carol = (make_transport(n) for n in ("sender", "bob", "carol"))
    bob_inbox, carol_inbox = Collector(), Collector()
    # Subscribe with the EIP-55-style mixed case; the inbox topic is lower case either way.
    bob.subscribe(inbox_topic(NET, ADDRS[1].upper().replace("0X", "0x")), bob_inbox)
    carol.subscribe(inbox_topic(NET, ADDRS[2]), carol_inbox)
    await started(sender, bob, carol)

    await sender.publish(inbox_topic(NET, ADDRS[1]), b"for bob", qos=1)
    await sender.publish(inbox_topic(NET, ADDRS[2]), b"for carol")

    await bob_inbox.wait_for(1)
    await carol_inbox.wait_for(1)
    assert bob_inbox.items == [(f"r1/testnet/n/{ADDRS[1]}", b"for bob")]
    assert carol_inbox.payloads == [b"for carol"]


async def test_wildcards(make_transport: TransportFactory) -> None:
    pub, sub, sub2 = make_transport("pub"), make_transport("sub"), make_transport("sub2")
    every_broadcast, whole_network, any_net_inbox = Collector(), Collector(), Collector()
    # Nested patterns on one client: each handler still sees each message exactly once.
    sub.subscribe(f"r1/{NET}/b/+", every_broadcast)
    sub.subscribe(f"r1/{NET}/#", whole_network)
    # Partly overlapping patterns go on another client (see docs/transport.md, amqtt quirks).
    sub2.subscribe(f"r1/+/n/{ADDRS[0]}", any_net_inbox)
    await started(pub, sub, sub2)

    await pub.publish(broadcast_topic(NET, "hb"), b"1")
    await pub.publish(broadcast_topic(NET, "gossip"), b"2")
    await pub.publish(inbox_topic("othernet", ADDRS[0]), b"3")  # only the inbox pattern
    await pub.publish(inbox_topic(NET, ADDRS[3]), b"4")  # only the network pattern
    await pub.publish(inbox_topic(NET, ADDRS[0]), b"5")  # network and inbox patterns
    await pub.publish("r1/testnet/b/deep/er", b"6")  # '+' is one level only

    await whole_network.wait_for(5)
    await any_net_inbox.wait_for(2)
    await every_broadcast.wait_for(2)
    assert whole_network.payloads == [b"1", b"2", b"4", b"5", b"6"]
    assert any_net_inbox.payloads == [b"3", b"5"]
    assert every_broadcast.payloads == [b"1", b"2"]
    assert sub.stats.received == 5


async def test_same_pattern_twice_and_nested_patterns_deliver_once(
    make_transport: TransportFactory,
) -> None:
    pub, sub = make_transport("pub"), make_transport("sub")
    a, b, c, d = Collector(), Collector(), Collector(), Collector()
    sub.subscribe(heartbeat_topic(NET), a)
    sub.subscribe(heartbeat_topic(NET), b)
    sub.subscribe(f"r1/{NET}/b/+", c)
    await started(pub, sub)
    # Added while connected: the broader pattern replaces the narrower ones on the broker.
    await sub.subscribe("r1/#", d).ready(10)

    await pub.publish(heartbeat_topic(NET), b"once")
    await pub.publish("r1/end", b"end")
    await d.wait_for(2)
    for col in (a, b, c):
        await col.wait_for(1)
    assert a.payloads == b.payloads == c.payloads == [b"once"]
    assert d.payloads == [b"once", b"end"]
    assert sub.stats.received == 2


async def test_large_payload(make_transport: TransportFactory) -> None:
    pub, sub = make_transport("pub"), make_transport("sub")
    col = Collector()
    sub.subscribe(broadcast_topic(NET, "blob"), col)
    await started(pub, sub)
    blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert len(blob) == 1 << 20

    await pub.publish(broadcast_topic(NET, "blob"), blob, qos=1)

    (topic, payload), *_ = await col.wait_for(1, timeout=20)
    assert payload == blob


@pytest.mark.parametrize("qos", [0, 1])
async def test_order_from_one_publisher(make_transport: TransportFactory, qos: int) -> None:
    pub, sub = make_transport("pub"), make_transport("sub")
    col = Collector()
    sub.subscribe(broadcast_topic(NET, "seq"), col)
    await started(pub, sub)

    for i in range(300):
        await pub.publish(broadcast_topic(NET, "seq"), i.to_bytes(4, "big"), qos=qos)

    await col.wait_for(300)
    assert [int.from_bytes(p, "big") for p in col.payloads] == list(range(300))


async def test_reconnect_after_broker_restart(
    broker: BrokerUnderTest, make_transport: TransportFactory
) -> None:
    # `node` publishes to itself: on reconnect it renews its subscriptions *before* replaying its
    # offline queue, so every message that survived the bound must arrive.
    node = make_transport("node", queue_limit=50)
    other = make_transport("other")
    own, seen_by_other = Collector(), Collector()
    node.subscribe(broadcast_topic(NET, "q"), own)
    other.subscribe(broadcast_topic(NET, "live"), seen_by_other)
    await started(node, other)

    await broker.stop()
    await wait_until(lambda: not node.connected and not other.connected, what="disconnect")

    for i in range(80):  # 30 over the bound: the 30 oldest are dropped and counted
        await node.publish(broadcast_topic(NET, "q"), str(i).encode())
    assert node.stats.queued == 50
    assert node.stats.dropped_offline == 30

    await broker.start()
    await node.wait_connected(15)
    await other.wait_connected(15)

    await own.wait_for(50)
    assert own.payloads == [str(i).encode() for i in range(30, 80)]
    assert node.stats.queued == 0
    assert node.stats.reconnects == 1 and other.stats.reconnects == 1

    # The other client's subscription was renewed too.
    await node.publish(broadcast_topic(NET, "live"), b"after restart")
    await seen_by_other.wait_for(1)
    assert seen_by_other.payloads == [b"after restart"]


async def test_handler_exception_does_not_stop_delivery(
    make_transport: TransportFactory, caplog: pytest.LogCaptureFixture
) -> None:
    pub, sub = make_transport("pub"), make_transport("sub")
    seen: list[bytes] = []
    col = Collector()

    def fragile(topic: str, payload: bytes) -> None:  # a plain function is a handler too
        seen.append(payload)
        if payload.startswith(b"boom"):
            raise RuntimeError("handler bug")

    sub.subscribe(broadcast_topic(NET, "x"), fragile)
    sub.subscribe(broadcast_topic(NET, "x"), col)
    await started(pub, sub)

    with caplog.at_level(logging.WARNING, logger="r1os.transport.mqtt"):
        for payload in (b"ok-1", b"boom-1", b"ok-2", b"boom-2", b"ok-3"):
            await pub.publish(broadcast_topic(NET, "x"), payload)
        await col.wait_for(5)
        await wait_until(lambda: len(seen) == 5, what="the fragile handler saw all 5")

    assert seen == [b"ok-1", b"boom-1", b"ok-2", b"boom-2", b"ok-3"]
    assert sub.stats.handler_errors == 2
    assert "handler for 'r1/testnet/b/x' failed" in caplog.text


async def test_slow_handler_does_not_stall_others(make_transport: TransportFactory) -> None:
    pub = make_transport("pub")
    sub = make_transport("sub", handler_queue_limit=5)
    release = asyncio.Event()
    slow_seen: list[bytes] = []
    fast = Collector()

    async def slow(topic: str, payload: bytes) -> None:
        await release.wait()
        slow_seen.append(payload)

    sub.subscribe(broadcast_topic(NET, "x"), slow)
    sub.subscribe(broadcast_topic(NET, "x"), fast)
    await started(pub, sub)

    for i in range(40):
        await pub.publish(broadcast_topic(NET, "x"), str(i).encode())
    await fast.wait_for(40)  # the fast handler got everything while the slow one is stuck
    dropped = sub.stats.dropped_slow
    # The slow handler holds one message and queues 5; the rest is dropped and counted.
    assert 40 - 6 <= dropped <= 40 - 5

    release.set()
    await wait_until(lambda: len(slow_seen) == 40 - dropped, what="slow handler drained")
    assert slow_seen == sorted(slow_seen, key=int)  # its own order is kept


async def test_subscribe_while_connected_and_unsubscribe(make_transport: TransportFactory) -> None:
    pub, sub = make_transport("pub"), make_transport("sub")
    await started(pub, sub)
    col = Collector()
    handle = sub.subscribe(broadcast_topic(NET, "late"), col)
    await handle.ready(10)
    await pub.publish(broadcast_topic(NET, "late"), b"1")
    await col.wait_for(1)

    sub.unsubscribe(handle)
    marker = Collector()
    await sub.subscribe(broadcast_topic(NET, "marker"), marker).ready(10)
    await pub.publish(broadcast_topic(NET, "late"), b"2")
    await pub.publish(broadcast_topic(NET, "marker"), b"m")
    await marker.wait_for(1)
    assert col.payloads == [b"1"]


async def test_stop_is_clean_and_idempotent(make_transport: TransportFactory) -> None:
    node = make_transport("node")
    node.subscribe(broadcast_topic(NET, "x"), Collector())
    async with node:
        await node.wait_connected(10)
        assert node.connected
    assert not node.connected
    await node.stop()  # second stop: no-op
    leftovers = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("mqtt")]
    assert leftovers == []
    with pytest.raises(TransportError, match="stopped"):
        await node.publish(broadcast_topic(NET, "x"), b"late")
    with pytest.raises(TransportError, match="stopped"):
        await node.start()


async def test_publish_before_start_is_sent_once_connected(make_transport: TransportFactory) -> None:
    node = make_transport("node")
    col = Collector()
    node.subscribe(broadcast_topic(NET, "x"), col)
    listener = make_transport("listener")
    listener.subscribe(broadcast_topic(NET, "x"), col)
    await started(listener)
    # Published before start: queued, then sent once connected.
    await node.publish(broadcast_topic(NET, "x"), b"early")
    assert node.stats.queued == 1
    await started(node)
    await col.wait_for(1)
    assert col.payloads[0] == b"early"


# -- no broker needed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "localhost:1883",
        "http://127.0.0.1:1883",
        "mqtt://",
        "mqtt://127.0.0.1:notaport",
        "mqtt://127.0.0.1:70000",
        "mqtt://127.0.0.1:0",
        "mqtt://127.0.0.1:1883/some/path",
    ],
)
def test_bad_url_gives_clear_error(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(TransportError, match="broker URL") as info:
        MqttTransport(url, "node")
    assert info.value.hint and "mqtt://" in info.value.hint
    assert "broker URL" in caplog.text


def test_good_urls() -> None:
    t = MqttTransport("mqtt://u%40x:p@Example.org", "node")
    assert (t.address.host, t.address.port, t.address.tls) == ("example.org", 1883, False)
    assert (t.address.username, t.address.password) == ("u@x", "p")
    assert MqttTransport("mqtts://broker.example:9999", "n").address.tls


async def test_bad_arguments_give_clear_errors(caplog: pytest.LogCaptureFixture) -> None:
    t = MqttTransport("mqtt://127.0.0.1:1", "node")
    with pytest.raises(TransportError, match="invalid topic"):
        await t.publish("r1/x/b/+", b"x")
    with pytest.raises(TransportError, match="invalid topic"):
        await t.publish("", b"x")
    with pytest.raises(TransportError, match="reserved"):
        await t.publish("$SYS/x", b"x")
    with pytest.raises(TransportError, match="payload must be bytes"):
        await t.publish("r1/x/b/hb", "text")  # type: ignore[arg-type]
    with pytest.raises(TransportError, match="invalid QoS"):
        await t.publish("r1/x/b/hb", b"x", qos=3)
    with pytest.raises(TransportError, match="invalid subscription pattern"):
        t.subscribe("r1/#/x", Collector())
    with pytest.raises(TransportError, match="not callable"):
        t.subscribe("r1/#", "nope")  # type: ignore[arg-type]
    with pytest.raises(TransportError, match="client id"):
        MqttTransport("mqtt://127.0.0.1:1883", "")
    await t.stop()
    # Each refusal was also logged.
    for text in ("invalid topic", "reserved", "payload must be bytes", "invalid QoS", "pattern"):
        assert text in caplog.text


async def test_no_broker_queues_and_wait_connected_times_out() -> None:
    t = MqttTransport(f"mqtt://127.0.0.1:{free_port()}", "lonely", queue_limit=3)
    async with t:
        for i in range(5):
            await t.publish("r1/x/b/hb", bytes([i]))  # never raises while offline
        assert not t.connected
        assert t.stats.queued == 3 and t.stats.dropped_offline == 2
        with pytest.raises(TransportError, match="not connected to mqtt://127.0.0.1"):
            await t.wait_connected(0.3)


async def test_stop_while_broker_never_answers_leaves_nothing_behind() -> None:
    """A server that accepts TCP but never sends CONNACK: stop() must still end everything."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t = MqttTransport(f"mqtt://127.0.0.1:{port}", "patient", connect_timeout=30)
        await t.start()
        await wait_until(lambda: bool(held), what="the TCP connection")
        with pytest.raises(TransportError, match="not connected"):
            await t.wait_connected(0.2)
        await asyncio.wait_for(t.stop(), 5)
        leftovers = [
            task
            for task in asyncio.all_tasks()
            if "_misc_loop" in repr(task.get_coro()) or task.get_name().startswith("mqtt")
        ]
        assert leftovers == []
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_handler_may_stop_its_own_transport(make_transport: TransportFactory) -> None:
    pub, sub = make_transport("pub"), make_transport("sub")
    stopped = asyncio.Event()

    async def stop_on_message(topic: str, payload: bytes) -> None:
        await sub.stop()
        stopped.set()

    sub.subscribe(broadcast_topic(NET, "bye"), stop_on_message)
    await started(pub, sub)
    await pub.publish(broadcast_topic(NET, "bye"), b"stop now")
    await asyncio.wait_for(stopped.wait(), 10)
    assert not sub.connected
    await wait_until(
        lambda: not [t for t in asyncio.all_tasks() if t.get_name().startswith("mqtt-sub")],
        what="the handler's own worker to end",
    )
