"""One Session reaches every service of a node: CSTORE and R1FS through the same URL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from r1os import AsyncSession, Session
from r1os.cstore import CStoreService
from r1os.identity import NodeKey
from r1os.node import Node, NodeConfig
from r1os.r1fs import R1fsService
from r1os.transport import EmbeddedBroker


async def test_session_cstore_and_r1fs(tmp_path: Path) -> None:
    async with EmbeddedBroker(port=0) as broker:
        config = NodeConfig(
            home=tmp_path / "n", network="sdktest", http="127.0.0.1:0", broker=broker.url,
            heartbeat_interval=1.0, key_strength="light",
        )  # fmt: skip
        node = Node(config, password="pw", services=[CStoreService(), R1fsService()])
        await node.start()
        try:
            data = os.urandom(300_000)  # two chunks: a real DAG, not a single raw leaf
            key = NodeKey.generate()

            def sync_use() -> tuple[str, bytes, object]:
                with Session(node.url, key=key) as s:
                    cid = s.r1fs.add_bytes(data)["cid"]
                    s.cstore.set(s.cstore.namespace + "latest", cid)
                    got = s.r1fs.get_bytes(s.cstore.get(s.cstore.namespace + "latest"))
                    return cid, got, s.r1fs.stat(cid)

            cid, got, stat = await asyncio.to_thread(sync_use)
            assert got == data and cid.startswith("bafy")
            assert isinstance(stat, dict)
            async with AsyncSession(node.url, key=key) as s:
                assert await s.cstore.get(s.cstore.namespace + "latest") == cid
        finally:
            await node.stop()
