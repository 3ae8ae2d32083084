"""Streaming export: walk a file's DAG in order and yield its bytes, or any byte range of it.

Each node lists the file size under every child, so a range read skips whole subtrees without reading
them. Every block's size is checked against what its parent promised, so a wrong DAG cannot make the
output longer or shorter than the Content-Length already sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from r1os.r1fs._dag import RAW, Cid, FileNode, read_file_node
from r1os.r1fs._errors import CorruptBlock

GetBlock = Callable[[Cid], Awaitable[bytes]]


async def file_size(cid: Cid, get_block: GetBlock) -> int:
    return read_file_node(cid, await get_block(cid)).filesize


async def read_range(
    root: Cid, get_block: GetBlock, offset: int = 0, length: int | None = None, *, readahead: int = 0
) -> AsyncIterator[bytes]:
    """Yield the bytes [offset, offset+length) of the file under `root` (to the end if length is None).

    With `readahead` > 0, up to that many raw leaves after the one being yielded are already being
    read (each `get_block` a task), so a `get_block` that reads a file in a thread overlaps the
    consumer sending the previous leaf."""
    end = None if length is None else offset + length

    def check(cid: Cid, node: FileNode, expect: int | None) -> None:
        if expect is not None and node.filesize != expect:
            raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")

    def clip(data: bytes, pos: int) -> bytes | None:
        lo, hi = max(offset - pos, 0), len(data) if end is None else min(end - pos, len(data))
        return data[lo:hi] if lo < hi else None

    async def walk(cid: Cid, base: int, expect: int | None) -> AsyncIterator[bytes]:
        node = read_file_node(cid, await get_block(cid))
        check(cid, node, expect)
        pos = base
        if node.data:
            piece = clip(node.data, pos)
            if piece:
                yield piece
            pos += len(node.data)
        # The children that overlap the range, with their offsets.
        wanted: list[tuple[Cid, int, int]] = []
        for child, size in node.children:
            if end is not None and pos >= end:
                break
            if pos + size > offset:
                wanted.append((child, pos, size))
            pos += size
        ahead: deque[asyncio.Task[bytes]] = deque()
        try:
            for i, (child, at, size) in enumerate(wanted):
                if child.codec != RAW or readahead <= 0:
                    async for piece in walk(child, at, size):
                        yield piece
                    continue
                # Keep the next `readahead` raw leaves in flight, in order.
                j = i + len(ahead)
                while len(ahead) <= readahead and j < len(wanted) and wanted[j][0].codec == RAW:
                    ahead.append(asyncio.ensure_future(get_block(wanted[j][0])))
                    j += 1
                data = await ahead.popleft()
                check(child, FileNode(data, [], len(data)), size)
                piece = clip(data, at)
                if piece:
                    yield piece
        finally:
            for task in ahead:
                task.cancel()
            if ahead:
                await asyncio.gather(*ahead, return_exceptions=True)

    async for piece in walk(root, 0, None):
        yield piece
