"""Blocks are the network's own traffic: on a devnet that runs dAuth (a chain, licensed nodes), a node
serves blocks and block runs only to requests signed by an admitted node (or an oracle), and its nodes
sign their own peer requests, so files still move between them. The public gateway stays anonymous."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from r1os.devnet import Devnet
from r1os.devnet._state import DevnetNode, DevnetState
from r1os.identity import NodeKey, load_keystore
from r1os.r1fs import CHUNK_SIZE, R1fsClient, import_bytes
from r1os.r1fs._fetcher import LOCAL_ONLY
from r1os.wire import sign_request
from tests.conftest import wait_for
from tests.r1fs._content import mod251

pytestmark = pytest.mark.timeout(300)
USER, OUTSIDER = NodeKey.generate(), NodeKey.generate()


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, DevnetState]]:
    dn = Devnet(tmp_path_factory.mktemp("r1fs-dauth"))
    state = dn.up(nodes=3, oracles=1, heartbeat=1.0, epoch_seconds=60, timeout=120)
    try:
        if not state.chain:
            pytest.skip("no chain part here (anvil): dAuth is off")
        for n in state.nodes:
            if not n.oracle:
                wait_for(
                    lambda n=n: (
                        httpx.get(f"{n.url}/v1/dauth/status", timeout=3).json()["state"] == "admitted"
                    ),
                    60,
                    f"{n.name} to be admitted",
                )
        yield dn, state
    finally:
        dn.down()


def node_key(dn: Devnet, node: DevnetNode) -> NodeKey:
    return load_keystore(Path(node.home) / "keys" / "node.json", (dn.dir / "password").read_text().strip())


def signed(key: NodeKey, state: DevnetState, node: DevnetNode, path: str) -> dict[str, str]:
    auth = sign_request(key, network=state.network, target=node.address, method="GET", path=path, body=b"")
    return {"authorization": auth}


async def test_blocks_go_to_admitted_nodes_only(devnet: tuple[Devnet, DevnetState]) -> None:
    dn, state = devnet
    a, b, c = state.nodes  # node 1 is the oracle
    data = mod251(9 * CHUNK_SIZE + 5, start=3)
    async with R1fsClient(b.url, key=USER) as cb:  # any signed user may add
        cid = (await cb.add_bytes(data))["cid"]
    # Between admitted nodes files move as before: C pulls runs from B with its own signature.
    async with R1fsClient(c.url) as cc:
        assert await cc.get_bytes(cid) == data
    leaf = str(import_bytes(data[:CHUNK_SIZE]).cid)
    block, run = f"/v1/r1fs/block/{leaf}", f"/ipfs/{cid}"
    ranged = {"Range": "bytes=0-99", LOCAL_ONLY: "1"}
    async with httpx.AsyncClient(timeout=30) as h:
        # Nobody, then an outsider's key: refused, for single blocks and for block runs.
        r = await h.get(f"{b.url}{block}")
        assert r.status_code == 401 and r.json()["cause"] == "unauthenticated"
        r = await h.get(f"{b.url}{run}", headers=ranged)
        assert r.status_code == 401
        r = await h.get(f"{b.url}{block}", headers=signed(OUTSIDER, state, b, block))
        assert r.status_code == 403 and r.json()["cause"] == "forbidden"
        r = await h.get(f"{b.url}{run}", headers={**ranged, **signed(OUTSIDER, state, b, run)})
        assert r.status_code == 403
        # An admitted node's signature, and the oracle's, pass.
        for peer in (c, a):
            r = await h.get(f"{b.url}{block}", headers=signed(node_key(dn, peer), state, b, block))
            assert r.status_code == 200 and r.content == data[:CHUNK_SIZE]
        r = await h.get(f"{b.url}{run}", headers={**ranged, **signed(node_key(dn, c), state, b, run)})
        assert r.status_code == 206 and r.content == data[:100]
        # The public gateway is for everyone.
        r = await h.get(f"{b.url}{run}")
        assert r.status_code == 200 and r.content == data
