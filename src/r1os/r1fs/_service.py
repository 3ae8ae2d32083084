"""The R1FS node service: block store, pins, add and get; fetching (`_fetcher.py`), re-replication
(`_replication.py`), HTTP routes (`_api.py`) and the local socket (`_local.py`) hang off it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

from r1os.cstore import CStoreService
from r1os.node import R1fsSettings, Service, ServiceContext
from r1os.r1fs._api import mount
from r1os.r1fs._dag import RAW, Cid, parse_cid, read_file_node
from r1os.r1fs._errors import BadUpload, BlockNotFound, CorruptBlock, R1fsError, TooLarge
from r1os.r1fs._exporter import file_parts, read_range
from r1os.r1fs._fetcher import Fetcher
from r1os.r1fs._importer import ImportResult, import_fd, import_stream
from r1os.r1fs._local import LocalServer, socket_name
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
from r1os.r1fs._providers import PIN, Directory, KeyValue, wanted_replicas
from r1os.r1fs._replication import Replication
from r1os.r1fs._store import BlockStore, GcResult

log = logging.getLogger("r1os.r1fs")


def _pwrite_all(fd: int, data: bytes, pos: int) -> None:
    n = os.pwrite(fd, data, pos)
    while n < len(data):  # short writes: a full disk raises on the next call
        n += os.pwrite(fd, memoryview(data)[n:], pos + n)


class R1fsService(Service):
    """Holds blocks under the node's data folder and speaks R1FS to apps, users and peers."""

    name = "r1fs"

    def __init__(self, settings: R1fsSettings | None = None, *, kv: KeyValue | None = None) -> None:
        """`kv` stands in for the node's CSTORE (tests); without either, providers and replication are off."""
        self.settings = settings or R1fsSettings()
        self._kv = kv
        self.me = ""
        self.pins: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {
            "corrupt_from_peer": 0, "fetched_blocks": 0, "fetch_retries": 0, "local_served": 0,
            "local_refused": 0,
        }  # fmt: skip
        self.dir: Directory | None = None
        self.replication: Replication | None = None
        self.local: LocalServer | None = None
        # Set by `start` (they need the node's folder and peers); reached through the properties below.
        self._ctx: ServiceContext | None = None
        self._store: BlockStore | None = None
        self._fetcher: Fetcher | None = None
        self._pins_path: Path | None = None

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

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.me = ctx.key.address.lower()
        store = BlockStore(
            ctx.data_dir / "blocks", verify_reads=self.settings.verify_reads, fsync=self.settings.fsync
        )
        self._store = store
        ctx.on_stop(store.close)  # after the fetches and GC (node tasks) have ended
        self._pins_path = ctx.data_dir / "pins.json"
        self.pins = self._load_pins()
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
        ctx.allow_body("/v1/r1fs/add", None)  # streams, with its own limit (max_upload)
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
                await asyncio.to_thread(self.gc)
            except Exception:
                log.exception("r1fs: gc failed")

    # -- local pins ------------------------------------------------------------------------

    def _load_pins(self) -> dict[str, dict[str, Any]]:
        assert self._pins_path is not None
        try:
            data = json.loads(self._pins_path.read_text())
            return {k: v for k, v in data.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("r1fs: cannot read %s (%s); starting with no pins", self._pins_path, exc)
            return {}

    def _save_pins(self) -> None:
        assert self._pins_path is not None
        tmp = self._pins_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.pins, indent=1, sort_keys=True))
        os.replace(tmp, self._pins_path)

    def keep(self, cid: str, size: int, *, kind: str, replicas: int = 1) -> None:
        """Pin `cid` on this node: a `user` pin, or a `replica` kept for the network (a replica never
        replaces a user pin)."""
        old = self.pins.get(cid)
        if old is not None and old.get("kind") == "user" and kind == "replica":
            return  # a user pin is stronger than a replica duty
        self.pins[cid] = {"kind": kind, "size": size, "replicas": replicas, "ts": time.time()}
        self._save_pins()

    def drop_pin(self, cid: str) -> dict[str, Any] | None:
        """Remove this node's pin of `cid` (its blocks go at the next GC); returns the pin it had."""
        had = self.pins.pop(cid, None)
        if had is not None:
            self._save_pins()
        return had

    async def announce(self, cid: str, size: int, *, replica: bool) -> None:
        """Tell the network this node holds all of `cid` (a provider record in CSTORE)."""
        if self.dir is None:
            return
        try:
            await self.dir.announce(cid, size, time.time(), replica=replica)
        except Exception as exc:  # the store may refuse or be unreachable; the file is still here
            log.warning("r1fs: could not announce %s: %s", cid, exc)

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
                self.keep(str(result.cid), result.size, kind="user", replicas=replicas)
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
                self.keep(str(result.cid), result.size, kind="user", replicas=replicas)
        await self._added(result, pin, replicas)
        return result

    async def _added(self, result: ImportResult, pin: bool, replicas: int) -> None:
        cid = str(result.cid)
        if pin:
            await self.announce(cid, result.size, replica=False)
            if self.dir is not None and replicas > 1:
                await self.dir.request_pin(cid, replicas, time.time())
                self._reconcile_soon()
        log.info("r1fs: added %s (%d bytes, %d blocks, pin=%s)", cid, result.size, result.blocks, pin)

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
        fetching = await fetcher.fetch_running(cid)

        async def get_block(c: Cid) -> bytes:
            await fetcher.until_here(c, fetching)
            return self.store.get(c)

        pos = 0
        async for part, size in file_parts(cid, get_block):
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

    async def get_block(self, cid: Cid) -> bytes:
        """A local block (`BlockNotFound` if it is not here)."""
        return self.store.get(cid)

    async def size(self, cid: Cid) -> int:
        """The size of the file under `cid`, from its root block (which must be local)."""
        return read_file_node(cid, await self.get_block(cid)).filesize

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

        async for piece in read_range(cid, get_block, offset, length):
            yield piece

    # -- pin / unpin / gc ------------------------------------------------------------------

    async def pin(self, cid_text: str, replicas: int = 1) -> PinAnswer:
        """Keep `cid` here (fetching it if needed) and ask the network for `replicas` copies in all."""
        cid = parse_cid(cid_text)
        text = str(cid)
        await self.fetcher.fetch(cid)
        size = await self.size(cid)
        self.keep(text, size, kind="user", replicas=replicas)
        await self.announce(text, size, replica=False)
        if self.dir is not None:
            if replicas > 1:
                await self.dir.request_pin(text, replicas, time.time())
            else:
                await self.dir.cancel_pin(text)
            self._reconcile_soon()
        return PinAnswer(cid=text, size=size, replicas=replicas)

    async def unpin(self, cid_text: str) -> UnpinAnswer:
        """Release this node's pin and its replication request; the blocks go at the next GC."""
        cid = str(parse_cid(cid_text))
        had = self.drop_pin(cid)
        if self.dir is not None:
            with contextlib.suppress(Exception):
                await self.dir.cancel_pin(cid)
            if had is not None:
                with contextlib.suppress(Exception):
                    await self.dir.withdraw(cid)
        return UnpinAnswer(cid=cid, unpinned=had is not None)

    def gc(self) -> GcResult:
        """Remove the blocks no local pin reaches (blocking: run it in a thread)."""
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
            node = read_file_node(cid, self.store.get(cid))
            out.size, out.links, out.local = node.filesize, len(node.children), True
            out.complete = await asyncio.to_thread(self.store.is_complete, cid)
        except BlockNotFound:
            pass
        if self.dir is not None and self.replication is not None:
            now = time.time()
            records = await self.dir.providers(text)
            requests = await self.dir.pin_requests(text)
            # Records are written by other nodes: take only well-typed fields.
            out.providers = [
                ProviderInfo(
                    address=a,
                    alive=self.replication.alive(a, now),
                    size=r["size"] if type(r.get("size")) is int else None,
                    replica=r["replica"] if type(r.get("replica")) is bool else None,
                )
                for a, r in sorted(records.items())
            ]
            out.replicas_wanted = wanted_replicas(requests) or (1 if pin else 0)
            out.replicas_live = sum(1 for p in out.providers if p.alive)
        return out

    def ls(self) -> list[PinEntry]:
        """This node's pins, by CID."""
        return [PinEntry.model_validate({**p, "cid": c}) for c, p in sorted(self.pins.items())]

    async def stats(self) -> StatsAnswer:
        """The block store's size and the fetch and local-socket counters."""
        store = StoreStats(**await asyncio.to_thread(self.store.stats))
        return StatsAnswer(store=store, pins=len(self.pins), **self.counters)
