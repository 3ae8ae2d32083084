"""The R1FS node service: block store, pins, add and get; fetching (`_fetcher.py`), re-replication
(`_replication.py`), HTTP routes (`_api.py`) and the local socket (`_local.py`) hang off it.

Who may do what (the routes and the local socket ask `ctx.auth`, then pass the `Caller` here): add and
pin need a signed caller or the node's operator, and count against the signer's quota (`_pins.py`);
only a pinner releases its own pin, the operator any; GC is the operator's; blocks and block runs are
served to the network's nodes only when the node runs dAuth (`check_peer`). A caller of None is the
node's operator (in-process use, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import Request

from r1os.cstore import CStoreService
from r1os.dauth._service import DauthService
from r1os.node import Caller, Forbidden, R1fsSettings, Service, ServiceContext, Unauthenticated
from r1os.r1fs._api import mount
from r1os.r1fs._dag import RAW, Cid, DagLimits, parse_cid, read_dag_node, read_file_node
from r1os.r1fs._errors import BadUpload, BlockNotFound, CorruptBlock, R1fsError, TooLarge
from r1os.r1fs._exporter import file_parts, read_range
from r1os.r1fs._fetcher import Fetcher
from r1os.r1fs._importer import ImportResult, import_fd, import_stream
from r1os.r1fs._limits import TooManyReplicas, check_space
from r1os.r1fs._local import LocalServer, socket_name
from r1os.r1fs._meter import UploadMeter
from r1os.r1fs._metrics import R1fsCollector
from r1os.r1fs._models import (
    PinAnswer,
    PinEntry,
    ProviderInfo,
    StatAnswer,
    StatsAnswer,
    StoreStats,
    UnpinAnswer,
)
from r1os.r1fs._pins import PinBook
from r1os.r1fs._providers import PIN, Directory, KeyValue
from r1os.r1fs._replication import Replication
from r1os.r1fs._runs import RunServer
from r1os.r1fs._store import BlockStore, GcResult, Hold
from r1os.r1fs._tar import import_tar
from r1os.r1fs._unixfs_dir import (
    DirEntry,
    Kind,
    TreeItem,
    TreeLimits,
    TreeResult,
    kind_of,
    list_dir,
    resolve,
    symlink_target,
    walk_tree,
)

log = logging.getLogger("r1os.r1fs")

#: Provider records a stat lists (cause: none, the rest are left out): anyone with a key may write one.
MAX_LISTED_PROVIDERS = 64
#: Entries' root blocks a folder listing reads (or fetches) at once.
DESCRIBE_PARALLEL = 16


def _pwrite_all(fd: int, data: bytes, pos: int) -> None:
    n = os.pwrite(fd, data, pos)
    while n < len(data):  # short writes: a full disk raises on the next call
        n += os.pwrite(fd, memoryview(data)[n:], pos + n)


class R1fsService(Service):
    """Holds blocks under the node's data folder and speaks R1FS to apps, users and peers."""

    name = "r1fs"

    def __init__(
        self,
        settings: R1fsSettings | None = None,
        *,
        kv: KeyValue | None = None,
    ) -> None:
        """`kv` stands in for the node's CSTORE (tests); without either, providers and replication are off.
        The settings carry the limits too (quotas, replicas, free disk, fetches)."""
        self.settings = settings or R1fsSettings()
        self.dag = DagLimits(max_file=self.settings.max_upload)
        self.tree = TreeLimits(max_size=self.settings.max_upload)
        self._kv = kv
        self.me = ""
        self.counters: dict[str, int] = {
            "corrupt_from_peer": 0, "fetched_blocks": 0, "fetch_retries": 0, "local_served": 0,
            "local_refused": 0,
        }  # fmt: skip
        self.dir: Directory | None = None
        self.replication: Replication | None = None
        self.local: LocalServer | None = None
        self.runs: RunServer | None = None  # block runs for peers by sendfile (`_runs.py`)
        # Set by `start` (they need the node's folder and peers); reached through the properties below.
        self._ctx: ServiceContext | None = None
        self._store: BlockStore | None = None
        self._fetcher: Fetcher | None = None
        self._book: PinBook | None = None
        self._dauth: DauthService | None = None

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            raise R1fsError("the R1FS service is not started")
        return self._ctx

    @property
    def store(self) -> BlockStore:
        if self._store is None:
            raise R1fsError("the R1FS service is not started")
        return self._store

    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            raise R1fsError("the R1FS service is not started")
        return self._fetcher

    @property
    def book(self) -> PinBook:
        if self._book is None:
            raise R1fsError("the R1FS service is not started")
        return self._book

    @property
    def pins(self) -> dict[str, dict[str, Any]]:
        """This node's pins by CID (see `_pins.py` for a record's fields); empty before `start`."""
        return self._book.pins if self._book is not None else {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.me = ctx.key.address.lower()
        store = BlockStore(
            ctx.data_dir / "blocks",
            verify_reads=self.settings.verify_reads,
            fsync=self.settings.fsync,
            limits=self.dag,
        )
        self._store = store
        ctx.on_stop(store.close)  # after the fetches and GC (node tasks) have ended
        self._book = PinBook(ctx.data_dir / "pins.json", self.me, self.settings)
        self._book.load()
        self._dauth = ctx.find(DauthService)
        kv: KeyValue | None = self._kv if self._kv is not None else ctx.find(CStoreService)
        if kv is None:
            log.warning("r1fs: no cstore service on this node; providers and replication are off")
        else:
            self.dir = Directory(kv, self.me)
            self.replication = Replication(self, self.dir)
            kv.watch(PIN, self._pin_requests_changed)
            ctx.on_stop(partial(kv.unwatch, self._pin_requests_changed))
        self._fetcher = Fetcher(ctx, store, self.settings, self.dir, self.counters)
        mount(ctx.router, self)
        runs = RunServer(self)
        if runs.open(ctx.config.http_host) is not None:
            self.runs = runs
            ctx.on_stop(runs.close)  # before the store closes
        ctx.allow_body("/v1/r1fs/add", None)  # streams, with its own limit (max_upload)
        ctx.allow_body("/v1/r1fs/add-tree", None)  # the same, a tar stream
        ctx.metrics.register(R1fsCollector(self))
        if self.replication is not None:
            ctx.spawn(self.replication.run(), "reconcile")
        ctx.spawn(self._gc_loop(), "gc")
        if self.settings.local_socket:
            server = LocalServer(self, socket_name(self.me), ctx.spawn)
            if server.open():
                self.local = server
                ctx.on_stop(server.close)
                ctx.spawn(server.serve(), "local")

    def _pin_requests_changed(self, _key: str, _field: str | None, _value: Any) -> None:
        """A pin request came or went (CSTORE watch): reconcile now, not at the next pass."""
        self._reconcile_soon()

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gc_interval)
            try:
                await self.collect()
            except Exception:
                log.exception("r1fs: gc failed")

    # -- callers -----------------------------------------------------------------------------

    def _who(self, caller: Caller | None) -> Caller:
        """The caller a request proved (None: the node's operator, in-process)."""
        if caller is None or caller.local:
            return Caller(address=self.me, local=True)
        if caller.address is None:
            raise Unauthenticated("this needs a signed request")
        return Caller(address=caller.address.lower())

    def _replicas(self, replicas: int) -> None:
        if not 1 <= replicas <= self.settings.max_replicas:
            raise TooManyReplicas(
                f"replicas must be 1..{self.settings.max_replicas} on this node, not {replicas}",
                hint="the node's bound is R1OS_R1FS__MAX_REPLICAS",
            )

    async def check_peer(self, request: Request) -> None:
        """Blocks and block runs are the network's own traffic: with dAuth on, only a request signed by
        an admitted node (or an oracle, or this node, or its operator) is served."""
        dauth = self._dauth
        if dauth is None or not dauth.enabled:
            return
        caller = await self.ctx.auth.caller(request)
        if caller.local:
            return
        if caller.address is None:
            raise Unauthenticated(
                "blocks are served to the network's admitted nodes: the request must be signed",
                hint="read files through /ipfs/<cid> or /v1/r1fs/get instead",
            )
        address = caller.address.lower()
        if address != self.me and not dauth.is_admitted(address):
            raise Forbidden(f"{caller.address} is not admitted to this network: no blocks for it")

    # -- local pins ------------------------------------------------------------------------

    def keep(self, cid: str, size: int, *, kind: str, replicas: int = 1) -> None:
        """Pin `cid` on this node: a `user` pin of the node's operator, or a `replica` kept for the
        network (a replica never replaces a user pin)."""
        if kind == "replica":
            self.book.keep_replica(cid, size)
        else:
            self.book.pin(cid, size, self.me, replicas)

    def drop_pin(self, cid: str) -> bool:
        """Drop a replica this node holds for the network (its blocks go at the next GC)."""
        return self.book.drop_replica(cid)

    async def announce(self, cid: str, size: int, *, replica: bool) -> None:
        """Tell the network this node holds all of `cid` (a provider record in CSTORE)."""
        if self.dir is None:
            return
        try:
            await self.dir.announce(cid, size, time.time(), replica=replica)
        except Exception as exc:  # the store may refuse or be unreachable; the file is still here
            log.warning("r1fs: could not announce %s: %s", cid, exc)

    async def _publish(self, cid: str, size: int, asked_before: int) -> None:
        """After a user pin changed: announce the copy and ask the network for the replicas its pinners
        want (the most any asks for), or withdraw the request when one copy is enough now."""
        rec = self.book.get(cid)
        if rec is None:
            return
        await self.announce(cid, size, replica=False)
        if self.dir is None:
            return
        wanted = int(rec["replicas"])
        if wanted > 1:
            await self.dir.request_pin(cid, wanted, time.time())
        elif asked_before > 1:
            await self.dir.cancel_pin(cid)
        if wanted > 1 or asked_before > 1:
            self._reconcile_soon()

    # -- add -------------------------------------------------------------------------------

    def _max_for(self, who: Caller, factor: int) -> int:
        """The largest file `who` may still add (its quota left, at `factor` copies; the node's limit)."""
        limit = self.settings.max_upload
        if who.local or who.address is None:
            return limit
        left = self.settings.quota_bytes - self.book.usage(who.address).bytes
        return max(0, min(limit, left // factor))

    async def add_stream(
        self,
        source: AsyncIterator[bytes],
        *,
        pin: bool = True,
        replicas: int = 1,
        max_size: int | None = None,
        expect_size: int | None = None,
        caller: Caller | None = None,
    ) -> ImportResult:
        """Import a stream into the store; pin it (as the caller), announce it and ask for `replicas`
        copies. The caller's quota is checked before (by `expect_size`, an upload's Content-Length) and
        while the bytes stream in, and the store's disk must keep its free space.

        With `expect_size` a short or long body is refused before anything is pinned; its blocks are
        left to GC (an upload's blocks are held from GC only while it runs)."""
        who = self._who(caller)
        address = who.address or self.me
        self._replicas(replicas)
        book = self.book
        meter = UploadMeter(self, address, pin=pin, replicas=replicas, expect_size=expect_size)
        limit = min(max_size or self.settings.max_upload, self.settings.max_upload)
        try:
            with self.store.holding() as hold:
                # the importer's threads hash and write each leaf (an upload rewrites a block it already
                # has: the bytes in hand are known good, a copy on disk may have rotted)
                result = await import_stream(meter.stream(source), hold.put_replace, max_size=limit)
                if expect_size is not None and result.size != expect_size:
                    raise BadUpload(f"upload had {result.size} bytes where Content-Length said {expect_size}")
                meter.release()
                asked_before = self._asked(str(result.cid))
                if pin:
                    book.pin(str(result.cid), result.size, address, replicas)
                else:
                    book.added_unpinned(address, result.size)
        finally:
            meter.release()
        if pin:
            await self._publish(str(result.cid), result.size, asked_before)
        log.info("r1fs: added %s (%d bytes, %d blocks, pin=%s)", result.cid, result.size, result.blocks, pin)
        return result

    def _asked(self, cid: str) -> int:
        rec = self.book.get(cid)
        return int(rec["replicas"]) if rec is not None and rec["kind"] == "user" else 0

    async def add_fd(
        self,
        fd: int,
        *,
        pin: bool = True,
        replicas: int = 1,
        progress: Callable[[int], None] | None = None,
        caller: Caller | None = None,
    ) -> ImportResult:
        """Import an open file handed over by a local client (read with pread: its offset is the
        client's); the same outcome and checks as `add_stream`, without the bytes crossing a socket."""
        who = self._who(caller)
        address = who.address or self.me
        self._replicas(replicas)
        factor = replicas if pin else 1
        size = os.fstat(fd).st_size
        if size > self.settings.max_upload:
            raise TooLarge(f"file of {size} bytes exceeds the limit of {self.settings.max_upload}")
        self.book.check(address, more_bytes=size * factor, new_pin=pin, unpinned=not pin)
        check_space(self.store.root, size, self.settings)
        limit = self._max_for(who, factor)  # the file may grow while it is read
        with self.store.holding() as hold:
            result = await asyncio.to_thread(
                import_fd, fd, hold.put_replace, max_size=limit, progress=progress
            )
            asked_before = self._asked(str(result.cid))
            if pin:
                self.book.pin(str(result.cid), result.size, address, replicas)
            else:
                self.book.added_unpinned(address, result.size)
        if pin:
            await self._publish(str(result.cid), result.size, asked_before)
        log.info("r1fs: added %s (%d bytes, %d blocks, pin=%s)", result.cid, result.size, result.blocks, pin)
        return result

    def _reconcile_soon(self) -> None:
        if self.replication is not None:
            self.replication.wake.set()

    # -- get -------------------------------------------------------------------------------

    async def get_to_fd(
        self, cid_text: str, fd: int, *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Write the file under `cid_text` into an open file handed over by a local client, fetching
        what is missing; the writes follow the fetch, so they overlap with it."""
        cid = parse_cid(cid_text)
        fetcher = self.fetcher
        self.size_of(cid, await fetcher.fetch_root(cid))  # what the root claims, checked first
        fetching = await fetcher.fetch_running(cid)

        async def get_block(c: Cid) -> bytes:
            await fetcher.until_here(c, fetching)
            return self.store.get(c)

        pos = 0
        async for part, size in file_parts(cid, get_block, limits=self.dag):
            if isinstance(part, Cid):  # a leaf: copied by the kernel from its pack, once it is here
                await fetcher.until_here(part, fetching)
                if self.store.copy_to(part, fd, pos) != size:
                    raise CorruptBlock(f"leaf {part} is not the {size} bytes its parent lists")
            else:
                _pwrite_all(fd, part, pos)
            pos += size
            if progress is not None:
                progress(size)
        return pos

    async def add_bytes(self, data: bytes, *, pin: bool = True, replicas: int = 1) -> str:
        """Store a small blob held in memory (a model, a ciphertext) as this node; its CID."""

        async def source() -> AsyncIterator[bytes]:
            yield data

        result = await self.add_stream(source(), pin=pin, replicas=replicas, expect_size=len(data))
        return str(result.cid)

    async def cat(self, cid_text: str, *, max_size: int) -> bytes:
        """The whole file under `cid_text`, fetched from peers if need be, refused (`TooLarge`) past
        `max_size` bytes before anything but its root is fetched."""
        cid = parse_cid(cid_text)
        size = self.size_of(cid, await self.fetcher.fetch_root(cid))
        if size > max_size:
            raise TooLarge(f"{cid_text} is {size} bytes, more than the {max_size} expected here")
        fetching = await self.fetcher.fetch_running(cid)
        parts = [part async for part in self.read(cid, fetching=fetching)]
        return b"".join(parts)

    async def get_block(self, cid: Cid) -> bytes:
        """A local block (`BlockNotFound` if it is not here)."""
        return self.store.get(cid)

    async def size(self, cid: Cid) -> int:
        """The size of the file under `cid`, from its root block (which must be local)."""
        return self.size_of(cid, await self.get_block(cid))

    def size_of(self, cid: Cid, root: bytes) -> int:
        """The size a root block declares, refused past the node's largest file (`DagRefused`)."""
        node = read_file_node(cid, root)
        self.dag.check_root(cid, node)
        return node.filesize

    async def read(
        self,
        cid: Cid,
        offset: int = 0,
        length: int | None = None,
        *,
        fetching: asyncio.Future[None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The file's bytes; with `fetching` (a `Fetcher.fetch_task`), blocks not here yet are waited
        for, so a download streams while the blocks arrive instead of after the last one."""
        fetcher = self.fetcher

        async def get_block(c: Cid) -> bytes:
            await fetcher.until_here(c, fetching)
            # read inline: a 256 KiB read from the page cache costs less than a thread hop
            return self.store.get(c)

        async for piece in read_range(cid, get_block, offset, length, limits=self.dag):
            yield piece

    # -- folders -------------------------------------------------------------------------

    def declared_size(self, cid: Cid, root: bytes) -> int:
        """What a root declares it holds: a file's size, a folder's sum of its links' Tsizes (the
        bytes of its whole DAG); refused past the node's largest upload (`DagRefused`)."""
        node = read_dag_node(cid, root)
        self.dag.check_root(cid, node)
        return node.filesize

    async def fetch_block(self, cid: Cid) -> bytes:
        """One block, from the store or else from the network (checked against its CID): the
        `get_block` the folder readers walk with on a node."""
        return await self.fetcher.fetch_root(cid)

    async def kind(self, cid: Cid) -> Kind:
        """file, directory or symlink (the root block fetched if need be)."""
        return kind_of(cid, await self.fetch_block(cid))

    async def resolve_path(self, cid_text: str, path: str) -> tuple[Cid, Kind]:
        """The CID and kind that `path` under `cid_text` leads to, fetching the folders on the way."""
        r = await resolve(parse_cid(cid_text), path, self.fetch_block)
        return r.cid, r.kind

    async def list_folder(self, cid: Cid, *, after: str = "", limit: int = 1000) -> list[DirEntry]:
        """A folder's entries by name after `after`, `limit` of them (`NotADirectory` for a file)."""
        entries = [e async for e in list_dir(cid, self.fetch_block, limits=self.tree)]
        entries.sort(key=lambda e: e.name.encode("utf-8", "surrogatepass"))
        start = 0
        if after:
            key = after.encode("utf-8", "surrogatepass")
            while start < len(entries) and entries[start].name.encode("utf-8", "surrogatepass") <= key:
                start += 1
        return entries[start : start + limit]

    async def describe(self, entries: list[DirEntry]) -> list[tuple[DirEntry, Kind, int | None, str | None]]:
        """Each entry with its kind, a file's size and a symbolic link's target, from the entries' root
        blocks (fetched if need be, DESCRIBE_PARALLEL at once)."""
        gate = asyncio.Semaphore(DESCRIBE_PARALLEL)

        async def one(e: DirEntry) -> tuple[DirEntry, Kind, int | None, str | None]:
            async with gate:
                block = await self.fetch_block(e.cid)
            k = kind_of(e.cid, block)
            size = read_file_node(e.cid, block).filesize if k == "file" else None
            return e, k, size, (symlink_target(e.cid, block) if k == "symlink" else None)

        return list(await asyncio.gather(*(one(e) for e in entries)))

    async def walk(self, cid: Cid) -> AsyncIterator[TreeItem]:
        """Every entry of the tree under `cid` (see `walk_tree`), fetching folder blocks as needed."""
        async for item in walk_tree(cid, self.fetch_block, limits=self.tree):
            yield item

    async def _fetch_tree(self, root: Cid) -> None:
        """Make a whole folder tree local: its folder blocks one by one as the walk meets them, then
        every file (a fetch each, `parallel` at once); the files' holders are any online node when no
        one announces them (a pinned folder announces its root only)."""
        files: list[Cid] = []
        async for item in self.walk(root):
            if item.kind == "file":
                files.append(item.cid)
        gate = asyncio.Semaphore(max(1, self.settings.parallel))

        async def one(c: Cid) -> None:
            async with gate:
                await self.fetcher.fetch(c)

        await asyncio.gather(*(one(c) for c in dict.fromkeys(files)))

    async def add_tar(
        self,
        source: AsyncIterator[bytes],
        *,
        pin: bool = True,
        replicas: int = 1,
        expect_size: int | None = None,
        caller: Caller | None = None,
    ) -> TreeResult:
        """Import a folder sent as a tar stream (`_tar.py`); pinned, announced and replicated as one
        root like a file: the same quota, disk and size checks as `add_stream`, on the stream's bytes."""
        who = self._who(caller)
        address = who.address or self.me
        self._replicas(replicas)
        book = self.book
        meter = UploadMeter(self, address, pin=pin, replicas=replicas, expect_size=expect_size)
        try:
            with self.store.holding() as hold:
                result = await import_tar(
                    meter.stream(source),
                    hold.put_replace,
                    limits=self.tree,
                    max_size=self.settings.max_upload,
                )
                if expect_size is not None and meter.total != expect_size:
                    raise BadUpload(f"upload had {meter.total} bytes where Content-Length said {expect_size}")
                meter.release()
                text = str(result.cid)
                asked_before = self._asked(text)
                if pin:
                    book.pin(text, result.dag_size, address, replicas)
                else:
                    book.added_unpinned(address, result.dag_size)
        finally:
            meter.release()
        if pin:
            await self._publish(text, result.dag_size, asked_before)
        log.info(
            "r1fs: added folder %s (%d files, %d folders, %d bytes, pin=%s)",
            result.cid, result.files, result.dirs, result.size, pin,
        )  # fmt: skip
        return result

    # -- pin / unpin / gc ------------------------------------------------------------------

    async def pin(self, cid_text: str, replicas: int = 1, *, caller: Caller | None = None) -> PinAnswer:
        """Pin `cid` here as the caller (fetching it if needed) and ask the network for `replicas`
        copies in all (the most any of its pinners asks for). The caller's quota is checked on the
        size its root declares before anything else is fetched."""
        who = self._who(caller)
        address = who.address or self.me
        self._replicas(replicas)
        cid = parse_cid(cid_text)
        text = str(cid)
        mine = self.book.pinners(text).get(address)
        self.book.check(address, more_bytes=0, new_pin=mine is None)
        size = self.declared_size(cid, await self.fetcher.fetch_root(cid))
        held = size * int(mine["replicas"]) if mine is not None else 0
        self.book.check(address, more_bytes=size * replicas - held, new_pin=mine is None)
        with self.store.holding() as hold:
            await self._fetch_held(cid, hold)
            asked_before = self._asked(text)
            self.book.pin(text, size, address, replicas)
        await self._publish(text, size, asked_before)
        return PinAnswer(cid=text, size=size, replicas=replicas)

    async def _fetch_held(self, cid: Cid, hold: Hold) -> None:
        """Make the DAG under `cid` local and hold every block of it (a pin is about to count on them:
        GC, which does not wait for anyone, must not take one between the fetch and the pin)."""
        folder = kind_of(cid, await self.fetcher.fetch_root(cid)) == "directory"
        for _ in range(3):
            if folder:
                await self._fetch_tree(cid)
            else:
                await self.fetcher.fetch(cid, hold=hold)
                if cid in hold.complete:
                    # The fetch found or stored every block of the DAG and handed them to `hold`
                    # (`Fetcher._fetch`): walking it again here cost a pull of 200 MiB a few ms.
                    return
            if not await asyncio.to_thread(self.store.missing, cid, verify=False, hold=hold):
                return
        raise BlockNotFound(f"{cid}: blocks went missing as soon as they were fetched (the disk?)")

    async def replicate(self, cid: Cid) -> int:
        """Fetch `cid` and keep it as a replica for the network (the node itself holds it); its size."""
        text = str(cid)
        with self.store.holding() as hold:
            size = self.declared_size(cid, await self.fetcher.fetch_root(cid))
            await self._fetch_held(cid, hold)
            self.book.keep_replica(text, size)
        return size

    async def unpin(
        self, cid_text: str, *, caller: Caller | None = None, pinner: str | None = None
    ) -> UnpinAnswer:
        """Release the caller's pin of `cid` (the node's operator: `pinner`'s, or with None every pin of
        it); the CID stays pinned while any pinner holds it, and its blocks go at the next GC after the
        last. A signed caller that holds no pin of it releases nothing."""
        who = self._who(caller)
        cid = str(parse_cid(cid_text))
        if who.local:
            target = pinner
        else:
            if pinner is not None and pinner.lower() != who.address:
                raise Forbidden(
                    f"{who.address} may release only its own pin, not {pinner}'s",
                    hint="the node's operator may release any pin",
                )
            target = who.address
        asked_before = self._asked(cid)
        gone = self.book.release(cid, target)
        left = self.book.get(cid)
        if self.dir is not None:
            if left is None:
                with contextlib.suppress(Exception):
                    if gone or who.local:
                        await self.dir.cancel_pin(cid)
                if gone:
                    with contextlib.suppress(Exception):
                        await self.dir.withdraw(cid)
            elif gone:
                with contextlib.suppress(Exception):
                    await self._publish(cid, int(left["size"]), asked_before)
        return UnpinAnswer(
            cid=cid, unpinned=bool(gone), released=gone, pinners_left=len(left["pinners"]) if left else 0
        )

    def gc(self) -> GcResult:
        """Remove the blocks no local pin reaches and no import or fetch holds (blocking: run it in a
        thread; `collect` does, and settles the quotas)."""
        roots = []
        for c in list(self.pins):
            with contextlib.suppress(R1fsError):
                roots.append(parse_cid(c))
        result = self.store.gc(roots)
        if result.removed:
            log.info(
                "r1fs gc: removed %d blocks (%d bytes), kept %d", result.removed, result.freed, result.kept
            )
        return result

    async def collect(self) -> GcResult:
        """GC in a thread (the loop goes on); then unpinned adds made before it no longer count."""
        marks = self.book.unpinned_marks()
        result = await asyncio.to_thread(self.gc)
        if not result.busy:
            self.book.collected(marks)
        return result

    # -- stat / ls / stats -----------------------------------------------------------------

    async def stat(self, cid_text: str) -> StatAnswer:
        cid = parse_cid(cid_text)
        text = str(cid)
        pin = self.pins.get(text)
        out = StatAnswer(
            cid=text,
            codec="raw" if cid.codec == RAW else "dag-pb",
            size=None,
            local=False,
            complete=False,
            pinned=pin.get("kind") if pin else None,
        )
        try:
            node = read_dag_node(cid, self.store.get(cid))
            out.size, out.links, out.local = node.filesize, len(node.children), True
            out.complete = await asyncio.to_thread(self.store.is_complete, cid)
        except BlockNotFound:
            pass
        if self.dir is not None and self.replication is not None:
            now = time.time()
            records = await self.dir.providers(text)
            requests = await self.dir.pin_requests(text)
            # Records are written by anyone with a key (its own field): take only well-typed fields, list
            # the network's nodes first and no more than MAX_LISTED_PROVIDERS of them all.
            known = self.replication.known()
            listed = sorted(records.items(), key=lambda item: (item[0] not in known, item[0]))
            out.providers = [
                ProviderInfo(
                    address=a,
                    alive=self.replication.alive(a, now),
                    size=r["size"] if type(r.get("size")) is int else None,
                    replica=r["replica"] if type(r.get("replica")) is bool else None,
                )
                for a, r in listed[:MAX_LISTED_PROVIDERS]
            ]
            out.replicas_wanted = self.replication.wanted(requests, known) or (1 if pin else 0)
            out.replicas_live = sum(1 for a in records if a in known and self.replication.alive(a, now))
        return out

    def ls(self, *, pinners: bool = True, after: str = "", limit: int | None = None) -> list[PinEntry]:
        """This node's pins, by CID (those after `after`, `limit` of them at most); `pinners`: with who
        pins each (the operator sees them)."""
        cids = sorted(c for c in self.pins if c > after)
        return [
            PinEntry(
                cid=c,
                kind=self.pins[c]["kind"],
                size=self.pins[c]["size"],
                replicas=self.pins[c]["replicas"],
                ts=self.pins[c]["ts"],
                pinners=sorted(self.pins[c]["pinners"]) if pinners else None,
            )
            for c in (cids if limit is None else cids[:limit])
        ]

    async def stats(self) -> StatsAnswer:
        """The block store's size and the fetch and local-socket counters."""
        store = StoreStats(**await asyncio.to_thread(self.store.stats))
        return StatsAnswer(store=store, pins=len(self.pins), **self.counters)
