"""The batch log: group commit, replay, torn tails, compaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

from r1os.cstore._log import BatchLog, read_log
from tests.conftest import async_wait_for


async def test_append_returns_after_fsync_and_concurrent_appends_share_it(tmp_path: Path) -> None:
    log = BatchLog(tmp_path / "b.log", fsync=True)
    await log.append(b"first")
    assert log.fsyncs == 1
    records = [f"r{i}".encode() for i in range(50)]
    await asyncio.gather(*(log.append(r) for r in records))
    assert 2 <= log.fsyncs < 1 + len(records)  # one group commit serves many writers
    log.append_nowait(b"replicated")
    await log.drain()
    await log.close()
    assert list(read_log(tmp_path / "b.log")) == [b"first", *records, b"replicated"]


async def test_without_fsync_nothing_waits_for_the_disk(tmp_path: Path) -> None:
    log = BatchLog(tmp_path / "b.log", fsync=False)
    await log.append(b"a")
    log.append_nowait(b"b")
    await log.close()
    assert log.fsyncs == 0
    assert list(read_log(tmp_path / "b.log")) == [b"a", b"b"]


async def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    path = tmp_path / "b.log"
    log = BatchLog(path)
    await log.append(b"kept")
    await log.close()
    path.write_bytes(path.read_bytes() + b"\x00\x00\x01\x00partial")  # a write that never finished
    assert list(read_log(path)) == [b"kept"]
    log = BatchLog(path)
    await log.append(b"after")
    await log.close()
    assert list(read_log(path)) == [b"kept", b"after"]


async def test_rewrite_keeps_only_live_records_and_later_appends(tmp_path: Path) -> None:
    path = tmp_path / "b.log"
    log = BatchLog(path)
    for i in range(20):
        await log.append(f"old{i}".encode())
    await log.drain()
    log.rewrite([b"old3", b"old7"])
    await log.append(b"new")  # durable in the new file: waits for its own fsync
    await log.close()
    assert list(read_log(path)) == [b"old3", b"old7", b"new"]


async def test_replicated_records_are_synced_lazily_but_a_waiting_append_is_not_held(
    tmp_path: Path,
) -> None:
    log = BatchLog(tmp_path / "b.log", lazy_sync=0.05)
    for i in range(10):
        log.append_nowait(f"copy{i}".encode())
    assert log.fsyncs == 0  # nobody waits: the fsync is left for the copies arriving meanwhile

    async def synced() -> bool:
        return log.fsyncs > 0

    await async_wait_for(synced, 5, "the lazy fsync")
    assert log.fsyncs == 1  # all ten in one fsync
    slow = BatchLog(tmp_path / "c.log", lazy_sync=30)
    slow.append_nowait(b"copy")
    await asyncio.wait_for(slow.append(b"acked"), 5)  # does not sit out the 30 s
    assert slow.fsyncs == 1
    await log.close()
    await slow.close()
    assert list(read_log(tmp_path / "c.log")) == [b"copy", b"acked"]
