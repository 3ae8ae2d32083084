"""The block store: atomic writes, verification on read, garbage collection; the streaming importer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1os.r1fs import (
    CHUNK_SIZE,
    BlockNotFound,
    BlockStore,
    CorruptBlock,
    DagBuilder,
    TooLarge,
    import_bytes,
    import_stream,
    read_range,
)
from r1os.r1fs._dag import Cid, Link, encode_file_node
from tests.r1fs._content import mod251


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for off in range(0, len(data), size):
        yield data[off : off + size]
        await asyncio.sleep(0)


def store_bytes(store: BlockStore, data: bytes) -> Cid:
    return import_bytes(data, store.put).cid


async def read_all(store: BlockStore, cid: Cid, offset: int = 0, length: int | None = None) -> bytes:
    async def get(c: Cid) -> bytes:
        return store.get(c)

    return b"".join([p async for p in read_range(cid, get, offset, length)])


async def test_stream_import_matches_whole_import_for_odd_piece_sizes(tmp_path: Path) -> None:
    data = mod251(3 * CHUNK_SIZE + 12345)
    store = BlockStore(tmp_path / "b")
    for size in (1000, CHUNK_SIZE, CHUNK_SIZE + 7, 10**6):
        result = await import_stream(pieces(data, size), store.put)
        assert result.cid == import_bytes(data).cid and result.size == len(data)
    assert await read_all(store, result.cid) == data


async def test_range_reads_cross_leaf_boundaries(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    data = mod251(3 * CHUNK_SIZE + 5)
    cid = store_bytes(store, data)
    for off, n in [(0, 1), (CHUNK_SIZE - 1, 2), (CHUNK_SIZE, CHUNK_SIZE), (len(data) - 1, 1), (7, None)]:
        want = data[off:] if n is None else data[off : off + n]
        assert await read_all(store, cid, off, n) == want


async def test_upload_over_the_limit_is_refused(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    with pytest.raises(TooLarge):
        await import_stream(pieces(b"x" * 1000, 100), store.put, max_size=999)


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    cid = store_bytes(store, b"hello")
    assert store.put(cid, b"hello") is False  # already there: not rewritten
    names = [p.name for p in (tmp_path / "b").rglob("*") if p.is_file()]
    assert names == [str(cid)]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    cid = Cid.for_block(0x55, b"data")

    class Boom(bytes):
        pass

    with pytest.raises(TypeError):
        store.put(cid, 12345)  # type: ignore[arg-type]
    assert not store.has(cid)
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == []


def test_corrupted_block_is_detected_on_verified_read(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b", verify_reads=True)
    cid = store_bytes(store, b"precious")
    store.path(cid).write_bytes(b"tampered")
    with pytest.raises(CorruptBlock):
        store.get(cid)
    assert not store.has(cid)  # a corrupt copy is dropped, so a fetch replaces it
    with pytest.raises(BlockNotFound):
        store.get(cid)


def test_put_verified_refuses_wrong_bytes(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    cid = Cid.for_block(0x55, b"right")
    with pytest.raises(CorruptBlock):
        store.put_verified(cid, b"wrong")
    assert not store.has(cid)


def test_gc_keeps_what_roots_reach_and_removes_the_rest(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    kept_data = mod251(2 * CHUNK_SIZE + 1)
    kept = store_bytes(store, kept_data)
    dropped = store_bytes(store, mod251(2 * CHUNK_SIZE + 1, start=7))
    stale = tmp_path / "b" / "aa" / ".tmp-1-1-1"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"left by a crash")
    os.utime(stale, (0, 0))
    result = store.gc([kept])
    assert (result.kept, result.removed, result.busy) == (4, 4, False)
    assert store.is_complete(kept) and not store.has(dropped) and not stale.exists()


def test_gc_waits_for_writers(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    cid = store_bytes(store, b"in flight")
    with store.writing():
        assert store.gc([]).busy
    assert store.has(cid)
    assert store.gc([]).removed == 1


def test_missing_lists_absent_blocks(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    cid = store_bytes(store, mod251(2 * CHUNK_SIZE))
    leaf = next(c for c in store.dag_blocks(cid) if c.codec == 0x55)
    store.remove(leaf)
    assert store.missing(cid) == [leaf] and not store.is_complete(cid)


# -- the balanced layout and range reads on deep trees: small chunks and 3 links per node ----------------


def reference_root(leaves: list[Link], blocks: dict[Cid, bytes], links: int) -> Link:
    """The balanced layout written as its definition: group a level `links` at a time, until one is left."""
    level = leaves
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), links):
            group = level[i : i + links]
            block = encode_file_node(group)
            cid = Cid.for_block(0x70, block)
            blocks[cid] = block
            nxt.append(Link(cid, len(block) + sum(x.tsize for x in group), sum(x.filesize for x in group)))
        level = nxt
    return level[0]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=120),
    links=st.integers(min_value=2, max_value=5),
    cut=st.tuples(st.integers(0, 700), st.integers(0, 700)),
)
def test_deep_trees_match_the_layout_and_read_any_range(n: int, links: int, cut: tuple[int, int]) -> None:
    chunks = [mod251(5, start=7 * i) + bytes([i % 256]) for i in range(n)]  # 6-byte chunks
    data = b"".join(chunks)
    blocks: dict[Cid, bytes] = {}
    builder = DagBuilder(lambda c, b: blocks.__setitem__(c, b), max_links=links)
    for chunk in chunks:
        builder.add_chunk(chunk)
    result = builder.finish()
    ref_blocks: dict[Cid, bytes] = {}
    leaves = [Link(Cid.for_block(0x55, c), len(c), len(c)) for c in chunks]
    ref = reference_root(leaves, ref_blocks, links)
    assert result.cid == ref.cid and result.dag_size == ref.tsize and result.size == len(data)

    async def get(c: Cid) -> bytes:
        return blocks[c]

    lo, hi = sorted(cut)
    lo, hi = min(lo, len(data)), min(hi, len(data))

    async def read() -> bytes:
        return b"".join([p async for p in read_range(result.cid, get, lo, hi - lo)])

    assert asyncio.run(read()) == data[lo:hi]
