"""The `/apps/...` reverse proxy against real servers on loopback: uvicorn replicas (a small Starlette
app), raw asyncio servers that misbehave, and the proxy mounted in a FastAPI app served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from r1os.deeploy._proxy import (
    ERROR_HEADER,
    HOP_HEADER,
    AmbiguousApp,
    AppProxy,
    AppRef,
    NoReplica,
    NoSuchApp,
    Upstream,
    parse_app_path,
)
from r1os.errors import R1osError
from r1os.node import install_error_handlers

OWNER = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20
APP = f"{OWNER}/echo"
WAIT = 10.0


# -- servers ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in this event loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT)
        sock.close()


@dataclass
class Replica:
    """What a replica saw and the knobs a test turns."""

    name: str
    hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    stream_ended: asyncio.Event = field(default_factory=asyncio.Event)
    received: int = 0
    got_2mib: asyncio.Event = field(default_factory=asyncio.Event)
    ws_closed: asyncio.Future[int] | None = None


def replica_app(r: Replica) -> Starlette:
    async def echo(request: Request) -> Response:
        r.hits += 1
        body = await request.body()
        return JSONResponse(
            {
                "replica": r.name,
                "method": request.method,
                "path": request.url.path,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.url.query,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": body.decode("latin-1"),
            },
            headers={"x-app": "yes", "keep-alive": "timeout=99", "proxy-thing": "1"},
        )

    async def status(request: Request) -> Response:
        r.hits += 1
        code = int(request.path_params["code"])
        return JSONResponse(
            {"error": "the app's own", "code": code}, status_code=code, headers={"x-app": "yes"}
        )

    async def empty(request: Request) -> Response:
        return Response(status_code=int(request.path_params["code"]), headers={"etag": '"v1"'})

    async def stream(request: Request) -> Response:
        r.hits += 1

        async def chunks() -> AsyncIterator[bytes]:
            try:
                yield b"data: first\n\n"
                await r.release.wait()
                yield b"data: last\n\n"
                r.finished.set()
            finally:
                r.stream_ended.set()  # also when the reader went away before the end

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def upload(request: Request) -> Response:
        r.hits += 1
        digest = hashlib.sha256()
        async for chunk in request.stream():
            digest.update(chunk)
            r.received += len(chunk)
            if r.received >= 2 << 20:
                r.got_2mib.set()
        return JSONResponse({"size": r.received, "sha256": digest.hexdigest()})

    async def ws(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="chat" if "chat" in offered else None)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if r.ws_closed is not None:
                        r.ws_closed.set_result(message.get("code", 0))
                    return
                if message.get("text") == "close":
                    await websocket.close(code=4001, reason="bye")
                    return
                if message.get("text") is not None:
                    await websocket.send_text(f"{r.name}:{message['text']}")
                else:
                    await websocket.send_bytes(message["bytes"][::-1])
        except WebSocketDisconnect as exc:
            if r.ws_closed is not None:
                r.ws_closed.set_result(exc.code)

    return Starlette(
        routes=[
            Route("/status/{code}", status),
            Route("/stream", stream),
            Route("/empty/{code}", empty),
            Route("/upload", upload, methods=["POST", "PUT"]),
            WebSocketRoute("/ws", ws),
            Route("/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
        ]
    )


@contextlib.asynccontextmanager
async def raw_server(
    on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> AsyncIterator[str]:
    """A plain asyncio server, for replicas that misbehave below HTTP."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await on_connect(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def reset_before_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request head, then drop the connection with a reset and no answer."""
    await reader.readuntil(b"\r\n\r\n")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


async def reset_after_some_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(64 << 10)
    writer.transport.abort()


async def answer_until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer with neither a length nor chunks: the body ends when the connection does."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n")
    for i in range(50):
        writer.write(b"line %d\n" % i)
        await writer.drain()


async def answer_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one request as keep-alive, then close the connection anyway (as an idle timeout does)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await writer.drain()


async def break_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer 200 with a body of 100 bytes, send 10 and close."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ncontent-type: text/plain\r\n\r\n0123456789")
    await writer.drain()
    writer.transport.abort()


def closed_port() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# -- the proxy under test ----------------------------------------------------------------------------


@dataclass
class Resolver:
    """Answers what a test sets; records what it was asked."""

    upstreams: list[Upstream] = field(default_factory=list)
    error: R1osError | None = None
    calls: list[tuple[AppRef, bool]] = field(default_factory=list)

    async def __call__(self, ref: AppRef, hop: bool) -> Sequence[Upstream]:
        self.calls.append((ref, hop))
        if self.error is not None:
            raise self.error
        return self.upstreams


def local(url: str, node: str = "0xnode") -> Upstream:
    return Upstream(node=node, url=url, local=True, app=APP)


def remote(url: str, node: str = "0xpeer") -> Upstream:
    return Upstream(node=node, url=url, local=False, app=APP)


@contextlib.asynccontextmanager
async def proxy_node(
    resolver: Any, token: str = "", wrap: bool = False, **options: Any
) -> AsyncIterator[tuple[str, AppProxy]]:
    """A node's API with the proxy: its routes on a service's router, or (`wrap`) in front of the app."""
    proxy = AppProxy(resolver, node_token=(lambda: token) if token else None, **options)
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter()

    @router.get("/v1/other")
    async def other() -> dict[str, str]:
        return {"route": "other"}

    if not wrap:
        proxy.mount(router)
    app.include_router(router)
    try:
        async with serve(proxy.wrap(app) if wrap else app) as url:
            yield url, proxy
    finally:
        await proxy.aclose()


@pytest.fixture
async def replica() -> AsyncIterator[tuple[str, Replica]]:
    r = Replica("a")
    async with serve(replica_app(r)) as url:
        yield url, r


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT) as c:
        yield c


def header(answer: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in answer["headers"] if k == name]


# -- paths ----------------------------------------------------------------------------------------


def test_paths_name_the_app_by_name_or_by_owner_and_name() -> None:
    assert parse_app_path("echo/a/b%2Fc") == (AppRef("echo"), "a/b%2Fc")
    assert parse_app_path("echo/") == (AppRef("echo"), "")
    assert parse_app_path(f"{OWNER.upper().replace('0X', '0x')}/echo/x") == (AppRef("echo", OWNER), "x")
    assert AppRef("echo", OWNER).prefix == f"/apps/{OWNER}/echo"
    for bad in ("0x12/echo/", f"{OWNER}//", "Echo/", "-echo/", "a_b/"):
        with pytest.raises(NoSuchApp):
            parse_app_path(bad)


# -- HTTP ----------------------------------------------------------------------------------------


async def test_get_and_post_reach_the_replica_with_path_query_and_body(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    resolver = Resolver([local(url)])
    async with proxy_node(resolver) as (node, proxy):
        got = await client.get(f"{node}/apps/echo/some/path%2Fx?q=1&q=2&e=%20")
        assert got.status_code == 200
        answer = got.json()
        assert (answer["method"], answer["raw_path"], answer["query"]) == (
            "GET",
            "/some/path%2Fx",
            "q=1&q=2&e=%20",
        )
        posted = await client.post(f"{node}/apps/{OWNER}/echo/p", content=b"hello body")
        assert posted.json()["body"] == "hello body" and posted.json()["method"] == "POST"
        assert resolver.calls == [(AppRef("echo"), False), (AppRef("echo", OWNER), False)]
        assert proxy.stats()["requests"] == 2 and proxy.failed == proxy.retried == 0


async def test_in_front_of_the_app_it_serves_apps_and_leaves_the_rest(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, _ = replica
    async with proxy_node(Resolver([local(url)]), wrap=True) as (node, proxy):
        got = await client.post(f"{node}/apps/echo/a?b=c", content=b"body")
        assert (got.json()["raw_path"], got.json()["query"], got.json()["body"]) == ("/a", "b=c", "body")
        assert (await client.get(f"{node}/v1/other")).json() == {"route": "other"}
        assert (await client.get(f"{node}/apps/echo")).status_code == 308
        assert proxy.requests == 2


async def test_a_resolver_failure_is_answered_with_its_cause(client: httpx.AsyncClient) -> None:
    failure = R1osError("app state unreadable", cause="cstore", status=503, hint="try again")
    async with proxy_node(Resolver(error=failure), wrap=True) as (node, _proxy):
        got = await client.get(f"{node}/apps/echo/")
        assert got.status_code == 503
        assert got.json() == {"error": "app state unreadable", "cause": "cstore", "hint": "try again"}


async def test_headers_drop_hop_by_hop_and_add_forwarded(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, _ = replica
    async with proxy_node(Resolver([local(url)]), token="node-secret") as (node, _proxy):
        got = await client.get(
            f"{node}/apps/echo/h",
            headers={
                "connection": "keep-alive, x-named-hop",
                "x-named-hop": "1",
                "keep-alive": "timeout=5",
                "proxy-authorization": "Basic eA==",
                "x-custom": "kept",
                "authorization": "Bearer app-token",
                "x-forwarded-host": "spoofed",
            },
        )
        answer = got.json()
        names = {k for k, _ in answer["headers"]}
        assert not names & {"x-named-hop", "keep-alive", "proxy-authorization", HOP_HEADER}
        assert header(answer, "x-custom") == ["kept"]
        assert header(answer, "authorization") == ["Bearer app-token"]  # the app's own clients authenticate
        assert header(answer, "x-forwarded-for") == ["127.0.0.1"]
        assert header(answer, "x-forwarded-host") == [node.removeprefix("http://")]
        assert header(answer, "x-forwarded-proto") == ["http"]
        assert header(answer, "x-forwarded-prefix") == ["/apps/echo"]
        assert header(answer, "host") == [url.removeprefix("http://")]
        # response headers: the app's own kept, hop-by-hop ones dropped
        assert got.headers["x-app"] == "yes"
        assert "keep-alive" not in got.headers and "proxy-thing" not in got.headers
        # the node's own operator token never reaches an app
        tokened = await client.get(f"{node}/apps/echo/t", headers={"authorization": "Bearer node-secret"})
        assert header(tokened.json(), "authorization") == []


async def test_app_status_codes_and_error_bodies_pass_through(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, _ = replica
    async with proxy_node(Resolver([local(url)])) as (node, proxy):
        for code in (201, 404, 418, 500, 503):
            got = await client.get(f"{node}/apps/echo/status/{code}")
            assert got.status_code == code
            assert got.json() == {"error": "the app's own", "code": code}
            assert got.headers["x-app"] == "yes" and ERROR_HEADER not in got.headers
        head = await client.head(f"{node}/apps/echo/x")
        assert head.status_code == 200 and head.content == b""
        for code in (204, 304):  # no body, whatever the headers: the connection stays usable
            got = await client.get(f"{node}/apps/echo/empty/{code}")
            assert (got.status_code, got.content, got.headers["etag"]) == (code, b"", '"v1"')
        assert (await client.get(f"{node}/apps/echo/status/200")).json()["code"] == 200
        assert proxy.failed == 0


async def test_no_slash_after_the_app_redirects(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, _ = replica
    async with proxy_node(Resolver([local(url)])) as (node, _proxy):
        got = await client.get(f"{node}/apps/echo?a=1")
        assert got.status_code == 308 and got.headers["location"] == "/apps/echo/?a=1"
        got = await client.get(f"{node}/apps/{OWNER}/echo")
        assert got.status_code == 308 and got.headers["location"] == f"/apps/{OWNER}/echo/"


@pytest.mark.parametrize(
    ("error", "status", "cause", "words"),
    [
        (NoSuchApp("echo"), 404, "no_app", ["echo"]),
        (NoReplica(APP), 503, "no_replica", [APP]),
        (AmbiguousApp("echo", [OTHER, OWNER]), 409, "ambiguous_app", [OWNER, OTHER]),
    ],
)
async def test_resolution_errors_answer_with_their_cause(
    client: httpx.AsyncClient, error: R1osError, status: int, cause: str, words: list[str]
) -> None:
    async with proxy_node(Resolver(error=error)) as (node, proxy):
        got = await client.get(f"{node}/apps/echo/")
        assert got.status_code == status
        body = got.json()
        assert set(body) == {"error", "cause", "hint"} and body["cause"] == cause and body["hint"]
        assert all(w in body["error"] for w in words)
        assert got.headers[ERROR_HEADER] == cause
        if cause == "ambiguous_app":
            assert f"/apps/{OWNER}/echo/" in body["hint"] and f"/apps/{OTHER}/echo/" in body["hint"]
        assert proxy.unresolved == 1


async def test_bad_paths_and_empty_answers(client: httpx.AsyncClient) -> None:
    async with proxy_node(Resolver([])) as (node, _proxy):
        bad = await client.get(f"{node}/apps/0x1234/echo/")
        assert bad.status_code == 404 and bad.json()["cause"] == "no_app"
        none = await client.get(f"{node}/apps/echo/")
        assert none.status_code == 503 and none.json()["cause"] == "no_replica"


async def test_streamed_answer_arrives_before_the_replica_finishes(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    async with proxy_node(Resolver([local(url)])) as (node, _proxy):
        async with client.stream("GET", f"{node}/apps/echo/stream") as got:
            assert got.headers["content-type"].startswith("text/event-stream")
            chunks = got.aiter_raw()
            first = await asyncio.wait_for(anext(chunks), WAIT)
            assert first == b"data: first\n\n"
            assert not r.finished.is_set()  # the replica is still holding its last chunk
            r.release.set()
            rest = b"".join([c async for c in chunks])
        assert rest == b"data: last\n\n" and r.finished.is_set()


async def test_client_leaving_an_endless_stream_lets_go_of_the_replica(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    async with proxy_node(Resolver([local(url)])) as (node, _proxy):
        async with client.stream("GET", f"{node}/apps/echo/stream") as got:
            await asyncio.wait_for(anext(got.aiter_raw()), WAIT)
        # the replica never sends its last chunk: the proxy hangs up on it once the client has gone
        await asyncio.wait_for(r.stream_ended.wait(), WAIT)
        assert not r.finished.is_set()


async def test_large_upload_streams_through_intact(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    size, piece = 20 << 20, 64 << 10
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(size // piece):
            chunk = bytes([i % 251]) * piece
            digest.update(chunk)
            yield chunk
            if i == (4 << 20) // piece:
                # the replica must already hold 2 MiB while the client has sent only 4: the proxy passes
                # the body on as it comes instead of collecting it first
                await asyncio.wait_for(r.got_2mib.wait(), WAIT)

    async with proxy_node(Resolver([local(url)])) as (node, _proxy):
        got = await client.post(f"{node}/apps/echo/upload", content=body())
        assert got.status_code == 200
        assert got.json() == {"size": size, "sha256": digest.hexdigest()}


async def test_answers_without_length_and_without_body(client: httpx.AsyncClient) -> None:
    async with raw_server(answer_until_close) as odd:
        async with proxy_node(Resolver([local(odd)])) as (node, proxy):
            got = await client.get(f"{node}/apps/echo/")
            assert got.status_code == 200
            assert got.text == "".join(f"line {i}\n" for i in range(50))
            assert proxy.failed == 0


async def test_replica_closing_kept_alive_connections_fails_nothing(client: httpx.AsyncClient) -> None:
    async with raw_server(answer_then_hang_up) as rude:
        async with proxy_node(Resolver([local(rude)])) as (node, proxy):
            for _ in range(5):
                got = await client.get(f"{node}/apps/echo/")
                assert (got.status_code, got.text) == (200, "ok")
            assert (proxy.retried, proxy.failed) == (0, 0)


# -- retries ------------------------------------------------------------------------------------------


async def test_retry_on_refused_connection(replica: tuple[str, Replica], client: httpx.AsyncClient) -> None:
    url, r = replica
    async with proxy_node(Resolver([local(closed_port()), local(url)])) as (node, proxy):
        got = await client.post(f"{node}/apps/echo/x", content=b"small body")
        assert got.status_code == 200 and got.json()["body"] == "small body"
        assert (proxy.retried, proxy.failed, r.hits) == (1, 0, 1)
        # a big streamed body is still retried when the failed connection took none of it
        big = await client.post(f"{node}/apps/echo/upload", content=b"x" * (3 << 20))
        assert big.status_code == 200 and big.json()["size"] == 3 << 20


async def test_retry_on_reset_before_answer(replica: tuple[str, Replica], client: httpx.AsyncClient) -> None:
    url, r = replica
    async with raw_server(reset_before_answer) as bad:
        async with proxy_node(Resolver([local(bad), local(url)])) as (node, proxy):
            got = await client.get(f"{node}/apps/echo/x")
            assert got.status_code == 200 and got.json()["replica"] == "a"
            assert (proxy.retried, proxy.failed) == (1, 0)


async def test_no_retry_once_the_replica_answered(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    async with raw_server(break_after_headers) as bad:
        async with proxy_node(Resolver([local(bad), local(url)])) as (node, proxy):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"{node}/apps/echo/x")
            assert (proxy.retried, proxy.failed, r.hits) == (0, 1, 0)


async def test_no_retry_of_a_streamed_body_the_replica_took(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    async with raw_server(reset_after_some_body) as bad:
        async with proxy_node(Resolver([local(bad), local(url)])) as (node, proxy):
            got = await client.post(f"{node}/apps/echo/upload", content=b"y" * (3 << 20))
            assert got.status_code == 502 and got.json()["cause"] == "upstream_unreachable"
            assert (proxy.retried, proxy.failed, r.hits) == (0, 1, 0)


async def test_every_replica_down_is_a_502(client: httpx.AsyncClient) -> None:
    async with proxy_node(Resolver([local(closed_port()), local(closed_port())])) as (node, proxy):
        got = await client.get(f"{node}/apps/echo/")
        assert got.status_code == 502
        assert (
            got.json()["cause"] == "upstream_unreachable"
            and got.headers[ERROR_HEADER] == "upstream_unreachable"
        )
        assert (proxy.retried, proxy.failed) == (1, 1)


async def test_a_replica_silent_too_long_is_a_504_and_not_retried(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    took = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        took.set()
        await reader.read()  # until the proxy gives up and closes

    async with raw_server(silent) as slow:
        async with proxy_node(Resolver([local(slow), local(url)]), read_timeout=0.3) as (node, proxy):
            got = await client.get(f"{node}/apps/echo/")
            assert took.is_set()
            assert got.status_code == 504 and got.json()["cause"] == "upstream_timeout"
            assert (proxy.retried, proxy.failed, r.hits) == (0, 1, 0)


# -- hops between nodes -------------------------------------------------------------------------------


async def test_hop_to_the_hosting_node_and_its_local_replica(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, _ = replica
    hosting = Resolver([remote("http://127.0.0.1:9", node="0xsomewhere"), local(url)])
    async with proxy_node(hosting) as (host_url, _host):
        entry = Resolver([remote(host_url, node="0xhost")])
        async with proxy_node(entry) as (node, _proxy):
            got = await client.get(f"{node}/apps/echo/deep/path?x=1")
            assert got.status_code == 200
            answer = got.json()
            assert (answer["raw_path"], answer["query"]) == ("/deep/path", "x=1")
            # the hosting node was asked for local replicas only, by owner and name
            assert entry.calls == [(AppRef("echo"), False)]
            assert hosting.calls == [(AppRef("echo", OWNER), True)]
            # the client's view is kept across the hop
            assert header(answer, "x-forwarded-prefix") == ["/apps/echo"]
            assert header(answer, "x-forwarded-host") == [node.removeprefix("http://")]
            assert header(answer, "x-forwarded-for") == ["127.0.0.1, 127.0.0.1"]
            assert header(answer, HOP_HEADER) == []


async def test_hop_to_a_node_without_replica_moves_on(
    replica: tuple[str, Replica], client: httpx.AsyncClient
) -> None:
    url, r = replica
    async with proxy_node(Resolver([])) as (empty_url, _empty):  # hosts nothing: 503 no_replica
        async with proxy_node(Resolver([local(url)])) as (host_url, _host):
            entry = Resolver([remote(empty_url, node="0xempty"), remote(host_url, node="0xhost")])
            async with proxy_node(entry) as (node, proxy):
                got = await client.post(f"{node}/apps/echo/x", content=b"b")
                assert got.status_code == 200 and got.json()["body"] == "b"
                assert (proxy.retried, proxy.failed, r.hits) == (1, 0, 1)
                # the app's own 503 behind a hop is its answer, not a reason to retry
                own = await client.get(f"{node}/apps/echo/status/503")
                assert own.status_code == 503 and own.json()["error"] == "the app's own"


# -- websockets -----------------------------------------------------------------------------------


def ws_url(node: str, path: str) -> str:
    return "ws" + node.removeprefix("http") + path


async def test_websocket_echo_text_binary_and_close_codes(replica: tuple[str, Replica]) -> None:
    url, r = replica
    async with proxy_node(Resolver([local(closed_port()), local(url)])) as (node, proxy):
        async with ws_connect(ws_url(node, "/apps/echo/ws"), subprotocols=["chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "a:hi"
            await ws.send(b"\x00\x01\x02")
            assert await asyncio.wait_for(ws.recv(), WAIT) == b"\x02\x01\x00"
            await ws.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")
        assert proxy.websockets == 1 and proxy.retried == 1

        # the client closes: the replica sees the client's code
        r.ws_closed = asyncio.get_running_loop().create_future()
        async with ws_connect(ws_url(node, "/apps/echo/ws")) as ws:
            await ws.send("x")
            await asyncio.wait_for(ws.recv(), WAIT)
            await ws.close(code=4002, reason="done")
        assert await asyncio.wait_for(r.ws_closed, WAIT) == 4002


async def test_websocket_refusals_are_http_errors() -> None:
    async with proxy_node(Resolver(error=NoSuchApp("nope"))) as (node, _proxy):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws_url(node, "/apps/nope/ws")):
                pass
        assert refused.value.response.status_code == 404
        assert refused.value.response.headers[ERROR_HEADER] == "no_app"
    async with proxy_node(Resolver([local(closed_port())])) as (node, proxy):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws_url(node, "/apps/echo/ws")):
                pass
        assert refused.value.response.status_code == 502
        assert proxy.websocket_failed == 1


async def test_websocket_through_a_hop(replica: tuple[str, Replica]) -> None:
    url, _ = replica
    hosting = Resolver([local(url)])
    async with proxy_node(hosting) as (host_url, _host):
        async with proxy_node(Resolver([remote(host_url)])) as (node, _proxy):
            async with ws_connect(ws_url(node, f"/apps/{OWNER}/echo/ws")) as ws:
                await ws.send("via hop")
                assert await asyncio.wait_for(ws.recv(), WAIT) == "a:via hop"
            assert hosting.calls == [(AppRef("echo", OWNER), True)]
