"""A file's interior blocks in one answer of the run listener (`GET /dag/<cid>`, a CAR): what it holds
(every dag-pb block under the root once, parents first, no leaves; a cap leaves the rest out), what it
refuses, and the fetcher that takes it: each block checked against its CID and taken only when a block
taken before it links it. A listener that answers anything else (another root, a block nobody links,
a corrupt block, an answer past the cap, an older node's 404) costs only the request: the walk fetches
the rest one by one through the API, and the file still arrives whole."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from r1os.r1fs import CHUNK_SIZE, Cid, R1fsSettings
from r1os.r1fs._car import encode_header, encode_section, read_car
from r1os.r1fs._dag import DAG_PB, RAW, parse_cid, read_file_node
from r1os.r1fs._fetcher import MAX_DAG_ANSWER
from r1os.r1fs._runs import interior_car
from tests.r1fs._content import mod251
from tests.r1fs._hostile import many_leaves
from tests.r1fs.conftest import Served, serve
from tests.r1fs.test_pull_runs import add, answer, cause, complete, on_uvicorn

pytestmark = pytest.mark.timeout(120)


def dag(cid: str | Cid, *extra: str) -> bytes:
    return "\r\n".join([f"GET /dag/{cid} HTTP/1.1", "Host: peer", *extra, "", ""]).encode()


def interior(root: Cid, blocks: dict[Cid, bytes]) -> list[Cid]:
    """The dag-pb blocks under `root` (root excluded), each once."""
    out: list[Cid] = []
    seen = {root}
    stack = [root]
    while stack:
        cid = stack.pop()
        for child, _ in read_file_node(cid, blocks[cid]).children:
            if child.codec == DAG_PB and child not in seen:
                seen.add(child)
                out.append(child)
                stack.append(child)
    return out


def tree(served: Served) -> tuple[Cid, dict[Cid, bytes]]:
    """A file of 400 small leaves (three 174-link nodes under its root) put into the node's store."""
    root, blocks = many_leaves(400, size=64)
    for cid, data in blocks.items():
        served.svc.store.put(cid, data)
    return root, blocks


async def test_the_interior_of_a_file_in_one_car(served: Served) -> None:
    root, blocks = tree(served)
    runs = served.svc.runs
    assert runs is not None and runs.port is not None
    port = runs.port
    status, headers, body = await answer(port, dag(root))
    assert status == 200 and headers["content-type"].startswith("application/vnd.ipld.car")
    roots, got = read_car(body)
    assert roots == [root]
    want = interior(root, blocks)
    assert len(want) == 3 and sorted(b.cid.digest for b in got) == sorted(c.digest for c in want)
    taken = {root}
    for b in got:  # every block after one that links it; no leaves
        assert b.cid.codec == DAG_PB and b.data == blocks[b.cid]
        assert any(b.cid in {c for c, _ in read_file_node(p, blocks[p]).children} for p in taken)
        taken.add(b.cid)
    # Capped: the first blocks only (a prefix the fetcher can use), never a block cut in two.
    first = len(blocks[want[0]])
    _, capped = read_car(interior_car(served.svc.store, served.svc.dag, root, max_bytes=first))
    assert len(capped) == 1 and capped[0].data == blocks[capped[0].cid]
    # Refused: a leaf (no interior), a CID nobody has, a path or query after the CID, a block missing.
    leaf = next(c for c in blocks if c.codec == RAW)
    status, _, body = await answer(port, dag(leaf))
    assert status == 400 and cause(body) == "bad_request"
    status, _, body = await answer(port, dag(Cid.for_block(DAG_PB, b"nobody has this")))
    assert status == 404 and cause(body) == "not_found"
    for target in (f"/dag/{root}?x=1", f"/dag/{root}/a", "/dag/", "/dagx/{root}"):
        status, _, body = await answer(port, f"GET {target} HTTP/1.1\r\n\r\n".encode())
        assert status in (400, 404), target
    served.svc.store.remove(want[-1])
    status, _, body = await answer(port, dag(root))
    assert status == 404 and cause(body) == "not_found"  # before any block of it is sent
    assert runs.served == 1


class FakeListener:
    """A run listener that answers every request with the same bytes (a head and a body)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.requests: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                seen = b""
                try:
                    while b"\r\n\r\n" not in seen:
                        piece = conn.recv(4096)
                        if not piece:
                            break
                        seen += piece
                    self.requests.append(seen.split(b" ", 2)[1].decode())
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@contextmanager
def fake(reply: bytes) -> Iterator[FakeListener]:
    listener = FakeListener(reply)
    try:
        yield listener
    finally:
        listener.close()


def car_reply(car: bytes, length: int | None = None) -> bytes:
    n = len(car) if length is None else length
    return f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n".encode() + car


async def test_a_pull_takes_the_interior_in_one_answer_and_refuses_what_does_not_belong(
    tmp_path: Path,
) -> None:
    data = mod251(400 * CHUNK_SIZE, start=29)  # three 174-link nodes under the root
    settings = R1fsSettings(max_upload=len(data))
    async with (
        serve(tmp_path / "a", settings) as a,
        serve(tmp_path / "b", settings) as b,
        on_uvicorn(a) as url,
    ):
        fetcher = b.svc.fetcher

        async def only_a(cid: str) -> list[tuple[str, str]]:
            return [(a.svc.me, url)]

        fetcher.provider_urls = only_a  # type: ignore[method-assign]
        assert a.svc.runs is not None
        cid = await add(a, data)
        root = parse_cid(cid)
        kept: list[int] = []
        taken = fetcher._interior

        def spy(*args: object) -> int:
            n = taken(*args)  # type: ignore[arg-type]
            kept.append(n)
            return n

        fetcher._interior = spy  # type: ignore[method-assign,assignment]
        await fetcher.fetch_root(root)  # learns A's listener from the root's block answer
        await fetcher.fetch(root)
        assert complete(b, cid) and kept == [3] and b.svc.counters["fetch_retries"] == 0

        # Hostile or odd answers: nothing of them is kept, and the file still arrives whole.
        blocks = {
            c: a.svc.store.get(c) for c in [root, *(c for c, _ in a.svc.store.file_node(root).children)]
        }
        inner = [c for c in blocks if c != root]
        stray = b"a dag-pb block nobody links"
        stray_cid = Cid.for_block(DAG_PB, stray)
        other = Cid.for_block(DAG_PB, b"another root")
        header = encode_header([root.raw])
        good = encode_section(inner[0], blocks[inner[0]])
        bad = bytearray(encode_section(inner[1], blocks[inner[1]]))
        bad[-1] ^= 1
        replies = {
            "a block nobody links": car_reply(header + good + encode_section(stray_cid, stray)),
            "a corrupt block": car_reply(header + bytes(bad)),
            "another root": car_reply(encode_header([other.raw]) + good),
            "an answer past the cap": car_reply(header + good, MAX_DAG_ANSWER + 1),
            "an older node": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            "garbage": b"\x00" * 5000,
        }
        for what, reply in replies.items():
            for c in [c for c, _ in b.svc.store.all() if c != root]:
                b.svc.store.remove(c)
            b.svc.store._nodes.clear()
            kept.clear()
            with fake(reply) as liar:
                fetcher.run_ports[a.svc.me] = liar.port
                await fetcher.fetch(root)
                assert liar.requests and liar.requests[0] == f"/dag/{root}", what
            assert complete(b, cid), what
            assert kept[0] <= 1, what  # at most the one good block before the bad part
            assert not b.svc.store.has(stray_cid) and not b.svc.store.has(other), what
