"""CSTORE through the SDK (async and sync) and the CLI, against real nodes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r1os import AsyncSession, Session
from r1os.cstore import CStoreError
from r1os.identity import NodeKey
from tests.conftest import async_wait_for
from tests.cstore.cluster import Cluster


@pytest.fixture
async def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path, 2)
    await c.start()
    yield c
    await c.stop()


async def test_async_sdk_with_own_key(cluster: Cluster) -> None:
    key = NodeKey.generate()
    async with AsyncSession(cluster.nodes[0].url, key=key) as s:
        ns = s.cstore.namespace
        await s.cstore.set(ns + "model", {"name": "resnet", "v": 3})
        async with s.cstore.batch() as b:
            for i in range(50):
                b.hset(ns + "scores", f"run{i}", i)
            b.set(ns + "tmp", "soon gone", ttl=30)
        assert await s.cstore.get(ns + "model") == {"name": "resnet", "v": 3}
        assert len(await s.cstore.hgetall(ns + "scores")) == 50
        assert await s.cstore.keys(ns) == [ns + "model", ns + "scores", ns + "tmp"]
        with pytest.raises(CStoreError) as info:
            await s.cstore.set(f"node:{cluster.nodes[1].address.lower()}:x", 1)
        assert info.value.cause == "forbidden"
    # the batch (one signature for 51 ops) replicated to the other node
    other = cluster.cstore(1)

    async def there() -> bool:
        return len(await other.hgetall(ns + "scores")) == 50

    await async_wait_for(there, 10, "the batch on the other replica")


async def test_sync_sdk_without_key_writes_as_the_node(cluster: Cluster) -> None:
    """Without a key of its own, the node's operator (its API token, read from the node's home) has the
    node sign; anyone else without a key is refused."""
    node = cluster.nodes[0]
    ns = f"node:{node.address.lower()}:"

    def use() -> object:
        with Session(node.url, home=node.home) as s:
            s.cstore.set(ns + "app-state", [1, 2, 3])
            s.cstore.hset(ns + "h", "a", "b")
            s.cstore.hdel(ns + "h", "a")
            return s.cstore.get(ns + "app-state"), s.cstore.hgetall(ns + "h")

    def anonymous() -> None:
        with Session(node.url) as s:
            s.cstore.set(ns + "intruder", 1)

    assert await asyncio.to_thread(use) == ([1, 2, 3], {})
    with pytest.raises(CStoreError) as info:
        await asyncio.to_thread(anonymous)
    assert info.value.cause == "unauthenticated"
    assert await cluster.cstore(0).get(ns + "intruder") is None


async def test_cli_round_trip(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from r1os.cli.main import app

    key = NodeKey.generate()
    monkeypatch.setenv("R1OS_PRIVATE_KEY", key.private_key_hex)
    url = cluster.nodes[1].url
    ns = f"app:{key.address.lower()}:"
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        r = runner.invoke(app, ["cstore", *args, "--node", url])
        return r.exit_code, r.output

    def script() -> None:
        assert cli("set", ns + "n", "42")[0] == 0
        assert cli("get", ns + "n") == (0, "42\n")
        assert cli("set", ns + "s", "42", "--string")[0] == 0
        assert cli("get", ns + "s") == (0, "42\n")  # printed as text
        assert cli("hset", ns + "h", "f", '{"a": 1}')[0] == 0
        assert json.loads(cli("hgetall", ns + "h")[1]) == {"f": {"a": 1}}
        assert cli("keys", ns)[1].split() == [ns + "h", ns + "n", ns + "s"]
        assert cli("del", ns + "n")[0] == 0
        assert cli("get", ns + "n")[0] == 1
        code, out = cli("set", "node:0x0000000000000000000000000000000000000000:x", "1")
        assert code == 1 and "may not write" in out

    await asyncio.to_thread(script)


async def test_unreachable_node_is_one_clear_error() -> None:
    from r1os.errors import R1osError

    async with AsyncSession("http://127.0.0.1:9") as s:
        with pytest.raises(R1osError, match="cannot reach the node"):
            await s.cstore.get("x")
