"""An in-process EDIL network: real nodes (embedded broker, HTTP, CSTORE, R1FS) with the EDIL service; the
example job spec, and reading a job and its model as the tests do."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import yaml

from r1os.cstore import CStoreService
from r1os.edil._service import EdilService
from r1os.node import EdilSettings, Node, NodeConfig
from r1os.r1fs._service import R1fsService
from r1os.transport import EmbeddedBroker, MqttTransport
from tests.conftest import async_wait_for

HB = 0.3
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edil" / "digits.yaml"


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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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


def example(**changes: Any) -> dict[str, Any]:
    """The example job spec (examples/edil/digits.yaml), parsed, with `changes`."""
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec.update(changes)
    return spec


async def job_view(net: EdilNet, job_id: str) -> dict[str, Any]:
    """The job as node 0 serves it."""
    r = await net.http.get(f"{net.nodes[0].url}/v1/edil/jobs/{job_id}")
    return dict(r.json())


async def finished(net: EdilNet, job_id: str, timeout: float = 180) -> dict[str, Any]:
    """The job once it is no longer training."""

    async def done() -> dict[str, Any] | None:
        v = await job_view(net, job_id)
        return v if v["phase"] != "training" else None

    return await async_wait_for(done, timeout, f"job {job_id} to finish")


def model_accuracy(npz: bytes | Path) -> float:
    """The accuracy of a downloaded model (its bytes, or the file) on the example's test split, computed here
    from its params."""
    from r1os.edil import ModelSpec
    from r1os.edil._data import load
    from r1os.edil._models import evaluate, layout

    with np.load(io.BytesIO(npz.read_bytes() if isinstance(npz, Path) else npz)) as z:
        params = z["params"]
        meta = json.loads(z["meta"].tobytes())
    lay = layout(ModelSpec.model_validate(meta["model"]), meta["inputs"], meta["classes"])
    test = load("example:digits?split=test")
    return evaluate(lay, params, test.X, test.y)
