"""The node's shared HTTP client and its lazily imported websocket protocol, against a real uvicorn server:
plain HTTP without TLS set up, https with certificates checked (refused when untrusted, working when the
certificate is trusted through SSL_CERT_FILE as with httpx's own client), and websockets through
`LazyWebSockets` as through uvicorn's "auto"."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from r1os.node._http import HttpLimits, LazyWebSockets, _PeerTransport, bounded, peer_client
from tests._certs import self_signed


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello " + request.url.scheme)


async def _echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("echo " + await ws.receive_text())
    await ws.close()


APP = Starlette(routes=[Route("/", _hello), WebSocketRoute("/ws", _echo)])


@contextlib.asynccontextmanager
async def _server(certfile: str | None = None, keyfile: str | None = None) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        APP,
        log_level="warning",
        lifespan="off",
        http=bounded(HttpLimits()),
        ws=LazyWebSockets,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(20):
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.02)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task
        sock.close()


def _transport(client: httpx.AsyncClient) -> _PeerTransport:
    transport = client._transport  # the one the client was made with (no proxy in the environment)
    assert isinstance(transport, _PeerTransport)
    return transport


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


async def test_plain_http_sets_up_no_tls() -> None:
    async with _server() as port, peer_client() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/")
        assert answer.text == "hello http"
        assert _transport(client)._tls is None


async def test_https_checks_certificates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert_file, key_file = self_signed(tmp_path)
    async with _server(str(cert_file), str(key_file)) as port:
        # untrusted: refused, as by httpx's own client
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        async with peer_client() as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{port}/")
        # trusted through SSL_CERT_FILE (read when the first https request comes)
        async with peer_client() as client:
            monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
            answer = await client.get(f"https://127.0.0.1:{port}/")
            assert answer.text == "hello https"
            assert _transport(client)._tls is not None  # made by that first https request


async def test_websockets_through_the_lazy_protocol() -> None:
    from websockets.asyncio.client import connect

    async with _server() as port:
        async with asyncio.timeout(20), connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo hi"
        # plain requests on the same server are unaffected
        async with peer_client() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "hello http"
