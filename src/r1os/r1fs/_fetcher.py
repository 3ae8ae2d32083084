"""Fetching files from the nodes that provide them: interior nodes one by one over the node's shared
HTTP client, then the leaves in runs, each run one Range request read by a thread of its own.

Every block is checked against its CID before it is stored. Readers streaming a file that is being
fetched wait on `until_here`, which wakes whenever a block lands.

What a peer sends is bounded where it arrives: an interior block's body is read up to the largest valid
block (`MAX_BLOCK_SIZE`), a run's body up to the bytes the run asked for, each within a deadline
(`fetch_timeout` plus the bytes at `MIN_PEER_RATE`), so an endless or dribbling body costs a connection
and a timer, never memory. The DAG's own claims are checked before they are acted on (`DagLimits`):
the tree is walked once per distinct block, its depth, block count and declared size bounded, and no
buffer is sized from a claim a block cannot back. Requests to peers are signed by this node
(`Authorization: R1OS-SIG`, per request, also from the fetch threads): a node running dAuth serves
blocks only to admitted nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import queue
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from r1os.r1fs._car import BadCar, CarReader
from r1os.r1fs._dag import MAX_BLOCK_SIZE, RAW, Cid, DagLimits, RefBudget, read_file_node, too_many_refs
from r1os.r1fs._errors import BlockNotFound, CorruptBlock, R1fsError
from r1os.r1fs._limits import Busy, check_space
from r1os.r1fs._providers import Directory
from r1os.r1fs._store import BlockStore, Hold, RunWriter
from r1os.wire import sign_request

if TYPE_CHECKING:
    from r1os.node import R1fsSettings, ServiceContext

log = logging.getLogger("r1os.r1fs")

#: Header of a peer's gateway request: serve only what is local, never fetch on its behalf.
LOCAL_ONLY = "X-R1fs-Local-Only"
#: Header of a node's block answers naming the port of its run listener (`_runs.py`).
RUNS_HEADER = "X-R1fs-Runs"

#: A provider: (node address, base URL of its HTTP API).
Provider = tuple[str, str]

#: Longest a reader waits for a fetch to have checked the file's tree before it answers (and so before
#: it sends a status): a tree refused for its shape is a clean 4xx, not a stream cut short.
SETTLE_MAX = 2.0

#: Interior blocks of one level fetched at once (`Fetcher._prefetch`).
PREFETCH = 16

#: Slowest a peer may send and still finish a request (bytes/s): a run of n bytes must arrive within
#: fetch_timeout + n / MIN_PEER_RATE seconds, else the connection is cut and the rest goes to another
#: provider (cause of the retry: `too slow`).
MIN_PEER_RATE = 512 * 1024

#: Bytes of a run read at once (whole leaves, at least one): one read off the socket, then each leaf
#: hashed, then one `pwrite` and one take of the store's lock for them all (`RunWriter.put_many`). A
#: leaf at a time cost the receiving node ~0.04 CPU-s more per 200 MiB (8 streams, a receive, a write
#: and a lock per 256 KiB, each a GIL hand-off with the other fetch threads and the loop).
BATCH = 1 << 20

#: Longest answer read for a file's interior blocks from a run listener (`GET /dag/<cid>`, a CAR): the
#: listener's own bound (`_runs.MAX_DAG_BYTES`) plus the sections' framing.
MAX_DAG_ANSWER = 33 * 1024 * 1024


@dataclass(frozen=True)
class _Leaf:
    cid: Cid
    offset: int
    size: int


def _connect(url: str, timeout: float) -> http.client.HTTPConnection:
    """A blocking connection to a peer's API (the stdlib client: fetch threads read straight off it)."""
    u = urlsplit(url)
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    return cls(u.hostname or "127.0.0.1", u.port, timeout=timeout)


def _cut(sockets: list[socket.socket], fired: threading.Event) -> None:
    """End a connection whose deadline passed, from the watchdog timer: the blocked read returns. The
    socket itself, not the connection's: http.client lets go of it once a response reads to the close."""
    fired.set()
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read_into(r: http.client.HTTPResponse | _RawRun, view: memoryview) -> int:
    """Fill `view` from the response (no new bytes object per leaf); fewer bytes only at its end."""
    got = 0
    while got < len(view):
        n = r.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class _RawRun:
    """A run asked of a provider's run listener and read straight off the socket: the head parsed
    here (<= MAX_HEAD bytes), then each batch of leaves taken by one `recv(MSG_WAITALL)` into the
    caller's buffer, where `http.client` took one pass through its buffered reader per TCP segment
    (and the GIL with it, for every 64 KiB); never more than the Content-Length. Every read ends by
    the run's `deadline` (a monotonic time): a peer that dribbles is cut there with `TimeoutError`,
    without a watchdog thread per run. The connection and its response."""

    MAX_HEAD = 8192

    def __init__(self, sock: socket.socket, request: bytes, timeout: float, deadline: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.deadline = deadline
        self._rcvtimeo = 0.0  # SO_RCVTIMEO as last set (0: not yet)
        self._wait()
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            self._wait()
            piece = sock.recv(4096)
            if not piece:
                raise http.client.RemoteDisconnected("the run listener closed before its answer")
            buf += piece
            if len(buf) > self.MAX_HEAD:
                raise http.client.LineTooLong("a run listener's answer head")
        head, _, self._early = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        words = lines[0].split(" ", 2)
        if len(words) < 2 or not words[0].startswith("HTTP/1.") or not words[1].isdigit():
            raise http.client.BadStatusLine(lines[0][:80])
        self.status = int(words[1])
        self._headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self._headers[name.strip().lower()] = value.strip()
        length = self._headers.get("content-length", "")
        if not length.isdigit() or len(length) > 20:
            raise http.client.HTTPException("a run listener's answer without a Content-Length")
        self._left = int(length)
        # Blocking reads with a receive timeout: MSG_WAITALL waits for the whole batch, the timeout
        # bounding the whole call (the kernel counts it down across the waits), so no read outlives
        # the deadline.
        sock.settimeout(None)

    def _wait(self) -> float:
        """Bound the next socket call by the deadline (and `timeout`); TimeoutError once it passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the run's deadline passed")
        wait = min(self.timeout, left)
        if self.sock.gettimeout() is not None:
            self.sock.settimeout(wait)
        elif wait < self._rcvtimeo or not self._rcvtimeo:  # set again only when it must shrink
            secs = max(wait, 0.001)
            usec = int((secs % 1) * 1_000_000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(secs), usec))
            self._rcvtimeo = secs
        return wait

    def getheader(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    @property
    def left(self) -> int:
        """Bytes of the answer's body not read yet."""
        return self._left

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), self._left)
        if n <= 0:
            return 0
        if self._early:
            k = min(n, len(self._early))
            view[:k] = self._early[:k]
            self._early = self._early[k:]
        else:
            self._wait()
            try:
                k = self.sock.recv_into(view, n, socket.MSG_WAITALL)
            except BlockingIOError:  # SO_RCVTIMEO passed with nothing received
                raise TimeoutError("the run listener sent nothing in time") from None
        self._left -= k
        return k

    def close(self) -> None:
        self.sock.close()


class Fetcher:
    """Makes DAGs local from their providers; one fetch per root (or per byte span) at a time, shared by
    everyone who wants it. Counts into `counters` (`fetched_blocks`, `fetch_retries`, `corrupt_from_peer`)."""

    def __init__(
        self,
        ctx: ServiceContext,
        store: BlockStore,
        settings: R1fsSettings,
        directory: Directory | None,
        counters: dict[str, int],
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.settings = settings
        self.dag: DagLimits = store.limits
        self.dir = directory
        self.counters = counters
        self.me = ctx.key.address.lower()
        # Running fetches by root (or "root:first-last" for a span), so callers join rather than repeat
        # one; each ends in a future of its own (see `_run`).
        self._running: dict[str, asyncio.Future[None]] = {}
        self._planned: dict[asyncio.Future[None], asyncio.Event] = {}  # set once a fetch's tree is checked
        # Holds of callers waiting for a whole fetch (`fetch(..., hold=)`): it hands its blocks to them.
        self._adopters: dict[asyncio.Future[None], list[Hold]] = {}
        self._roots = 0  # root blocks being fetched on their own (`fetch_root`)
        self._arrived = asyncio.Event()  # set (and replaced) whenever fetched blocks are stored
        # Interior blocks are small and few: a provider silent for fetch_timeout is given up.
        self._timeout = httpx.Timeout(settings.fetch_timeout, connect=10.0)
        # Providers' run listeners (`_runs.py`) by address, from the `X-R1fs-Runs` header of their
        # block answers; one that cannot be reached is dropped, and its runs go through the API.
        self.run_ports: dict[str, int] = {}
        self._landing = 0  # leaves stored by the fetch threads that the loop has not counted yet
        self._landing_lock = threading.Lock()
        self._wake_pending = False  # a fetch thread has asked the loop to count them (`_land`)
        self._waiters = 0  # readers waiting in `until_here` (only they need a wake-up per leaf)

    @property
    def running(self) -> int:
        """Fetches under way now (root blocks alone included)."""
        return len(self._running) + self._roots

    def authorization(self, address: str, method: str, path: str) -> str:
        """This node's signature on a request to peer `address` (safe to call from fetch threads)."""
        ctx = self.ctx
        return sign_request(ctx.key, network=ctx.network, target=address, method=method, path=path, body=b"")

    # -- providers -------------------------------------------------------------------------

    def url_of(self, address: str) -> str | None:
        """The API URL of an online node (None for this node, or one offline or unknown)."""
        if address == self.me:
            return None
        peer = self.ctx.netmap.get(address) or self.ctx.netmap.get(address.lower())
        if peer is None:
            for p in self.ctx.netmap.peers():
                if p.address.lower() == address:
                    peer = p
                    break
        if peer is None or peer.status != "online" or not peer.heartbeat.url:
            return None
        return peer.heartbeat.url.rstrip("/")

    async def provider_urls(self, cid: str) -> list[Provider]:
        """Online nodes that announce `cid`, then (as a fallback) every other online R1FS node."""
        out: list[Provider] = []
        seen: set[str] = set()
        if self.dir is not None:
            try:
                records = await self.dir.providers(cid)
            except Exception as exc:
                log.warning("r1fs: provider lookup for %s failed: %s", cid, exc)
                records = {}
            for addr in records:
                url = self.url_of(addr)
                if url is not None:
                    out.append((addr, url))
                    seen.add(addr)
        for peer in self.ctx.netmap.online():
            addr = peer.address.lower()
            if (
                addr not in seen
                and addr != self.me
                and "r1fs" in peer.heartbeat.services
                and peer.heartbeat.url
            ):
                out.append((addr, peer.heartbeat.url.rstrip("/")))
        return out

    # -- fetches, shared -------------------------------------------------------------------

    def fetch_task(self, root: Cid, span: tuple[int, int] | None = None) -> asyncio.Future[None]:
        """The (shared) fetch making the DAG under `root` local: all of it, or with `span` (first, last
        byte) only the blocks holding those bytes, as a gateway Range needs. It runs as a node task;
        the future returned ends with its outcome."""
        whole = self._running.get(str(root))
        if whole is not None:  # a fetch of the whole file covers any part of it
            return whole
        key = str(root) if span is None else f"{root}:{span[0]}-{span[1]}"
        done = self._running.get(key)
        if done is None:
            if self.running >= self.settings.max_fetches:
                raise Busy(f"this node runs {self.running} fetches already; {root} must wait")
            done = asyncio.get_running_loop().create_future()
            planned = self._planned[done] = asyncio.Event()
            self.ctx.spawn(self._run(key, done, root, span, planned), f"fetch-{key[-8:]}")
            self._running[key] = done
        return done

    async def _run(
        self,
        key: str,
        done: asyncio.Future[None],
        root: Cid,
        span: tuple[int, int] | None,
        planned: asyncio.Event,
    ) -> None:
        # The outcome goes to `done`, which the callers share: a failed fetch (routinely: nobody has
        # the file) is their answer to give, not a failed node task for the node's error log.
        try:
            await self._fetch(root, span, planned)
        except asyncio.CancelledError:
            done.cancel()
            raise
        except Exception as exc:
            log.info("r1fs: fetch of %s failed: %s", key, exc)
            if not done.done():
                done.set_exception(exc)
                done.exception()  # logged above: asyncio need not warn that nobody looked at it
        else:
            if not done.done():
                done.set_result(None)
        finally:
            self._running.pop(key, None)
            self._planned.pop(done, None)
            self._adopters.pop(done, None)
            planned.set()
            self._landed()  # counts what the fetch threads stored, wakes any reader

    async def fetch_running(
        self, root: Cid, span: tuple[int, int] | None = None
    ) -> asyncio.Future[None] | None:
        """Start (or join) the fetch of `root` (or of `span`) and give it a moment: a file that is all
        here, or a fetch that fails at once, settles within it, so the caller answers with a clean status
        rather than a stream cut short. It also waits (SETTLE_MAX at most) until the fetch has checked the
        file's tree (DagLimits), so a refused tree is answered as such. Returns the fetch still running,
        None if done; raises its error."""
        task = self.fetch_task(root, span)
        planned = self._planned.get(task)
        if planned is not None and not planned.is_set():
            checked: asyncio.Future[None] = asyncio.ensure_future(self._until(planned))
            try:
                await asyncio.wait({task, checked}, timeout=SETTLE_MAX, return_when=asyncio.FIRST_COMPLETED)
            finally:
                checked.cancel()
        await asyncio.wait({task}, timeout=0.1)  # a fetch that fails at once (no provider has a block)
        if not task.done():
            return task
        task.result()
        return None

    @staticmethod
    async def _until(event: asyncio.Event) -> None:
        await event.wait()

    async def fetch(self, root: Cid, *, hold: Hold | None = None) -> None:
        """Make the whole DAG under `root` local; concurrent calls for one root share the work. With
        `hold`, the fetch hands its blocks to it as it ends well: then `root` joins `hold.complete`
        (every block of the DAG here, checked and held), and a pin need not walk the DAG again."""
        task = self.fetch_task(root)
        if hold is not None:
            # Joined before the fetch ends: it runs in this loop and hands over with no await between
            # the hand-over and its end (`_fetch`), so no caller can come in between and miss it.
            self._adopters.setdefault(task, []).append(hold)
        await asyncio.shield(task)

    def _hand_over(self, root: Cid, hold: Hold) -> None:
        """The whole DAG under `root` is here and held by `hold` (the fetch's own, about to end): hold
        it for the callers that asked (`fetch(..., hold=)`) under the store's lock, so GC, which
        reads the holds under it, never finds a block of it held by no one."""
        task = self._running.get(str(root))
        adopters = self._adopters.pop(task, []) if task is not None else []
        if not adopters:
            return
        with self.store._lock:
            for adopter in adopters:
                adopter.blocks |= hold.blocks
                adopter.complete.add(root)

    async def fetch_root(self, root: Cid) -> bytes:
        """The root block (enough to know the file's size), fetched if it is not here."""
        with self.store.holding() as hold:
            if hold.keep(root):
                return self.store.get(root)
            if self._roots + len(self._running) >= self.settings.max_fetches:
                raise Busy(f"this node runs {self.running} fetches already; {root} must wait")
            self._roots += 1
            try:
                providers = await self.provider_urls(str(root))
                if not providers:
                    raise BlockNotFound(f"{root} is not here and no online node provides it")
                return await self._fetch_block(root, providers, 0, hold)
            finally:
                self._roots -= 1

    # -- readers waiting for blocks --------------------------------------------------------

    async def until_here(self, c: Cid, fetching: asyncio.Future[None] | None) -> None:
        """Return once block `c` is local; with no fetch running (or when it ended) it must be now."""
        if self.store.has(c):
            return
        self._waiters += 1  # before looking again: a leaf stored from now on wakes the loop
        try:
            while True:
                arrived = self._arrived  # taken before looking, so no arrival can slip between
                if self.store.has(c):
                    return
                if fetching is None:
                    raise BlockNotFound(f"block {c} is not in the local store")
                if fetching.done():
                    fetching.result()  # the fetch's own error, if it failed
                    if not self.store.has(c):
                        raise BlockNotFound(f"block {c} is not in the local store")
                    return
                await self._next_arrival(arrived)
        finally:
            self._waiters -= 1

    def _block_arrived(self) -> None:
        self._arrived.set()
        self._arrived = asyncio.Event()

    @staticmethod
    async def _next_arrival(arrived: asyncio.Event) -> None:
        """Wait until a fetch stores a block or ends (`_block_arrived`); a second at most."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # not wait_for: it can drop a cancellation (Python 3.11)
                await arrived.wait()

    # -- one fetch -------------------------------------------------------------------------

    async def _fetch(
        self, root: Cid, span: tuple[int, int] | None = None, planned: asyncio.Event | None = None
    ) -> None:
        """Fetch the tree's interior nodes one by one, then the leaves in runs: each run is one HTTP
        Range request to a provider's gateway, cut into leaves by the sizes the parent nodes list, every
        leaf checked against its CID before it is stored. Runs go to several providers at once; a run
        that fails (error, cut short, a corrupt leaf) goes on from where it stopped at another one.

        A whole fetch (no `span`) that returns has every distinct block of the DAG here and in its
        hold: each one was found here by `hold.keep`, or stored under the hold after its hash was
        checked (an interior block by `_fetch_block` or `_interior`, a leaf by a run, which raises
        unless every leaf it was given is stored); `_skeleton` lists every distinct leaf and the runs
        cover all those not here. So it hands the hold's blocks to the callers waiting with a hold
        of their own (`_hand_over`), with no await between that and its end."""
        with self.store.holding() as hold:
            await self._fetch_into(root, span, planned, hold)
            if span is None:
                self._hand_over(root, hold)

    def _here_whole(self, root: Cid, hold: Hold) -> bool:
        """Whether the whole DAG under `root` is here (each block held as it is looked at); a file
        here is still walked within bounds."""
        try:
            if self.store.missing(root, hold=hold):
                return False
        except CorruptBlock:
            return False
        self.store.refs(root)
        return True

    async def _fetch_into(
        self, root: Cid, span: tuple[int, int] | None, planned: asyncio.Event | None, hold: Hold
    ) -> None:
        if span is None and await asyncio.to_thread(self._here_whole, root, hold):
            return
        if span is not None and await asyncio.to_thread(self._span_here, root, span):
            return
        providers = await self.provider_urls(str(root))
        if not providers:
            raise BlockNotFound(f"{root} is not here and no online node provides it")
        if root.codec == RAW:
            if not hold.keep(root):
                await self._fetch_block(root, providers, 0, hold)
            return
        if span is None and hold.keep(root):
            # The interior blocks in one answer from a run listener, where it can: the walk
            # below then finds them here rather than asking for each through the API.
            kept = await asyncio.to_thread(self._interior, root, providers, hold)
            self.counters["fetched_blocks"] += kept  # read after the await: others count meanwhile
        leaves = await self._skeleton(root, providers, span, hold)
        missing = [leaf for leaf in leaves if not hold.keep(leaf.cid)]
        if not missing:
            return
        check_space(self.store.root, sum(leaf.size for leaf in missing), self.settings)
        if planned is not None:
            planned.set()  # the tree passed: readers may answer and stream as the leaves arrive
        runs = self._plan_runs(missing)
        # Each run is fetched by a plain thread with a blocking HTTP connection: it receives, hashes
        # and writes its leaves itself (all three release the GIL), so the cores stay busy without
        # a hand-off between the event loop and a pool for every leaf. Not through `ctx.http`:
        # bench/r1fs.py's pull row (200 MiB, 6 pulls each, machine loaded) gave these threads
        # 326-398 MiB/s at best, the same runs streamed on the loop through httpx with the leaves
        # hashed and written in a pool 122-244, and through aiohttp 263-282.
        todo: queue.SimpleQueue[tuple[int, list[_Leaf]]] = queue.SimpleQueue()
        for i, run in enumerate(runs):
            todo.put((i, run))
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        workers = min(self.settings.parallel, len(runs))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="r1fs-fetch")

        def worker() -> None:
            while not stop.is_set():
                try:
                    i, run = todo.get_nowait()
                except queue.Empty:
                    return
                self._fetch_run(loop, root, run, providers, i, stop, hold)

        try:
            await asyncio.gather(*(loop.run_in_executor(pool, worker) for _ in range(workers)))
        finally:
            stop.set()  # on an error or a cancel the other runs stop at their next leaf
            pool.shutdown(wait=False, cancel_futures=True)

    def _interior(self, root: Cid, providers: list[Provider], hold: Hold) -> int:
        """Ask the first provider with a run listener for the interior blocks under `root` (a local
        file root) in one CAR (`GET /dag/<cid>`, in a fetch thread) and store those that belong:
        each block's hash is checked against its CID (`CarReader`), and a block is taken only when a
        block taken before it (the root first) links it, and it is a file's node; the first that is
        not ends the read. Nothing else is relied on: the walk that follows checks what each node claims and
        asks for any block still missing one by one, so a listener that answers less, something
        else or nothing (an older node: 404) only costs the request. Returns the blocks kept."""
        try:
            top = self.store.file_node(root)
            self.dag.check_root(root, top)  # a file past this node's bounds: the walk refuses it
        except (R1fsError, OSError):
            return 0  # or not a file's node (a folder's walk fetches its own blocks)
        linked = {c for c, _ in top.children if c.codec != RAW}
        if sum(not self.store.has(c) for c in linked) < 2:
            return 0  # one block or none to fetch: the walk's own request is as quick
        for addr, url in providers:
            port = self.run_ports.get(addr)
            u = urlsplit(url)
            if port is None or u.scheme != "http":
                continue
            kept: list[Cid] = []
            try:
                self._read_interior(addr, u.hostname or "127.0.0.1", port, root, linked, hold, kept)
            except (OSError, http.client.HTTPException, BadCar, CorruptBlock) as exc:
                log.info("r1fs: the interior blocks of %s from %s: %s", root, addr, exc)
            return len(kept)
        return 0

    def _read_interior(
        self, addr: str, host: str, port: int, root: Cid, linked: set[Cid], hold: Hold, kept: list[Cid]
    ) -> None:
        """The `/dag/<cid>` request of `_interior` and its answer, read within its deadline and up to
        its Content-Length (at most MAX_DAG_ANSWER). `linked`: the interior blocks the blocks taken so
        far link; the blocks stored join `kept`."""
        timeout = self.settings.fetch_timeout
        path = f"/dag/{root}"
        head = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: {self.authorization(addr, 'GET', path)}\r\n\r\n"
        )
        deadline = time.monotonic() + timeout + MAX_DAG_ANSWER / MIN_PEER_RATE
        sock = socket.create_connection((host, port), timeout=min(timeout, 10.0))
        try:
            r = _RawRun(sock, head.encode("latin-1"), timeout, deadline)
            if r.status != 200:
                raise http.client.HTTPException(f"HTTP {r.status}")
            if r.left > MAX_DAG_ANSWER:
                raise http.client.HTTPException(f"an answer of {r.left} bytes, past {MAX_DAG_ANSWER}")
            car = CarReader()
            buf = memoryview(bytearray(256 * 1024))
            while n := r.readinto(buf):
                blocks = car.feed(buf[:n])
                if car.roots is not None and car.roots != [root]:
                    raise BadCar(f"a CAR of {car.roots} where {root} was asked for")
                for block in blocks:
                    if block.cid not in linked:
                        raise CorruptBlock(f"{block.cid} is not linked by the blocks before it")
                    linked.discard(block.cid)  # each block once
                    node = read_file_node(block.cid, block.data)  # CorruptBlock: not a file's node
                    if hold.put(block.cid, block.data):  # its hash was checked by the reader
                        kept.append(block.cid)
                    self.store.remember(block.cid, node)
                    linked.update(c for c, _ in node.children if c.codec != RAW)
            car.close()
        finally:
            sock.close()

    def _plan_runs(self, missing: list[_Leaf]) -> list[list[_Leaf]]:
        """Consecutive missing leaves grouped into runs, each one Range request: big enough that a
        request's round trip is small beside its bytes (up to 64 leaves, 16 MiB), small enough that
        every one of the `parallel` streams gets about two."""
        per = max(4, min(64, -(-len(missing) // (2 * self.settings.parallel))))
        runs: list[list[_Leaf]] = []
        for leaf in missing:
            last = runs[-1][-1] if runs else None
            if last is None or len(runs[-1]) >= per or last.offset + last.size != leaf.offset:
                runs.append([leaf])
            else:
                runs[-1].append(leaf)
        return runs

    def _span_here(self, root: Cid, span: tuple[int, int]) -> bool:
        """Whether every block holding bytes `span` of the file under `root` is local (the walk is
        bounded like the exporter's: depth, and references per byte of the file)."""
        budget: RefBudget | None = None

        def here(cid: Cid, offset: int, depth: int) -> bool:
            nonlocal budget
            if not self.store.has(cid):
                return False
            if cid.codec == RAW:
                return True
            node = read_file_node(cid, self.store.get(cid))
            if budget is None:
                self.dag.check_root(cid, node)
                budget = RefBudget(cid, self.dag, node.filesize)
            if node.children:
                self.dag.check_depth(root, depth + 1)
            pos = offset + len(node.data)
            for child, size in node.children:
                if pos <= span[1] and pos + size > span[0]:
                    budget.take()
                    if not here(child, pos, depth + 1):
                        return False
                pos += size
            return True

        return here(root, 0, 0)

    async def _skeleton(
        self, root: Cid, providers: list[Provider], span: tuple[int, int] | None, hold: Hold
    ) -> list[_Leaf]:
        """Make the interior nodes under `root` local (held) and list its leaves in file order; with
        `span`, only the subtrees holding bytes of it (the sizes in each node say which). Each distinct
        block is visited once: a subtree or leaf linked again is not walked again (its first place in
        the file is where it is fetched from), so the work is that of the distinct blocks, bounded by
        `DagLimits` (depth, distinct blocks, the root's declared size)."""
        leaves: list[_Leaf] = []
        seen = {root}
        refs: dict[Cid, int] = {}  # references under each node visited, repeats included (see below)
        budget = 0

        async def visit(cid: Cid, offset: int, expect: int | None, depth: int) -> int:
            """Visit `cid`; return the block references under it, counted as a full read would follow
            them (every repeat), from the counts of its distinct parts: the expansion is measured
            without being done, and refused past the budget for the file's declared size."""
            nonlocal budget
            if cid.codec == RAW:
                if expect is None:
                    raise CorruptBlock(f"raw leaf {cid} without a size from its parent")
                leaves.append(_Leaf(cid, offset, expect))
                return 0
            if hold.keep(cid):
                node = self.store.file_node(cid)
                if len(seen) % 64 == 0:
                    await asyncio.sleep(0)  # a tree that is mostly here must not hold the loop
            else:
                node = read_file_node(cid, await self._fetch_block(cid, providers, 0, hold))
                self.store.remember(cid, node)
            if expect is not None and node.filesize != expect:
                raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")
            if depth == 0:
                self.dag.check_root(cid, node)
                budget = self.dag.max_refs(node.filesize)
            if node.children:
                self.dag.check_depth(root, depth + 1)
                await self._prefetch(node.children, offset + len(node.data), span, seen, providers, hold)
            under = 0
            pos = offset + len(node.data)
            for child, size in node.children:
                if span is None or (pos <= span[1] and pos + size > span[0]):
                    if child not in seen:
                        seen.add(child)
                        self.dag.check_blocks(root, len(seen))
                        refs[child] = await visit(child, pos, size, depth + 1)
                    under += 1 + refs.get(child, 0)
                    if under > budget:
                        raise too_many_refs(root)
                pos += size
            return under

        await visit(root, 0, None, 0)
        return leaves

    async def _prefetch(
        self,
        children: list[tuple[Cid, int]],
        pos: int,
        span: tuple[int, int] | None,
        seen: set[Cid],
        providers: list[Provider],
        hold: Hold,
    ) -> None:
        """Fetch a node's interior children side by side (at most PREFETCH at once) before the walk
        visits them one by one in file order: one round trip for a level, not one per block. Each is
        checked against its CID and stored, nothing more: the walk checks what they claim when it gets
        to them, and fetches again (and fails with its own error) what did not arrive here."""
        todo: list[Cid] = []
        for child, size in children:
            if span is None or (pos <= span[1] and pos + size > span[0]):
                if child.codec != RAW and child not in seen and child not in todo and not hold.keep(child):
                    todo.append(child)
            pos += size
        if len(todo) < 2:
            return
        gate = asyncio.Semaphore(PREFETCH)

        async def one(i: int, c: Cid) -> None:
            async with gate:
                with contextlib.suppress(BlockNotFound, CorruptBlock):
                    self.store.remember(c, read_file_node(c, await self._fetch_block(c, providers, i, hold)))

        await asyncio.gather(*(one(i, c) for i, c in enumerate(todo)))

    def _fetch_run(
        self,
        loop: asyncio.AbstractEventLoop,
        root: Cid,
        run: list[_Leaf],
        providers: list[Provider],
        n: int,
        stop: threading.Event,
        hold: Hold,
    ) -> None:
        """One run of leaves as one Range request, in a worker thread; on any failure the rest of the
        run goes on at the next provider. The body is read a batch of whole leaves at a time (`BATCH`),
        up to the run's bytes and no further, within the run's deadline; each leaf's hash is checked
        before anything of it is stored."""
        done = 0  # leaves of the run verified and stored
        failures: list[str] = []
        # One buffer for every batch; each leaf's size was checked against MAX_BLOCK_SIZE when its
        # parent was read, so a batch always holds at least one leaf.
        total = run[-1].offset + run[-1].size - run[0].offset
        buf = memoryview(bytearray(max(min(BATCH, total), max(leaf.size for leaf in run))))
        for attempt in range(len(providers)):
            if done == len(run) or stop.is_set():
                return
            addr, url = providers[(n + attempt) % len(providers)]
            if attempt:
                loop.call_soon_threadsafe(self._count, "fetch_retries")
            lo, last = run[done].offset, run[-1]
            hi = last.offset + last.size
            problem = None
            # The deadline of this attempt: reads off a run listener end by it; through the API the
            # watchdog timer shuts the socket at it and the blocked read returns.
            deadline = time.monotonic() + self.settings.fetch_timeout + (hi - lo) / MIN_PEER_RATE
            fired = threading.Event()
            watchdog: threading.Timer | None = None
            conn: http.client.HTTPConnection | _RawRun | None = None
            writer = self.store.run_writer(hold, hi - lo)
            try:
                r: http.client.HTTPResponse | _RawRun
                try:
                    conn = raw = self._open_listener(addr, url, root, lo, hi, deadline)
                    if raw is not None:
                        r = raw
                    else:
                        sockets: list[socket.socket] = []
                        watchdog = threading.Timer(deadline - time.monotonic(), _cut, (sockets, fired))
                        watchdog.daemon = True
                        watchdog.start()
                        conn, r = self._open_api(addr, url, root, lo, hi, sockets)
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(f"{addr[:10]}: {type(exc).__name__}")
                    continue
                if r.status != 206:
                    failures.append(f"{addr[:10]}: HTTP {r.status}")
                    continue
                self._learn_port(addr, r.getheader(RUNS_HEADER))
                while done < len(run) and not stop.is_set():
                    stored, problem = self._take(r, run, done, buf, writer, hold)
                    if stored:
                        done += stored
                        self._land(loop, stored)
                    if problem == "corrupt":
                        log.warning(
                            "r1fs: %s served a corrupt copy of block %s; trying another provider",
                            addr,
                            run[done].cid,
                        )
                        loop.call_soon_threadsafe(self._count, "corrupt_from_peer")
                    if problem is not None:
                        break
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                if writer is not None:
                    writer.close()
                if conn is not None:
                    conn.close()
            if problem is not None:
                late = fired.is_set() or time.monotonic() >= deadline
                failures.append(f"{addr[:10]}: {'too slow' if late else problem}")
        if done < len(run) and not stop.is_set():
            raise BlockNotFound(
                f"block {run[done].cid}: no provider had a valid copy ({'; '.join(failures)})"
            )

    @staticmethod
    def _take(
        r: http.client.HTTPResponse | _RawRun,
        run: list[_Leaf],
        done: int,
        buf: memoryview,
        writer: RunWriter | None,
        hold: Hold,
    ) -> tuple[int, str | None]:
        """Read the next leaves of the run that fit `buf` (at least one), check and store them; the
        leaves stored, and what went wrong if anything (`corrupt`: the next leaf did not match its
        CID; `cut short`; an error's name). Whole leaves that came before a failure are kept."""
        end, size = done + 1, run[done].size
        while end < len(run) and size + run[end].size <= len(buf):
            size += run[end].size
            end += 1
        problem = None
        try:
            got = _read_into(r, buf[:size])
        except (OSError, http.client.HTTPException) as exc:
            return 0, type(exc).__name__
        whole, at = done, 0
        while whole < end and at + run[whole].size <= got:
            at += run[whole].size
            whole += 1
        if whole < end:
            problem = "cut short"
        leaves = [(leaf.cid, leaf.size) for leaf in run[done:whole]]
        if writer is not None:
            stored = writer.put_many(leaves, buf[:at])  # a disk error is raised: no peer helps
        else:
            stored, at = 0, 0
            for cid, n in leaves:
                try:
                    hold.put_verified(cid, buf[at : at + n])
                except CorruptBlock:
                    break
                stored += 1
                at += n
        if stored < len(leaves):
            problem = "corrupt"
        return stored, problem

    def _open_listener(
        self, addr: str, url: str, root: Cid, lo: int, hi: int, deadline: float
    ) -> _RawRun | None:
        """Ask `addr`'s run listener (when it named one: `X-R1fs-Runs`) for bytes [lo, hi) of the file
        under `root`: the leaves come by sendfile. None when it has none, or when it cannot be reached
        or answers anything but a 206: then it is forgotten and the run goes through its API."""
        port = self.run_ports.get(addr)
        u = urlsplit(url)
        if port is None or u.scheme != "http":
            return None
        timeout = self.settings.fetch_timeout
        path = f"/ipfs/{root}"
        host = u.hostname or "127.0.0.1"
        head = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nRange: bytes={lo}-{hi - 1}\r\n"
            f"Authorization: {self.authorization(addr, 'GET', path)}\r\n\r\n"
        )
        problem = ""
        try:
            sock = socket.create_connection((host, port), timeout=min(timeout, 10.0))
        except OSError as exc:
            problem = str(exc)
        else:
            try:
                raw = _RawRun(sock, head.encode("latin-1"), timeout, deadline)
            except (OSError, http.client.HTTPException) as exc:
                sock.close()
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if raw.status == 206:
                    return raw
                raw.close()
                problem = f"HTTP {raw.status}"
        # Not a run from there: its API answers this one (and names its listener again if it has one).
        self.run_ports.pop(addr, None)
        log.info("r1fs: %s's run listener (port %d): %s; the run goes through its API", addr, port, problem)
        return None

    def _open_api(
        self, addr: str, url: str, root: Cid, lo: int, hi: int, sockets: list[socket.socket]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Ask `addr`'s API for bytes [lo, hi) of the file under `root` as a gateway block run (signed
        for the path it asks for); its socket joins `sockets` for the watchdog."""
        u = urlsplit(url)
        path = f"{u.path}/ipfs/{root}"
        headers = {
            "Range": f"bytes={lo}-{hi - 1}",
            LOCAL_ONLY: "1",
            "Authorization": self.authorization(addr, "GET", path),
        }
        conn = _connect(url, self.settings.fetch_timeout)
        try:
            conn.connect()
            if conn.sock is not None:
                sockets.append(conn.sock)
            conn.request("GET", path, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def _learn_port(self, addr: str, value: str | None) -> None:
        """Note the run listener a provider names (a port number; anything else is ignored)."""
        if value is not None and value.isdigit() and len(value) <= 5 and 0 < int(value) < 65536:
            self.run_ports[addr] = int(value)

    def _count(self, name: str) -> None:
        self.counters[name] += 1

    def _land(self, loop: asyncio.AbstractEventLoop, n: int = 1) -> None:
        """A fetch thread stored `n` leaves. The loop is woken to count it and wake the readers only when a
        reader waits (a streaming get), and once for all the leaves stored before it runs; a pin's fetch
        wakes it at its end only (`_run`). A wake-up per leaf cost the loop and the fetch threads
        (queued for the GIL behind it) ~25 us per leaf, 800 per 200 MiB."""
        with self._landing_lock:
            self._landing += n
            wake = self._waiters > 0 and not self._wake_pending
            if wake:
                self._wake_pending = True
        if wake:
            loop.call_soon_threadsafe(self._landed)

    def _landed(self) -> None:
        """Fetched leaves are stored (called in the loop, from the fetch threads)."""
        with self._landing_lock:
            n, self._landing = self._landing, 0
            self._wake_pending = False
        self.counters["fetched_blocks"] += n
        self._block_arrived()

    async def _get_block(self, addr: str, url: str, text: str) -> tuple[int, bytes]:
        """A provider's status and block bytes, within a deadline; a body longer than the largest
        block is not read past it (a block that long cannot match its CID, and a peer must not make
        this node buffer without end): its status is 413."""
        path = f"/v1/r1fs/block/{text}"
        headers = {"Authorization": self.authorization(addr, "GET", urlsplit(url).path + path)}
        async with asyncio.timeout(self.settings.fetch_timeout + MAX_BLOCK_SIZE / MIN_PEER_RATE):
            async with self.ctx.http.stream(
                "GET", f"{url}{path}", headers=headers, timeout=self._timeout
            ) as r:
                if r.status_code != 200:
                    return r.status_code, b""
                self._learn_port(addr, r.headers.get(RUNS_HEADER))
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > MAX_BLOCK_SIZE:
                    return 413, b""
                data = bytearray()
                async for piece in r.aiter_bytes():
                    data += piece
                    if len(data) > MAX_BLOCK_SIZE:
                        return 413, b""
                return 200, bytes(data)

    async def _fetch_block(self, cid: Cid, providers: list[Provider], n: int, hold: Hold) -> bytes:
        """One block from the providers in turn (starting at a different one for each block), through
        the node's shared HTTP client; stored under `hold`."""
        text = str(cid)
        failures = []
        for i in range(len(providers)):
            addr, url = providers[(n + i) % len(providers)]
            try:
                status, data = await self._get_block(addr, url, text)
            except (httpx.HTTPError, TimeoutError) as exc:
                failures.append(f"{addr[:10]}: {type(exc).__name__}")
                self.counters["fetch_retries"] += 1
                continue
            if status != 200:
                failures.append(f"{addr[:10]}: HTTP {status}")
                self.counters["fetch_retries"] += 1
                continue
            try:
                await asyncio.to_thread(hold.put_verified, cid, data)
            except CorruptBlock:
                self.counters["corrupt_from_peer"] += 1
                self.counters["fetch_retries"] += 1
                log.warning("r1fs: %s served a corrupt copy of block %s; trying another provider", addr, text)
                failures.append(f"{addr[:10]}: corrupt")
                continue
            self.counters["fetched_blocks"] += 1
            self._block_arrived()
            return data
        raise BlockNotFound(f"block {text}: no provider had a valid copy ({'; '.join(failures)})")
