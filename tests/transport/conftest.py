"""Fixtures: one real broker per test (embedded amqtt or a mosquitto process) and transports on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest

from r1os.transport import EmbeddedBroker, MosquittoBroker, MqttTransport, find_mosquitto

HAVE_MOSQUITTO = find_mosquitto() is not None


class BrokerUnderTest(Protocol):
    port: int

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


BROKER_KINDS = [
    "amqtt",
    pytest.param(
        "mosquitto",
        marks=[
            pytest.mark.mosquitto,
            pytest.mark.skipif(
                not HAVE_MOSQUITTO,
                reason="mosquitto binary not installed (apt-get install mosquitto)",
            ),
        ],
    ),
]


def new_broker(kind: str, **kwargs: Any) -> EmbeddedBroker | MosquittoBroker:
    if kind == "amqtt":
        return EmbeddedBroker(port=0, **kwargs)
    return MosquittoBroker(**kwargs)


@pytest.fixture(params=BROKER_KINDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerUnderTest]:
    """A running broker of each kind; stop()/start() restarts it on the same port."""
    b = new_broker(request.param)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()
        if isinstance(b, MosquittoBroker):
            b.cleanup()


TransportFactory = Callable[..., MqttTransport]


@pytest.fixture
async def make_transport(broker: BrokerUnderTest) -> AsyncIterator[TransportFactory]:
    """Create transports on `broker` (not started); all are stopped at teardown."""
    made: list[MqttTransport] = []

    def factory(client_id: str, **kwargs: object) -> MqttTransport:
        t = MqttTransport(broker.url, client_id, **kwargs)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield factory
    await asyncio.gather(*(t.stop() for t in made))


class Collector:
    """A handler that records `(topic, payload)` and lets a test wait for a count."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.items.append((topic, payload))
        self._changed.set()

    @property
    def payloads(self) -> list[bytes]:
        return [p for _, p in self.items]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        async def _wait() -> None:
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"got {len(self.items)} of {count} messages within {timeout} s: {self.items[-3:]}"
            ) from None
        return self.items


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll a condition until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.01)
