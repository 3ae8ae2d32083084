"""The parallel paths: leaves hashed and stored by a pool (same CIDs, same blocks, errors surface),
chunking of uneven pieces, and concurrent writers on one store."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r1os.r1fs import (
    CHUNK_SIZE,
    BlockStore,
    DagBuilder,
    ImportResult,
    import_bytes,
    import_file,
    import_stream,
)
from r1os.r1fs._dag import RAW, Cid
from r1os.r1fs._importer import rechunk
from tests.r1fs._content import mod251


def build(
    chunks: list[bytes], *, workers: int, links: int, window: int | None = None
) -> tuple[ImportResult, dict[Cid, bytes]]:
    blocks: dict[Cid, bytes] = {}
    builder = DagBuilder(
        lambda c, b: blocks.__setitem__(c, b), max_links=links, workers=workers, window=window
    )
    for chunk in chunks:
        builder.add_chunk(chunk)
    return builder.finish(), blocks


@pytest.mark.parametrize("n", [1, 2, 3, 7, 9, 10, 28, 40])
def test_pooled_builder_gives_the_same_tree_as_one_thread(n: int) -> None:
    chunks = [mod251(5 + i % 3, start=11 * i) for i in range(n)]
    serial, serial_blocks = build(chunks, workers=0, links=3)
    for workers, window in [(1, 1), (3, 2), (4, None)]:
        pooled, pooled_blocks = build(chunks, workers=workers, links=3, window=window)
        assert pooled == serial
        assert pooled_blocks == serial_blocks


def test_import_file_with_and_without_threads(tmp_path: Path) -> None:
    data = mod251(5 * CHUNK_SIZE + 1)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    one = import_file(path, workers=0)
    assert import_file(path, workers=2) == one == import_bytes(data, workers=3)
    store = BlockStore(tmp_path / "b")
    assert import_file(path, store.put, workers=2) == one
    assert store.is_complete(one.cid, verify=True)


def test_a_failing_put_in_the_pool_surfaces_and_stops_the_threads() -> None:
    before = threading.active_count()
    seen = 0
    lock = threading.Lock()

    def put(_cid: Cid, _block: bytes) -> None:
        nonlocal seen
        with lock:
            seen += 1
            if seen == 3:
                raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        import_bytes(mod251(8 * CHUNK_SIZE), put, workers=2)
    assert threading.active_count() == before


async def test_a_failing_put_surfaces_from_a_stream_import() -> None:
    def put(cid: Cid, _block: bytes) -> None:
        if cid.codec == RAW:
            raise OSError(5, "Input/output error")

    async def source() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield mod251(CHUNK_SIZE)

    with pytest.raises(OSError, match="Input/output"):
        await import_stream(source(), put, workers=2)


async def test_rechunk_cuts_uneven_pieces_into_exact_chunks() -> None:
    sizes = [1, CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 3, 5, CHUNK_SIZE - 8, 3, CHUNK_SIZE]
    data = mod251(sum(sizes))

    async def source() -> AsyncIterator[bytes]:
        off = 0
        for n in sizes:
            yield data[off : off + n]
            off += n

    chunks = [c async for c in rechunk(source())]
    assert b"".join(chunks) == data
    assert all(len(c) == CHUNK_SIZE for c in chunks[:-1]) and 0 < len(chunks[-1]) <= CHUNK_SIZE


def test_threads_write_the_same_blocks_at_once(tmp_path: Path) -> None:
    blocks = [mod251(1000, start=i) for i in range(40)]
    stores = [BlockStore(tmp_path / "b")] * 2
    errors: list[BaseException] = []

    def write(store: BlockStore) -> None:
        try:
            for b in blocks:
                store.put(Cid.for_block(RAW, b), b, replace=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for b in blocks:
        assert stores[0].get(Cid.for_block(RAW, b), verify=True) == b
