"""The service seam, on real nodes (HTTP API, heartbeats) carried by the in-memory transport: tasks a
service spawns end with the node, stop callbacks run in order, typed lookups, heartbeat fields reach
peers, an admission hook gates messages, and every error answer has one shape."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.errors import NodeError, R1osError, error_from_body
from r1os.node import Node, NodeConfig, Service, ServiceContext
from r1os.transport import MemoryHub, MemoryTransport
from r1os.wire import Envelope
from tests.conftest import async_wait_for


class QuotaFull(R1osError):
    cause = "quota"
    status = 429
    hint = "delete something first"


class Ticker(Service):
    """Counts in a spawned task, advertises a runtime in heartbeats, keeps a log of its stop."""

    name = "ticker"

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.ticks = 0
        self.task: asyncio.Task[Any] | None = None
        self.ctx: ServiceContext | None = None

    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.task = ctx.spawn(self._tick(), "tick")
        ctx.on_stop(lambda: self.events.append("first registered"))

        async def closing() -> None:
            self.events.append("last registered")

        ctx.on_stop(closing)

        @ctx.router.get("/v1/ticker/full")
        async def full() -> dict[str, Any]:
            raise QuotaFull("namespace full")

        @ctx.router.get("/v1/ticker/bug")
        async def bug() -> dict[str, Any]:
            raise ZeroDivisionError

    async def _tick(self) -> None:
        try:
            while True:
                self.ticks += 1
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.events.append("task cancelled")
            raise

    async def stop(self) -> None:
        assert self.task is not None and self.task.done(), "tasks end before stop()"
        self.events.append("stop")

    def heartbeat_fields(self) -> dict[str, Any]:
        return {"runtimes": ["process"], "ticks": self.ticks}


class Gate(Service):
    """Needs the ticker (typed lookup) and refuses messages from one address."""

    name = "gate"

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.ticker: Ticker | None = None
        self.seen: list[str] = []

    async def start(self, ctx: ServiceContext) -> None:
        self.ticker = ctx.require(Ticker)  # typed: Ticker, no cast
        ctx.on("ping", self._ping)

    async def _ping(self, env: Envelope) -> None:
        self.seen.append(env.sender)

    def admits(self, sender: str, type: str = "") -> bool:
        return sender.lower() not in self.refused


def _node(home: Path, hub: MemoryHub, services: list[Service]) -> Node:
    config = NodeConfig(
        home=home, name=home.name, network="test", http="127.0.0.1:0", heartbeat_interval=0.2,
        key_strength="light",
    )  # fmt: skip
    return Node(config, password="pw", services=services, transport=MemoryTransport(hub))


async def test_services_on_nodes_over_the_memory_transport(tmp_path: Path) -> None:
    hub = MemoryHub()
    events: list[str] = []
    ticker_a = Ticker(events)
    a = _node(tmp_path / "a", hub, [ticker_a, Gate(set())])
    b_gate = Gate(set())
    b = _node(tmp_path / "b", hub, [Ticker([]), b_gate])
    c_gate = Gate(set())
    c = _node(tmp_path / "c", hub, [Ticker([]), c_gate])
    for n in (a, b, c):
        await n.start()
    try:
        assert b_gate.ticker is not None and isinstance(b_gate.ticker, Ticker)

        # heartbeat fields of a's ticker reach b
        async def b_sees_a_runtime() -> bool:
            peer = b.netmap.get(a.address)
            return peer is not None and peer.heartbeat.services_info.get("ticker", {}).get("runtimes") == [
                "process"
            ]

        await async_wait_for(b_sees_a_runtime, 10, "a's heartbeat fields at b")
        # the admission hook: c refuses a, b does not
        c_gate.refused.add(a.address.lower())
        await a.broadcast("ping", {})
        await async_wait_for(lambda: _true(a.address in b_gate.seen), 5, "b accepts a's ping")
        await b.broadcast("ping", {})
        await async_wait_for(lambda: _true(b.address in c_gate.seen), 5, "c accepts b's ping")
        assert a.address not in c_gate.seen
        assert c.verifier.stats()["rejected"].get("not_admitted", 0) >= 1

        # one error shape: a service's R1osError, an unknown route, a bad parameter, a crash
        async with httpx.AsyncClient(base_url=a.url) as http:
            r = await http.get("/v1/ticker/full")
            assert (r.status_code, r.json()) == (
                429, {"error": "namespace full", "cause": "quota", "hint": "delete something first"},
            )  # fmt: skip
            err = error_from_body(r.status_code, r.json())
            assert (err.cause, err.status, err.hint) == ("quota", 429, "delete something first")
            r = await http.get("/v1/nowhere")
            assert r.status_code == 404 and r.json()["cause"] == "not_found"
            r = await http.get("/v1/ticker/bug")
            assert r.status_code == 500
            assert r.json() == {
                "error": "internal error: ZeroDivisionError",
                "cause": "internal",
                "hint": "see the node's log",
            }
            spec = (await http.get("/openapi.json")).json()
            assert "ErrorAnswer" in spec["components"]["schemas"]
    finally:
        for n in (c, b, a):
            await n.stop()
    assert ticker_a.task is not None and ticker_a.task.cancelled()
    assert events == ["task cancelled", "stop", "last registered", "first registered"]


async def test_require_names_the_missing_service(tmp_path: Path) -> None:
    node = _node(tmp_path / "n", MemoryHub(), [Gate(set())])  # Gate needs a Ticker started before it
    with pytest.raises(NodeError) as caught:
        await node.start()
    await node.stop()
    assert "needs Ticker" in str(caught.value) and caught.value.hint


async def test_spawn_after_stop_is_refused(tmp_path: Path) -> None:
    ticker = Ticker([])
    node = _node(tmp_path / "n", MemoryHub(), [ticker])
    await node.start()
    await node.stop()
    assert ticker.ctx is not None

    async def late() -> None:
        return None

    with pytest.raises(NodeError):
        ticker.ctx.spawn(late(), "late")


async def _true(value: bool) -> bool:
    return value
