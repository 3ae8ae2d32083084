"""Issue 12's R1FS attacks, replayed on a devnet of real node processes (no chain, so no dAuth: anyone
may join, as in the issue). The attacker is an outsider: its own key, and a node of its own joined to
the devnet's broker (in this test's process) that serves what it likes. Each test shows the attack
refused or bounded, and the victim healthy: `/v1/health` answers, its memory grew by little.

Admission (block runs for admitted nodes only) needs dAuth, hence a chain: test_admitted.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from r1os.devnet import Devnet
from r1os.devnet._state import DevnetNode, DevnetState
from r1os.identity import NodeKey
from r1os.node import Node, NodeConfig, build_services
from r1os.r1fs import CHUNK_SIZE, R1fsClient, R1fsError, R1fsService, import_bytes
from r1os.sdk import AsyncSession
from r1os.wire import sign_request
from tests.conftest import async_wait_for
from tests.r1fs._content import mod251
from tests.r1fs._hostile import Blocks, HostilePeer, chain, claimed_leaf, fanout_bomb, two_leaf_file
from tests.r1fs.conftest import devnet_with

HB = 1.0
ENV = {
    "R1OS_R1FS__GRACE": "4",
    "R1OS_R1FS__RECONCILE_INTERVAL": "0.5",
    "R1OS_R1FS__FETCH_TIMEOUT": "3",  # a silent or dribbling peer is given up within seconds
}
VICTIM, MALLORY = NodeKey.generate(), NodeKey.generate()
MIB = 1024 * 1024
#: What a node's memory may grow by while it is attacked (the attacks asked for 1-2 GB).
RSS_BOUND = 64 * MIB

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, DevnetState]]:
    with devnet_with(tmp_path_factory, "r1fs-hostile", ENV, nodes=3) as net:
        yield net


def rss(node: DevnetNode) -> int:
    return int(psutil.Process(node.pid).memory_info().rss)


async def healthy(node: DevnetNode) -> None:
    async with httpx.AsyncClient(timeout=5) as h:
        assert (await h.get(f"{node.url}/v1/health")).json()["status"] == "ok"


def token(node: DevnetNode) -> str:
    return (Path(node.home) / "api-token").read_text().strip()


async def stats(node: DevnetNode) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as h:
        return (await h.get(f"{node.url}/v1/r1fs/stats")).json()  # type: ignore[no-any-return]


async def stat(node: DevnetNode, cid: str) -> dict[str, Any]:
    async with R1fsClient(node.url) as c:
        return await c.stat(cid)


@asynccontextmanager
async def outsider(state: DevnetState, home: Path, public_url: str | None = None) -> AsyncIterator[Node]:
    """A node of the attacker's, joined to the devnet's broker; every devnet node sees it online (an
    R1FS node: asked for blocks like any other). `public_url` is what it tells the others to call."""
    config = NodeConfig(
        home=home, network=state.network, broker=state.broker_url, http="127.0.0.1:0",
        heartbeat_interval=HB, key_strength="light", public_url=public_url,
        oracles=[n.address for n in state.nodes if n.oracle],
    )  # fmt: skip
    node = Node(config, password="pw", services=build_services(config))
    await node.start()
    try:

        async def seen() -> bool:
            async with httpx.AsyncClient(timeout=5) as h:
                for n in state.nodes:
                    peers = (await h.get(f"{n.url}/v1/peers")).json()["peers"]
                    if not any(p["address"] == node.address and p["status"] == "online" for p in peers):
                        return False
            return True

        await async_wait_for(seen, 30, "every node to see the outsider online")
        yield node
    finally:
        await node.stop()


def r1fs_of(node: Node) -> R1fsService:
    return next(s for s in node.services if isinstance(s, R1fsService))


def plant(node: Node, blocks: Blocks) -> None:
    for cid, block in blocks.items():
        r1fs_of(node).store.put(cid, block)


# -- attack 3: a tiny DAG that expands without bound -------------------------------------------


@pytest.mark.parametrize(
    ("bomb", "status", "cause"),
    [
        (lambda: fanout_bomb(levels=3), 422, "dag_limit"),
        (lambda: claimed_leaf(), 502, "corrupt_block"),
        (lambda: chain(200), 422, "dag_limit"),
    ],
    ids=["174^3-references", "leaf-claims-1GiB", "200-deep"],
)
async def test_an_outsiders_dag_bomb_is_refused_and_the_node_stays_well(
    devnet: tuple[Devnet, DevnetState], tmp_path: Path, bomb: Any, status: int, cause: str
) -> None:
    _, state = devnet
    root, blocks = bomb()
    async with outsider(state, tmp_path / "evil") as evil:
        plant(evil, blocks)
        gateway, pinner = state.nodes[1], state.nodes[2]
        before = rss(gateway), rss(pinner)
        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=60) as h:  # anyone's GET, on a node that does not have it
            r = await h.get(f"{gateway.url}/ipfs/{root}")
        assert r.status_code == status and r.json()["cause"] == cause, r.text
        async with R1fsClient(pinner.url, key=MALLORY) as c:  # a signed pin makes a node fetch it all
            with pytest.raises(R1fsError) as caught:
                await c.pin(str(root))
        assert caught.value.cause == cause
        took = time.monotonic() - t0
    assert took < 15, f"{took:.1f} s to refuse"  # the node froze for 38 s and 228 s
    for node, rss_before in zip((gateway, pinner), before, strict=True):
        await healthy(node)
        assert rss(node) - rss_before < RSS_BOUND
    async with httpx.AsyncClient(timeout=5) as h:
        pins = (await h.get(f"{pinner.url}/v1/r1fs/ls")).json()["pins"]
    assert str(root) not in {p["cid"] for p in pins}


# -- attack 4: bodies without end from a peer ---------------------------------------------------


async def test_a_peer_that_sends_without_end_costs_a_bounded_read(
    devnet: tuple[Devnet, DevnetState], tmp_path: Path
) -> None:
    _, state = devnet
    root, blocks, data = two_leaf_file()  # a file only the hostile peer offers
    victim = state.nodes[1]
    with HostilePeer(serve={root: blocks[root]}) as peer:
        async with outsider(state, tmp_path / "evil", public_url=peer.url):
            before = rss(victim)
            nobody = import_bytes(b"a block nobody has " + os.urandom(8)).cid
            async with httpx.AsyncClient(timeout=60) as h:
                # The root's block from the peer is endless: read to the largest block, no further.
                r = await h.get(f"{victim.url}/ipfs/{nobody}")
                assert r.status_code == 404 and r.json()["cause"] == "not_found", r.text
                assert any(p.startswith("/v1/r1fs/block/") for p in peer.requests)
                # The root is fine, the leaves' run is endless garbage: read to the run's bytes.
                corrupt = (await stats(victim))["corrupt_from_peer"]
                got, complete = await read_all(h, f"{victim.url}/ipfs/{root}")
                assert not complete and got != data
                assert (await stats(victim))["corrupt_from_peer"] > corrupt
                assert any(p == f"/ipfs/{root}" for p in peer.requests)
            # What the peer pushed beyond what was read sat in socket buffers, never in the node.
            assert rss(victim) - before < RSS_BOUND
            await healthy(victim)

            # Now it sends a byte every half second: the run's deadline (fetch_timeout + its bytes at
            # 512 KiB/s: 4 s here) cuts it.
            peer.mode = "dribble"
            t0 = time.monotonic()
            async with httpx.AsyncClient(timeout=60) as h:
                got, complete = await read_all(h, f"{victim.url}/ipfs/{root}")
            assert not complete and time.monotonic() - t0 < 20
            await healthy(victim)


async def read_all(h: httpx.AsyncClient, url: str) -> tuple[bytes, bool]:
    """The body, and whether it came whole (a failed fetch after the headers cuts the stream short)."""
    try:
        async with h.stream("GET", url) as r:
            if r.status_code >= 400:
                await r.aread()
                return b"", False
            body = b"".join([piece async for piece in r.aiter_raw()])
            return body, len(body) == int(r.headers["content-length"])
    except httpx.HTTPError:
        return b"", False


# -- attacks 5 and 6: anyone deletes anyone's file, anyone fills every disk ----------------------


async def test_only_pinners_release_and_only_the_operator_collects(
    devnet: tuple[Devnet, DevnetState],
) -> None:
    _, state = devnet
    a, c = state.nodes[0], state.nodes[2]
    data = mod251(5 * CHUNK_SIZE + 3, start=71)
    async with R1fsClient(a.url, key=VICTIM) as v:
        cid = (await v.add_bytes(data, replicas=2))["cid"]

    async def two_copies() -> bool:
        return bool((await stat(a, cid))["replicas_live"] >= 2)

    await async_wait_for(two_copies, 30, "a second copy")
    # The attack: an unauthenticated unpin, then gc, on every node.
    async with httpx.AsyncClient(timeout=10) as h:
        for n in state.nodes:
            r = await h.post(f"{n.url}/v1/r1fs/unpin", json={"cid": cid})
            assert r.status_code == 401 and r.json()["cause"] == "unauthenticated"
            r = await h.post(f"{n.url}/v1/r1fs/gc")
            assert r.status_code == 401
    # With a key of its own: it holds no pin, so it releases none, may not name the victim's, may not gc.
    for n in state.nodes:
        async with R1fsClient(n.url, key=MALLORY) as m:
            assert (await m.unpin(cid))["unpinned"] is False
            with pytest.raises(R1fsError) as caught:
                await m.unpin(cid, pinner=VICTIM.address)
            assert caught.value.status == 403
            with pytest.raises(R1fsError) as caught:
                await m.gc()
            assert caught.value.status == 403
    # Pinning it too, then releasing, leaves the victim's pin in place.
    async with R1fsClient(a.url, key=MALLORY) as m:
        await m.pin(cid)
        out = await m.unpin(cid)
    assert out["unpinned"] and out["pinners_left"] == 1
    for n in state.nodes:  # the operators collect garbage: the file is nobody's garbage
        async with R1fsClient(n.url, token=token(n)) as op:
            assert (await op.gc())["busy"] is False
    assert (await stat(a, cid))["replicas_live"] >= 2
    async with R1fsClient(c.url) as anyone:
        assert await anyone.get_bytes(cid) == data


async def test_nobody_fills_disks_without_a_key_or_past_a_quota(devnet: tuple[Devnet, DevnetState]) -> None:
    _, state = devnet
    a = state.nodes[0]
    flood, small = os.urandom(MIB), b"x" * 1000 + os.urandom(8)
    async with httpx.AsyncClient(timeout=30) as h:
        # The attack: unauthenticated add?replicas=64 with 100 MiB reached every node.
        r = await h.post(f"{a.url}/v1/r1fs/add", params={"replicas": 64}, content=flood)
        assert r.status_code == 401
    async with R1fsClient(a.url, key=MALLORY) as m:
        with pytest.raises(R1fsError) as caught:
            await m.add_bytes(small, replicas=64)
        assert caught.value.cause == "too_many_replicas"
    for n in state.nodes:  # neither is stored anywhere
        for data in (flood, small):
            assert not (await stat(n, str(import_bytes(data).cid)))["local"]
    # Past the quota (16 GiB: 9 GiB x 2 replicas), refused by its Content-Length before the body.
    answer = raw_add(a, state.network, MALLORY, declared=9 * 1024 * MIB, query="?replicas=2")
    assert answer.startswith(b"HTTP/1.1 429") and b'"quota"' in answer, answer[:300]
    await healthy(a)


def raw_add(node: DevnetNode, network: str, key: NodeKey, *, declared: int, query: str = "") -> bytes:
    """A signed upload that declares `declared` bytes and sends 1 KiB; the node's answer."""
    path = f"/v1/r1fs/add{query}"
    auth = sign_request(key, network=network, target=node.address, method="POST", path=path, body=None)
    u = urlsplit(node.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
            + b"q" * 1024
        )
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            piece = s.recv(65536)
            if not piece:
                break
            answer += piece
        return answer


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def test_an_outsiders_pin_request_in_cstore_moves_no_copies(devnet: tuple[Devnet, DevnetState]) -> None:
    """A pin request is a CSTORE record anyone with a key can write (its own field of a pub: hash): an
    outsider's asks every node to hold a copy. Only nodes' requests count."""
    _, state = devnet
    a = state.nodes[0]
    async with R1fsClient(a.url, key=VICTIM) as v:
        lone = (await v.add_bytes(mod251(CHUNK_SIZE + 9, start=5)))["cid"]
    async with AsyncSession(a.url, key=MALLORY) as s:
        await s.cstore.hset(
            f"pub:r1fs:pin:{lone}", MALLORY.address.lower(), {"replicas": 3, "ts": time.time()}
        )
    # A node's own request goes through (and shows the reconcile loops ran since).
    async with R1fsClient(a.url, key=VICTIM) as v:
        wanted = (await v.add_bytes(mod251(CHUNK_SIZE + 9, start=6), replicas=3))["cid"]

    async def three() -> bool:
        return bool((await stat(a, wanted))["replicas_live"] >= 3)

    await async_wait_for(three, 30, "the node's request to be served")
    s = await stat(a, lone)
    assert s["replicas_wanted"] == 1 and s["replicas_live"] == 1


# -- attack 10: a slow upload kept GC waiting ------------------------------------------------------


async def test_gc_runs_while_an_upload_stays_open(devnet: tuple[Devnet, DevnetState]) -> None:
    _, state = devnet
    a = state.nodes[0]
    async with R1fsClient(a.url, token=token(a)) as op:
        garbage = await op.add_bytes(mod251(3 * CHUNK_SIZE, start=33), pin=False)
    data = mod251(6 * CHUNK_SIZE + 1, start=44)
    path = "/v1/r1fs/add"
    auth = sign_request(VICTIM, network=state.network, target=a.address, method="POST", path=path, body=None)
    u = urlsplit(a.url)
    blocks = (await stats(a))["store"]["blocks"]
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data[: 3 * CHUNK_SIZE])  # fmt: skip
    await writer.drain()

    async def three_leaves() -> bool:
        return bool((await stats(a))["store"]["blocks"] >= blocks + 3)

    await async_wait_for(three_leaves, 10, "the upload's first leaves on disk")
    t0 = time.monotonic()
    async with R1fsClient(a.url, token=token(a)) as op:
        gc = await op.gc()  # the upload stays open meanwhile
    assert time.monotonic() - t0 < 10 and not gc["busy"]
    assert gc["removed"] >= 3 and gc["held"] >= 3, gc  # the garbage went; the upload's leaves did not
    writer.write(data[3 * CHUNK_SIZE :])
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    cid = str(import_bytes(data).cid)
    async with R1fsClient(state.nodes[1].url) as anyone:
        assert await anyone.get_bytes(cid) == data
        with pytest.raises(R1fsError):
            await anyone.get_bytes(garbage["cid"])
