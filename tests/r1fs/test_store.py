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
    R1fsError,
    StoreBusy,
    TooLarge,
    import_bytes,
    import_stream,
    read_range,
)
from r1os.r1fs._dag import Cid, Link, encode_file_node
from r1os.r1fs._store import RECORD_SIZE
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


def test_blocks_and_removals_survive_reopening(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    kept = store_bytes(store, b"hello")
    gone = store_bytes(store, b"bye")
    assert store.put(kept, b"hello") is False  # already there: not written again
    store.remove(gone)
    store.close()
    again = BlockStore(tmp_path / "b")
    assert again.get(kept) == b"hello" and not again.has(gone)
    assert again.stats()["blocks"] == 1


def test_a_torn_or_damaged_index_loses_only_its_own_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BlockStore(tmp_path / "b")
    cids = [store_bytes(store, bytes([i]) * 100) for i in range(3)]
    path, _, _ = store.locate(cids[0]) or (None, 0, 0)
    assert path is not None
    store.close()
    idx = path.with_suffix(".idx")
    raw = bytearray(idx.read_bytes())
    raw[RECORD_SIZE + 5] ^= 0xFF  # rot in the second record
    idx.write_bytes(bytes(raw) + b"\x01" * 20)  # and a record torn by a crash
    reopened = BlockStore(tmp_path / "b")
    assert reopened.has(cids[0]) and not reopened.has(cids[1]) and reopened.has(cids[2])
    assert idx.stat().st_size == 3 * RECORD_SIZE  # the torn tail is cut, new records go after
    assert "torn record" in caplog.text and "bad index records" in caplog.text
    again = store_bytes(reopened, bytes([1]) * 100)  # fetching the lost block again works
    assert reopened.get(again) == bytes([1]) * 100


def test_a_pack_cut_short_reports_its_blocks_corrupt(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    first = store_bytes(store, b"a" * 1000)
    last = store_bytes(store, b"b" * 1000)
    where = store.locate(last)
    assert where is not None
    store.close()
    os.truncate(where[0], where[1] + 10)
    reopened = BlockStore(tmp_path / "b")  # the record naming missing bytes is dropped on load
    assert reopened.get(first) == b"a" * 1000 and not reopened.has(last)


def test_a_second_writer_on_one_folder_is_refused(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    cid = store_bytes(store, b"mine")
    with pytest.raises(StoreBusy):
        BlockStore(tmp_path / "b")
    reader = BlockStore(tmp_path / "b", readonly=True)  # tools may look while the node runs
    assert reader.get(cid) == b"mine"
    with pytest.raises(R1fsError):
        reader.put(Cid.for_block(0x55, b"x"), b"x")
    store.close()
    BlockStore(tmp_path / "b").close()  # free again once the writer is gone


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    cid = Cid.for_block(0x55, b"data")
    with pytest.raises(TypeError):
        store.put(cid, 12345)  # type: ignore[arg-type]
    assert not store.has(cid) and store.stats()["blocks"] == 0


def test_blocks_of_the_old_one_file_per_block_layout_are_moved_into_packs(tmp_path: Path) -> None:
    root = tmp_path / "b"
    good = Cid.for_block(0x55, b"old block")
    rotten = Cid.for_block(0x55, b"rotten block")
    for cid, data in ((good, b"old block"), (rotten, b"changed")):
        shard = root / cid.text[-3:-1]
        shard.mkdir(parents=True, exist_ok=True)
        (shard / cid.text).write_bytes(data)
    (root / "aa").mkdir(exist_ok=True)
    (root / "aa" / ".tmp-1-1-1").write_bytes(b"left by a crash")
    store = BlockStore(root)
    assert store.get(good, verify=True) == b"old block" and not store.has(rotten)
    assert sorted(p.name for p in root.iterdir()) == ["packs"]


def test_corrupted_block_is_detected_on_verified_read(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b", verify_reads=True)
    cid = store_bytes(store, b"precious")
    where = store.locate(cid)
    assert where is not None
    with open(where[0], "r+b") as fh:
        fh.seek(where[1])
        fh.write(b"tampered")
    with pytest.raises(CorruptBlock):
        store.get(cid)
    assert not store.has(cid)  # a corrupt copy is dropped, so a fetch replaces it
    with pytest.raises(BlockNotFound):
        store.get(cid)
    assert store.put(cid, b"precious") and store.get(cid) == b"precious"


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
    result = store.gc([kept])
    assert (result.kept, result.removed, result.busy) == (4, 4, False)
    assert store.is_complete(kept) and not store.has(dropped)
    store.close()
    assert BlockStore(tmp_path / "b").is_complete(kept)


def test_gc_deletes_dead_packs_and_compacts_mostly_dead_ones(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b", pack_size=3 * CHUNK_SIZE)  # a new pack every 3 leaves
    files = [mod251(2 * CHUNK_SIZE + 1, start=i) for i in range(4)]
    roots = [store_bytes(store, f) for f in files]
    before = store.stats()
    assert before["packs"] >= 4
    store.gc([roots[1]])  # one file of four stays
    after = store.stats()
    assert after["blocks"] == 4 and after["pack_bytes"] < before["pack_bytes"] / 2
    assert len(list((tmp_path / "b" / "packs").glob("*.pack"))) == after["packs"]
    store.close()
    reopened = BlockStore(tmp_path / "b", pack_size=3 * CHUNK_SIZE)
    assert reopened.is_complete(roots[1], verify=True)
    assert not any(reopened.has(r) for r in (roots[0], roots[2], roots[3]))

    async def read() -> bytes:
        return await read_all(reopened, roots[1])

    assert asyncio.run(read()) == files[1]


def test_gc_does_not_wait_for_writers_and_keeps_what_they_hold(tmp_path: Path) -> None:
    """Attack 10's cause: GC used to refuse to run while anything was written. Now it runs and leaves
    alone exactly what an upload under way has written or counts on."""
    store = BlockStore(tmp_path / "b")
    garbage = store_bytes(store, b"nobody pins this")
    reused = store_bytes(store, b"garbage an upload then writes again")
    with store.holding() as hold:
        fresh = Cid.for_block(0x55, b"in flight")
        assert hold.put(fresh, b"in flight")
        assert not hold.put(reused, b"garbage an upload then writes again")  # already here: held anyway
        result = store.gc([])
        assert not result.busy and (result.removed, result.held) == (1, 2)
        assert store.has(fresh) and store.has(reused) and not store.has(garbage)
    assert store.gc([]).removed == 2  # the hold ended: its blocks are garbage like any other


def test_one_gc_at_a_time(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "b")
    store_bytes(store, b"x")
    with store._gc_lock:  # a collection is running
        assert store.gc([]).busy
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


def test_copy_to_writes_a_block_into_another_file(tmp_path: Path) -> None:
    for verify in (False, True):
        store = BlockStore(tmp_path / f"b{verify}", verify_reads=verify)
        data = mod251(CHUNK_SIZE, start=9)
        cid = store_bytes(store, data)
        fd = os.open(tmp_path / f"out{verify}", os.O_WRONLY | os.O_CREAT)
        try:
            assert store.copy_to(cid, fd, 5) == len(data)
        finally:
            os.close(fd)
        assert (tmp_path / f"out{verify}").read_bytes() == b"\0" * 5 + data
        with pytest.raises(BlockNotFound):
            store.copy_to(Cid.for_block(0x55, b"absent"), 0, 0)
        store.close()
