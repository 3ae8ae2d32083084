"""An in-process cluster of real nodes (real broker, real HTTP, real MQTT) for CSTORE tests,
plus a TCP proxy that can cut one node off the broker to make a real partition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from r1os.cstore import CStoreService
from r1os.identity import NodeKey, load_or_create
from r1os.node import Node, NodeConfig, Service
from r1os.transport import EmbeddedBroker, MqttTransport
from tests.conftest import async_wait_for

HB = 0.5


class TcpProxy:
    """Forwards localhost TCP to a target; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.open = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._conns.update({writer, up_w})

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._conns.difference_update({writer, up_w})

    def cut(self) -> None:
        self.open = False
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    def heal(self) -> None:
        self.open = True

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


class Cluster:
    """`n` real nodes with a CSTORE replica each; `services(i)` adds more services to node `i` (after
    CSTORE), and `mesh=False` lets `start` return before every node sees every other."""

    def __init__(
        self,
        root: Path,
        n: int,
        *,
        sync_interval: float = 0.5,
        services: Callable[[int], list[Service]] | None = None,
        mesh: bool = True,
    ) -> None:
        self.root = root
        self.n = n
        self.sync_interval = sync_interval
        self.services = services
        self.mesh = mesh
        self.broker = EmbeddedBroker(port=0)
        self.nodes: list[Node] = []
        self.proxies: list[TcpProxy] = []
        self.http = httpx.AsyncClient(timeout=5)

    async def start(self) -> None:
        await self.broker.start()
        for i in range(self.n):
            await self.add_node(i)
        if self.mesh:
            await self.wait_mesh()

    def key(self, i: int) -> NodeKey:
        """Node `i`'s key, made now if the node has not started yet (to know its address ahead)."""
        return load_or_create(self.home(i) / "keys" / "node.json", "pw", strength="light")[0]

    def home(self, i: int) -> Path:
        return self.root / f"n{i}"

    def token(self, i: int) -> str:
        """Node `i`'s API token, as its operator reads it (`<home>/api-token`)."""
        return (self.home(i) / "api-token").read_text().strip()

    async def add_node(self, i: int) -> Node:
        proxy = TcpProxy(self.broker.port)
        await proxy.start()
        url = f"mqtt://127.0.0.1:{proxy.port}"
        config = NodeConfig(
            home=self.home(i), network="ctest", http="127.0.0.1:0", broker=url,
            heartbeat_interval=HB, key_strength="light",
        )  # fmt: skip
        svc = CStoreService(sync_interval=self.sync_interval, fsync=True)
        transport = MqttTransport(url, client_id=f"ctest-{i}", backoff_max=0.5)
        extra = self.services(i) if self.services is not None else []
        node = Node(config, password="pw", services=[svc, *extra], transport=transport)
        await node.start()
        self.nodes.append(node)
        self.proxies.append(proxy)
        return node

    def cstore(self, i: int) -> CStoreService:
        svc = self.nodes[i].services[0]
        assert isinstance(svc, CStoreService)
        return svc

    async def wait_mesh(self) -> None:
        want = len(self.nodes) - 1

        async def meshed() -> bool:
            return all(len(n.netmap.online()) == want for n in self.nodes)

        await async_wait_for(meshed, 20, "every node to see every other")

    async def digests(self) -> list[str]:
        return [self.cstore(i).state.digest() for i in range(len(self.nodes))]

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        for p in self.proxies:
            await p.stop()
        await self.http.aclose()
        await self.broker.stop()


async def http_json(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
    r = await client.request(method, url, **kw)
    return r.status_code, r.json()
