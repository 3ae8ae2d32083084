"""Streaming import: bytes in, 256 KiB raw leaves and a balanced dag-pb tree out, one chunk at a time.

The balanced layout (kubo's and the JS importer's) is the same as grouping the leaves 174 at a time into
nodes, those nodes 174 at a time, and so on, with the last group of each level possibly short. So the
builder keeps one list of pending links per level and closes a node as soon as a level holds 174 links;
at the end it closes what is left from the bottom up. Memory is a few chunks (the hashing window) plus at
most 174 links per level.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import deque
from collections.abc import AsyncIterable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from r1os.r1fs._dag import CHUNK_SIZE, DAG_PB, MAX_LINKS, RAW, Cid, Link, encode_file_node
from r1os.r1fs._errors import TooLarge

PutBlock = Callable[[Cid, bytes], object]
Chunk = bytes | memoryview


@dataclass(frozen=True)
class ImportResult:
    cid: Cid
    size: int  # file bytes
    blocks: int  # blocks created (leaves and nodes)
    dag_size: int  # bytes of all blocks (the root link's Tsize)


def default_workers() -> int:
    """Threads that hash (and store) leaves during an import: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


class DagBuilder:
    """Feed whole chunks in order with `add_chunk`, then `finish` gives the root. Not thread-safe.

    With `workers` > 0 the leaves are hashed and handed to `put` in a pool of threads (sha256 and file
    writes release the GIL), at most `window` chunks ahead of the links, which are still made strictly
    in file order: the CIDs are the same, only the cores do the work side by side. `close` (or `finish`)
    stops the pool."""

    def __init__(
        self,
        put: PutBlock | None = None,
        *,
        max_links: int = MAX_LINKS,
        workers: int = 0,
        window: int | None = None,
    ) -> None:
        if max_links < 2:
            raise ValueError("a node needs room for at least 2 links")
        self._put = put
        self._max_links = max_links
        self._levels: list[list[Link]] = [[]]
        self.size = 0
        self.blocks = 0
        self._leaves = 0
        self._workers = workers
        self._window = window if window is not None else 2 * workers + 2
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[Cid], int]] = deque()

    def _leaf(self, chunk: Chunk) -> Cid:
        cid = Cid(RAW, hashlib.sha256(chunk).digest())
        if self._put is not None:
            self._put(cid, chunk)  # type: ignore[arg-type]  # bytes whenever there is a `put`
        return cid

    def _link_leaf(self, cid: Cid, n: int) -> None:
        self.size += n
        self.blocks += 1
        self._leaves += 1
        self._push(0, Link(cid, n, n))

    def add_chunk(self, chunk: Chunk) -> None:
        if self._workers <= 0:
            self._link_leaf(self._leaf(chunk), len(chunk))
            return
        self.submit(chunk)
        if self.full:
            self.collect(wait=True)
        else:
            self.collect()

    # -- the pipelined form (used directly by `import_stream`, which must not block its loop) --

    def submit(self, chunk: Chunk) -> None:
        """Queue a chunk for hashing (and `put`) in the pool; `collect` links it in order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(1, self._workers), thread_name_prefix="r1fs-import")
        self._pending.append((self._pool.submit(self._leaf, chunk), len(chunk)))

    @property
    def full(self) -> bool:
        """As many chunks in flight as the window allows: wait for `oldest()` before submitting more."""
        return len(self._pending) >= self._window

    def oldest(self) -> Future[Cid] | None:
        return self._pending[0][0] if self._pending else None

    def collect(self, *, wait: bool = False, all: bool = False) -> None:
        """Link the leaves whose hashing is done, in file order; `wait` blocks for the oldest one,
        `all` for every one. A failed `put` (full disk, ...) raises here."""
        while self._pending:
            fut, n = self._pending[0]
            if not (all or wait or fut.done()):
                return
            cid = fut.result()
            self._pending.popleft()
            wait = False
            self._link_leaf(cid, n)

    def close(self) -> None:
        """Stop the pool (waiting for the chunks already handed to it); safe to call twice."""
        if self._pool is not None:
            for fut, _n in self._pending:
                fut.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

    def _node(self, links: list[Link]) -> Link:
        block = encode_file_node(links)
        cid = Cid(DAG_PB, hashlib.sha256(block).digest())
        if self._put is not None:
            self._put(cid, block)
        self.blocks += 1
        return Link(cid, len(block) + sum(x.tsize for x in links), sum(x.filesize for x in links))

    def _push(self, level: int, link: Link) -> None:
        if level == len(self._levels):
            self._levels.append([])
        self._levels[level].append(link)
        if len(self._levels[level]) == self._max_links:
            full, self._levels[level] = self._levels[level], []
            self._push(level + 1, self._node(full))

    def finish(self) -> ImportResult:
        """Close the open nodes bottom-up; a one-chunk file (the empty file too) is its raw leaf."""
        try:
            self.collect(all=True)
        finally:
            self.close()
        if self._leaves == 0:
            self._link_leaf(self._leaf(b""), 0)
        level = 0
        while True:
            pending = self._levels[level]
            higher = any(self._levels[level + 1 :])
            if len(pending) == 1 and not higher:
                root = pending[0]
                return ImportResult(root.cid, root.filesize, self.blocks, root.tsize)
            if pending:
                self._levels[level] = []
                self._push(level + 1, self._node(pending))
            level += 1


def import_file(path: Path | str, put: PutBlock | None = None, *, workers: int | None = None) -> ImportResult:
    """Import a local file (blocking); with `put=None` only the CID is computed, like `--only-hash`.

    `workers` threads hash (and store) the chunks while the next ones are read (default: one per core,
    at most 4; 0 does it all in the calling thread)."""
    with open(path, "rb", buffering=0) as fh:
        return import_fileobj(fh, put, workers=workers)


def _read_chunk(fh: BinaryIO) -> bytes:
    chunk = fh.read(CHUNK_SIZE)
    while chunk and len(chunk) < CHUNK_SIZE:  # pipes and sockets may return short reads
        more = fh.read(CHUNK_SIZE - len(chunk))
        if not more:
            break
        chunk += more
    return chunk


def import_fileobj(fh: BinaryIO, put: PutBlock | None = None, *, workers: int | None = None) -> ImportResult:
    builder = DagBuilder(put, workers=default_workers() if workers is None else workers)
    try:
        while chunk := _read_chunk(fh):
            builder.add_chunk(chunk)
            if len(chunk) < CHUNK_SIZE:
                break
        return builder.finish()
    finally:
        builder.close()


def _pread_chunk(fd: int, pos: int) -> bytes:
    """A whole chunk at `pos` (shorter only at the end): a short read must not move a chunk boundary."""
    chunk = os.pread(fd, CHUNK_SIZE, pos)
    while chunk and len(chunk) < CHUNK_SIZE:
        more = os.pread(fd, CHUNK_SIZE - len(chunk), pos + len(chunk))
        if not more:
            break
        chunk += more
    return chunk


def import_fd(
    fd: int,
    put: PutBlock | None = None,
    *,
    workers: int | None = None,
    max_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import an open file by position (`pread`), leaving its offset alone: the descriptor may be
    shared with the process that opened it. Reads to the end as it is now."""
    builder = DagBuilder(put, workers=default_workers() if workers is None else workers)
    try:
        pos = 0
        while chunk := _pread_chunk(fd, pos):
            pos += len(chunk)
            if max_size is not None and pos > max_size:
                raise TooLarge(f"file exceeds the limit of {max_size} bytes")
            builder.add_chunk(chunk)
            if progress is not None:
                progress(len(chunk))
        return builder.finish()
    finally:
        builder.close()


def import_bytes(data: bytes, put: PutBlock | None = None, *, workers: int | None = None) -> ImportResult:
    """Import bytes in memory (a file of one chunk is done in the calling thread: nothing to overlap)."""
    if workers is None:
        workers = default_workers() if len(data) > 2 * CHUNK_SIZE else 0
    builder = DagBuilder(put, workers=workers)
    try:
        view = memoryview(data)
        for off in range(0, len(data), CHUNK_SIZE):
            # `put` may keep the block, so it gets bytes of its own; hashing alone reads in place
            builder.add_chunk(
                data[off : off + CHUNK_SIZE] if put is not None else view[off : off + CHUNK_SIZE]
            )
        return builder.finish()
    finally:
        builder.close()


async def rechunk(source: AsyncIterable[bytes], max_size: int | None = None) -> AsyncIterable[bytes]:
    """Turn pieces of any size into exact 256 KiB chunks (the last one shorter); enforce `max_size`.

    Each byte is copied once at most: whole pieces are joined into a chunk, only the piece that
    straddles a chunk boundary is split, and a piece that is a whole chunk passes as it is."""
    pieces: list[bytes] = []
    held = total = 0
    async for piece in source:
        if not piece:
            continue
        total += len(piece)
        if max_size is not None and total > max_size:
            raise TooLarge(f"upload exceeds the limit of {max_size} bytes")
        piece = bytes(piece)
        while held + len(piece) >= CHUNK_SIZE:
            cut = CHUNK_SIZE - held
            if not pieces and cut == len(piece):
                yield piece
            else:
                pieces.append(piece[:cut])
                yield b"".join(pieces)
            pieces, held = [], 0
            piece = piece[cut:]
        if piece:
            pieces.append(piece)
            held += len(piece)
    if held:
        yield b"".join(pieces)


async def import_stream(
    source: AsyncIterable[bytes],
    put: PutBlock | None = None,
    *,
    max_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImportResult:
    """Import an async byte stream without holding it: reading overlaps hashing and writing.

    The chunks are hashed and stored by a pool of threads (`DagBuilder(workers=...)`) while the loop
    reads on; when the pool is a window behind, the reader waits for it, so a slow disk slows the
    upload down instead of filling memory. The loop itself never hashes a leaf or writes a file.
    """
    builder = DagBuilder(put, workers=max(1, default_workers() if workers is None else workers))
    try:
        async for chunk in rechunk(source, max_size):
            builder.submit(chunk)
            oldest = builder.oldest()
            if builder.full and oldest is not None:
                await asyncio.wait([asyncio.wrap_future(oldest)])
            builder.collect()
            if progress is not None:
                progress(len(chunk))
        return await asyncio.to_thread(builder.finish)
    finally:
        await asyncio.to_thread(builder.close)
