"""The R1FS node service: block store, gateway, HTTP API, providers, pinning and re-replication."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from r1os.node import R1fsSettings, Service, ServiceContext
from r1os.r1fs._dag import RAW, Cid, parse_cid, read_file_node
from r1os.r1fs._errors import BadUpload, BlockNotFound, CorruptBlock, R1fsError, TooLarge
from r1os.r1fs._exporter import file_parts, read_range
from r1os.r1fs._importer import ImportResult, import_fd, import_stream
from r1os.r1fs._providers import PIN, Directory, KeyValue, plan, wanted_replicas
from r1os.r1fs._store import BlockStore, GcResult

if TYPE_CHECKING:
    import aiohttp

    from r1os.r1fs._local import LocalServer

log = logging.getLogger("r1os.r1fs")

#: Header of a peer's gateway request: serve only what is local, never fetch on its behalf.
LOCAL_ONLY = "X-R1fs-Local-Only"


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


def _pwrite_all(fd: int, data: bytes, pos: int) -> None:
    n = os.pwrite(fd, data, pos)
    while n < len(data):  # short writes: a full disk raises on the next call
        n += os.pwrite(fd, memoryview(data)[n:], pos + n)


def _read_into(r: http.client.HTTPResponse, view: memoryview) -> int:
    """Fill `view` from the response (no new bytes object per leaf); fewer bytes only at its end."""
    got = 0
    while got < len(view):
        n = r.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class R1fsService(Service):
    """Holds blocks under the node's data folder and speaks R1FS to apps, users and peers."""

    name = "r1fs"

    def __init__(self, settings: R1fsSettings | None = None, *, kv: KeyValue | None = None) -> None:
        self.settings = settings or R1fsSettings()
        self._kv = kv
        self.dir: Directory | None = None
        self.pins: dict[str, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._replicating: set[str] = set()
        self._http: aiohttp.ClientSession | None = None
        self.local: LocalServer | None = None
        self._started = 0.0
        self._wake = asyncio.Event()
        self._arrived = asyncio.Event()  # set (and replaced) whenever fetched blocks are stored
        self.counters: dict[str, int] = {
            "corrupt_from_peer": 0, "fetched_blocks": 0, "fetch_retries": 0, "local_served": 0,
            "local_refused": 0,
        }  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.me = ctx.key.address.lower()
        self.store = BlockStore(
            ctx.data_dir / "blocks", verify_reads=self.settings.verify_reads, fsync=self.settings.fsync
        )
        self._pins_path = ctx.data_dir / "pins.json"
        self.pins = self._load_pins()
        kv = self._kv
        if kv is None:
            try:
                kv = ctx.service("cstore")  # type: ignore[assignment]
            except LookupError:
                log.warning("r1fs: no cstore service on this node; providers and replication are off")
        if kv is not None:
            self.dir = Directory(kv, self.me)
            watch = getattr(kv, "watch", None)
            if callable(watch):  # react to a new or withdrawn pin request now, not at the next pass
                watch(PIN, lambda _key, _field, _value: self._wake.set())
        self._started = time.time()
        from r1os.r1fs._api import mount

        mount(ctx.router, self)
        ctx.allow_body("/v1/r1fs/add", None)  # streams, with its own limit (max_upload)
        from r1os.r1fs._metrics import R1fsCollector

        ctx.metrics.register(R1fsCollector(self))
        if self.dir is not None:
            self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="r1fs-reconcile"))
        self._tasks.append(asyncio.create_task(self._gc_loop(), name="r1fs-gc"))
        if self.settings.local_socket:
            from r1os.r1fs._local import LocalServer, socket_name

            server = LocalServer(self, socket_name(self.me))
            if server.open():
                self.local = server
                self._tasks.append(asyncio.create_task(server.serve(), name="r1fs-local"))

    async def stop(self) -> None:
        if hasattr(self, "store"):
            self.store.closed = True
        for t in [*self._tasks, *self._fetching.values()]:
            t.cancel()
        for t in [*self._tasks, *self._fetching.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if hasattr(self, "store"):
            self.store.close()
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        """The HTTP client for peers, made at the first fetch (aiohttp costs ~7 MiB per process).

        It fetches the interior nodes one by one (the leaves come through plain threads, see `_fetch_run`)."""
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=10, sock_read=self.settings.fetch_timeout
                ),
                connector=aiohttp.TCPConnector(limit=4 * self.settings.parallel),
            )
        return self._http

    # -- local pins ------------------------------------------------------------------------

    def _load_pins(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._pins_path.read_text())
            return {k: v for k, v in data.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("r1fs: cannot read %s (%s); starting with no pins", self._pins_path, exc)
            return {}

    def _save_pins(self) -> None:
        tmp = self._pins_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.pins, indent=1, sort_keys=True))
        os.replace(tmp, self._pins_path)

    def _pin_local(self, cid: str, size: int, *, kind: str, replicas: int = 1) -> None:
        old = self.pins.get(cid)
        if old is not None and old.get("kind") == "user" and kind == "replica":
            return  # a user pin is stronger than a replica duty
        self.pins[cid] = {"kind": kind, "size": size, "replicas": replicas, "ts": time.time()}
        self._save_pins()

    # -- add -------------------------------------------------------------------------------

    async def add_stream(
        self,
        source: AsyncIterator[bytes],
        *,
        pin: bool = True,
        replicas: int = 1,
        max_size: int | None = None,
        expect_size: int | None = None,
    ) -> ImportResult:
        """Import a stream into the store; pin it, announce it and ask for `replicas` copies.

        With `expect_size` (an upload's Content-Length) a short or long body is refused before anything
        is pinned; its blocks are left to GC."""
        with self.store.writing():
            # the importer's threads hash and write each leaf (an upload rewrites a block it already
            # has: the bytes in hand are known good, a copy on disk may have rotted)
            result = await import_stream(
                source, partial(self.store.put, replace=True), max_size=max_size or self.settings.max_upload
            )
            if expect_size is not None and result.size != expect_size:
                raise BadUpload(f"upload had {result.size} bytes where Content-Length said {expect_size}")
            if pin:
                self._pin_local(str(result.cid), result.size, kind="user", replicas=replicas)
        await self._added(result, pin, replicas)
        return result

    async def add_fd(
        self, fd: int, *, pin: bool = True, replicas: int = 1, progress: Callable[[int], None] | None = None
    ) -> ImportResult:
        """Import an open file handed over by a local client (read with pread: its offset is the
        client's); the same outcome as `add_stream`, without the bytes crossing a socket."""
        size = os.fstat(fd).st_size
        if size > self.settings.max_upload:
            raise TooLarge(f"file of {size} bytes exceeds the limit of {self.settings.max_upload}")
        with self.store.writing():
            put = partial(self.store.put, replace=True)
            result = await asyncio.to_thread(
                import_fd, fd, put, max_size=self.settings.max_upload, progress=progress
            )
            if pin:
                self._pin_local(str(result.cid), result.size, kind="user", replicas=replicas)
        await self._added(result, pin, replicas)
        return result

    async def _added(self, result: ImportResult, pin: bool, replicas: int) -> None:
        cid = str(result.cid)
        if pin:
            await self._announce(cid, result.size, replica=False)
            if self.dir is not None and replicas > 1:
                await self.dir.request_pin(cid, replicas, time.time())
                self._wake.set()
        log.info("r1fs: added %s (%d bytes, %d blocks, pin=%s)", cid, result.size, result.blocks, pin)

    async def get_to_fd(
        self, cid_text: str, fd: int, *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Write the file under `cid_text` into an open file handed over by a local client, fetching
        what is missing; the writes follow the fetch, so they overlap with it."""
        cid = parse_cid(cid_text)
        fetching = await self.fetch_running(cid)

        async def get_block(c: Cid) -> bytes:
            await self._until_here(c, fetching)
            return self.store.get(c)

        pos = 0
        async for part, size in file_parts(cid, get_block):
            if isinstance(part, Cid):  # a leaf: copied by the kernel from its pack, once it is here
                await self._until_here(part, fetching)
                if self.store.copy_to(part, fd, pos) != size:
                    raise CorruptBlock(f"leaf {part} is not the {size} bytes its parent lists")
            else:
                _pwrite_all(fd, part, pos)
            pos += size
            if progress is not None:
                progress(size)
        return pos

    async def _announce(self, cid: str, size: int, *, replica: bool) -> None:
        if self.dir is None:
            return
        try:
            await self.dir.announce(cid, size, time.time(), replica=replica)
        except Exception as exc:  # the store may refuse or be unreachable; the file is still here
            log.warning("r1fs: could not announce %s: %s", cid, exc)

    # -- pin / unpin -----------------------------------------------------------------------

    async def pin(self, cid_text: str, replicas: int = 1) -> dict[str, Any]:
        """Keep `cid` here (fetching it if needed) and ask the network for `replicas` copies in all."""
        cid = parse_cid(cid_text)
        text = str(cid)
        await self.fetch(cid)
        size = await self.size(cid)
        self._pin_local(text, size, kind="user", replicas=replicas)
        await self._announce(text, size, replica=False)
        if self.dir is not None:
            if replicas > 1:
                await self.dir.request_pin(text, replicas, time.time())
            else:
                await self.dir.cancel_pin(text)
            self._wake.set()
        return {"cid": text, "size": size, "replicas": replicas}

    async def unpin(self, cid_text: str) -> dict[str, Any]:
        """Release this node's pin and its replication request; the blocks go at the next GC."""
        cid = str(parse_cid(cid_text))
        had = self.pins.pop(cid, None)
        if had is not None:
            self._save_pins()
        if self.dir is not None:
            with contextlib.suppress(Exception):
                await self.dir.cancel_pin(cid)
            if had is not None:
                with contextlib.suppress(Exception):
                    await self.dir.withdraw(cid)
        return {"cid": cid, "unpinned": had is not None}

    def gc(self) -> GcResult:
        roots = []
        for c in self.pins:
            with contextlib.suppress(R1fsError):
                roots.append(parse_cid(c))
        result = self.store.gc(roots)
        if result.removed:
            log.info(
                "r1fs gc: removed %d blocks (%d bytes), kept %d", result.removed, result.freed, result.kept
            )
        return result

    # -- read ------------------------------------------------------------------------------

    async def get_block(self, cid: Cid) -> bytes:
        return self.store.get(cid)

    async def size(self, cid: Cid) -> int:
        return read_file_node(cid, await self.get_block(cid)).filesize

    async def read(
        self,
        cid: Cid,
        offset: int = 0,
        length: int | None = None,
        *,
        fetching: asyncio.Task[None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The file's bytes; with `fetching` (a `fetch_task`), blocks not here yet are waited for, so a
        download streams while the blocks arrive instead of after the last one."""

        async def get_block(c: Cid) -> bytes:
            await self._until_here(c, fetching)
            # read inline: a 256 KiB read from the page cache costs less than a thread hop
            return self.store.get(c)

        async for piece in read_range(cid, get_block, offset, length):
            yield piece

    async def _until_here(self, c: Cid, fetching: asyncio.Task[None] | None) -> None:
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
            await asyncio.wait_for(arrived.wait(), 1.0)

    # -- fetch from providers --------------------------------------------------------------

    def _url_of(self, address: str) -> str | None:
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

    async def provider_urls(self, cid: str) -> list[tuple[str, str]]:
        """Online nodes that announce `cid`, then (as a fallback) every other online R1FS node."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        if self.dir is not None:
            try:
                records = await self.dir.providers(cid)
            except Exception as exc:
                log.warning("r1fs: provider lookup for %s failed: %s", cid, exc)
                records = {}
            for addr in records:
                url = self._url_of(addr)
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

    def fetch_task(self, root: Cid, span: tuple[int, int] | None = None) -> asyncio.Task[None]:
        """The (shared) background task making the DAG under `root` local: all of it, or with `span`
        (first, last byte) only the blocks holding those bytes, as a gateway Range needs."""
        whole = self._fetching.get(str(root))
        if whole is not None:  # a fetch of the whole file covers any part of it
            return whole
        key = str(root) if span is None else f"{root}:{span[0]}-{span[1]}"
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(root, span), name=f"r1fs-fetch-{key[-8:]}")
            self._fetching[key] = task

            def done(t: asyncio.Task[None]) -> None:
                self._fetching.pop(key, None)
                self._block_arrived()
                if not t.cancelled() and t.exception() is not None:
                    log.info("r1fs: fetch of %s failed: %s", key, t.exception())

            task.add_done_callback(done)
        return task

    async def fetch_running(
        self, root: Cid, span: tuple[int, int] | None = None
    ) -> asyncio.Task[None] | None:
        """Start (or join) the fetch of `root` (or of `span`) and give it a moment: a file that is all
        here, or a fetch that fails at once, settles within it, so the caller answers with a clean status
        rather than a stream cut short. Returns the task still running, None if done; raises its error."""
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
            # a hand-off between the event loop and a pool for every leaf.
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
        providers: list[tuple[str, str]],
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
        providers: list[tuple[str, str]],
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

    async def _fetch_block(self, cid: Cid, providers: list[tuple[str, str]], n: int) -> bytes:
        """One block from the providers in turn (starting at a different one for each block)."""
        http = self._session()
        from aiohttp import ClientError

        text = str(cid)
        failures = []
        for i in range(len(providers)):
            addr, url = providers[(n + i) % len(providers)]
            try:
                async with http.get(f"{url}/v1/r1fs/block/{text}") as r:
                    status = r.status
                    data = await r.read() if status == 200 else b""
            except (TimeoutError, ClientError) as exc:
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

    # -- replication -----------------------------------------------------------------------

    def _alive(self, address: str, now: float) -> bool:
        """A holder counts until it has been unseen for longer than the grace period."""
        if address == self.me:
            return True
        peer = self.ctx.netmap.get(address)
        if peer is None:
            for p in self.ctx.netmap.peers():
                if p.address.lower() == address:
                    peer = p
                    break
        return peer is not None and now - peer.last_seen <= self.settings.grace

    def _candidates(self) -> set[str]:
        out = {self.me}
        for p in self.ctx.netmap.online():
            if "r1fs" in p.heartbeat.services and p.heartbeat.url:
                out.add(p.address.lower())
        return out

    async def reconcile(self) -> dict[str, str]:
        """One pass over the pinned CIDs; returns the action taken per CID (for logs and tests)."""
        assert self.dir is not None
        now = time.time()
        actions: dict[str, str] = {}
        cids = set(await self.dir.pinned_cids())
        cids.update(c for c, p in self.pins.items() if p.get("kind") == "replica")
        candidates = self._candidates()
        for cid in sorted(cids):
            requests = await self.dir.pin_requests(cid)
            wanted = min(wanted_replicas(requests), len(candidates))
            records = await self.dir.providers(cid)
            local = self.pins.get(cid)
            holders = {a for a in records if self._alive(a, now)}
            if local is not None:
                holders.add(self.me)
            replica_holders = {a for a in holders if records.get(a, {}).get("replica")}
            if local is not None and local.get("kind") == "replica":
                replica_holders.add(self.me)
            elif self.me in replica_holders:
                replica_holders.discard(self.me)
            action = plan(
                cid,
                self.me,
                wanted=wanted,
                holders=holders,
                replica_holders=replica_holders,
                candidates=candidates,
            )
            if action == "fetch" and cid not in self._replicating:
                self._replicating.add(cid)
                self._tasks.append(asyncio.create_task(self._replicate(cid), name=f"r1fs-rep-{cid[-8:]}"))
            elif action == "drop":
                log.info(
                    "r1fs: dropping replica of %s (wanted %d, live holders %d)", cid, wanted, len(holders)
                )
                self.pins.pop(cid, None)
                self._save_pins()
                with contextlib.suppress(Exception):
                    await self.dir.withdraw(cid)
            if action:
                actions[cid] = action
        self._tasks = [t for t in self._tasks if not t.done()]
        return actions

    async def _replicate(self, cid: str) -> None:
        try:
            root = parse_cid(cid)
            log.info("r1fs: replicating %s", cid)
            await self.fetch(root)
            size = await self.size(root)
            self._pin_local(cid, size, kind="replica")
            await self._announce(cid, size, replica=self.pins.get(cid, {}).get("kind") == "replica")
            log.info("r1fs: now holding a replica of %s", cid)
        except Exception as exc:
            log.warning("r1fs: replicating %s failed: %s (will retry)", cid, exc)
        finally:
            self._replicating.discard(cid)

    async def _reconcile_loop(self) -> None:
        # Re-announce what this node holds: the records may be older than a wipe of the store.
        for cid, pin in list(self.pins.items()):
            await self._announce(cid, int(pin.get("size", 0)), replica=pin.get("kind") == "replica")
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval)
            self._wake.clear()
            # A fresh node has not heard every peer yet: do not judge holders gone before a grace period.
            if time.time() - self._started < min(self.settings.grace, 3 * self.ctx_heartbeat()):
                continue
            try:
                await self.reconcile()
            except Exception:
                log.exception("r1fs: reconcile failed")

    def ctx_heartbeat(self) -> float:
        peers = self.ctx.netmap.peers()
        return max((p.heartbeat.interval for p in peers), default=10.0)

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gc_interval)
            try:
                await asyncio.to_thread(self.gc)
            except Exception:
                log.exception("r1fs: gc failed")

    # -- stat / ls -------------------------------------------------------------------------

    async def stat(self, cid_text: str) -> dict[str, Any]:
        cid = parse_cid(cid_text)
        text = str(cid)
        out: dict[str, Any] = {"cid": text, "codec": "raw" if cid.codec == RAW else "dag-pb"}
        try:
            block = self.store.get(cid)
            node = read_file_node(cid, block)
            out.update(size=node.filesize, links=len(node.children), local=True)
            out["complete"] = await asyncio.to_thread(self.store.is_complete, cid)
        except BlockNotFound:
            out.update(size=None, local=False, complete=False)
        pin = self.pins.get(text)
        out["pinned"] = pin.get("kind") if pin else None
        if self.dir is not None:
            now = time.time()
            records = await self.dir.providers(text)
            requests = await self.dir.pin_requests(text)
            out["providers"] = [
                {"address": a, "alive": self._alive(a, now), **{k: v for k, v in r.items() if k != "ts"}}
                for a, r in sorted(records.items())
            ]
            out["replicas_wanted"] = wanted_replicas(requests) or (1 if pin else 0)
            out["replicas_live"] = sum(1 for p in out["providers"] if p["alive"])
        return out

    def ls(self) -> list[dict[str, Any]]:
        return [{"cid": c, **p} for c, p in sorted(self.pins.items())]
