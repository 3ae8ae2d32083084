"""Streaming export: walk a file's DAG in order and yield its bytes, or any byte range of it.

Each node lists the file size under every child, so a range read skips whole subtrees without reading
them. Every block's size is checked against what its parent promised, so a wrong DAG cannot make the
output longer or shorter than the Content-Length already sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from r1os.r1fs._dag import RAW, Cid, read_file_node
from r1os.r1fs._errors import CorruptBlock

GetBlock = Callable[[Cid], Awaitable[bytes]]


async def file_size(cid: Cid, get_block: GetBlock) -> int:
    return read_file_node(cid, await get_block(cid)).filesize


async def read_range(
    root: Cid, get_block: GetBlock, offset: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """Yield the bytes [offset, offset+length) of the file under `root` (to the end if length is None)."""
    end = None if length is None else offset + length

    async def walk(cid: Cid, base: int, expect: int | None) -> AsyncIterator[bytes]:
        node = read_file_node(cid, await get_block(cid))
        if expect is not None and node.filesize != expect:
            raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")
        pos = base
        if node.data:
            lo, hi = max(offset - pos, 0), len(node.data) if end is None else min(end - pos, len(node.data))
            if lo < hi:
                yield node.data[lo:hi]
            pos += len(node.data)
        for child, size in node.children:
            if end is not None and pos >= end:
                return
            if pos + size > offset:
                async for piece in walk(child, pos, size):
                    yield piece
            pos += size

    async for piece in walk(root, 0, None):
        yield piece


async def file_parts(root: Cid, get_block: GetBlock) -> AsyncIterator[tuple[Cid | bytes, int]]:
    """The file in order as (leaf CID, size) or (inline bytes, size), reading only interior nodes:
    what a copy needs when the leaves can be copied without passing through Python."""

    async def walk(cid: Cid, expect: int | None) -> AsyncIterator[tuple[Cid | bytes, int]]:
        if cid.codec == RAW:
            if expect is None:  # a one-block file: the block is the file
                expect = len(await get_block(cid))
            yield cid, expect
            return
        node = read_file_node(cid, await get_block(cid))
        if expect is not None and node.filesize != expect:
            raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")
        if node.data:
            yield node.data, len(node.data)
        for child, size in node.children:
            async for part in walk(child, size):
                yield part

    async for part in walk(root, None):
        yield part
