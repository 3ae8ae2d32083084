"""The node's own listening socket must let asyncio disable Nagle on accepted connections."""

from __future__ import annotations

import asyncio
import socket

from r1os.node._daemon import _listen


async def test_accepted_connections_have_nodelay() -> None:
    sock = _listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    accepted: list[int] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(200):
            if accepted:
                break
            await asyncio.sleep(0.01)
        assert accepted, "no connection accepted"
        # Without TCP_NODELAY every small HTTP response waited for a delayed ACK (~40 ms).
        assert accepted[0] != 0
        w.close()
    finally:
        server.close()
        await server.wait_closed()
