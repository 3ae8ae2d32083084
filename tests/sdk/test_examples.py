"""The example scripts in examples/ run as a user runs them (`python examples/x.py`, the node URL in
$R1OS_API_URL, the key in $R1OS_PRIVATE_KEY) and print what they did.

- cstore.py and r1fs.py run against one in-process node with CSTORE and R1FS over real HTTP;
- apps.py runs against an in-process three-node Deeploy network whose replicas the in-memory runtime
  serves (the same placement, proxy and health checks as a devnet, without sandboxed processes);
- edil.py and rewards.py are only checked to start (`--help`): the first needs a 4+ node network training
  for minutes, the second a chain (anvil, contracts, licences) and oracles that have closed epochs, which
  take a devnet and several epochs to set up. Both are what `./dev demo` runs end to end; the SDK calls
  they make are tested in tests/sdk/test_edil.py, tests/chain and tests/oracle.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r1os.cstore import CStoreService
from r1os.identity import NodeKey
from r1os.node import Node, NodeConfig
from r1os.r1fs import R1fsService
from r1os.transport import EmbeddedBroker
from tests.deeploy.cluster import DeeployNet

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


async def run_example(name: str, url: str, key: NodeKey, *args: str, timeout: float = 120) -> str:
    """Run examples/`name` against the node at `url` as `key`; its output (it must exit 0)."""
    env = {**os.environ, "R1OS_API_URL": url, "R1OS_PRIVATE_KEY": key.private_key_hex}
    env.pop("R1OS_API_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / name), *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{out.decode()}\n{err.decode()}"
    return out.decode()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with EmbeddedBroker(port=0) as broker:
        config = NodeConfig(
            home=tmp_path / "n", network="extest", http="127.0.0.1:0", broker=broker.url,
            heartbeat_interval=1.0, key_strength="light",
        )  # fmt: skip
        n = Node(config, password="pw", services=[CStoreService(), R1fsService()])
        await n.start()
        try:
            yield n
        finally:
            await n.stop()


async def test_cstore_example(node: Node) -> None:
    key = NodeKey.generate()
    out = await run_example("cstore.py", node.url, key)
    ns = f"app:{key.address.lower()}:"
    assert f"namespace {ns}" in out, out
    assert "get greeting -> {'from': 'examples/cstore.py', 'text': 'hello'}" in out
    assert "hgetall visits -> {'alice': 3, 'bob': 5}" in out
    assert f"keys -> ['{ns}greeting', '{ns}visits']" in out
    assert "after delete: greeting -> None | visits -> {'bob': 5}" in out


async def test_r1fs_example(node: Node, tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(400_000))
    out = await run_example("r1fs.py", node.url, NodeKey.generate(), str(data))
    assert "added 400000 bytes as bafy" in out, out
    assert "read back 400000 bytes, identical: True" in out
    cid = out.split(" as ", 1)[1].split()[0]
    assert cid in out.split("pinned here:", 1)[1]


async def test_apps_example(tmp_path: Path) -> None:
    async with DeeployNet.in_memory(tmp_path, 3) as net:
        key = NodeKey.generate()
        out = await run_example("apps.py", net.url(1), key, "--timeout", "60")
    assert f"deployed {key.address.lower()}/echo v1: 2 replica(s) wanted" in out, out
    assert "ready: 2 healthy" in out
    answer = out.split("GET /hello -> ", 1)[1].splitlines()[0]
    assert "'path': '/hello?from=sdk'" in answer and "'method': 'GET'" in answer
    assert out.rstrip().endswith("deleted echo")


@pytest.mark.parametrize("name", ["edil.py", "rewards.py"])
def test_chain_and_training_examples_start(name: str) -> None:
    import subprocess

    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr
