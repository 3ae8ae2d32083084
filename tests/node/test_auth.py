"""Who is calling: signed requests (fresh, for this node, this body, once), the local token, and
anonymous callers; forged, replayed, stale, misdirected and malformed proofs are refused with 401."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request

from r1os.errors import WireError
from r1os.identity import NodeKey
from r1os.node import Node, NodeConfig, Service, ServiceContext
from r1os.node._auth import NonceMemory
from r1os.transport import MemoryHub, MemoryTransport
from r1os.wire import sign_request


class Echo(Service):
    name = "echo"

    async def start(self, ctx: ServiceContext) -> None:
        @ctx.router.api_route("/v1/echo/who", methods=["GET", "POST"])
        async def who(request: Request) -> dict[str, Any]:
            caller = await ctx.auth.caller(request)
            return {"kind": caller.kind, "address": caller.address}

        @ctx.router.post("/v1/echo/signed")
        async def signed(request: Request) -> dict[str, Any]:
            caller = await ctx.auth.require(request)
            return {"address": caller.address, "body": (await request.body()).decode()}

        @ctx.router.post("/v1/echo/stream")
        async def stream(request: Request) -> dict[str, Any]:
            caller = await ctx.auth.require(request, signed_body=False)
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
            return {"address": caller.address, "size": size}

        @ctx.router.post("/v1/echo/operator")
        async def operator(request: Request) -> dict[str, Any]:
            await ctx.auth.require(request, local=True)
            return {"ok": True}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(home=tmp_path / "n", network="test", http="127.0.0.1:0", key_strength="light")
    n = Node(config, password="pw", services=[Echo()], transport=MemoryTransport(MemoryHub()))
    await n.start()
    yield n
    await n.stop()


def _signed(node: Node, key: NodeKey, method: str, path: str, body: bytes | None, **kw: Any) -> str:
    target = kw.pop("target", node.address)
    return sign_request(key, network=kw.pop("network", "test"), target=target, method=method, path=path,
                        body=body, **kw)  # fmt: skip


async def test_callers_are_told_apart(node: Node) -> None:
    key = NodeKey.generate()
    token = (node.home / "api-token").read_text().strip()
    assert (node.home / "api-token").stat().st_mode & 0o777 == 0o600
    async with httpx.AsyncClient(base_url=node.url) as http:
        assert (await http.get("/v1/echo/who")).json() == {"kind": "anonymous", "address": None}
        h = {"authorization": _signed(node, key, "GET", "/v1/echo/who?x=1", b"")}
        assert (await http.get("/v1/echo/who?x=1", headers=h)).json() == {
            "kind": "signed", "address": key.address,
        }  # fmt: skip
        h = {"authorization": f"Bearer {token}"}
        assert (await http.get("/v1/echo/who", headers=h)).json() == {
            "kind": "local",
            "address": node.address,
        }
        r = await http.post("/v1/echo/operator", headers=h)
        assert r.json() == {"ok": True}
        body = b'{"a": 1}'
        h = {"authorization": _signed(node, key, "POST", "/v1/echo/signed", body)}
        r = await http.post("/v1/echo/signed", headers=h, content=body)
        assert r.json() == {"address": key.address, "body": '{"a": 1}'}


async def _refused(
    http: httpx.AsyncClient, path: str, header: str | None, body: bytes = b""
) -> dict[str, Any]:
    headers = {"authorization": header} if header is not None else {}
    r = await http.post(path, headers=headers, content=body)
    assert r.status_code in (401, 403), (r.status_code, r.text)
    out: dict[str, Any] = r.json()
    assert set(out) == {"error", "cause", "hint"}
    return out


async def test_forged_replayed_stale_misdirected_and_malformed_proofs_are_refused(node: Node) -> None:
    key = NodeKey.generate()
    body = b"payload"
    path = "/v1/echo/signed"
    async with httpx.AsyncClient(base_url=node.url) as http:
        assert (await _refused(http, path, None, body))["cause"] == "unauthenticated"
        good = _signed(node, key, "POST", path, body)
        assert (await http.post(path, headers={"authorization": good}, content=body)).status_code == 200
        assert (await _refused(http, path, good, body))["cause"] == "replayed"
        fresh = _signed(node, key, "POST", path, body)
        assert (await _refused(http, path, fresh, b"tampered"))["cause"] == "bad_auth"
        other = _signed(node, key, "POST", path, body, target=NodeKey.generate().address)
        assert (await _refused(http, path, other, body))["cause"] == "bad_signature"
        wrong_net = _signed(node, key, "POST", path, body, network="mainnet")
        assert (await _refused(http, path, wrong_net, body))["cause"] == "bad_signature"
        other_path = _signed(node, key, "POST", "/v1/echo/who", body)
        assert (await _refused(http, path, other_path, body))["cause"] == "bad_signature"
        old = _signed(node, key, "POST", path, body, now=1_000_000_000)
        assert (await _refused(http, path, old, body))["cause"] == "stale_auth"
        # another key's signature under my address
        swapped = _signed(node, NodeKey.generate(), "POST", path, body)
        swapped = swapped.replace(swapped.split("address=")[1].split(",")[0], key.address)
        assert (await _refused(http, path, swapped, body))["cause"] == "bad_signature"
        unsigned_body = _signed(node, key, "POST", path, None)
        assert (await _refused(http, path, unsigned_body, body))["cause"] == "bad_auth"
        for garbage in ["R1OS-SIG", "R1OS-SIG a=b", "R1OS-SIG " + "x" * 5000, "Basic dXNlcjpwdw==",
                        good.replace("nonce=", "nonce=ZZ"), good.replace("ts=", "ts=x"),
                        good + ",sig=00", "Bearer nope"]:  # fmt: skip
            out = await _refused(http, path, garbage, body)
            assert out["cause"] in ("bad_auth", "bad_token"), (garbage[:40], out)
        # a streamed route takes UNSIGNED bodies and never reads a body to check a hash
        body = b"z" * 100_000
        h = _signed(node, key, "POST", "/v1/echo/stream", None)
        r = await http.post("/v1/echo/stream", headers={"authorization": h}, content=body)
        assert r.json() == {"address": key.address, "size": 100_000}
        hashed = _signed(node, key, "POST", "/v1/echo/stream", body)
        assert (await _refused(http, "/v1/echo/stream", hashed, body))["cause"] == "bad_auth"
        # a signed stranger is not the operator
        op = _signed(node, key, "POST", "/v1/echo/operator", b"")
        assert (await _refused(http, "/v1/echo/operator", op))["cause"] == "forbidden"
        assert (await http.get("/v1/health")).json()["status"] == "ok"
    assert node.auth.refused["replayed"] == 1


def test_nonce_memory_is_bounded_and_refuses_what_it_forgot() -> None:
    mem = NonceMemory(window_s=60, limit=100)
    now = 1_000_000_000_000.0
    for i in range(250):
        mem.check_and_mark(f"{i:08x}", int(now) + i, now)
    assert len(mem) <= 100
    with pytest.raises(WireError) as caught:  # a replay of a forgotten nonce is not let through
        mem.check_and_mark(f"{5:08x}", int(now) + 5, now)
    assert caught.value.cause == "stale_auth"
    with pytest.raises(WireError) as caught:
        mem.check_and_mark(f"{249:08x}", int(now) + 249, now)
    assert caught.value.cause == "replayed"
    mem.check_and_mark("feedfeed", int(now) + 1000, now)  # a new request still passes
    # once the window has passed, old entries go by age, not by count
    later = now + 10 * 60_000
    mem.check_and_mark("beefbeef", int(later), later)
    assert len(mem) == 1
