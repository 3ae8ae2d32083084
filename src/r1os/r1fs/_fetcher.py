"""Fetching files from the nodes that provide them: interior nodes one by one over the node's shared
HTTP client, then the leaves in runs, each run one Range request read by a thread of its own.

Every block is checked against its CID before it is stored. Readers streaming a file that is being
fetched wait on `until_here`, which wakes whenever a block lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from r1os.r1fs._dag import MAX_BLOCK_SIZE, RAW, Cid, read_file_node
from r1os.r1fs._errors import BlockNotFound, CorruptBlock
from r1os.r1fs._providers import Directory
from r1os.r1fs._store import BlockStore

if TYPE_CHECKING:
    from r1os.node import R1fsSettings, ServiceContext

log = logging.getLogger("r1os.r1fs")

#: Header of a peer's gateway request: serve only what is local, never fetch on its behalf.
LOCAL_ONLY = "X-R1fs-Local-Only"

#: A provider: (node address, base URL of its HTTP API).
Provider = tuple[str, str]


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


def _read_into(r: http.client.HTTPResponse, view: memoryview) -> int:
    """Fill `view` from the response (no new bytes object per leaf); fewer bytes only at its end."""
    got = 0
    while got < len(view):
        n = r.readinto(view[got:])
        if not n:
            break
        got += n
    return got


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
        self.dir = directory
        self.counters = counters
        self.me = ctx.key.address.lower()
        # Running fetches by root (or "root:first-last" for a span), so callers join rather than repeat
        # one; each ends in a future of its own (see `_run`).
        self._running: dict[str, asyncio.Future[None]] = {}
        self._arrived = asyncio.Event()  # set (and replaced) whenever fetched blocks are stored
        # Interior blocks are small and few: a provider silent for fetch_timeout is given up.
        self._timeout = httpx.Timeout(settings.fetch_timeout, connect=10.0)

    @property
    def running(self) -> int:
        """Fetches under way now."""
        return len(self._running)

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
            done = asyncio.get_running_loop().create_future()
            self.ctx.spawn(self._run(key, done, root, span), f"fetch-{key[-8:]}")
            self._running[key] = done
        return done

    async def _run(
        self, key: str, done: asyncio.Future[None], root: Cid, span: tuple[int, int] | None
    ) -> None:
        # The outcome goes to `done`, which the callers share: a failed fetch (routinely: nobody has
        # the file) is their answer to give, not a failed node task for the node's error log.
        try:
            await self._fetch(root, span)
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
            self._block_arrived()

    async def fetch_running(
        self, root: Cid, span: tuple[int, int] | None = None
    ) -> asyncio.Future[None] | None:
        """Start (or join) the fetch of `root` (or of `span`) and give it a moment: a file that is all
        here, or a fetch that fails at once, settles within it, so the caller answers with a clean status
        rather than a stream cut short. Returns the fetch still running, None if done; raises its error."""
        task = self.fetch_task(root, span)
        await asyncio.wait({task}, timeout=0.1)
        if not task.done():
            return task
        task.result()
        return None

    async def fetch(self, root: Cid) -> None:
        """Make the whole DAG under `root` local; concurrent calls for one root share the work."""
        await asyncio.shield(self.fetch_task(root))

    async def fetch_root(self, root: Cid) -> None:
        """Make the root block local (enough to know the file's size)."""
        if self.store.has(root):
            return
        providers = await self.provider_urls(str(root))
        if not providers:
            raise BlockNotFound(f"{root} is not here and no online node provides it")
        with self.store.writing():
            await self._fetch_block(root, providers, 0)

    # -- readers waiting for blocks --------------------------------------------------------

    async def until_here(self, c: Cid, fetching: asyncio.Future[None] | None) -> None:
        """Return once block `c` is local; with no fetch running (or when it ended) it must be now."""
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

    async def _fetch(self, root: Cid, span: tuple[int, int] | None = None) -> None:
        """Fetch the tree's interior nodes one by one, then the leaves in runs: each run is one HTTP
        Range request to a provider's gateway, cut into leaves by the sizes the parent nodes list, every
        leaf checked against its CID before it is stored. Runs go to several providers at once; a run
        that fails (error, cut short, a corrupt leaf) goes on from where it stopped at another one."""
        if span is None and await asyncio.to_thread(self.store.is_complete, root):
            return
        if span is not None and await asyncio.to_thread(self._span_here, root, 0, span):
            return
        providers = await self.provider_urls(str(root))
        if not providers:
            raise BlockNotFound(f"{root} is not here and no online node provides it")
        with self.store.writing():
            if root.codec == RAW:
                if not self.store.has(root):
                    await self._fetch_block(root, providers, 0)
                return
            leaves: list[_Leaf] = []
            await self._skeleton(root, 0, None, providers, leaves, span)
            missing = [leaf for leaf in leaves if not self.store.has(leaf.cid)]
            if not missing:
                return
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
                    self._fetch_run(loop, root, run, providers, i, stop)

            try:
                await asyncio.gather(*(loop.run_in_executor(pool, worker) for _ in range(workers)))
            finally:
                stop.set()  # on an error or a cancel the other runs stop at their next leaf
                pool.shutdown(wait=False, cancel_futures=True)

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

    def _span_here(self, cid: Cid, offset: int, span: tuple[int, int]) -> bool:
        """Whether every block holding bytes `span` of the file under `cid` is local."""
        if not self.store.has(cid):
            return False
        if cid.codec == RAW:
            return True
        node = read_file_node(cid, self.store.get(cid))
        pos = offset + len(node.data)
        for child, size in node.children:
            if pos <= span[1] and pos + size > span[0] and not self._span_here(child, pos, span):
                return False
            pos += size
        return True

    async def _skeleton(
        self,
        cid: Cid,
        offset: int,
        expect: int | None,
        providers: list[Provider],
        leaves: list[_Leaf],
        span: tuple[int, int] | None = None,
    ) -> int:
        """Make the interior nodes under `cid` local and list its leaves in file order; with `span`,
        only the subtrees holding bytes of it (the sizes in each node say which)."""
        if cid.codec == RAW:
            if expect is None:
                raise CorruptBlock(f"raw leaf {cid} without a size from its parent")
            leaves.append(_Leaf(cid, offset, expect))
            return expect
        data = self.store.get(cid) if self.store.has(cid) else await self._fetch_block(cid, providers, 0)
        node = read_file_node(cid, data)
        if expect is not None and node.filesize != expect:
            raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")
        pos = offset + len(node.data)
        for child, size in node.children:
            if span is None or (pos <= span[1] and pos + size > span[0]):
                await self._skeleton(child, pos, size, providers, leaves, span)
            pos += size
        if expect is None and pos - offset != node.filesize:
            raise CorruptBlock(f"{cid} says {node.filesize} bytes but its parts hold {pos - offset}")
        return pos - offset

    def _fetch_run(
        self,
        loop: asyncio.AbstractEventLoop,
        root: Cid,
        run: list[_Leaf],
        providers: list[Provider],
        n: int,
        stop: threading.Event,
    ) -> None:
        """One run of leaves as one Range request, in a worker thread; on any failure the rest of the
        run goes on at the next provider. Each leaf is read whole, its hash checked, then stored."""
        done = 0  # leaves of the run verified and stored
        failures: list[str] = []
        buf = memoryview(bytearray(max(leaf.size for leaf in run)))  # one buffer for every leaf
        for attempt in range(len(providers)):
            if done == len(run) or stop.is_set():
                return
            addr, url = providers[(n + attempt) % len(providers)]
            if attempt:
                loop.call_soon_threadsafe(self._count, "fetch_retries")
            lo, last = run[done].offset, run[-1]
            headers = {"Range": f"bytes={lo}-{last.offset + last.size - 1}", LOCAL_ONLY: "1"}
            problem = None
            conn = _connect(url, self.settings.fetch_timeout)
            try:
                try:
                    conn.request("GET", f"{urlsplit(url).path}/ipfs/{root}", headers=headers)
                    r = conn.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(f"{addr[:10]}: {type(exc).__name__}")
                    continue
                if r.status != 206:
                    failures.append(f"{addr[:10]}: HTTP {r.status}")
                    continue
                while done < len(run) and not stop.is_set():
                    leaf = run[done]
                    data = buf[: leaf.size]
                    try:
                        got = _read_into(r, data)
                    except (OSError, http.client.HTTPException) as exc:
                        problem = type(exc).__name__
                        break
                    if got < leaf.size:
                        problem = "cut short"
                        break
                    try:
                        self.store.put_verified(leaf.cid, data)  # a disk error is raised: no peer helps
                    except CorruptBlock:
                        log.warning(
                            "r1fs: %s served a corrupt copy of block %s; trying another provider",
                            addr,
                            leaf.cid,
                        )
                        loop.call_soon_threadsafe(self._count, "corrupt_from_peer")
                        problem = "corrupt"
                        break
                    done += 1
                    loop.call_soon_threadsafe(self._landed)
            finally:
                conn.close()
            if problem is not None:
                failures.append(f"{addr[:10]}: {problem}")
        if done < len(run) and not stop.is_set():
            raise BlockNotFound(
                f"block {run[done].cid}: no provider had a valid copy ({'; '.join(failures)})"
            )

    def _count(self, name: str) -> None:
        self.counters[name] += 1

    def _landed(self) -> None:
        """A fetched leaf is stored (called in the loop, from the fetch threads)."""
        self.counters["fetched_blocks"] += 1
        self._block_arrived()

    async def _get_block(self, url: str, text: str) -> tuple[int, bytes]:
        """A provider's status and block bytes; a body past the largest block is cut off there (a block
        that long cannot match its CID, and a peer must not make this node buffer without end)."""
        async with self.ctx.http.stream("GET", f"{url}/v1/r1fs/block/{text}", timeout=self._timeout) as r:
            if r.status_code != 200:
                return r.status_code, b""
            data = bytearray()
            async for piece in r.aiter_bytes():
                data += piece
                if len(data) > MAX_BLOCK_SIZE:
                    break
            return 200, bytes(data)

    async def _fetch_block(self, cid: Cid, providers: list[Provider], n: int) -> bytes:
        """One block from the providers in turn (starting at a different one for each block), through
        the node's shared HTTP client."""
        text = str(cid)
        failures = []
        for i in range(len(providers)):
            addr, url = providers[(n + i) % len(providers)]
            try:
                status, data = await self._get_block(url, text)
            except httpx.HTTPError as exc:
                failures.append(f"{addr[:10]}: {type(exc).__name__}")
                self.counters["fetch_retries"] += 1
                continue
            if status != 200:
                failures.append(f"{addr[:10]}: HTTP {status}")
                self.counters["fetch_retries"] += 1
                continue
            try:
                await asyncio.to_thread(self.store.put_verified, cid, data)
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
