"""Block runs on their own listener (`_runs.py`): the bytes a Range asks for, sent by sendfile from the
pack files; every refusal an HTTP status with the API's error body; slow and greedy clients bounded;
admitted nodes only under dAuth. Then a real pull between two nodes in this process (A's API on
uvicorn): B fetches A's file through A's run listener, checks every leaf, and falls back to A's API
when the listener cannot be reached or is not one; a corrupt leaf from A is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from r1os.identity import NodeKey
from r1os.r1fs import CHUNK_SIZE, Cid, R1fsSettings
from r1os.r1fs._dag import parse_cid
from r1os.r1fs._errors import BlockNotFound, CorruptBlock
from r1os.r1fs._runs import MAX_HEAD, RunServer, plan_run
from r1os.r1fs._store import BlockStore
from r1os.wire import sign_request
from tests.r1fs._content import mod251
from tests.r1fs._hostile import HostilePeer
from tests.r1fs.conftest import Served, serve

pytestmark = pytest.mark.timeout(120)
DATA = mod251(9 * CHUNK_SIZE + 5, start=7)  # 10 leaves, the last of 5 bytes


def ask(
    port: int, head: bytes, *, read: bool = True, rcvbuf: int | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send `head` to the listener and read the answer to the end (blocking: run it in a thread)."""
    with socket.socket() as s:
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(20)
        s.connect(("127.0.0.1", port))
        s.sendall(head)
        buf = bytearray()
        while read and (piece := s.recv(65536)):
            buf += piece
    top, _, body = bytes(buf).partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines[0] else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, body


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def get(cid: str, *extra: str) -> bytes:
    return "\r\n".join([f"GET /ipfs/{cid} HTTP/1.1", "Host: peer", *extra, "", ""]).encode()


async def answer(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(ask, port, head)


def cause(body: bytes) -> str:
    return str(json.loads(body)["cause"])


async def add(s: Served, data: bytes) -> str:
    r = await s.client.post("/v1/r1fs/add", content=data)
    assert r.status_code == 200, r.text
    return str(r.json()["cid"])


async def test_a_run_is_the_bytes_asked_for(served: Served) -> None:
    cid = await add(served, DATA)
    runs = served.svc.runs
    assert runs is not None and runs.port is not None
    port = runs.port
    lo, hi = 100, 3 * CHUNK_SIZE + 7  # from inside a leaf to inside another
    status, headers, body = await answer(port, get(cid, f"Range: bytes={lo}-{hi}"))
    assert status == 206 and body == DATA[lo : hi + 1]
    assert headers["content-range"] == f"bytes {lo}-{hi}/{len(DATA)}"
    assert headers["content-length"] == str(hi - lo + 1)
    status, _, body = await answer(port, get(cid, f"Range: bytes=0-{len(DATA) - 1}"))
    assert status == 206 and body == DATA  # a Range is answered 206 even when it is the whole file
    status, _, body = await answer(port, get(cid, "Range: bytes=-5"))
    assert status == 206 and body == DATA[-5:]
    status, _, body = await answer(port, get(cid))
    assert status == 200 and body == DATA
    status, _, body = await answer(port, get(cid, "Range: bytes=5-2"))  # invalid: ignored, as the API does
    assert status == 200 and body == DATA
    assert runs.served == 5
    # The pure planner: one part per leaf the span touches, the first and last cut to the span.
    plan = plan_run(served.svc.store, served.svc.dag, parse_cid(cid), f"bytes={lo}-{hi}")
    assert [(p[1], p[2]) for p in plan.parts] == [
        (lo, CHUNK_SIZE - lo), (0, CHUNK_SIZE), (0, CHUNK_SIZE), (0, 8),
    ]  # fmt: skip


async def test_hostile_requests_get_a_status_and_a_log_line(served: Served, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "r1os.r1fs.runs")
    cid = await add(served, DATA)
    assert served.svc.runs is not None and served.svc.runs.port is not None
    port = served.svc.runs.port
    unknown = str(Cid.for_block(0x55, b"nobody has this"))
    status, headers, body = await answer(port, get(cid, f"Range: bytes={len(DATA)}-"))
    assert status == 416 and cause(body) == "bad_range" and headers["content-range"] == f"bytes */{len(DATA)}"
    status, _, body = await answer(port, get(unknown, "Range: bytes=0-9"))
    assert status == 404 and cause(body) == "not_found"
    status, _, body = await answer(port, get("bafy-not-a-cid", "Range: bytes=0-9"))
    assert status == 400 and cause(body) == "bad_cid"
    status, _, body = await answer(port, b"POST /ipfs/" + cid.encode() + b" HTTP/1.1\r\n\r\n")
    assert status == 405
    for target in (f"/v1/r1fs/block/{cid}", f"/ipfs/{cid}/a", f"/ipfs/{cid}?x=1"):
        status, _, body = await answer(port, f"GET {target} HTTP/1.1\r\n\r\n".encode())
        assert status == 404, target
    for head in (
        b"GARBAGE\r\n\r\n",
        get(cid, "no colon here"),
        get(cid, "Range: bytes=0-1", "Range: bytes=2-3"),
    ):
        status, _, body = await answer(port, head)
        assert status == 400 and cause(body) == "bad_request", head
    status, _, _ = await answer(port, get(cid, "X-Pad: " + "a" * MAX_HEAD))
    assert status == 431
    # A file with a leaf missing here: 404 before any byte of it is sent, not a stream cut short.
    leaf = Cid.for_block(0x55, DATA[CHUNK_SIZE : 2 * CHUNK_SIZE])
    served.svc.store.remove(leaf)
    status, _, body = await answer(port, get(cid, f"Range: bytes=0-{3 * CHUNK_SIZE}"))
    assert status == 404 and cause(body) == "not_found"
    status, _, body = await answer(port, get(cid, f"Range: bytes={2 * CHUNK_SIZE}-{3 * CHUNK_SIZE}"))
    assert status == 206 and body == DATA[2 * CHUNK_SIZE : 3 * CHUNK_SIZE + 1]  # the rest is served
    assert "r1fs runs: refused" in caplog.text


@asynccontextmanager
async def listener(s: Served, **kw: Any) -> AsyncIterator[RunServer]:
    runs = RunServer(s.svc, **kw)
    assert runs.open("127.0.0.1") is not None
    try:
        yield runs
    finally:
        await asyncio.to_thread(runs.close)


async def test_slow_and_greedy_clients_are_bounded(tmp_path: Path) -> None:
    big = mod251(16 * 1024 * 1024, start=5)  # more than the kernel's socket buffers hold
    async with (
        serve(tmp_path, R1fsSettings(max_upload=len(big))) as served,
        listener(served, head_timeout=0.5, io_timeout=0.5, min_rate=1e12, max_connections=1) as runs,
    ):
        cid = await add(served, big)
        assert runs.port is not None
        port = runs.port
        # A client that never finishes its head is closed after head_timeout; meanwhile the one slot
        # is taken, so another connection is answered 503 at once.
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /ipfs/")
        await until(lambda: runs._slots._value == 0, 5, "the slow client to take the slot")  # type: ignore[attr-defined]
        status, _, body = await answer(port, get(cid))
        assert status == 503 and cause(body) == "busy"
        slow.settimeout(5)
        t = time.monotonic()
        assert await asyncio.to_thread(slow.recv, 100) == b""  # closed by the listener
        assert time.monotonic() - t < 4
        slow.close()
        await until(lambda: runs._slots._value == 1, 5, "the slot to be free")  # type: ignore[attr-defined]
        # A client that asks for the whole file and reads nothing is cut at the run's deadline.
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", port))
        reader.sendall(get(cid))
        await until(lambda: runs.refused >= 3, 10, "the reader to be cut")
        reader.settimeout(5)
        got = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while piece := await asyncio.to_thread(reader.recv, 1 << 20):
                got += piece
        reader.close()
        assert len(got) < len(big) and runs.served == 0


class Dauth:
    """What `check_peer` asks of the node's dAuth service: on, and who is admitted."""

    enabled = True

    def __init__(self, admitted: str) -> None:
        self.admitted = admitted.lower()

    def is_admitted(self, address: str) -> bool:
        return address.lower() == self.admitted


async def test_under_dauth_runs_go_to_admitted_nodes_only(served: Served) -> None:
    cid = await add(served, DATA)
    member, outsider = NodeKey.generate(), NodeKey.generate()
    served.svc._dauth = Dauth(member.address)  # type: ignore[assignment]
    assert served.svc.runs is not None and served.svc.runs.port is not None
    port, path = served.svc.runs.port, f"/ipfs/{cid}"

    def signed(key: NodeKey) -> str:
        auth = sign_request(key, network="test", target=served.svc.me, method="GET", path=path, body=b"")
        return f"Authorization: {auth}"

    status, _, body = await answer(port, get(cid, "Range: bytes=0-9"))
    assert status == 401 and cause(body) == "unauthenticated"
    status, _, body = await answer(port, get(cid, "Range: bytes=0-9", signed(outsider)))
    assert status == 403 and cause(body) == "forbidden"
    header = signed(member)
    status, _, body = await answer(port, get(cid, "Range: bytes=0-9", header))
    assert status == 206 and body == DATA[:10]
    status, _, body = await answer(port, get(cid, "Range: bytes=0-9", header))  # the same nonce again
    assert status == 401
    other = sign_request(member, network="test", target=served.svc.me, method="GET", path="/ipfs/x", body=b"")
    status, _, body = await answer(port, get(cid, "Range: bytes=0-9", f"Authorization: {other}"))
    assert status == 401  # signed for another path


@asynccontextmanager
async def on_uvicorn(s: Served) -> AsyncIterator[str]:
    """Serve the node's app on a free loopback port, in this event loop; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(s.app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started, 10, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def rot(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00\x01\x02")


def complete(s: Served, cid: str) -> bool:
    return s.svc.store.is_complete(parse_cid(cid), verify=True)


async def test_a_node_pulls_through_the_run_listener_and_checks_every_leaf(tmp_path: Path) -> None:
    async with serve(tmp_path / "a") as a, serve(tmp_path / "b") as b, on_uvicorn(a) as url:
        fetcher = b.svc.fetcher

        async def only_a(cid: str) -> list[tuple[str, str]]:
            return [(a.svc.me, url)]

        fetcher.provider_urls = only_a  # type: ignore[method-assign]
        assert a.svc.runs is not None
        cid = await add(a, DATA)
        await fetcher.fetch(parse_cid(cid))
        assert complete(b, cid)
        assert fetcher.run_ports == {a.svc.me: a.svc.runs.port}  # learned from A's block answer
        assert a.svc.runs.served >= 2 and b.svc.counters["fetch_retries"] == 0
        # A listener that cannot be reached: the runs go through A's API, and the file still arrives.
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead = closed.getsockname()[1]
        cid2 = await add(a, mod251(5 * CHUNK_SIZE, start=11))
        await b.svc.fetcher.fetch_root(parse_cid(cid2))  # the root here: no block answer precedes runs
        fetcher.run_ports[a.svc.me] = dead
        served = a.svc.runs.served
        await fetcher.fetch(parse_cid(cid2))
        assert complete(b, cid2) and b.svc.counters["fetch_retries"] == 0
        assert fetcher.run_ports.get(a.svc.me) in (None, a.svc.runs.port)
        assert a.svc.runs.served >= served
        # Something else on the port it named (a server that pours bytes without end): the same.
        cid4 = await add(a, mod251(6 * CHUNK_SIZE, start=17))
        await fetcher.fetch_root(parse_cid(cid4))
        with HostilePeer() as liar:
            fetcher.run_ports[a.svc.me] = int(liar.url.rsplit(":", 1)[1])
            await fetcher.fetch(parse_cid(cid4))
        assert complete(b, cid4) and b.svc.counters["fetch_retries"] == 0 and liar.requests
        assert fetcher.run_ports.get(a.svc.me) in (None, a.svc.runs.port)
        # A leaf that rotted in A's pack is sent as it is by sendfile: B refuses it, stores nothing.
        data3 = mod251(4 * CHUNK_SIZE, start=13)
        cid3 = await add(a, data3)
        leaf = Cid.for_block(0x55, data3[CHUNK_SIZE : 2 * CHUNK_SIZE])
        where = a.svc.store.locate(leaf)
        assert where is not None
        rot(where[0], where[1] + 10)
        with pytest.raises(BlockNotFound, match="corrupt"):
            await fetcher.fetch(parse_cid(cid3))
        assert b.svc.counters["corrupt_from_peer"] >= 1 and not b.svc.store.has(leaf)


def test_a_run_writer_stores_checked_leaves_and_survives_a_reopen(tmp_path: Path) -> None:
    """Leaves written through a `RunWriter`: a corrupt one is refused with nothing written or indexed;
    the good ones are readable at once and, once the run ends, after the store is opened again; space
    a cut-short run reserved and never filled is dead bytes the store opens past."""
    store = BlockStore(tmp_path / "s")
    leaves = [mod251(CHUNK_SIZE, start=i) for i in range(3)]
    cids = [Cid.for_block(0x55, d) for d in leaves]
    with store.holding() as hold:
        writer = store.run_writer(hold, 4 * CHUNK_SIZE)  # a run of 4 leaves, cut short after 2
        assert writer is not None
        writer.put_verified(cids[0], leaves[0])
        assert store.get(cids[0]) == leaves[0] and cids[0] in hold.blocks
        with pytest.raises(CorruptBlock):
            writer.put_verified(cids[1], leaves[2])
        assert not store.has(cids[1])
        writer.put_verified(cids[2], leaves[2])
        writer.close()
    store.close()
    again = BlockStore(tmp_path / "s")
    assert again.get(cids[0], verify=True) == leaves[0] and again.get(cids[2], verify=True) == leaves[2]
    assert not again.has(cids[1])
    with again.holding() as hold:  # new blocks go after the reserved space
        assert again.put(cids[1], leaves[1])
    assert again.get(cids[1], verify=True) == leaves[1]
    again.close()
    synced = BlockStore(tmp_path / "f", fsync=True)
    with synced.holding() as hold:
        assert synced.run_writer(hold, CHUNK_SIZE) is None  # each block synced: the plain way
    synced.close()


def test_a_run_writer_stores_a_batch_up_to_its_first_corrupt_leaf(tmp_path: Path) -> None:
    """`RunWriter.put_many`: leaves back to back in one buffer; those before the first that does not
    match its CID are written (one write) and indexed, it and those after it are not; the next batch
    goes right after what was written."""
    store = BlockStore(tmp_path / "s")
    leaves = [mod251(CHUNK_SIZE - i, start=i) for i in range(5)]  # sizes differ: offsets must follow
    cids = [Cid.for_block(0x55, d) for d in leaves]
    with store.holding() as hold:
        writer = store.run_writer(hold, sum(len(d) for d in leaves))
        assert writer is not None
        batch = bytearray(b"".join(leaves[:3]))
        batch[len(leaves[0]) + 7] ^= 1  # the second leaf rotted on the way
        sizes = [(c, len(d)) for c, d in zip(cids, leaves, strict=True)]
        assert writer.put_many(sizes[:3], memoryview(batch)) == 1
        assert store.get(cids[0], verify=True) == leaves[0] and cids[0] in hold.blocks
        assert not store.has(cids[1]) and not store.has(cids[2])
        rest = b"".join(leaves[1:])
        assert writer.put_many(sizes[1:], memoryview(rest)) == 4
        writer.close()
        first = store.locate(cids[0])
        assert first is not None
        offset = first[1] + len(leaves[0])
        for cid, data in zip(cids[1:], leaves[1:], strict=True):
            where = store.locate(cid)
            assert where is not None and where[1] == offset  # back to back, in order
            offset += len(data)
    store.close()
    again = BlockStore(tmp_path / "s")
    assert all(again.get(c, verify=True) == d for c, d in zip(cids, leaves, strict=True))
    again.close()


async def test_a_whole_fetch_hands_every_block_to_the_callers_holds(tmp_path: Path) -> None:
    """A pin counts on the blocks its fetch verified without walking the DAG again: the fetch hands
    them to the hold of each caller that joined it, as it ends well, and to none when it fails."""
    async with serve(tmp_path / "a") as a, serve(tmp_path / "b") as b, on_uvicorn(a) as url:
        fetcher = b.svc.fetcher

        async def only_a(cid: str) -> list[tuple[str, str]]:
            return [(a.svc.me, url)]

        fetcher.provider_urls = only_a  # type: ignore[method-assign]
        root = parse_cid(await add(a, DATA))
        store = b.svc.store
        with store.holding() as one, store.holding() as two:
            await asyncio.gather(fetcher.fetch(root, hold=one), fetcher.fetch(root, hold=two))
            blocks = set(store.dag_blocks(root))
            assert len(blocks) == 11  # the root and its 10 leaves
            for hold in (one, two):
                assert root in hold.complete and blocks <= hold.blocks
            # GC finds every block held (no pin counts on them yet): it takes none.
            assert store.gc([]).removed == 0 and complete(b, str(root))
        with store.holding() as again:  # all here already: the walk that finds it so hands it over
            await fetcher.fetch(root, hold=again)
            assert root in again.complete and blocks <= again.blocks
        # A fetch that fails (a leaf rotted at the only provider) hands nothing over.
        data3 = mod251(4 * CHUNK_SIZE, start=13)
        cid3 = parse_cid(await add(a, data3))
        leaf = Cid.for_block(0x55, data3[CHUNK_SIZE : 2 * CHUNK_SIZE])
        where = a.svc.store.locate(leaf)
        assert where is not None
        rot(where[0], where[1] + 10)
        with store.holding() as failed:
            with pytest.raises(BlockNotFound, match="corrupt"):
                await fetcher.fetch(cid3, hold=failed)
            assert cid3 not in failed.complete
        # A pin through the service: recorded once the whole DAG is here.
        cid4 = await add(a, mod251(6 * CHUNK_SIZE, start=17))
        answer4 = await b.svc.pin(cid4)
        assert answer4.size == 6 * CHUNK_SIZE and cid4 in b.svc.pins and complete(b, cid4)
