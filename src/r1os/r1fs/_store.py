"""The block store: one file per block under `<root>/<shard>/<cid>`, written atomically.

Blocks are immutable and named by their CID, so a write is a temp file plus `rename` (readers never see
half a block, and two writers of the same block agree). Shards are two characters of the CID's digest, so
no folder grows past a few thousand files for a store of ~1M blocks. Garbage collection marks every block
reachable from the roots it is given and deletes the rest; it refuses to run while an import or a fetch
is writing, since those blocks are not yet reachable from any root.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from r1os.r1fs._dag import RAW, Cid, parse_cid, read_file_node, verify_block
from r1os.r1fs._errors import BadCid, BlockNotFound, CorruptBlock

log = logging.getLogger("r1os.r1fs.store")

_TMP = ".tmp-"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def _read_all(fd: int) -> bytes:
    """A whole block file, in one read of its size (block files never change once renamed in)."""
    size = os.fstat(fd).st_size
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts = [data]  # a short read: go on to the end
    while more := os.read(fd, 1 << 20):
        parts.append(more)
    return b"".join(parts)


@dataclass(frozen=True)
class GcResult:
    kept: int
    removed: int
    freed: int  # bytes
    busy: bool = False


class BlockStore:
    """Content-addressed block files; safe to use from several threads."""

    def __init__(self, root: Path, *, verify_reads: bool = False, fsync: bool = False) -> None:
        self.root = root
        self.verify_reads = verify_reads
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(root)
        self._shards: set[str] = set()
        self._lock = threading.Lock()
        self._writers = 0
        self._tmp_seq = itertools.count()  # next() is atomic under the GIL: no lock per block
        self._tag = f"{id(self):x}"  # two stores on one folder in one process never share a temp name
        self.closed = False  # set when the owner stops: background work on the store ends early

    # -- paths ---------------------------------------------------------------------------------

    def path(self, cid: Cid) -> Path:
        name = cid.text
        return self.root / name[-3:-1] / name

    def _dir_for(self, name: str) -> str:
        shard = name[-3:-1]
        d = f"{self._root}/{shard}"
        if shard not in self._shards:
            os.makedirs(d, exist_ok=True)
            self._shards.add(shard)
        return d

    # -- blocks --------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create all 1024 shard folders at once: a node does it in the background when it starts, so
        its first large fetch does not pay for a mkdir per block (slow on some file systems)."""
        for a in _B32:
            for b in _B32:
                if self.closed:
                    return
                if a + b not in self._shards:
                    (self.root / (a + b)).mkdir(exist_ok=True)
                    self._shards.add(a + b)

    def has(self, cid: Cid) -> bool:
        name = cid.text
        return os.path.exists(f"{self._root}/{name[-3:-1]}/{name}")

    def put(self, cid: Cid, data: bytes | memoryview, *, replace: bool = False) -> bool:
        """Store a block (trusted: the caller computed or verified `cid`); False if it was there.

        With `replace` an existing file is rewritten anyway: an import has the right bytes in hand, and
        rewriting is the cheapest way to be sure a copy that rotted on disk is not kept.

        Four system calls per new block (create a unique temp file, one write, close, rename), with
        plain string paths: on most file systems creating the file is what costs, not the bytes."""
        name = cid.text
        d = self._dir_for(name)
        final = f"{d}/{name}"
        if not replace and os.path.exists(final):
            return False
        tmp = f"{d}/{_TMP}{os.getpid()}-{self._tag}-{next(self._tmp_seq)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            n = os.write(fd, data)
            if n < len(data):  # short writes are rare (signals, full disks): finish the rest
                view = memoryview(data)[n:]
                while view:
                    view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, final)
        return True

    def put_verified(self, cid: Cid, data: bytes | memoryview) -> bool:
        """Store a block from an untrusted source, after checking its hash (safe to call from worker
        threads: hashing and the file calls release the GIL)."""
        verify_block(cid, data)
        return self.put(cid, data)

    def get(self, cid: Cid, *, verify: bool | None = None) -> bytes:
        name = cid.text
        try:
            fd = os.open(f"{self._root}/{name[-3:-1]}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid} is not in the local store") from None
        try:
            data = _read_all(fd)
        finally:
            os.close(fd)
        if self.verify_reads if verify is None else verify:
            try:
                verify_block(cid, data)
            except CorruptBlock:
                log.warning("block %s is corrupt on disk; removing it", cid)
                self.remove(cid)
                raise
        return data

    def remove(self, cid: Cid) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(cid).unlink()

    def size_of(self, cid: Cid) -> int | None:
        try:
            return self.path(cid).stat().st_size
        except FileNotFoundError:
            return None

    def all(self) -> Iterator[tuple[Cid, Path]]:
        """Every block file (skipping temp files and names that are not CIDs)."""
        for shard in os.scandir(self.root):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.startswith(_TMP):
                    continue
                try:
                    yield parse_cid(entry.name), Path(entry.path)
                except BadCid:
                    continue

    # -- DAGs ----------------------------------------------------------------------------------

    def dag_blocks(self, root: Cid) -> Iterator[Cid]:
        """Every block of the file under `root` that the store can reach (raw leaves are not read)."""
        stack = [root]
        while stack:
            cid = stack.pop()
            yield cid
            if cid.codec == RAW:
                continue
            node = read_file_node(cid, self.get(cid))
            stack.extend(c for c, _ in reversed(node.children))

    def missing(self, root: Cid, *, verify: bool | None = None) -> list[Cid]:
        """Blocks of the DAG under `root` that are absent (walks only what is present); with `verify`
        (default: the store's `verify_reads`) every block is re-hashed and a corrupt one counts as absent."""
        verify = self.verify_reads if verify is None else verify
        out: list[Cid] = []
        stack = [root]
        while stack:
            cid = stack.pop()
            if not self.has(cid):
                out.append(cid)
                continue
            if cid.codec == RAW and not verify:
                continue
            try:
                data = self.get(cid, verify=verify)
            except (CorruptBlock, BlockNotFound):
                out.append(cid)
                continue
            if cid.codec != RAW:
                stack.extend(c for c, _ in read_file_node(cid, data).children)
        return out

    def is_complete(self, root: Cid, *, verify: bool | None = None) -> bool:
        try:
            return not self.missing(root, verify=verify)
        except CorruptBlock:
            return False

    # -- writers and GC ------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Mark an import or fetch in progress, so GC leaves its not-yet-rooted blocks alone."""
        with self._lock:
            self._writers += 1
        try:
            yield
        finally:
            with self._lock:
                self._writers -= 1

    def gc(self, roots: Iterable[Cid], *, tmp_age: float = 3600.0) -> GcResult:
        """Delete blocks not reachable from `roots` (and stale temp files); skipped while writing."""
        with self._lock:
            if self._writers:
                return GcResult(0, 0, 0, busy=True)
        live: set[Cid] = set()
        for root in roots:
            try:
                for cid in self.dag_blocks(root):
                    live.add(cid)
            except (BlockNotFound, CorruptBlock) as exc:
                log.warning("gc: root %s is incomplete (%s); keeping what it reaches", root, exc)
        removed = freed = 0
        now = time.time()
        for shard in os.scandir(self.root):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.startswith(_TMP):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > tmp_age:
                            os.unlink(entry.path)
                    continue
                try:
                    cid = parse_cid(entry.name)
                except BadCid:
                    continue
                if cid in live:
                    continue
                with self._lock:
                    if self._writers:  # an import started meanwhile: stop here, keep the rest
                        return GcResult(len(live), removed, freed, busy=True)
                with contextlib.suppress(FileNotFoundError):
                    freed += entry.stat().st_size
                    os.unlink(entry.path)
                    removed += 1
        return GcResult(len(live), removed, freed)

    def stats(self) -> dict[str, int]:
        count = total = 0
        for _cid, path in self.all():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
                count += 1
        return {"blocks": count, "bytes": total}
