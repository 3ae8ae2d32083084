"""Durable storage of a replica: an append-only log of signed batches with group commit.

Because the state is a CRDT, the set of batches that still hold a winning op *is* a snapshot:
compaction rewrites the log with just those, and start-up replays it. Each record is
`length (4) | crc32 (4) | batch bytes`; a torn tail from a crash (a write never acknowledged) is
cut off on load, and a record that fails its checksum is skipped and reported, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("r1os.cstore")

_HEADER = struct.Struct(">II")
_MAX_RECORD = 64 * 1024 * 1024


def read_log(path: Path) -> Iterator[bytes]:
    """Yield every intact record; truncate a torn tail so appends continue after good data."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    good_end = 0
    with fh:
        while True:
            header = fh.read(_HEADER.size)
            if not header:
                break
            if len(header) < _HEADER.size:
                log.warning("cstore log %s: torn header at %d, cutting it off", path, good_end)
                break
            length, crc = _HEADER.unpack(header)
            if length > _MAX_RECORD:
                log.error(
                    "cstore log %s: implausible record length at %d, cutting the log there", path, good_end
                )
                break
            body = fh.read(length)
            if len(body) < length:
                log.warning("cstore log %s: torn record at %d, cutting it off", path, good_end)
                break
            good_end = fh.tell()
            if zlib.crc32(body) != crc:
                log.error("cstore log %s: record at %d fails its checksum, skipped", path, good_end - length)
                continue
            yield body
    if good_end < path.stat().st_size:
        with open(path, "r+b") as fh2:
            fh2.truncate(good_end)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _encode(record: bytes) -> bytes:
    return _HEADER.pack(len(record), zlib.crc32(record)) + record


class BatchLog:
    """Append with fsync; appends waiting at the same time share one fsync (group commit).

    Records are written at once, on the caller's thread (a write to the page cache is cheaper than
    handing it to another thread); only the fsync runs in a thread. A record counts as durable once
    an fsync that started after its write has returned, and `append` returns only then.

    Records nobody waits for (`append_nowait`: batches replicated from other nodes) are fsync'd within
    `lazy_sync` seconds, so that the many arriving meanwhile share one fsync; an `append` arriving in
    that time starts the fsync at once."""

    def __init__(self, path: Path, *, fsync: bool = True, lazy_sync: float = 0.02) -> None:
        self.path = path
        self.fsync = fsync
        self.lazy_sync = lazy_sync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")
        self.size = path.stat().st_size
        self.records_written = 0
        self.fsyncs = 0
        self._synced = 0  # records_written covered by a completed fsync
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._syncing: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None  # cuts a lazy wait short

    def _write_now(self, record: bytes) -> None:
        data = _encode(record)
        self._fh.write(data)
        self._fh.flush()
        self.size += len(data)
        self.records_written += 1

    async def append(self, record: bytes) -> None:
        """Return once `record` is on disk (fsync on), or handed to the OS (fsync off)."""
        self._write_now(record)
        if not self.fsync:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.records_written, fut))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        self._kick()
        await fut

    def append_nowait(self, record: bytes) -> None:
        """Write `record`; the next group commit makes it durable (replicated copies: nobody waits)."""
        if self._fh.closed:
            # The node is stopping and a peer's batch still came in: it is not lost, anti-entropy
            # brings it back from the peers after the restart.
            log.debug("cstore log %s closed: a replicated batch is left to anti-entropy", self.path)
            return
        try:
            self._write_now(record)
        except OSError as exc:
            log.error("cstore log %s: write failed: %s", self.path, exc)
            return
        if self.fsync:
            self._kick()

    def _kick(self) -> None:
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._synced < self.records_written:
            if not self._waiters and self.lazy_sync > 0:
                self._wake = wake = loop.create_future()
                timer = loop.call_later(self.lazy_sync, _resolve, wake)
                try:
                    await wake
                finally:
                    timer.cancel()
                    self._wake = None
            target = self.records_written
            try:
                await asyncio.to_thread(os.fsync, self._fh.fileno())
            except OSError as exc:
                log.error("cstore log %s: fsync failed: %s", self.path, exc)
                self._settle_waiters(target, exc)
            else:
                self.fsyncs += 1
                self._settle_waiters(target, None)
            self._synced = target

    def _settle_waiters(self, upto: int, exc: OSError | None) -> None:
        keep = []
        for n, fut in self._waiters:
            if n > upto:
                keep.append((n, fut))
            elif not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
        self._waiters = keep

    async def drain(self) -> None:
        """Wait until everything appended so far is on disk."""
        while self.fsync and self._synced < self.records_written:
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)
            self._kick()
            assert self._syncing is not None
            await asyncio.gather(self._syncing, return_exceptions=True)

    def rewrite(self, records: list[bytes]) -> None:
        """Replace the log with `records` atomically (compaction)."""
        tmp = self.path.with_suffix(".compact")
        with open(tmp, "wb") as fh:
            for r in records:
                fh.write(_encode(r))
            fh.flush()
            os.fsync(fh.fileno())
        self._fh.close()
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._fh = open(self.path, "ab")
        self.size = self.path.stat().st_size
        self._synced = self.records_written  # the new file was fsync'd whole

    async def close(self) -> None:
        await self.drain()
        self._fh.close()
