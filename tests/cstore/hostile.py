"""A hostile peer for CSTORE tests: a small HTTP server that answers every request with a body meant to
hurt whoever reads it, and counts what it managed to send."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import tracemalloc
from collections.abc import Iterator
from typing import Literal

Mode = Literal["endless", "declared", "dribble", "gzip", "json"]

CHUNK = b"[" * 65536  # never valid JSON, whatever part of it arrives


class MemoryPeak:
    """The most memory Python objects held at once while the block ran (nodes, broker and test share
    this process, so this bounds what the attacked nodes held)."""

    mib: float = 0.0


@contextlib.contextmanager
def memory_peak() -> Iterator[MemoryPeak]:
    peak = MemoryPeak()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        yield peak
        peak.mib = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


class HostilePeer:
    """Answers any request with:
    - `endless`: 200 and a body that never ends (no Content-Length: read until the peer hangs up);
    - `declared`: 200, `Content-Length: 300 MiB`, then the same endless body;
    - `dribble`: 200 and a byte of body every `interval` seconds;
    - `gzip`: 200, `Content-Encoding: gzip`, 64 KiB that inflate to 64 MiB;
    - `json`: 200 and `body` as is.
    `sent` counts the body bytes the socket took; `open` the requests still being answered."""

    def __init__(self, mode: Mode, *, body: bytes = b"", interval: float = 0.2) -> None:
        self.mode = mode
        self.body = body
        self.interval = interval
        self.sent = 0
        self.requests = 0
        self.open = 0
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        if self.mode == "gzip":  # made ahead, so what the server holds is not counted as the node's
            self.body = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.open += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            lines = head.decode("latin-1").split("\r\n")
            self.paths.append(lines[0].split(" ")[1])
            length = next(
                (int(v) for k, _, v in (h.partition(": ") for h in lines) if k.lower() == "content-length"), 0
            )
            await reader.readexactly(length)
            await self._answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the node hung up: what it cost us is in `sent`
        finally:
            self.open -= 1
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        headers = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
        if self.mode == "declared":
            headers += f"content-length: {300 * 1024 * 1024}\r\n"
        if self.mode == "gzip":
            headers += "content-encoding: gzip\r\n"
        if self.mode in ("gzip", "json"):
            headers += f"content-length: {len(self.body)}\r\n"
        writer.write(headers.encode() + b"\r\n")
        if self.mode in ("gzip", "json"):
            await self._send(writer, self.body)
        elif self.mode == "dribble":
            while True:
                await self._send(writer, b"[")
                await asyncio.sleep(self.interval)
        else:
            while True:
                await self._send(writer, CHUNK)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        # drain() waits while the reader does not read (the socket buffers are full), so `sent` is what
        # the node read plus at most those buffers (a few MiB on loopback).
        writer.write(data)
        await writer.drain()
        self.sent += len(data)
