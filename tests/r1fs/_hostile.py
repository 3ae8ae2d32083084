"""What an attacker brings: DAGs that claim more than they hold, and a peer that sends without end.

The DAGs are encoded byte for byte as a node encodes a file's nodes (links, then UnixFS Data), so a
node can only tell them from honest files by what they claim, never by their form.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

from r1os.r1fs import CHUNK_SIZE, Cid
from r1os.r1fs._dag import DAG_PB, RAW, Link, encode_file_node

Blocks = dict[Cid, bytes]


def leaf(data: bytes, blocks: Blocks) -> Link:
    cid = Cid.for_block(RAW, data)
    blocks[cid] = data
    return Link(cid, len(data), len(data))


def node(links: list[Link], blocks: Blocks) -> Link:
    block = encode_file_node(links)
    cid = Cid.for_block(DAG_PB, block)
    blocks[cid] = block
    return Link(cid, len(block) + sum(x.tsize for x in links), sum(x.filesize for x in links))


def fanout_bomb(levels: int = 3, width: int = 174, byte: bytes = b"x") -> tuple[Cid, Blocks]:
    """The issue's tree: `levels` nodes of `width` links, each to the one node below, over one leaf of
    `byte`: ~9 KB per level, a file of width**levels leaf references (174**3 = 5.3 million)."""
    blocks: Blocks = {}
    link = leaf(byte, blocks)
    for _ in range(levels):
        link = node([link] * width, blocks)
    return link.cid, blocks


def claimed_leaf(claim: int = 1 << 30) -> tuple[Cid, Blocks]:
    """A node whose one raw leaf (1 byte) it says holds `claim` bytes: a fetcher that sizes its buffer
    from the claim allocates `claim` bytes before the first byte arrives."""
    blocks: Blocks = {}
    real = leaf(b"y", blocks)
    root = node([Link(real.cid, claim, claim), leaf(b"z" * 100, blocks)], blocks)
    return root.cid, blocks


def chain(depth: int = 200) -> tuple[Cid, Blocks]:
    """Nodes of one link each, `depth` deep: every walk of it recurses (or loops) `depth` times."""
    blocks: Blocks = {}
    link = leaf(b"deep", blocks)
    for _ in range(depth):
        link = node([link], blocks)
    return link.cid, blocks


def many_leaves(n: int, size: int = 2048) -> tuple[Cid, Blocks]:
    """An honest-looking file of `n` distinct leaves of `size` bytes (under 174-link nodes)."""
    blocks: Blocks = {}
    level = [leaf(i.to_bytes(4, "big") * (size // 4), blocks) for i in range(n)]
    while len(level) > 1:
        level = [node(level[i : i + 174], blocks) for i in range(0, len(level), 174)]
    return level[0].cid, blocks


def two_leaf_file() -> tuple[Cid, Blocks, bytes]:
    """An honest file of two full leaves: its root block, and the bytes a provider should serve."""
    blocks: Blocks = {}
    data = bytes(range(256)) * (2 * CHUNK_SIZE // 256)
    root = node([leaf(data[:CHUNK_SIZE], blocks), leaf(data[CHUNK_SIZE:], blocks)], blocks)
    return root.cid, blocks, data


class HostilePeer:
    """An HTTP server that answers like a node's R1FS and then misbehaves (`mode`):

    - `endless`: every block and every range is an endless stream of bytes (the blocks in `serve`
      excepted, served as they are, so a fetcher gets as far as a file's runs);
    - `dribble`: the same, one byte every `drip` seconds.

    `sent` counts the body bytes it managed to write; `requests` the paths asked for."""

    def __init__(self, serve: Blocks | None = None, mode: str = "endless", drip: float = 0.5) -> None:
        self.serve = {str(c): b for c, b in (serve or {}).items()}
        self.mode = mode
        self.drip = drip
        self.sent = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                peer.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/v1/r1fs/block/") and name in peer.serve:
                    body = peer.serve[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                ranged = self.headers.get("Range")
                self.send_response(206 if ranged else 200)
                if ranged:
                    self.send_header("Content-Range", f"{ranged.replace('=', ' ')}/{1 << 40}")
                self.send_header("Connection", "close")  # no length: the body ends when it closes
                self.end_headers()
                self._pour()

            def _pour(self) -> None:
                piece = b"\xab" * 65536
                deadline = time.monotonic() + 120  # never outlive the test by much
                try:
                    while time.monotonic() < deadline:
                        if peer.mode == "dribble":
                            self.wfile.write(b"\xab")
                            self.wfile.flush()
                            peer._count(1)
                            time.sleep(peer.drip)
                        else:
                            self.wfile.write(piece)
                            peer._count(len(piece))
                except OSError:
                    return  # the node hung up: what it should do

        return Handler

    def __enter__(self) -> HostilePeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class LoopLag:
    """The longest the event loop went without running a 10 ms ticker: how long a node would have left
    every other request waiting."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.worst = max(self.worst, now - last - 0.01)
            last = now

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
