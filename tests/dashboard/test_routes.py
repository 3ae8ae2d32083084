"""The dashboard's routes on real nodes (HTTP API, heartbeats) carried by the in-memory transport: the
page and its files, refused file names, the event stream's snapshots, its cap on clients and its end
when the node stops, and the availability relay to an oracle."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import HTTPException

from r1os.dashboard import DashboardService
from r1os.dashboard._static import CONTENT_SECURITY_POLICY, MEDIA_TYPES, StaticFiles
from r1os.node import Node, NodeConfig, Service, ServiceContext, installed_plugins
from r1os.transport import MemoryHub, MemoryTransport
from tests.conftest import async_wait_for

STATIC = Path(__file__).resolve().parents[2] / "src" / "r1os" / "dashboard" / "static"


def _node(home: Path, hub: MemoryHub, services: list[Service], **config: Any) -> Node:
    cfg = NodeConfig(
        home=home, name=home.name, network="test", http="127.0.0.1:0", heartbeat_interval=0.2,
        key_strength="light", **config,
    )  # fmt: skip
    return Node(cfg, password="pw", services=services, transport=MemoryTransport(hub))


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    started: list[Node] = []
    try:
        for n in nodes:
            await n.start()
            started.append(n)
        yield
    finally:
        for n in reversed(started):
            await n.stop()


class Events:
    """An open event stream: `await next()` gives the next snapshot."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            event, data = "", ""
            async for line in self._lines:
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data = line.partition(":")[2].strip()
                elif line == "" and data:
                    assert event == "snapshot"
                    result: dict[str, Any] = json.loads(data)
                    return result
        raise EOFError("the stream ended")


@asynccontextmanager
async def events(http: httpx.AsyncClient) -> AsyncIterator[Events]:
    async with http.stream("GET", "/v1/dashboard/events") as r:
        assert r.status_code == 200, r.status_code
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Events(r)


def assert_error(r: httpx.Response, status: int, cause: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "cause", "hint"} and body["cause"] == cause and body["error"], body


# -- the page and its files ------------------------------------------------------------------------


async def test_the_page_and_every_file_are_served(tmp_path: Path) -> None:
    node = _node(tmp_path / "a", MemoryHub(), [DashboardService()])
    async with running(node), httpx.AsyncClient(base_url=node.url) as http:
        r = await http.get("/")
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert r.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="/dashboard/static/app.js">' in r.text
        names = sorted(p.name for p in STATIC.iterdir())
        assert StaticFiles().names == names and {"app.js", "style.css", "index.html"} <= set(names)
        for name in names:
            r = await http.get(f"/dashboard/static/{name}")
            assert r.status_code == 200, name
            assert r.content == (STATIC / name).read_bytes()
            assert r.headers["content-type"] == MEDIA_TYPES["." + name.rpartition(".")[2]]
            again = await http.get(f"/dashboard/static/{name}", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        # the page names only files that exist
        for ref in ("/dashboard/static/style.css", "/dashboard/static/favicon.svg"):
            assert ref in (STATIC / "index.html").read_text()


async def _raw_get(url: str, target: str) -> tuple[int, dict[str, Any]]:
    """GET `target` exactly as written (no client normalising `..` away)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/static/../../../pyproject.toml",
        "/dashboard/static/..%2f..%2f..%2fpyproject.toml",
        "/dashboard/static/%2e%2e/%2e%2e/_service.py",
        "/dashboard/static/%2fetc%2fpasswd",
        "/dashboard/static/..",
        "/dashboard/static/sub/app.js",
        "/dashboard/static/app.js%00.css",
        "/dashboard/static/..%5c_service.py",
        "/dashboard/static/_service.py",
        "/dashboard/static/APP.JS",
        "/dashboard/static/" + "a" * 300 + ".js",
    ],
)
async def test_file_names_that_are_not_plain_names_are_refused(tmp_path: Path, target: str) -> None:
    node = _node(tmp_path / "a", MemoryHub(), [DashboardService()])
    async with running(node):
        status, body = await _raw_get(node.url, target)
    # 400 from the dashboard, or 404 when the router never matched (e.g. the path left /dashboard/static)
    assert status in (400, 404), (target, status, body)
    assert set(body) == {"error", "cause", "hint"}
    assert body["cause"] in ("invalid_request", "not_found")
    assert "[tool" not in json.dumps(body) and "root:" not in json.dumps(body)


async def test_unknown_files_are_404_and_refusals_are_counted(tmp_path: Path) -> None:
    service = DashboardService()
    node = _node(tmp_path / "a", MemoryHub(), [service])
    async with running(node), httpx.AsyncClient(base_url=node.url) as http:
        assert_error(await http.get("/dashboard/static/nothing.js"), 404, "not_found")
        assert_error(await http.get("/dashboard/static/..%2fx.js"), 400, "invalid_request")
        metrics = (await http.get("/metrics")).text
    assert service.refused == {"not_found": 1, "invalid_request": 1}
    assert 'r1os_dashboard_refused_total{cause="not_found"} 1.0' in metrics


def test_every_node_gets_the_dashboard_from_its_plugin() -> None:
    plugin = next(p for p in installed_plugins() if p.name == "dashboard")
    assert plugin.order == 90 and plugin.order > max(p.order for p in installed_plugins() if p is not plugin)
    services = list(plugin.build(NodeConfig()))
    assert len(services) == 1 and isinstance(services[0], DashboardService)
    assert services[0].max_clients == 32


# -- the event stream ------------------------------------------------------------------------------


async def test_a_snapshot_names_the_node_and_its_peers_and_changes_come_at_once(tmp_path: Path) -> None:
    hub = MemoryHub()
    service = DashboardService(interval=30.0)  # so that any event before 30 s was pushed by a change
    a = _node(tmp_path / "a", hub, [service])
    b = _node(tmp_path / "b", hub, [], oracle=True)
    c = _node(tmp_path / "c", hub, [])
    async with running(a, b), httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        await async_wait_for(lambda: _true(a.netmap.get(b.address) is not None), 10, "a sees b")
        async with events(http) as stream:
            snap = await stream.next()
            assert snap["v"] == 1 and snap["seq"] >= 1
            node = snap["node"]
            assert (node["address"], node["network"], node["url"], node["oracle"]) == (
                a.address,
                "test",
                a.url,
                False,
            )
            assert node["broker_connected"] is True and node["resources"]["cpu_cores"] >= 1
            assert node["uptime"] > 0 and node["ai_address"] == a.key.ai_address
            me, *peers = snap["peers"]
            assert me["self"] is True and me["address"] == a.address
            assert [(p["address"], p["status"], p["oracle"], p["url"]) for p in peers] == [
                (b.address, "online", True, b.url)
            ]
            assert peers[0]["resources"]["cpu_cores"] >= 1 and peers[0]["version"]
            assert snap["counts"] == {"online": 1, "total": 1, "shown": 1}
            assert snap["dashboard"] == {"clients": 1, "max_clients": 32}
            assert snap["metrics"]["r1os_wire_accepted"] >= 1
            assert isinstance(snap["metrics"]["r1os_wire_rejected"], dict)
            assert snap["metrics"]["r1os_heartbeats_sent"] >= 1

            # a new peer is pushed as soon as it is heard, not at the next 30 s tick
            started = time.monotonic()
            async with running(c):
                while c.address not in {p["address"] for p in snap["peers"]}:
                    snap = await stream.next(timeout=10)
            assert time.monotonic() - started < 10
            async with asyncio.timeout(10):  # and when it stops: offline once it missed its heartbeats
                while {p["address"]: p["status"] for p in snap["peers"]}.get(c.address) != "offline":
                    snap = await stream.next(timeout=35)


async def test_at_most_max_clients_streams_then_busy(tmp_path: Path) -> None:
    service = DashboardService(max_clients=3)
    node = _node(tmp_path / "a", MemoryHub(), [service])
    async with running(node), httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        async with events(http) as s1, events(http) as s2, events(http) as s3:
            for s in (s1, s2, s3):
                await s.next()
            assert service.clients == 3
            r = await http.get("/v1/dashboard/events")
            assert_error(r, 503, "busy")
            assert r.json()["hint"]
            await s3.response.aclose()
            await async_wait_for(lambda: _true(service.clients == 2), 10, "a closed stream frees its slot")
            async with events(http) as s4:
                await s4.next()
                assert service.clients == 3
        await async_wait_for(lambda: _true(service.clients == 0), 10, "every slot back")
        metrics = (await http.get("/metrics")).text
    assert service.refused["busy"] == 1
    assert 'r1os_dashboard_refused_total{cause="busy"} 1.0' in metrics
    assert "r1os_dashboard_streams 0.0" in metrics


async def test_streams_end_when_the_node_stops(tmp_path: Path) -> None:
    service = DashboardService()
    node = _node(tmp_path / "a", MemoryHub(), [service])
    await node.start()
    try:
        async with (
            httpx.AsyncClient(base_url=node.url, timeout=10) as http,
            events(http) as s1,
            events(http) as s2,
        ):
            await s1.next()
            await s2.next()
            started = time.monotonic()
            stopping = asyncio.create_task(node.stop())
            for s in (s1, s2):
                with pytest.raises((EOFError, httpx.RemoteProtocolError, httpx.ReadError)):
                    while True:
                        await s.next(timeout=5)
            await asyncio.wait_for(stopping, 10)
            # the server did not wait out its 5 s grace for open streams
            assert time.monotonic() - started < 4
    finally:
        await node.stop()
    assert service.clients == 0


# -- availability ----------------------------------------------------------------------------------


class FakeOracle(Service):
    """The two oracle routes the relay reads, with canned answers; counts the requests."""

    name = "fake-oracle"

    def __init__(self, closed: list[int], values: dict[int, dict[str, Any]], status: Any = None) -> None:
        self.closed = closed
        self.values = values
        self.status = status
        self.hits: list[str] = []

    async def start(self, ctx: ServiceContext) -> None:
        @ctx.router.get("/v1/oracle/epochs")
        async def epochs() -> Any:
            self.hits.append("status")
            if self.status is not None:
                return self.status
            return {
                "oracle": ctx.address, "network": "test", "genesis_time": 1000.0, "epoch_seconds": 60.0,
                "heartbeat": 0.2, "current_epoch": max(self.closed, default=0) + 1, "oracles": [ctx.address],
                "quorum": 1, "last_closed": max(self.closed, default=None),
                "epochs": [{"epoch": e, "nodes": 2, "voters": [], "signers": [], "table_hash": "",
                            "cid": None, "closed_at": 0.0} for e in self.closed],
                "failed": {},
            }  # fmt: skip

        @ctx.router.get("/v1/oracle/epochs/{epoch}")
        async def record(epoch: int) -> Any:
            self.hits.append(f"record {epoch}")
            if epoch not in self.values:
                raise HTTPException(404, "no record")
            return {"network": "test", "epoch": epoch, "values": self.values[epoch], "table_hash": "x"}


async def test_availability_comes_from_an_oracle_peer_and_is_cached(tmp_path: Path) -> None:
    hub = MemoryHub()
    tables = {e: {"0xAAA": 255, "0xBBB": 10 * e} for e in range(1, 6)}
    fake = FakeOracle(closed=[1, 2, 3, 4, 5], values=tables)
    oracle = _node(tmp_path / "o", hub, [fake], oracle=True)
    async with running(oracle):
        service = DashboardService()
        edge = _node(tmp_path / "e", hub, [service], oracles=[oracle.address])
        async with running(edge), httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
            await async_wait_for(
                lambda: _true(edge.netmap.get(oracle.address) is not None), 10, "edge sees oracle"
            )
            r = await http.get("/v1/dashboard/availability", params={"epochs": 3})
            assert r.status_code == 200, r.text
            data = r.json()
            assert data["oracle"] == {"address": oracle.address, "url": oracle.url, "self": False}
            assert (data["current_epoch"], data["last_closed"], data["epoch_seconds"]) == (6, 5, 60.0)
            assert data["epochs"] == [{"epoch": e, "values": tables[e]} for e in (3, 4, 5)]
            assert data["nodes"] == ["0xAAA", "0xBBB"]
            assert fake.hits == ["status", "record 3", "record 4", "record 5"]
            # within the status TTL: answered from memory; a closed epoch's record is fetched once
            r = await http.get("/v1/dashboard/availability", params={"epochs": 4})
            assert [e["epoch"] for e in r.json()["epochs"]] == [2, 3, 4, 5]
            assert fake.hits == ["status", "record 3", "record 4", "record 5", "record 2"]
            # many anonymous callers at once: one refresh at a time, shared
            answers = await asyncio.gather(*(http.get("/v1/dashboard/availability") for _ in range(20)))
            assert all(a.status_code == 200 for a in answers)
            assert fake.hits.count("status") == 1 and fake.hits.count("record 1") == 1
            assert_error(
                await http.get("/v1/dashboard/availability", params={"epochs": 49}), 422, "invalid_request"
            )


async def test_an_oracle_node_asks_itself(tmp_path: Path) -> None:
    fake = FakeOracle(closed=[7], values={7: {"0xAAA": 200}})
    node = _node(tmp_path / "o", MemoryHub(), [fake, DashboardService()], oracle=True)
    async with running(node), httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        data = (await http.get("/v1/dashboard/availability")).json()
    assert data["oracle"]["self"] is True and data["epochs"] == [{"epoch": 7, "values": {"0xAAA": 200}}]


async def test_no_oracle_or_a_hostile_one(tmp_path: Path) -> None:
    hub = MemoryHub()
    alone = _node(tmp_path / "alone", hub, [DashboardService()])
    async with running(alone), httpx.AsyncClient(base_url=alone.url, timeout=10) as http:
        assert_error(await http.get("/v1/dashboard/availability"), 404, "no_oracle")

    # an "oracle" answering nonsense: refused as a bad answer (502), and not asked again within the TTL
    liar = FakeOracle(closed=[], values={}, status={"epochs": "lots", "current_epoch": "x"})
    oracle = _node(tmp_path / "liar", hub, [liar], oracle=True)
    edge = _node(tmp_path / "edge", hub, [DashboardService()])  # no oracle set: heartbeats' flag counts
    async with running(oracle, edge), httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
        await async_wait_for(lambda: _true(edge.netmap.get(oracle.address) is not None), 10, "edge sees it")
        assert_error(await http.get("/v1/dashboard/availability"), 502, "no_oracle")
        assert_error(await http.get("/v1/dashboard/availability"), 502, "no_oracle")
        assert liar.hits == ["status"]

    # out-of-range values in a record: that epoch is left out, the rest shown
    bad = FakeOracle(closed=[1, 2], values={1: {"0xAAA": 999}, 2: {"0xAAA": 3}})
    o2 = _node(tmp_path / "o2", hub, [bad, DashboardService()], oracle=True)
    async with running(o2), httpx.AsyncClient(base_url=o2.url, timeout=10) as http:
        data = (await http.get("/v1/dashboard/availability")).json()
        again = (await http.get("/v1/dashboard/availability")).json()
    assert data["epochs"] == again["epochs"] == [{"epoch": 2, "values": {"0xAAA": 3}}]
    assert bad.hits == ["status", "record 1", "record 2"]  # the bad one is not asked for again at once


async def _true(value: bool) -> bool:
    return value
