"""Streaming import: bytes in, 256 KiB raw leaves and a balanced dag-pb tree out, one chunk at a time.

The balanced layout (kubo's and the JS importer's) is the same as grouping the leaves 174 at a time into
nodes, those nodes 174 at a time, and so on, with the last group of each level possibly short. So the
builder keeps one list of pending links per level and closes a node as soon as a level holds 174 links;
at the end it closes what is left from the bottom up. Memory is one chunk plus at most 174 links per level.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from r1os.r1fs._dag import CHUNK_SIZE, DAG_PB, MAX_LINKS, RAW, Cid, Link, encode_file_node
from r1os.r1fs._errors import TooLarge

PutBlock = Callable[[Cid, bytes], object]


@dataclass(frozen=True)
class ImportResult:
    cid: Cid
    size: int  # file bytes
    blocks: int  # blocks created (leaves and nodes)
    dag_size: int  # bytes of all blocks (the root link's Tsize)


class DagBuilder:
    """Feed whole chunks in order with `add_chunk`, then `finish` gives the root. Not thread-safe."""

    def __init__(self, put: PutBlock | None = None, *, max_links: int = MAX_LINKS) -> None:
        if max_links < 2:
            raise ValueError("a node needs room for at least 2 links")
        self._put = put
        self._max_links = max_links
        self._levels: list[list[Link]] = [[]]
        self.size = 0
        self.blocks = 0
        self._leaves = 0

    def add_chunk(self, chunk: bytes) -> None:
        cid = Cid(RAW, hashlib.sha256(chunk).digest())
        if self._put is not None:
            self._put(cid, chunk)
        n = len(chunk)
        self.size += n
        self.blocks += 1
        self._leaves += 1
        self._push(0, Link(cid, n, n))

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
        if self._leaves == 0:
            self.add_chunk(b"")
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


def import_file(path: Path | str, put: PutBlock | None = None) -> ImportResult:
    """Import a local file (blocking); with `put=None` only the CID is computed, like `--only-hash`."""
    with open(path, "rb") as fh:
        return import_fileobj(fh, put)


def import_fileobj(fh: BinaryIO, put: PutBlock | None = None) -> ImportResult:
    builder = DagBuilder(put)
    while True:
        chunk = fh.read(CHUNK_SIZE)
        while chunk and len(chunk) < CHUNK_SIZE:  # pipes and sockets may return short reads
            more = fh.read(CHUNK_SIZE - len(chunk))
            if not more:
                break
            chunk += more
        if not chunk:
            break
        builder.add_chunk(chunk)
        if len(chunk) < CHUNK_SIZE:
            break
    return builder.finish()


def import_bytes(data: bytes, put: PutBlock | None = None) -> ImportResult:
    builder = DagBuilder(put)
    for off in range(0, len(data), CHUNK_SIZE):
        builder.add_chunk(data[off : off + CHUNK_SIZE])
    return builder.finish()


async def rechunk(source: AsyncIterable[bytes], max_size: int | None = None) -> AsyncIterable[bytes]:
    """Turn pieces of any size into exact 256 KiB chunks (the last one shorter); enforce `max_size`."""
    pieces: list[bytes] = []
    held = total = 0
    async for piece in source:
        if not piece:
            continue
        total += len(piece)
        if max_size is not None and total > max_size:
            raise TooLarge(f"upload exceeds the limit of {max_size} bytes")
        pieces.append(piece)
        held += len(piece)
        if held >= CHUNK_SIZE:
            buf = b"".join(pieces)
            end = len(buf) - len(buf) % CHUNK_SIZE
            for off in range(0, end, CHUNK_SIZE):
                yield buf[off : off + CHUNK_SIZE]
            rest = buf[end:]
            pieces, held = ([rest], len(rest)) if rest else ([], 0)
    if held:
        yield b"".join(pieces)


async def import_stream(
    source: AsyncIterable[bytes],
    put: PutBlock | None = None,
    *,
    max_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import an async byte stream without holding it: reading overlaps hashing and writing.

    Hashing and block writes run in a worker thread (hashlib and file I/O release the GIL), fed through a
    short queue, so a slow disk slows the reader down instead of filling memory.
    """
    builder = DagBuilder(put)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)

    async def produce() -> None:
        try:
            async for chunk in rechunk(source, max_size):
                await queue.put(chunk)
        finally:
            await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while True:
            chunk = await queue.get()
            if chunk is None:
                break
            await asyncio.to_thread(builder.add_chunk, chunk)
            if progress is not None:
                progress(len(chunk))
        await producer  # re-raises a reader error (TooLarge, a client disconnect)
    finally:
        if not producer.done():
            producer.cancel()
            try:
                await producer
            except (asyncio.CancelledError, Exception):
                pass
    return await asyncio.to_thread(builder.finish)
