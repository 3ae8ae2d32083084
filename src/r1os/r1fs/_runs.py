"""Block runs for peers on a listener of their own: the bytes go from the pack files to the socket by
`sendfile`, never through Python or the HTTP server of the node's API.

A peer fetching a file asks for its leaves in runs (`_fetcher.py`): one Range request per run of up to
64 leaves. Through the API (`GET /ipfs/<cid>` with `X-R1fs-Local-Only`) every leaf is read into a bytes
object and written to the socket by the ASGI server; here the request is answered by a thread that
plans the run from the interior blocks (which leaves, which part of each) and then has the kernel copy
each leaf from its pack to the socket. The port is announced in the `X-R1fs-Runs` header of the node's
block answers (`/v1/r1fs/block/<cid>`, the gateway's block runs); a fetcher that cannot reach it uses
the API route as before.

A fetcher also asks here, once per file, for the file's interior blocks: `GET /dag/<cid>` answers a
CARv1 (root: the file) of the dag-pb blocks under it, each distinct one once, parents before their
children, without the raw leaves; up to `MAX_DAG_BYTES` of blocks (a bigger tree is cut there: the
fetcher asks for the rest block by block). One request and one signature check instead of one
request through the API per interior block.

What this listener accepts is one request per connection, `GET /ipfs/<cid>` with one `Range:
bytes=a-b` (none: the whole file) or `GET /dag/<cid>`, checked as the API checks a peer's block run:
the same signature (`Authorization: R1OS-SIG`, its nonce remembered with the API's), admitted nodes
only when the node runs dAuth, only what is local (a missing block is a 404 before any byte is
sent), the file's tree bounded by the node's `DagLimits`. Everything else is bounded too: a request
head of at most 8 KiB within 10 s, at most 32 connections at once (503 past it), a body that must be
taken at `MIN_PEER_RATE` or the connection is cut. Every refusal is an HTTP status with the API's
error body (`{"error", "cause", "hint"}`) and a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from r1os.errors import R1osError, error_body
from r1os.r1fs._car import encode_header, encode_section
from r1os.r1fs._dag import RAW, Cid, DagLimits, RefBudget, parse_cid
from r1os.r1fs._errors import BlockNotFound, CorruptBlock, R1fsError
from r1os.r1fs._fetcher import MIN_PEER_RATE
from r1os.r1fs._gateway import Unsatisfiable, parse_range
from r1os.r1fs._store import BlockStore

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.r1fs.runs")

#: Largest request head (request line and headers) read; past it: 431.
MAX_HEAD = 8192
#: Longest a client may take to send its request head (seconds); past it the connection is closed.
HEAD_TIMEOUT = 10.0
#: Longest a send may make no progress (the peer reads nothing) before the connection is cut.
IO_TIMEOUT = 10.0
#: Connections served at once; one more is answered 503 and closed.
MAX_CONNECTIONS = 32
#: Longest a connection past MAX_CONNECTIONS is read from before its 503 (one thread answers them).
REJECT_WAIT = 0.5
#: Longest the signature check may take on the node's loop.
AUTH_TIMEOUT = 10.0
#: Most block bytes one `/dag/<cid>` answer carries (~4,000 interior blocks of 174 links: the tree
#: of a ~170 GiB file); the blocks past it are left out, for the fetcher to ask for one by one.
MAX_DAG_BYTES = 32 * 1024 * 1024

_STATUS = {
    200: "OK", 206: "Partial Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 416: "Range Not Satisfiable",
    422: "Unprocessable Content", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable",
}  # fmt: skip


class Refused(R1fsError):
    """A request the listener answers with an error status (the cause says why)."""


_BUSY = Refused(
    "this node serves as many runs as it can", cause="busy", status=503, hint="try another provider"
)


#: One piece of a run: a leaf (its CID, the first byte wanted, how many) or bytes held inline in a node.
Part = tuple[Cid | bytes, int, int]


@dataclass(frozen=True)
class Run:
    """What a request gets: the file's size, the bytes [first, last] and the parts that hold them."""

    size: int
    first: int
    last: int
    parts: list[Part]
    ranged: bool = True  # asked with a Range (answered 206 even when it covers the whole file)


def plan_run(store: BlockStore, limits: DagLimits, root: Cid, range_header: str | None) -> Run:
    """The parts holding the bytes a Range asks for of the local file under `root`, from its interior
    blocks (leaves are not read: their sizes are checked against the index). `BlockNotFound` when a
    block of the span is not here, `CorruptBlock` when a size is not the one its parent gives,
    `DagRefused` past the node's bounds (depth, declared size, references), `Unsatisfiable` past the end."""
    if root.codec == RAW:
        size = store.size_of(root)
        if size is None:
            raise BlockNotFound(f"block {root} is not in the local store")
        top = None
    else:
        top = store.file_node(root)
        limits.check_root(root, top)
        size = top.filesize
    try:
        span = parse_range(range_header, size)
    except Unsatisfiable:
        raise Unsatisfiable(size) from None
    first, last = (0, size - 1) if span is None else span
    parts: list[Part] = []
    if size == 0:
        return Run(0, 0, -1, parts, span is not None)
    budget = RefBudget(root, limits, size)

    def leaf(cid: Cid, offset: int, expect: int | None) -> None:
        n = store.size_of(cid)
        if n is None:
            raise BlockNotFound(f"block {cid} is not in the local store")
        if expect is not None and n != expect:
            raise CorruptBlock(f"{cid} holds {n} bytes where its parent says {expect}")
        lo, hi = max(first - offset, 0), min(last + 1 - offset, n)
        if lo < hi:
            parts.append((cid, lo, hi - lo))

    def walk(cid: Cid, offset: int, expect: int | None, depth: int) -> None:
        if cid.codec == RAW:
            leaf(cid, offset, expect)
            return
        node = top if depth == 0 and top is not None else store.file_node(cid)
        if expect is not None and node.filesize != expect:
            raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")
        if node.children:
            limits.check_depth(root, depth + 1)
        pos = offset
        if node.data:
            lo, hi = max(first - pos, 0), min(last + 1 - pos, len(node.data))
            if lo < hi:
                parts.append((bytes(node.data[lo:hi]), 0, hi - lo))
            pos += len(node.data)
        for child, n in node.children:
            if pos > last:
                return
            if pos + n > first:
                budget.take()
                walk(child, pos, n, depth + 1)
            pos += n

    walk(root, 0, None, 0)
    if sum(p[2] for p in parts) != last - first + 1:
        raise CorruptBlock(f"the blocks under {root} do not add up to the bytes it declares")
    return Run(size, first, last, parts, span is not None)


def interior_car(store: BlockStore, limits: DagLimits, root: Cid, max_bytes: int = MAX_DAG_BYTES) -> bytes:
    """A CARv1 (root: `root`) of the local dag-pb blocks under the file `root`, root excluded: each
    distinct one once, every block after its parent (depth first, in file order), raw leaves left out,
    up to `max_bytes` of blocks (the rest left out). `BlockNotFound` when one of them is not here
    (nothing is sent), `DagRefused` past the node's bounds (depth, distinct blocks, declared size)."""
    if root.codec == RAW:
        raise Refused(f"{root} is a raw block: it has no interior blocks", cause="bad_request", status=400)
    top = store.file_node(root)
    limits.check_root(root, top)
    parts = [encode_header([root.raw])]
    size = 0
    seen = {root}
    stack = [(top, 0)]
    while stack:
        node, depth = stack.pop()
        if node.children:
            limits.check_depth(root, depth + 1)
        found = []
        for child, _ in node.children:
            if child.codec == RAW or child in seen:
                continue
            seen.add(child)
            limits.check_blocks(root, len(seen))
            data = store.get(child)
            size += len(data)
            if size > max_bytes:
                return b"".join(parts)
            parts.append(encode_section(child, data))
            found.append((store.file_node(child), depth + 1))  # decoded once while cached
        stack.extend(reversed(found))
    return b"".join(parts)


async def _no_body() -> dict[str, object]:
    """The body of every request here: none (a signature over the empty body checks against it)."""
    return {"type": "http.request", "body": b"", "more_body": False}


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class RunServer:
    """The run listener of one node (see the module's docstring): an accepting thread and a thread per
    connection, `MAX_CONNECTIONS` at most. `open` binds it; `close` stops it and cuts open connections."""

    def __init__(
        self,
        svc: R1fsService,
        *,
        max_connections: int = MAX_CONNECTIONS,
        head_timeout: float = HEAD_TIMEOUT,
        io_timeout: float = IO_TIMEOUT,
        min_rate: float = MIN_PEER_RATE,
    ) -> None:
        self.svc = svc
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.io_timeout = io_timeout
        self.min_rate = min_rate
        self.port: int | None = None
        self.served = 0  # runs answered in full
        self.refused = 0  # requests answered with an error status (or closed for a slow head)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rejects: queue.Queue[socket.socket | None] = queue.Queue(maxsize=MAX_CONNECTIONS)
        self._closed = False

    def open(self, host: str) -> int | None:
        """Listen on a free port of `host` (the API's host); returns the port, None if it cannot."""
        self._loop = asyncio.get_running_loop()
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(64)
        except OSError as exc:
            log.warning("r1fs: no run listener on %s (%s); peers fetch runs through the API", host, exc)
            return None
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="r1fs-runs", daemon=True)
        self._thread.start()
        threading.Thread(target=self._reject, name="r1fs-runs-busy", daemon=True).start()
        log.info("r1fs: block runs for peers on %s:%d", host, self.port)
        return self.port

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            _cut(self._sock)  # wakes the accepting thread
            self._sock.close()
        with self._lock:
            for conn in list(self._open):
                _cut(conn)
        with contextlib.suppress(queue.Full):
            self._rejects.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._closed:
            try:
                conn, peer = self._sock.accept()
            except OSError:
                if self._closed:
                    return
                time.sleep(0.05)  # EMFILE and the like: try again, slower
                continue
            if not self._slots.acquire(blocking=False):
                self.refused += 1
                log.info("r1fs runs: %s refused: %d connections already", peer[0], self.max_connections)
                try:  # answered by one thread, in turn; past what it has queued, just closed
                    self._rejects.put_nowait(conn)
                except queue.Full:
                    conn.close()
                continue
            with self._lock:
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn, peer), name="r1fs-run", daemon=True).start()

    def _reject(self) -> None:
        """Answer 503 to connections past `max_connections`: the head is read first (briefly), as a
        connection closed with unread bytes is reset and the client would not see the answer."""
        while not self._closed:
            conn = self._rejects.get()
            if conn is None:
                return
            with conn:
                conn.settimeout(REJECT_WAIT)
                with contextlib.suppress(OSError):
                    seen = b""
                    while b"\r\n\r\n" not in seen and len(seen) < MAX_HEAD:
                        piece = conn.recv(4096)
                        if not piece:
                            break
                        seen += piece
                with contextlib.suppress(OSError):
                    conn.sendall(self._error(_BUSY))
                    conn.shutdown(socket.SHUT_WR)

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            with conn:
                self._answer(conn, peer)
        except Exception:
            log.exception("r1fs runs: a request from %s failed", peer[0])
        finally:
            with self._lock:
                self._open.discard(conn)
            self._slots.release()

    def _error(self, exc: R1osError, extra: dict[str, str] | None = None) -> bytes:
        body = json.dumps(error_body(str(exc), exc.cause, exc.hint)).encode()
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close",
        }
        return _head(exc.status, {**headers, **(extra or {})}) + body

    def _read_head(self, conn: socket.socket) -> bytes | None:
        """The request head, within HEAD_TIMEOUT and MAX_HEAD; None when the client is too slow or gone."""
        deadline = time.monotonic() + self.head_timeout
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            conn.settimeout(left)
            try:
                piece = conn.recv(4096)
            except (TimeoutError, OSError):
                return None
            if not piece:
                return None
            buf += piece
            if len(buf) > MAX_HEAD:
                raise Refused(f"request head past {MAX_HEAD} bytes", cause="bad_request", status=431)
        return bytes(buf[: buf.index(b"\r\n\r\n")])

    def _answer(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            head = self._read_head(conn)
            if head is None:
                self.refused += 1
                log.info("r1fs runs: %s sent no whole request in %.0f s; closed", peer[0], self.head_timeout)
                return
            run, root = self._request(head, peer)
        except Unsatisfiable as exc:
            self.refused += 1
            size = exc.args[0] if exc.args else 0
            log.info("r1fs runs: %s asked for a range past the end (%d bytes)", peer[0], size)
            err = Refused(
                f"the range lies past the end of the file ({size} bytes)", cause="bad_range", status=416
            )
            self._send_error(conn, err, {"Content-Range": f"bytes */{size}"})
            return
        except R1osError as exc:
            self.refused += 1
            if exc.status != 404:  # peers ask around: a miss is normal
                log.info("r1fs runs: refused %s (%d): %s", peer[0], exc.status, exc)
            self._send_error(conn, exc)
            return
        if isinstance(run, bytes):
            self._send_car(conn, run, root)
        else:
            self._send_run(conn, run, root)

    def _send_car(self, conn: socket.socket, car: bytes, root: Cid) -> None:
        """The CAR of a file's interior blocks (`GET /dag/<cid>`), within the same deadline as a run."""
        headers = {
            "Content-Type": "application/vnd.ipld.car; version=1",
            "Content-Length": str(len(car)),
            "ETag": f'"{root}.dag"',
            "Connection": "close",
        }
        conn.settimeout(self.io_timeout + len(car) / self.min_rate)
        try:
            conn.sendall(_head(200, headers) + car)
            self.served += 1
        except OSError as exc:
            self.refused += 1
            log.info("r1fs runs: the interior blocks of %s were cut short: %s", root, exc)

    def _send_error(self, conn: socket.socket, exc: R1osError, extra: dict[str, str] | None = None) -> None:
        conn.settimeout(self.io_timeout)
        with contextlib.suppress(OSError):
            conn.sendall(self._error(exc, extra))

    def _request(self, head: bytes, peer: tuple[str, int]) -> tuple[Run | bytes, Cid]:
        """The request checked (see the module's docstring): what to send (a run, or the CAR of a
        file's interior blocks) and the file's root."""
        lines = head.decode("latin-1").split("\r\n")
        words = lines[0].split(" ")
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            raise Refused("not an HTTP/1.1 request line", cause="bad_request", status=400)
        method, target, _ = words
        if method != "GET":
            raise Refused(
                f"{method[:16]} is not served here: GET a block run", cause="bad_request", status=405
            )
        headers: list[tuple[bytes, bytes]] = []
        seen: set[str] = set()
        for text in lines[1:]:
            name, colon, value = text.partition(":")
            name = name.strip().lower()
            if not colon or not name or " " in name:
                raise Refused("a malformed header line", cause="bad_request", status=400)
            if name in seen and name in ("range", "authorization", "host"):
                raise Refused(f"{name} given twice", cause="bad_request", status=400)
            seen.add(name)
            headers.append((name.encode("latin-1"), value.strip().encode("latin-1")))
        dag = target.startswith("/dag/")
        if not (dag or target.startswith("/ipfs/")) or "?" in target or "/" in target.split("/", 2)[2]:
            raise Refused(
                "only /ipfs/<cid> (a file's block run) and /dag/<cid> (its interior blocks) are served here",
                cause="not_found",
                status=404,
            )
        root = parse_cid(target.split("/", 2)[2])
        request = Request({
            "type": "http", "method": method, "path": target, "raw_path": target.encode("latin-1"),
            "query_string": b"", "headers": headers, "client": peer[:2], "server": None, "scheme": "http",
            "http_version": "1.1", "root_path": "",
        }, _no_body)  # fmt: skip
        assert self._loop is not None
        check = asyncio.run_coroutine_threadsafe(self.svc.check_peer(request), self._loop)
        try:
            check.result(timeout=AUTH_TIMEOUT)
        except TimeoutError:
            check.cancel()
            raise Refused("the node is too busy to check the request", cause="busy", status=503) from None
        rng = request.headers.get("range")
        svc = self.svc
        try:
            if dag:
                return interior_car(svc.store, svc.dag, root), root
            return plan_run(svc.store, svc.dag, root, rng), root
        except Unsatisfiable:
            raise
        except OSError as exc:
            raise R1fsError(f"run of {root}: {exc}", cause="io") from exc

    def _send_run(self, conn: socket.socket, run: Run, root: Cid) -> None:
        """The head, then every part, the leaves by `sendfile`, within the run's deadline."""
        n = run.last - run.first + 1
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(n),
            "ETag": f'"{root}"',
            "Connection": "close",
        }
        status = 200
        if run.ranged:
            status = 206
            headers["Content-Range"] = f"bytes {run.first}-{run.last}/{run.size}"
        conn.settimeout(None)  # blocking: sendfile blocks, bounded by the send timeout and the watchdog
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.io_timeout))
        watchdog = threading.Timer(self.io_timeout + n / self.min_rate, _cut, (conn,))
        watchdog.daemon = True
        watchdog.start()
        store = self.svc.store
        try:
            conn.sendall(_head(status, headers))
            for part, skip, count in run.parts:
                if isinstance(part, bytes):
                    conn.sendall(part)
                elif store.send_to(part, conn, skip, count) != count:
                    raise CorruptBlock(f"block {part} is shorter than its index says")
            self.served += 1
        except (OSError, R1fsError) as exc:  # headers are gone: all there is to do is cut it short
            self.refused += 1
            log.info("r1fs runs: the run of %s was cut short: %s", root, exc)
        finally:
            watchdog.cancel()
