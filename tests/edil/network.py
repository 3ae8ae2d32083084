"""An in-process EDIL network: real nodes (embedded broker, HTTP, CSTORE, R1FS) with the EDIL service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from r1os.cstore import CStoreService
from r1os.edil._service import EdilService
from r1os.node import EdilSettings, Node, NodeConfig
from r1os.r1fs._service import R1fsService
from r1os.transport import EmbeddedBroker, MqttTransport
from tests.conftest import async_wait_for

HB = 0.3


class EdilNet:
    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.n = n
        self.broker = EmbeddedBroker(port=0)
        self.nodes: list[Node] = []
        self.http = httpx.AsyncClient(timeout=60)

    async def start(self) -> None:
        await self.broker.start()
        url = f"mqtt://127.0.0.1:{self.broker.port}"
        for i in range(self.n):
            config = NodeConfig(home=self.root / f"n{i}", network="etest", http="127.0.0.1:0", broker=url,
                                heartbeat_interval=HB, key_strength="light")  # fmt: skip
            services = [
                CStoreService(sync_interval=0.5, fsync=False),
                R1fsService(),
                EdilService(EdilSettings()),
            ]
            node = Node(config, password="pw", services=services,
                        transport=MqttTransport(url, client_id=f"etest-{i}", backoff_max=0.5))  # fmt: skip
            await node.start()
            self.nodes.append(node)

        async def meshed() -> bool:
            return all(len(n.netmap.online()) == self.n - 1 for n in self.nodes)

        await async_wait_for(meshed, 20, "every node to see every other")

    def edil(self, i: int) -> EdilService:
        svc = self.nodes[i].services[2]
        assert isinstance(svc, EdilService)
        return svc

    def token(self, i: int) -> str:
        return (self.root / f"n{i}" / "api-token").read_text().strip()

    async def submit(self, i: int, spec: dict[str, Any]) -> httpx.Response:
        return await self.http.post(
            f"{self.nodes[i].url}/v1/edil/jobs", json={"spec": spec},
            headers={"authorization": f"Bearer {self.token(i)}"},
        )  # fmt: skip

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        await self.http.aclose()
        await self.broker.stop()
