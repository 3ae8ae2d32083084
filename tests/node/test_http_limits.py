"""The node's HTTP connections are bounded: an endless request head, a silent connection, a head sent a
byte at a time and a body that stops halfway are all closed, and the node keeps answering others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from r1os.node import Node, NodeConfig
from r1os.transport import MemoryHub, MemoryTransport


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(
        home=tmp_path / "n", network="test", http="127.0.0.1:0", key_strength="light",
        api={"head_timeout": 1.0, "body_idle_timeout": 1.0, "max_head": 16 * 1024},
    )  # fmt: skip
    n = Node(config, password="pw", transport=MemoryTransport(MemoryHub()))
    await n.start()
    yield n
    await n.stop()


async def _open(node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    u = urlsplit(node.url)
    assert u.hostname and u.port
    return await asyncio.open_connection(u.hostname, u.port)


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before closing; fails if it keeps the connection open past `within` s."""
    got = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                got += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: the kernel resets instead of a FIN
    return got


async def _healthy(node: Node) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{node.url}/v1/health")).json()["status"] == "ok"


async def test_endless_heads_are_cut_at_the_cap(node: Node) -> None:
    rss_before = psutil.Process().memory_info().rss
    conns = [await _open(node) for _ in range(4)]
    for _, writer in conns:
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * (4 * 1024 * 1024))
    answers = [await _closed_by_server(reader, 10) for reader, _ in conns]
    for answer in answers:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:100]
    for _, writer in conns:
        writer.close()
    assert node.http_limits.refused["head_too_large"] == 4
    # 4 x 4 MiB were sent; the node kept at most its 16 KiB cap of each
    assert psutil.Process().memory_info().rss - rss_before < 8 * 1024 * 1024
    await _healthy(node)


async def test_silent_and_dribbling_connections_are_closed(node: Node) -> None:
    silent_reader, silent = await _open(node)
    drip_reader, drip = await _open(node)
    started = time.monotonic()

    async def dribble() -> None:
        for byte in b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
            if drip.is_closing():
                return
            drip.write(bytes([byte]))
            try:
                await drip.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.05)  # the attack's pace, not a wait for the server

    task = asyncio.create_task(dribble())
    assert await _closed_by_server(silent_reader, 5) == b""
    assert await _closed_by_server(drip_reader, 5) == b""
    assert time.monotonic() - started < 5
    task.cancel()
    for w in (silent, drip):
        w.close()
    assert node.http_limits.refused["head_timeout"] == 2
    await _healthy(node)


async def test_a_body_that_stops_halfway_is_closed(node: Node) -> None:
    reader, writer = await _open(node)
    writer.write(b"POST /v1/nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    answer = await _closed_by_server(reader, 5)
    writer.close()
    assert node.http_limits.refused["body_idle"] == 1, answer
    await _healthy(node)


async def test_ordinary_requests_pass_on_one_kept_alive_connection(node: Node) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(20):
            r = await http.post(f"{node.url}/v1/nowhere", content=b"y" * 100_000)
            assert r.status_code in (404, 405)
    assert sum(node.http_limits.refused.values()) == 0
