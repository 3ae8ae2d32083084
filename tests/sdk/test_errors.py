"""A node's error answer, as the SDK raises it and the CLI prints it.

The server is a real HTTP server (uvicorn) with the node's own error handlers, so the shape tested
here is the one every node route answers, not a copy of it; plus what a proxy in front of a node may
answer instead (an HTML page) and a success that is not JSON.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, PlainTextResponse
from typer.testing import CliRunner

from r1os.cli import app as cli_app
from r1os.cstore._ops import CStoreError
from r1os.errors import R1osError, RemoteError
from r1os.identity import NodeKey
from r1os.node._api import install_error_handlers
from r1os.sdk import AsyncSession, CStoreRefused, Session

NODE = NodeKey.generate()
QUOTA = "namespace app:0xabc: is full (1000 keys)"
QUOTA_HINT = "delete keys you no longer need"
PROXY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"
)


def _full() -> R1osError:
    return R1osError(QUOTA, cause="quota", hint=QUOTA_HINT, status=409)


def _node_app(behind_proxy: bool) -> FastAPI:
    """Routes at the SDK's paths, each answering one kind of failure. `/v1/node` answers a proxy's error
    page `behind_proxy`, else the node's address and network (what a session with a key asks first, to
    sign its writes for this node)."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/cstore/get")
    async def get(key: str) -> dict[str, Any]:
        raise _full()

    @app.post("/v1/cstore/batch")
    async def batch() -> dict[str, Any]:
        raise _full()

    @app.get("/v1/oracle/epochs/{epoch}")
    async def epoch(epoch: int) -> dict[str, Any]:
        raise HTTPException(404, f"epoch {epoch} has no agreed table on this oracle")

    @app.get("/v1/node", response_model=None)
    async def node() -> HTMLResponse | dict[str, Any]:
        if behind_proxy:
            return HTMLResponse(PROXY_PAGE, status_code=502)
        return {"address": NODE.address, "network": "test"}

    @app.get("/v1/dauth/status")
    async def status() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    # The socket listens before the server thread starts: a request made at once waits in the
    # backlog until uvicorn accepts it, so nothing has to wait for the server to come up.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with _serve(_node_app(behind_proxy=True)) as u:
        yield u


@pytest.fixture(scope="module")
def signing_url() -> Iterator[str]:
    with _serve(_node_app(behind_proxy=False)) as u:
        yield u


def _is_the_quota_refusal(exc: BaseException) -> None:
    assert isinstance(exc, CStoreRefused)
    # What in-node code catches and what any SDK caller catches.
    assert isinstance(exc, CStoreError) and isinstance(exc, RemoteError)
    assert str(exc) == QUOTA
    assert (exc.cause, exc.hint, exc.status) == ("quota", QUOTA_HINT, 409)


def test_sync_sdk_raises_the_nodes_error(url: str, signing_url: str) -> None:
    with Session(url) as s:
        with pytest.raises(CStoreRefused) as read:
            s.cstore.get("app:0xabc:x")
        _is_the_quota_refusal(read.value)
    with Session(signing_url, key=NodeKey.generate()) as s:
        with pytest.raises(CStoreRefused) as write:
            s.cstore.set(s.cstore.namespace + "x", 1)
        _is_the_quota_refusal(write.value)
        with pytest.raises(RemoteError) as missing:
            s.oracle.epoch(7)
    assert str(missing.value) == "epoch 7 has no agreed table on this oracle"
    assert (missing.value.cause, missing.value.status, missing.value.hint) == ("not_found", 404, None)


async def test_async_sdk_raises_the_nodes_error(signing_url: str) -> None:
    async with AsyncSession(signing_url, key=NodeKey.generate()) as s:
        with pytest.raises(CStoreRefused) as write:
            async with s.cstore.batch() as b:
                b.set(s.cstore.namespace + "a", 1)
                b.hset(s.cstore.namespace + "h", "f", 2)
        _is_the_quota_refusal(write.value)
        with pytest.raises(RemoteError) as missing:
            await s.oracle.epoch(7)
        assert missing.value.cause == "not_found"


def test_an_html_error_page_is_one_readable_line_with_the_status(url: str) -> None:
    with Session(url) as s, pytest.raises(RemoteError) as info:
        s.node()
    message = str(info.value)
    assert message == "127.0.0.1 answered 502 Bad Gateway"  # the page's title is the status line again
    assert (info.value.cause, info.value.status) == ("bad_gateway", 502)


async def test_a_success_that_is_not_json_is_an_error_too(url: str) -> None:
    async with AsyncSession(url) as s:
        with pytest.raises(RemoteError) as info:
            await s.dauth.status()
    assert str(info.value) == "127.0.0.1 answered 200 but not with a JSON object"
    assert info.value.cause == "bad_answer" and info.value.hint


def _cli(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli_app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output.splitlines()


def test_cli_prints_message_cause_and_hint(url: str) -> None:
    code, lines = _cli("cstore", "get", "app:0xabc:x", "--node", url)
    assert code == 1
    assert lines == [f"error: {QUOTA} (quota)", f"hint: {QUOTA_HINT}"]


def test_cli_prints_a_proxy_page_as_one_line(url: str) -> None:
    code, lines = _cli("node", "info", "--node", url)
    assert code == 1
    assert lines == ["error: 127.0.0.1 answered 502 Bad Gateway (bad_gateway)"]
    code, lines = _cli("node", "admission", "--node", url)
    assert code == 1
    assert lines == [
        "error: 127.0.0.1 answered 200 but not with a JSON object (bad_answer)",
        "hint: is this URL a node's HTTP API (and not a proxy's page)?",
    ]


def test_cli_unreachable_node_says_so() -> None:
    code, lines = _cli("node", "info", "--node", "http://127.0.0.1:9")
    assert code == 1
    assert lines[0].startswith("error: cannot reach the node at http://127.0.0.1:9: ")
    assert "[Errno" in lines[0] or "refused" in lines[0]  # the OS's reason, not swallowed as markup
    assert lines[1] == "hint: is the node running? check the URL (--node)"
