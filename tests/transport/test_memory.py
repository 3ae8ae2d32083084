"""MemoryTransport keeps the Transport contract without a broker: routing by MQTT filters, ordered
delivery per subscription, an offline queue with a bound, slow and failing handlers isolated."""

from __future__ import annotations

import asyncio

import pytest

from r1os.errors import TransportError
from r1os.transport import MemoryHub, MemoryTransport, topic_matches
from tests.conftest import async_wait_for


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("r1/dev/#", "r1/dev/b/hb", True),
        ("r1/dev/#", "r1/dev", True),  # MQTT: `a/#` also matches `a`
        ("r1/+/hb", "r1/dev/hb", True),
        ("r1/+/hb", "r1/dev/x/hb", False),
        ("r1/dev/hb", "r1/dev/hb", True),
        ("r1/dev/hb", "r1/dev/hb/x", False),
        ("r1/dev/+", "r1/dev", False),
        ("#", "anything/at/all", True),
    ],
)
def test_topic_matching_follows_mqtt(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


async def test_publications_reach_matching_subscribers_in_order() -> None:
    hub = MemoryHub()
    a, b, c = (MemoryTransport(hub, client_id=n) for n in "abc")
    got_b: list[tuple[str, bytes]] = []
    got_c: list[bytes] = []
    b.subscribe("r1/test/b/#", lambda t, p: got_b.append((t, p)))
    c.subscribe("r1/test/+/hb", lambda t, p: got_c.append(p))
    for t in (a, b, c):
        await t.start()
    for i in range(100):
        await a.publish("r1/test/b/hb", str(i).encode())
    await a.publish("r1/test/c/other", b"not for b, not for c")
    await async_wait_for(lambda: _true(len(got_b) == 100 and len(got_c) == 100), 5, "delivery")
    assert [p for _, p in got_b] == [str(i).encode() for i in range(100)]
    assert got_c == [str(i).encode() for i in range(100)]
    assert a.stats.published == 101 and b.stats.received == 100
    for t in (a, b, c):
        await t.stop()


async def test_offline_queue_is_bounded_and_flushed_on_reconnect() -> None:
    hub = MemoryHub()
    sender = MemoryTransport(hub, queue_limit=10)
    receiver = MemoryTransport(hub)
    got: list[bytes] = []
    receiver.subscribe("t/#", lambda _t, p: got.append(p))
    await receiver.start()
    for i in range(5):  # published before start: queued, sent once started
        await sender.publish("t/x", b"early%d" % i)
    await sender.start()
    await async_wait_for(lambda: _true(len(got) == 5), 5, "early messages")
    await hub.disconnect(sender)
    assert not sender.connected
    for i in range(25):
        await sender.publish("t/x", b"%d" % i)
    assert sender.stats.queued == 10 and sender.stats.dropped_offline == 15
    await hub.reconnect(sender)
    await async_wait_for(lambda: _true(len(got) == 15), 5, "flushed queue")
    assert got[5:] == [b"%d" % i for i in range(15, 25)]  # the oldest were dropped
    assert sender.stats.reconnects == 1
    await sender.stop()
    await receiver.stop()
    with pytest.raises(TransportError):
        await sender.wait_connected(0.1)


async def test_a_failing_or_slow_handler_does_not_stop_the_others() -> None:
    hub = MemoryHub()
    t = MemoryTransport(hub, handler_queue_limit=4)
    release = asyncio.Event()
    fine: list[bytes] = []

    def broken(_topic: str, _payload: bytes) -> None:
        raise RuntimeError("handler bug")

    async def slow(_topic: str, _payload: bytes) -> None:
        await release.wait()

    t.subscribe("x/#", broken)
    t.subscribe("x/#", slow)
    t.subscribe("x/#", lambda _t, p: fine.append(p))
    await t.start()
    for i in range(20):
        await t.publish("x/y", b"%d" % i)
        await asyncio.sleep(0)  # one loop turn: the workers take what is queued for them
    await async_wait_for(lambda: _true(len(fine) == 20), 5, "the healthy handler")
    assert t.stats.handler_errors == 20
    assert t.stats.dropped_slow == 15  # the slow one holds 1 in hand and 4 queued
    release.set()
    await t.stop()


async def test_publishing_to_a_filter_is_refused() -> None:
    t = MemoryTransport(MemoryHub())
    await t.start()
    with pytest.raises(TransportError):
        await t.publish("r1/+/x", b"")
    await t.stop()


async def _true(value: bool) -> bool:
    return value
