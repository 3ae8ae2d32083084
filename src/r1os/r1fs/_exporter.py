"""Streaming export: walk a file's DAG in order and yield its bytes, or any byte range of it.

Each node lists the file size under every child, so a range read skips whole subtrees without reading
them. Every block's size is checked against what its parent promised, so a wrong DAG cannot make the
output longer or shorter than the Content-Length already sent. With `limits` (a node's), the walk is
bounded too: its depth, the root's declared size, and the block references it follows (at most about
one per KiB of the file: a DAG that links one tiny leaf millions of times is refused, not expanded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from r1os.r1fs._dag import RAW, Cid, DagLimits, FileNode, RefBudget, read_file_node
from r1os.r1fs._errors import CorruptBlock

GetBlock = Callable[[Cid], Awaitable[bytes]]


async def file_size(cid: Cid, get_block: GetBlock) -> int:
    return read_file_node(cid, await get_block(cid)).filesize


class _Bounds:
    """The limits of one walk: checked at the root, then per level and per reference followed."""

    def __init__(self, root: Cid, limits: DagLimits | None) -> None:
        self.root = root
        self.limits = limits
        self.budget: RefBudget | None = None

    def node(self, cid: Cid, node: FileNode, depth: int) -> None:
        if self.limits is None:
            return
        if depth == 0:
            self.limits.check_root(cid, node)
            self.budget = RefBudget(cid, self.limits, node.filesize)
        if node.children:
            self.limits.check_depth(self.root, depth + 1)

    def follow(self) -> None:
        if self.budget is not None:
            self.budget.take()


async def read_range(
    root: Cid,
    get_block: GetBlock,
    offset: int = 0,
    length: int | None = None,
    *,
    limits: DagLimits | None = None,
) -> AsyncIterator[bytes]:
    """Yield the bytes [offset, offset+length) of the file under `root` (to the end if length is None);
    `limits` bound the walk (a node passes its own; None: blocks the caller trusts)."""
    end = None if length is None else offset + length
    bounds = _Bounds(root, limits)

    async def walk(cid: Cid, base: int, expect: int | None, depth: int) -> AsyncIterator[bytes]:
        node = read_file_node(cid, await get_block(cid))
        if expect is not None and node.filesize != expect:
            raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")
        bounds.node(cid, node, depth)
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
                bounds.follow()
                async for piece in walk(child, pos, size, depth + 1):
                    yield piece
            pos += size

    async for piece in walk(root, 0, None, 0):
        yield piece


async def file_parts(
    root: Cid, get_block: GetBlock, *, limits: DagLimits | None = None
) -> AsyncIterator[tuple[Cid | bytes, int]]:
    """The file in order as (leaf CID, size) or (inline bytes, size), reading only interior nodes:
    what a copy needs when the leaves can be copied without passing through Python."""
    bounds = _Bounds(root, limits)

    async def walk(cid: Cid, expect: int | None, depth: int) -> AsyncIterator[tuple[Cid | bytes, int]]:
        if cid.codec == RAW:
            if expect is None:  # a one-block file: the block is the file
                expect = len(await get_block(cid))
            yield cid, expect
            return
        node = read_file_node(cid, await get_block(cid))
        if expect is not None and node.filesize != expect:
            raise CorruptBlock(f"{cid} holds {node.filesize} bytes where its parent says {expect}")
        bounds.node(cid, node, depth)
        if node.data:
            yield node.data, len(node.data)
        for child, size in node.children:
            bounds.follow()
            async for part in walk(child, size, depth + 1):
                yield part

    async for part in walk(root, None, 0):
        yield part
