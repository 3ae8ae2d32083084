"""Who a session is to a real node: a key signs what changes (the node sees the key's address), the
node's token makes it the node's operator, and neither gets clear refusals for operator calls.

The node runs in this process with its real HTTP server and request authentication; a small service
answers who the node thinks is calling (`ctx.auth`), beside CSTORE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request

from r1os.cstore import CStoreService
from r1os.errors import RemoteError
from r1os.identity import NodeKey
from r1os.node import Node, NodeConfig, Service, ServiceContext
from r1os.sdk import TOKEN_ENV, AsyncSession, CStoreRefused, NodeAuth, NodeIdentity, NoToken, Session
from r1os.transport import MemoryHub, MemoryTransport


class Probe(Service):
    """Routes that answer who called them, and routes for each kind of caller."""

    name = "probe"

    async def start(self, ctx: ServiceContext) -> None:
        @ctx.router.api_route("/v1/probe/who", methods=["GET", "POST", "PUT", "DELETE"])
        async def who(request: Request) -> dict[str, Any]:
            caller = await ctx.auth.caller(request)
            body = (await request.body()).decode()
            return {"kind": caller.kind, "address": caller.address, "body": body, "query": request.url.query}

        @ctx.router.post("/v1/probe/signed")
        async def signed(request: Request) -> dict[str, Any]:
            return {"address": (await ctx.auth.require(request)).address}

        @ctx.router.post("/v1/probe/streamed")
        async def streamed(request: Request) -> dict[str, Any]:
            caller = await ctx.auth.require(request, signed_body=False)
            return {"address": caller.address, "size": len(await request.body())}

        @ctx.router.post("/v1/probe/operator")
        async def operator(request: Request) -> dict[str, Any]:
            return {"local": (await ctx.auth.require(request, local=True)).local}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(home=tmp_path / "n", network="authtest", http="127.0.0.1:0", key_strength="light")
    n = Node(
        config, password="pw", services=[CStoreService(), Probe()], transport=MemoryTransport(MemoryHub())
    )
    await n.start()
    yield n
    await n.stop()


def _token(node: Node) -> str:
    return (node.home / "api-token").read_text().strip()


async def test_a_key_signs_what_changes_and_the_node_sees_its_address(node: Node) -> None:
    key = NodeKey.generate()

    def sync_use() -> list[Any]:
        with Session(node.url, key=key) as s:
            posted = s.request("POST", "/v1/probe/who", params={"a": "1 2", "b": "x:y"}, json={"n": 1})
            put = s.request("PUT", "/v1/probe/who")
            read = s.request("GET", "/v1/probe/who")
            s.cstore.set(s.cstore.namespace + "model", {"v": 3})
            return [posted, put, read, s.cstore.get(s.cstore.namespace + "model"), s.auth.node]

    posted, put, read, value, learned = await asyncio.to_thread(sync_use)
    assert (posted["kind"], posted["address"]) == ("signed", key.address)
    assert posted["body"] == '{"n":1}' and posted["query"] == "a=1+2&b=x%3Ay"  # signed as sent
    assert (put["kind"], put["address"]) == ("signed", key.address)
    assert read["kind"] == "anonymous"  # reads are not signed unless asked
    assert value == {"v": 3}
    assert learned == NodeIdentity(node.address, "authtest")

    async with AsyncSession(node.url, key=key, sign_reads=True) as s:
        assert (await s.request("GET", "/v1/probe/who", params={"q": "1"}))["address"] == key.address
        assert (await s.request("DELETE", "/v1/probe/who"))["kind"] == "signed"
        assert (await s.request("POST", "/v1/probe/signed", json=[1, 2]))["address"] == key.address
        await s.cstore.hset(s.cstore.namespace + "h", "f", 1)
        assert await s.cstore.hgetall(s.cstore.namespace + "h") == {"f": 1}
        # A key is not the node's operator.
        with pytest.raises(RemoteError) as refused:
            await s.request("POST", "/v1/probe/operator")
        assert (refused.value.cause, refused.value.status) == ("forbidden", 403)
        assert "api-token" in (refused.value.hint or "")


async def test_the_token_makes_the_session_the_nodes_operator(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = {"kind": "local", "address": node.address}

    def sync_use() -> list[Any]:
        with Session(node.url, home=node.home) as s:  # the token read from the node's home
            who = s.request("POST", "/v1/probe/who", json={})
            ok = s.request("POST", "/v1/probe/operator")
            ns = f"node:{node.address.lower()}:"
            s.cstore.set(ns + "by-operator", 7)  # the node signs it for its operator
            return [who, ok, s.cstore.get(ns + "by-operator"), s.request("GET", "/v1/probe/who")]

    who, ok, value, read = await asyncio.to_thread(sync_use)
    assert {k: who[k] for k in operator} == operator and ok == {"local": True} and value == 7
    assert read["kind"] == "local"  # the token goes on every request
    async with AsyncSession(node.url, token=_token(node)) as s:
        assert s.auth.kind == "local"
        assert await s.request("POST", "/v1/probe/operator") == {"local": True}
    monkeypatch.setenv(TOKEN_ENV, _token(node))
    async with AsyncSession(node.url) as s:
        assert await s.request("POST", "/v1/probe/operator") == {"local": True}
    async with AsyncSession(node.url, token="not-the-token") as s:
        with pytest.raises(RemoteError) as wrong:
            await s.request("GET", "/v1/probe/who")
        assert (wrong.value.cause, wrong.value.status) == ("bad_token", 401)


async def test_without_key_or_token_operator_calls_are_refused_clearly(node: Node) -> None:
    async with AsyncSession(node.url) as s:
        assert s.auth.kind == "anonymous"
        assert (await s.request("POST", "/v1/probe/who"))["kind"] == "anonymous"
        with pytest.raises(RemoteError) as refused:
            await s.request("POST", "/v1/probe/operator")
        assert (refused.value.cause, refused.value.status) == ("unauthenticated", 401)
        assert "operator" in str(refused.value) and "api-token" in (refused.value.hint or "")
        with pytest.raises(RemoteError) as unsigned:
            await s.request("POST", "/v1/probe/signed")
        assert unsigned.value.cause == "unauthenticated"
        # A real one: a write the node would sign for its operator.
        with pytest.raises(CStoreRefused) as write:
            await s.cstore.set(f"node:{node.address.lower()}:x", 1)
        assert (write.value.cause, write.value.status) == ("unauthenticated", 401)
        assert "operator" in str(write.value) and "api-token" in (write.value.hint or "")


async def test_a_key_wins_over_a_token(node: Node) -> None:
    key = NodeKey.generate()
    async with AsyncSession(node.url, key=key, token=_token(node)) as s:
        assert s.auth.kind == "signed" and s.auth.token is None
        assert (await s.request("POST", "/v1/probe/who"))["address"] == key.address
        assert (await s.request("GET", "/v1/probe/who"))["kind"] == "anonymous"  # no token sent either
    async with AsyncSession(node.url, key=key, home=node.home / "nowhere") as s:
        assert s.auth.kind == "signed"  # with a key, a token is not even looked for


async def test_a_streamed_body_is_signed_as_unsigned(node: Node) -> None:
    key = NodeKey.generate()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1000

    async with httpx.AsyncClient(auth=NodeAuth(node.url, key=key)) as http:
        r = await http.post(node.url + "/v1/probe/streamed", content=body())
        assert r.json() == {"address": key.address, "size": 3000}
        # A route that wants the body's hash refuses a body signed as UNSIGNED.
        r = await http.post(node.url + "/v1/probe/signed", content=body())
        assert (r.status_code, r.json()["cause"]) == (401, "bad_auth")


async def test_a_home_without_a_token_says_so(tmp_path: Path) -> None:
    with pytest.raises(NoToken) as missing:
        Session("http://127.0.0.1:9", home=tmp_path)
    assert str(tmp_path) in str(missing.value) and missing.value.hint


async def test_a_key_at_a_url_that_is_no_node_is_one_clear_error() -> None:
    # Before its first signed request a session asks the node who it is: unreachable is said as such.
    async with AsyncSession("http://127.0.0.1:9", key=NodeKey.generate()) as s:
        with pytest.raises(Exception, match="cannot reach the node at http://127.0.0.1:9"):
            await s.request("POST", "/v1/probe/who")
