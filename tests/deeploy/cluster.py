"""An in-process Deeploy network: real nodes (real MQTT broker, real HTTP, real CSTORE), node 0 the
oracle that places apps, and replicas run by a chosen runtime (the in-memory one by default)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx

from r1os.cstore import CStoreService
from r1os.deeploy._service import DeeployService
from r1os.deeploy.runtimes import AppRuntime
from r1os.deeploy.runtimes.memory import MemoryRuntime
from r1os.identity import NodeKey, load_or_create
from r1os.node import DeeploySettings, Node, NodeConfig
from r1os.transport import EmbeddedBroker, MqttTransport
from tests.conftest import async_wait_for

HB = 0.3


class DeeployNet:
    def __init__(
        self,
        root: Path,
        n: int,
        runtimes: Callable[[int], dict[str, AppRuntime]] | None = None,
        settings: Callable[[int], DeeploySettings] | None = None,
    ) -> None:
        self.root = root
        self.n = n
        self.runtimes = runtimes
        self.settings = settings
        self.broker = EmbeddedBroker(port=0)
        self.nodes: list[Node | None] = []
        self.http = httpx.AsyncClient(timeout=10)
        self.oracle = self.key(0).address
        #: Node i's in-memory runtime, in a network made by `in_memory`.
        self.memory: list[MemoryRuntime] = []

    @classmethod
    def in_memory(cls, root: Path, n: int) -> DeeployNet:
        """`n` nodes whose replicas (runtimes `process` and `plugin`) the in-memory runtime runs."""
        memory = [MemoryRuntime() for _ in range(n)]
        net = cls(root, n, runtimes=lambda i: {"process": memory[i], "plugin": memory[i]})
        net.memory = memory
        return net

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def key(self, i: int) -> NodeKey:
        return load_or_create(self.root / f"n{i}" / "keys" / "node.json", "pw", strength="light")[0]

    async def start(self) -> None:
        await self.broker.start()
        for i in range(self.n):
            self.nodes.append(await self.start_node(i))
        await self.wait_mesh()

    async def start_node(self, i: int) -> Node:
        url = f"mqtt://127.0.0.1:{self.broker.port}"
        config = NodeConfig(
            home=self.root / f"n{i}", network="dtest", http="127.0.0.1:0", broker=url, heartbeat_interval=HB,
            key_strength="light", oracle=i == 0, oracles=[self.oracle],
        )  # fmt: skip
        settings = self.settings(i) if self.settings else DeeploySettings(cpu=2, memory_mb=2048)
        services = [
            CStoreService(sync_interval=0.5, fsync=False, oracles=frozenset({self.oracle.lower()})),
            DeeployService(settings, runtimes=self.runtimes(i) if self.runtimes else None),
        ]
        transport = MqttTransport(url, client_id=f"dtest-{i}", backoff_max=0.5)
        node = Node(config, password="pw", services=services, transport=transport)
        await node.start()
        return node

    def node(self, i: int) -> Node:
        node = self.nodes[i]
        assert node is not None, f"node {i} is stopped"
        return node

    def url(self, i: int) -> str:
        return self.node(i).url

    def deeploy(self, i: int) -> DeeployService:
        svc = self.node(i).services[1]
        assert isinstance(svc, DeeployService)
        return svc

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n is not None]

    async def wait_mesh(self) -> None:
        want = len(self.live()) - 1

        async def meshed() -> bool:
            return all(len(n.netmap.online()) >= want for n in self.live())

        await async_wait_for(meshed, 20, "every node to see every other")

    async def kill(self, i: int) -> None:
        """Stop node `i` without a goodbye (its transport drops; peers notice missed heartbeats)."""
        node = self.node(i)
        self.nodes[i] = None
        await node.stop()

    async def post(self, i: int, path: str, **kw: Any) -> httpx.Response:
        return await self.http.post(self.url(i) + path, **kw)

    async def get(self, i: int, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(self.url(i) + path, **kw)

    async def stop(self) -> None:
        for node in self.live():
            await node.stop()
        await self.http.aclose()
        await self.broker.stop()
