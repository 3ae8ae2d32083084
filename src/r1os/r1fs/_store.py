"""The block store: blocks appended to a few large pack files and found through an index.

A file per block made the file system's create + rename the price of every block added or fetched
(30-800 µs per file on the disks measured, as much as hashing the block). Here a new block costs one
`pwrite` at an offset reserved under a lock, so threads write side by side, then one fixed-size record
appended to the pack's index file. Readers find blocks only through the in-memory index, which gets
the entry after the bytes are written: a block is never seen half written.

On disk, under the store's folder:

    packs/000001.pack   block bytes back to back, nothing else
    packs/000001.idx    49-byte records: codec (1), sha-256 digest (32), offset (8), length (4),
                        crc32 of those 45 bytes (4); length 0xFFFFFFFF is a tombstone (block removed)

On open the index files are read in pack order (a later record wins); a torn last record, left by a
crash while appending, is cut off, and a record whose crc or bounds are wrong is skipped and logged.
Removed blocks leave dead bytes; GC deletes a pack with nothing live in it and compacts a pack that is
mostly dead (its live blocks are copied to the current pack, then it is deleted).

An import or a fetch writes blocks that no root reaches yet. It does so through a `Hold` (`holding()`):
every block it writes, or relies on finding here, joins the hold's set under the store's lock, and GC
never removes a held block. So GC runs while uploads stay open, however slow, and removes everything
else; a hold costs a set of the blocks its writer touched, and ends with it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from r1os.r1fs._dag import (
    MAX_BLOCK_SIZE,
    RAW,
    Cid,
    DagLimits,
    FileNode,
    parse_cid,
    read_dag_node,
    read_file_node,
    too_many_refs,
    verify_block,
)
from r1os.r1fs._errors import BadCid, BlockNotFound, CorruptBlock, DagRefused, R1fsError, StoreBusy

log = logging.getLogger("r1os.r1fs.store")

_RECORD = struct.Struct("<B32sQI")  # codec, digest, offset, length
_CRC = struct.Struct("<I")
RECORD_SIZE = _RECORD.size + _CRC.size
_GONE = 0xFFFFFFFF
#: A pack is closed for new blocks once it holds this many bytes.
PACK_SIZE = 1 << 30
#: Decoded file nodes kept (`BlockStore.file_node`): at most ~30 KB each.
NODE_CACHE = 64


def _record(codec: int, digest: bytes, offset: int, length: int) -> bytes:
    body = _RECORD.pack(codec, digest, offset, length)
    return body + _CRC.pack(zlib.crc32(body))


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    n = os.pwrite(fd, data, offset)
    if n < len(data):  # short writes are rare (signals, a full disk): finish the rest or raise
        view = memoryview(data)[n:]
        while view:
            k = os.pwrite(fd, view, offset + len(data) - len(view))
            view = view[k:]


@dataclass(frozen=True)
class GcResult:
    kept: int
    removed: int
    freed: int  # bytes of removed blocks (the disk space comes back as packs are deleted or compacted)
    busy: bool = False  # another collection was running: this one did nothing
    held: int = 0  # blocks not reachable from a root but held by an import or fetch under way


class Hold:
    """The blocks one import or fetch has written or counts on (see the module's docstring); GC leaves
    them alone until the hold ends. Made by `BlockStore.holding()`; safe to use from worker threads."""

    __slots__ = ("blocks", "complete", "store")

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.blocks: set[Cid] = set()
        # Roots whose whole DAG a fetch found or stored (every block checked against its CID as it
        # came) and handed to this hold before its own hold ended (`Fetcher.fetch(..., hold=)`): all
        # their blocks are here and in `blocks`, so a pin need not walk them again.
        self.complete: set[Cid] = set()

    def keep(self, cid: Cid) -> bool:
        """Hold `cid` from now on; True if it is here (held before looking, so GC cannot remove it
        between the answer and its use)."""
        with self.store._lock:
            self.blocks.add(cid)
            return cid in self.store._index

    def put(self, cid: Cid, data: bytes | memoryview, *, replace: bool = False) -> bool:
        """`BlockStore.put`, the block held first (also when it was already here)."""
        self.keep(cid)
        return self.store.put(cid, data, replace=replace)

    def put_replace(self, cid: Cid, data: bytes | memoryview) -> bool:
        """`put(..., replace=True)`: what an import uses (the bytes in hand are known good)."""
        return self.put(cid, data, replace=True)

    def put_verified(self, cid: Cid, data: bytes | memoryview) -> bool:
        verify_block(cid, data)
        return self.put(cid, data)


class RunWriter:
    """Leaves of one fetched run, written into pack space reserved for the whole run at once: a batch
    of leaves (`put_many`) costs their hashes, one `pwrite` and one short hold of the store's lock (to
    index and hold them), where `Hold.put_verified` takes the lock four times per leaf and appends to
    the index file under it. Eight fetch threads queued on that lock, and for the GIL after it, more
    than they hashed (a profile of a 200 MiB pull). The index records are appended when the run ends
    (`close`), before the fetch that wrote them ends, so before any pin counts on them; a crash in
    between loses fetched blocks, never a pinned one. Space reserved and not filled (a run cut short)
    is dead bytes, reclaimed like any by compaction. Made by `BlockStore.run_writer`; used by one
    thread."""

    __slots__ = ("end", "hold", "pack", "pos", "records", "store")

    def __init__(self, store: BlockStore, hold: Hold, total: int) -> None:
        self.store = store
        self.hold = hold
        self.records = bytearray()
        with store._lock:
            pack = store._current
            if pack.size + total > store.pack_size and pack.size:
                pack = store._current = store._new_pack(pack.number + 1)
            self.pos = pack.size
            pack.size += total
            pack.readers += 1  # GC must not delete the pack while the run writes into it
        self.pack = pack
        self.end = self.pos + total

    def put_verified(self, cid: Cid, data: bytes | memoryview) -> None:
        """Check the leaf against its CID (`CorruptBlock`, nothing written), write it, index it."""
        verify_block(cid, data)
        view = memoryview(data)
        self._write([(cid, view.nbytes)], view)

    def put_many(self, leaves: Sequence[tuple[Cid, int]], data: memoryview) -> int:
        """Leaves that follow one another in `data` (CID and size each, in order): each is checked
        against its CID, then the ones that match are written by one `pwrite` and indexed under one
        take of the store's lock. Returns how many were stored: all, or those before the first that
        does not match its CID (it and the leaves after it are not written). A fetch thread reading
        1 MiB at a time pays a write and a lock per MiB, not per leaf."""
        good = at = 0
        for cid, n in leaves:
            try:
                verify_block(cid, data[at : at + n])
            except CorruptBlock:
                break
            good += 1
            at += n
        if good:
            self._write(leaves[:good], data[:at])
        return good

    def _write(self, leaves: Sequence[tuple[Cid, int]], data: memoryview) -> None:
        """Write checked leaves (back to back in `data`) at the run's next offset and index them."""
        store, pack = self.store, self.pack
        total = data.nbytes
        if self.pos + total > self.end or any(n > MAX_BLOCK_SIZE for _, n in leaves):
            self._plain(leaves, data)  # not what the run reserved: the plain way
            return
        offset = self.pos
        _write_all(pack.data_fd, data, offset)
        self.pos += total
        with store._lock:
            moved = pack.dead  # compacted away meanwhile: written again below, the plain way
            at = offset
            for cid, n in leaves:
                self.hold.blocks.add(cid)
                if not moved and cid not in store._index:
                    store._index[cid] = (pack, at, n)
                    pack.live += 1
                    pack.live_bytes += n
                    self.records += _record(cid.codec, cid.digest, at, n)
                at += n
        if moved:
            self._plain(leaves, data)

    def _plain(self, leaves: Sequence[tuple[Cid, int]], data: memoryview) -> None:
        at = 0
        for cid, n in leaves:
            self.hold.put(cid, data[at : at + n])
            at += n

    def close(self) -> None:
        """Append the run's index records and let the pack go."""
        store, pack = self.store, self.pack
        try:
            with store._lock:
                if self.records and not pack.dead:
                    os.write(pack.idx_fd, self.records)
            self.records.clear()
        finally:
            store._release(pack)


class _Pack:
    """One pack file and its index; `readers` keeps its descriptors open while a read is under way."""

    __slots__ = ("data_fd", "dead", "idx_fd", "live", "live_bytes", "number", "path", "readers", "size")

    def __init__(self, folder: Path, number: int, readonly: bool) -> None:
        self.number = number
        self.path = folder / f"{number:06d}.pack"
        flags = (os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT) | os.O_CLOEXEC
        self.data_fd = os.open(self.path, flags, 0o644)
        self.idx_fd = os.open(self.path.with_suffix(".idx"), flags | (0 if readonly else os.O_APPEND), 0o644)
        self.size = os.fstat(self.data_fd).st_size  # new blocks go after whatever is there
        self.live = 0
        self.live_bytes = 0
        self.readers = 0
        self.dead = False  # deleted by GC: closed once the last reader is done

    def close(self) -> None:
        for fd in (self.data_fd, self.idx_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class BlockStore:
    """Content-addressed blocks in pack files; safe to use from several threads."""

    def __init__(
        self,
        root: Path,
        *,
        verify_reads: bool = False,
        fsync: bool = False,
        pack_size: int = PACK_SIZE,
        readonly: bool = False,
        limits: DagLimits | None = None,
    ) -> None:
        """`limits` bound the DAG walks (GC's, `missing`'s); default: `DagLimits()`."""
        limits = limits or DagLimits()
        self.root = root
        self.verify_reads = verify_reads
        self.fsync = fsync
        self.pack_size = pack_size
        self.readonly = readonly
        self._folder = root / "packs"
        self._folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = -1
        if not readonly:  # one writer per folder: two would both append at what they think is the end
            self._lock_fd = os.open(self._folder / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                raise StoreBusy(f"the block store in {root} is open for writing elsewhere") from None
        self._lock = threading.Lock()
        self._holds: list[Hold] = []
        self._gc_lock = threading.Lock()  # one collection at a time
        self.limits = limits
        self._index: dict[Cid, tuple[_Pack, int, int]] = {}
        self._nodes: OrderedDict[Cid, FileNode] = OrderedDict()  # decoded file nodes (`file_node`)
        self._nodes_lock = threading.Lock()
        self._packs: dict[int, _Pack] = {}
        self.closed = False  # set when the owner stops: background work on the store ends early
        self._load()
        self._current = self._packs[max(self._packs)] if self._packs else self._new_pack(1)
        if not readonly:
            self._migrate()

    # -- opening -------------------------------------------------------------------------------

    def _new_pack(self, number: int) -> _Pack:
        pack = _Pack(self._folder, number, self.readonly)
        self._packs[number] = pack
        if self.fsync and not self.readonly:
            fd = os.open(self._folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return pack

    def _load(self) -> None:
        """Read every index back, in pack order, into the in-memory index."""
        numbers = sorted(int(p.stem) for p in self._folder.glob("*.idx") if p.stem.isdigit())
        for number in numbers:
            pack = self._new_pack(number)
            raw = Path(pack.path.with_suffix(".idx")).read_bytes()
            whole = len(raw) - len(raw) % RECORD_SIZE
            if whole != len(raw) and not self.readonly:
                log.warning("r1fs store: %s ends in a torn record; cutting it off", pack.path.name)
                os.truncate(pack.path.with_suffix(".idx"), whole)
            bad = 0
            for pos in range(0, whole, RECORD_SIZE):
                body = raw[pos : pos + _RECORD.size]
                (crc,) = _CRC.unpack_from(raw, pos + _RECORD.size)
                codec, digest, offset, length = _RECORD.unpack(body)
                if zlib.crc32(body) != crc or codec not in (RAW, 0x70):
                    bad += 1
                    continue
                cid = Cid(codec, digest)
                if length == _GONE:
                    self._forget(cid)
                    continue
                if length > MAX_BLOCK_SIZE or offset + length > pack.size:
                    bad += 1  # the bytes it names are not in the pack (cut short by a crash or by hand)
                    continue
                self._forget(cid)
                self._index[cid] = (pack, offset, length)
                pack.live += 1
                pack.live_bytes += length
            if bad:
                log.warning("r1fs store: skipped %d bad index records in %s", bad, pack.path.name)

    def _forget(self, cid: Cid) -> tuple[_Pack, int, int] | None:
        old = self._index.pop(cid, None)
        if old is not None:
            old[0].live -= 1
            old[0].live_bytes -= old[2]
        return old

    def _migrate(self) -> None:
        """Move blocks of the earlier one-file-per-block layout (`<root>/<2 chars>/<cid>`) into packs."""
        moved = 0
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for entry in shard.iterdir():
                try:
                    cid = parse_cid(entry.name)
                    data = entry.read_bytes()
                    verify_block(cid, data)
                except (BadCid, CorruptBlock, OSError):
                    pass  # temp files, rotten copies: not worth keeping
                else:
                    self.put(cid, data)
                    moved += 1
                entry.unlink()
            shard.rmdir()
        if moved:
            log.info("r1fs store: moved %d blocks from block files into packs", moved)

    def close(self) -> None:
        with self._lock:
            if self._lock_fd < 0 and self.closed:
                return
            self.closed = True
            for pack in self._packs.values():
                if pack.readers:
                    pack.dead = True  # the last reader closes it
                else:
                    pack.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _writable(self) -> None:
        if self.readonly:
            raise R1fsError(f"the block store in {self.root} was opened read-only")
        if self.closed:
            raise R1fsError(f"the block store in {self.root} is closed")

    # -- blocks --------------------------------------------------------------------------------

    def has(self, cid: Cid) -> bool:
        return cid in self._index

    def put(self, cid: Cid, data: bytes | memoryview, *, replace: bool = False) -> bool:
        """Store a block (trusted: the caller computed or verified `cid`); False if it was there.

        With `replace` a copy already here is compared with `data` and written anew if it differs: an
        import has the right bytes in hand, and a copy that rotted on disk must not be kept."""
        n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        if n > MAX_BLOCK_SIZE:
            raise CorruptBlock(f"block {cid} is {n} bytes, more than any valid block ({MAX_BLOCK_SIZE})")
        self._writable()
        if cid in self._index:
            if not replace:
                return False
            with contextlib.suppress(CorruptBlock, BlockNotFound):
                if self.get(cid, verify=False) == data:
                    return False
        self._append(cid, data, n)
        return True

    def _append(self, cid: Cid, data: bytes | memoryview, n: int) -> None:
        """Write the block at the end of the current pack, then index it (the new copy wins)."""
        with self._lock:
            pack = self._current
            if pack.size + n > self.pack_size and pack.size:
                pack = self._current = self._new_pack(pack.number + 1)
            offset = pack.size
            pack.size += n
            pack.readers += 1  # GC must not delete the pack under this write
        try:
            _write_all(pack.data_fd, data, offset)
            if self.fsync:
                os.fdatasync(pack.data_fd)
            with self._lock:
                deleted = pack.dead  # compacted away while this write ran: write it again below
                if not deleted:
                    os.write(pack.idx_fd, _record(cid.codec, cid.digest, offset, n))
                    if self.fsync:
                        os.fdatasync(pack.idx_fd)
                    self._forget(cid)
                    self._index[cid] = (pack, offset, n)
                    pack.live += 1
                    pack.live_bytes += n
        finally:
            self._release(pack)
        if deleted and not self.closed:
            self._append(cid, data, n)

    def file_node(self, cid: Cid) -> FileNode:
        """`read_file_node` of a local block, decoded once while it is among the last `NODE_CACHE`
        (a pull walks the same interior nodes three times: the fetch, the pin's check, the provider's
        plan of every run; 174 links take ~2 ms to decode). Not cached with `verify_reads`: then
        every read is checked."""
        node = self._nodes.get(cid)
        if node is not None and cid in self._index:
            with contextlib.suppress(KeyError), self._nodes_lock:
                self._nodes.move_to_end(cid)
            return node
        node = read_file_node(cid, self.get(cid))
        self.remember(cid, node)
        return node

    def remember(self, cid: Cid, node: FileNode) -> None:
        """Keep the decoded file node of block `cid` (its bytes were checked against it)."""
        if self.verify_reads or cid.codec == RAW:
            return
        with self._nodes_lock:
            self._nodes[cid] = node
            while len(self._nodes) > NODE_CACHE:
                self._nodes.popitem(last=False)

    def run_writer(self, hold: Hold, total: int) -> RunWriter | None:
        """A `RunWriter` for leaves of `total` bytes that a fetch will write one after the other,
        under `hold`; None when each block must be synced (`fsync`): then `Hold.put_verified`."""
        self._writable()
        if self.fsync:
            return None
        return RunWriter(self, hold, total)

    def put_verified(self, cid: Cid, data: bytes | memoryview) -> bool:
        """Store a block from an untrusted source, after checking its hash (safe to call from worker
        threads: hashing and the file calls release the GIL)."""
        verify_block(cid, data)
        return self.put(cid, data)

    def _acquire(self, cid: Cid) -> tuple[_Pack, int, int]:
        with self._lock:
            where = self._index.get(cid)
            if where is None:
                raise BlockNotFound(f"block {cid} is not in the local store")
            where[0].readers += 1
            return where

    def _release(self, pack: _Pack) -> None:
        with self._lock:
            pack.readers -= 1
            if pack.dead and not pack.readers:
                pack.close()

    def get(self, cid: Cid, *, verify: bool | None = None) -> bytes:
        pack, offset, length = self._acquire(cid)
        try:
            data = os.pread(pack.data_fd, length, offset)
        finally:
            self._release(pack)
        if len(data) != length:
            log.warning("r1fs store: block %s is cut short in %s; removing it", cid, pack.path.name)
            self.remove(cid)
            raise CorruptBlock(f"block {cid} is cut short on disk")
        if self.verify_reads if verify is None else verify:
            try:
                verify_block(cid, data)
            except CorruptBlock:
                log.warning("r1fs store: block %s is corrupt on disk; removing it", cid)
                self.remove(cid)
                raise
        return data

    def copy_to(self, cid: Cid, fd: int, offset: int) -> int:
        """Write the block into file `fd` at `offset`, copied by the kernel where it can
        (`copy_file_range`); returns the bytes written. With `verify_reads` it is read and checked."""
        if self.verify_reads:
            data = self.get(cid)
            n = os.pwrite(fd, data, offset)
            while n < len(data):
                n += os.pwrite(fd, memoryview(data)[n:], offset + n)
            return n
        pack, start, length = self._acquire(cid)
        try:
            done = 0
            try:
                while done < length:
                    k = os.copy_file_range(pack.data_fd, fd, length - done, start + done, offset + done)
                    if k == 0:
                        break  # the pack is shorter than its index says
                    done += k
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                data = os.pread(pack.data_fd, length - done, start + done)  # no kernel copy here
                while data:
                    k = os.pwrite(fd, data, offset + done)
                    done += k
                    data = data[k:]
        finally:
            self._release(pack)
        return done

    def send_to(self, cid: Cid, sock: socket.socket, skip: int = 0, count: int | None = None) -> int:
        """Send bytes [skip, skip+count) of the block down `sock`, copied by the kernel from the pack
        (`sendfile`: no pass through Python); returns the bytes sent. The pack stays open meanwhile.
        With `verify_reads` the block is read and checked first, then sent from memory. On a blocking
        socket with a send timeout (`SO_SNDTIMEO`), a peer that stops reading raises `TimeoutError`."""
        if self.verify_reads:
            data = memoryview(self.get(cid))
            part = data[skip : len(data) if count is None else skip + count]
            sock.sendall(part)
            return len(part)
        pack, start, length = self._acquire(cid)
        try:
            count = length - skip if count is None else min(count, length - skip)
            done = 0
            while done < count:
                try:
                    n = os.sendfile(sock.fileno(), pack.data_fd, start + skip + done, count - done)
                except BlockingIOError:  # SO_SNDTIMEO passed with nothing sent
                    raise TimeoutError(f"the peer read nothing of block {cid} in time") from None
                if n == 0:
                    raise CorruptBlock(f"block {cid} is cut short on disk")
                done += n
            return done
        finally:
            self._release(pack)

    def remove(self, cid: Cid) -> None:
        self._writable()
        with self._lock:
            old = self._forget(cid)
            if old is not None and not old[0].dead:
                os.write(old[0].idx_fd, _record(cid.codec, cid.digest, 0, _GONE))

    def size_of(self, cid: Cid) -> int | None:
        where = self._index.get(cid)
        return None if where is None else where[2]

    def locate(self, cid: Cid) -> tuple[Path, int, int] | None:
        """Where a block's bytes are: (pack file, offset, length), for tools and tests."""
        where = self._index.get(cid)
        return None if where is None else (where[0].path, where[1], where[2])

    def all(self) -> Iterator[tuple[Cid, int]]:
        """Every block and its size."""
        with self._lock:
            items = [(cid, where[2]) for cid, where in self._index.items()]
        yield from items

    # -- DAGs ----------------------------------------------------------------------------------

    def _walk(
        self, root: Cid, *, verify: bool, hold: Hold | None = None, declared: bool = True
    ) -> Iterator[tuple[Cid, bool]]:
        """Each distinct block of the DAG under `root` once, as (cid, here), in depth-first order;
        only what is here is looked into. With `verify` every block read is re-hashed (a corrupt one
        is not here); raw leaves are read only then. With `hold` each block is held before it is
        looked at. Bounded by `limits` (depth, distinct blocks; with `declared`, the root's declared
        size too): a DAG that links one block many times costs one visit of it, not one per link."""
        seen = {root}
        stack = [(root, 0)]
        tree = False  # a folder's root: the bound on blocks is a tree's
        while stack:
            cid, depth = stack.pop()
            here = hold.keep(cid) if hold is not None else cid in self._index
            if not here or (cid.codec == RAW and not verify):
                yield cid, here
                continue
            node = None if verify else self._nodes.get(cid)  # a file's node, decoded before
            if node is None:
                try:
                    data = self.get(cid, verify=verify)
                except (CorruptBlock, BlockNotFound):
                    yield cid, False
                    continue
                if cid.codec != RAW:
                    node = read_dag_node(cid, data)  # a file's node or a folder's: a pin keeps the whole tree
            yield cid, True
            if node is None:
                continue
            tree = tree or (depth == 0 and node.folder)
            if depth == 0 and declared:
                self.limits.check_root(cid, node)
            if node.children:
                self.limits.check_depth(root, depth + 1, tree=tree)
            for child, _ in reversed(node.children):
                if child not in seen:
                    seen.add(child)
                    stack.append((child, depth + 1))
            self.limits.check_blocks(root, len(seen), tree=tree)

    def dag_blocks(self, root: Cid) -> Iterator[Cid]:
        """Every distinct block of the file under `root` that the store can reach (raw leaves are not
        read); `BlockNotFound` at the first interior block that is absent."""
        for cid, here in self._walk(root, verify=False):
            if not here:
                raise BlockNotFound(f"block {cid} is not in the local store")
            yield cid

    def missing(self, root: Cid, *, verify: bool | None = None, hold: Hold | None = None) -> list[Cid]:
        """Blocks of the DAG under `root` that are absent (walks only what is present); with `verify`
        (default: the store's `verify_reads`) every block is re-hashed and a corrupt one counts as absent.
        With `hold`, every block found is held (a pin about to be recorded counts on them)."""
        verify = self.verify_reads if verify is None else verify
        return [cid for cid, here in self._walk(root, verify=verify, hold=hold) if not here]

    def refs(self, root: Cid) -> int:
        """The block references a full read of the file under `root` follows, repeats included,
        computed once per distinct interior block (raw leaves are not read); `DagRefused` as soon as
        they pass what the root's declared size allows (`DagLimits.max_refs`). The blocks must be here."""
        if root.codec == RAW:
            return 0
        top = read_file_node(root, self.get(root))
        self.limits.check_root(root, top)
        budget = self.limits.max_refs(top.filesize)
        memo: dict[Cid, int] = {}

        def count(node: FileNode, depth: int) -> int:
            if node.children:
                self.limits.check_depth(root, depth + 1)
            total = 0
            for child, _ in node.children:
                if child.codec != RAW and child not in memo:
                    memo[child] = count(read_file_node(child, self.get(child)), depth + 1)
                    self.limits.check_blocks(root, len(memo))
                total += 1 + memo.get(child, 0)
                if total > budget:
                    raise too_many_refs(root)
            return total

        return count(top, 0)

    def is_complete(self, root: Cid, *, verify: bool | None = None) -> bool:
        try:
            return not self.missing(root, verify=verify)
        except CorruptBlock:
            return False

    # -- writers and GC ------------------------------------------------------------------------

    @contextlib.contextmanager
    def holding(self) -> Iterator[Hold]:
        """A hold for an import or fetch (see `Hold`): GC keeps its blocks until the block ends."""
        hold = Hold(self)
        with self._lock:
            self._holds.append(hold)
        try:
            yield hold
        finally:
            with self._lock:
                self._holds.remove(hold)

    def _held(self, cid: Cid) -> bool:
        return any(cid in h.blocks for h in self._holds)  # under self._lock

    def gc(self, roots: Iterable[Cid], *, compact_below: float = 0.5) -> GcResult:
        """Remove blocks neither reachable from `roots` nor held by an import or fetch under way (it
        does not wait for them); then delete packs with nothing live and compact those whose live bytes
        are below `compact_below` of their size. One collection at a time: a second caller gets `busy`."""
        self._writable()
        if not self._gc_lock.acquire(blocking=False):
            return GcResult(0, 0, 0, busy=True)
        try:
            return self._gc(roots, compact_below)
        finally:
            self._gc_lock.release()

    def _gc(self, roots: Iterable[Cid], compact_below: float) -> GcResult:
        live: set[Cid] = set()
        for root in roots:
            if self.closed:
                return GcResult(len(live), 0, 0)
            try:
                # A pin's blocks are kept whatever its root declares: GC walks each block once anyway.
                for cid, here in self._walk(root, verify=False, declared=False):
                    if here:
                        live.add(cid)
            except (CorruptBlock, DagRefused) as exc:
                log.warning("gc: root %s cannot be walked (%s); keeping what it reaches", root, exc)
        removed = freed = held = 0
        for cid, size in list(self.all()):
            if cid in live:
                continue
            with self._lock:
                if self.closed:
                    break
                if self._held(cid):  # an upload or fetch wrote or counts on it: not garbage yet
                    held += 1
                    continue
                old = self._forget(cid)
                if old is not None and not old[0].dead:
                    os.write(old[0].idx_fd, _record(cid.codec, cid.digest, 0, _GONE))
            if old is not None:
                removed += 1
                freed += size
        self._compact(compact_below)
        return GcResult(len(live), removed, freed, held=held)

    def _compact(self, below: float) -> None:
        with self._lock:  # a mostly dead current pack is compacted too: new blocks go to a new one
            cur = self._current
            if cur.size and cur.live_bytes < below * cur.size:
                self._current = self._new_pack(cur.number + 1)
        for pack in list(self._packs.values()):
            if pack is self._current or self.closed:
                continue
            if pack.live and pack.live_bytes >= below * pack.size:
                continue
            with self._lock:
                moving = [cid for cid, where in self._index.items() if where[0] is pack]
            for cid in moving:
                try:
                    data = self.get(cid)
                except (BlockNotFound, CorruptBlock):
                    continue
                with self._lock:
                    still_there = self._index.get(cid, (None,))[0] is pack
                if still_there:
                    self._append(cid, data, len(data))
            with self._lock:
                if pack.live:  # a block landed here meanwhile (cannot, as it is not current): keep it
                    continue
                del self._packs[pack.number]
                pack.dead = True
                if not pack.readers:
                    pack.close()
            if self.fsync:
                os.fsync(self._current.data_fd)
                os.fsync(self._current.idx_fd)
            for path in (pack.path, pack.path.with_suffix(".idx")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            log.info("r1fs store: pack %s deleted (%d live blocks moved)", pack.path.name, len(moving))

    def stats(self) -> dict[str, int]:
        with self._lock:
            blocks = len(self._index)
            live = sum(p.live_bytes for p in self._packs.values())
            disk = sum(p.size for p in self._packs.values())
        return {"blocks": blocks, "bytes": live, "packs": len(self._packs), "pack_bytes": disk}
