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


def _encode(record: bytes) -> bytes:
    return _HEADER.pack(len(record), zlib.crc32(record)) + record


class BatchLog:
    """Append with fsync; concurrent appends share one fsync (group commit)."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.size = path.stat().st_size
        self.records_written = 0
        self.fsyncs = 0

    def _write_now(self, record: bytes) -> None:
        """Without fsync there is nothing to wait for: one write syscall, no thread hand-off."""
        data = _encode(record)
        self._fh.write(data)
        self._fh.flush()
        self.size += len(data)
        self.records_written += 1

    async def append(self, record: bytes) -> None:
        """Return once `record` is on disk (fsync on), or handed to the OS (fsync off)."""
        if not self.fsync and not self._pending:
            self._write_now(record)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, fut))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(_encode(r) for r, _ in batch)
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:
                log.error("cstore log %s: write failed: %s", self.path, exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.size += len(data)
            self.records_written += len(batch)
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    def append_nowait(self, record: bytes) -> None:
        """Queue `record` for the next group commit without waiting for it (replicated copies)."""
        if not self.fsync and not self._pending:
            try:
                self._write_now(record)
            except OSError as exc:
                log.error("cstore log %s: write failed: %s", self.path, exc)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.exception())  # retrieved: a failed write is logged in _flush
        self._pending.append((record, fut))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def drain(self) -> None:
        """Wait until everything appended so far is on disk."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.gather(self._flushing, return_exceptions=True)

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
            self.fsyncs += 1

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

    async def close(self) -> None:
        await self.drain()
        self._fh.close()
