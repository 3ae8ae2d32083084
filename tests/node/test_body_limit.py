"""Request bodies are capped on every route of a real node, except where a service raised the cap."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from r1os.cstore import CStoreService
from r1os.node import Node, NodeConfig
from r1os.r1fs import R1fsService, import_bytes
from r1os.transport import EmbeddedBroker


async def test_oversized_bodies_are_refused_and_services_raise_their_own_caps(tmp_path: Path) -> None:
    async with EmbeddedBroker(port=0) as broker:
        config = NodeConfig(
            home=tmp_path / "n", network="limittest", http="127.0.0.1:0", broker=broker.url,
            heartbeat_interval=1.0, key_strength="light",
        )  # fmt: skip
        node = Node(config, password="pw", services=[CStoreService(), R1fsService()])
        await node.start()
        try:
            async with httpx.AsyncClient(base_url=node.url, timeout=30) as h:
                big = b"x" * (2 * 1024 * 1024)
                for path in ("/v1/r1fs/pin", "/v1/cstore/wait", "/v1/nowhere"):
                    r = await h.post(path, content=big)
                    assert r.status_code == 413 and r.json()["cause"] == "too_large", path

                async def endless() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
                    for _ in range(4):
                        yield b"y" * (512 * 1024)

                r = await h.post("/v1/r1fs/pin", content=endless())
                assert r.status_code == 413 and "over 1048576 bytes" in r.text
                assert node.body_limits.refused == 4
                # R1FS uploads stream past the default cap (they have their own limit); the node's
                # operator adds (an anonymous add is refused: docs/security.md)
                data = os.urandom(3 * 1024 * 1024)
                operator = {"authorization": f"Bearer {node.auth.token}"}
                r = await h.post("/v1/r1fs/add", content=data, headers=operator)
                assert r.status_code == 200 and r.json()["cid"] == str(import_bytes(data).cid)
                assert (await h.get("/v1/health")).status_code == 200
        finally:
            await node.stop()
