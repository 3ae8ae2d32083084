"""dAuth's HTTP API in one process: an oracle (real service on a real CSTORE, scripted chain) answers
admission requests, refusals come in the node's one error shape, and an edge node reads that shape."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from r1os.cstore import CStoreService
from r1os.dauth import DauthService, make_request
from r1os.dauth._models import sign_obj
from r1os.identity import NodeKey
from r1os.node import Service, ServiceContext
from r1os.node._api import install_error_handlers
from tests.conftest import async_wait_for, lone_context
from tests.dauth.fakes import FakeChain, deployment_file

NET = "test"  # the network of `lone_context`
ERROR_KEYS = {"error", "cause", "hint"}


@dataclass
class Running:
    """Services started on their own contexts, stopped the way a node stops them."""

    started: list[tuple[Service, ServiceContext]] = dataclasses.field(default_factory=list)

    async def start(self, service: Service, ctx: ServiceContext) -> None:
        await service.start(ctx)
        self.started.append((service, ctx))

    async def stop(self) -> None:
        for service, ctx in reversed(self.started):
            await ctx.close()
            await service.stop()
            await ctx.run_stop_callbacks()


async def start_node(
    running: Running, tmp: Path, key: NodeKey, dauth: DauthService, http: httpx.AsyncClient | None = None
) -> FastAPI:
    """CSTORE and dAuth of one node, and an app with dAuth's routes and the node's error handlers."""
    for name in ("cstore", "dauth"):  # the node makes each service's data folder before it starts it
        (tmp / name).mkdir(parents=True, exist_ok=True)
    cstore = CStoreService(fsync=False)
    await running.start(cstore, lone_context("cstore", tmp / "cstore", key))
    ctx = dataclasses.replace(lone_context("dauth", tmp / "dauth", key), _services=[cstore, dauth])
    if http is not None:
        ctx = dataclasses.replace(ctx, http=http)
    await running.start(dauth, ctx)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(ctx.router)
    return app


@dataclass
class Oracle:
    key: NodeKey
    chain: FakeChain
    service: DauthService
    app: FastAPI
    client: httpx.AsyncClient


@pytest.fixture
async def oracle(tmp_path: Path) -> AsyncIterator[Oracle]:
    key = NodeKey.generate()
    chain = FakeChain([key.address])
    service = DauthService(
        network=NET, oracle=True, oracles=[key.address], deployment=deployment_file(tmp_path), chain=chain
    )
    running = Running()
    app = await start_node(running, tmp_path / "oracle", key, service)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://oracle")
    yield Oracle(key, chain, service, app, client)
    await client.aclose()
    await running.stop()


def error_of(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert set(body) == ERROR_KEYS, body
    return body


async def test_bad_admission_requests_answer_the_one_error_shape(oracle: Oracle) -> None:
    node = NodeKey.generate()

    async def post(body: Any = None, content: bytes | None = None) -> httpx.Response:
        if content is not None:
            return await oracle.client.post("/v1/dauth/admit", content=content)
        return await oracle.client.post("/v1/dauth/admit", json=body)

    r = await post(content=b"\x00not json")
    assert r.status_code == 400
    body = error_of(r)
    assert body["cause"] == "malformed" and '"sig"' in body["error"] and "make_request" in body["hint"]
    r = await post(["a", "list"])
    assert (r.status_code, error_of(r)["cause"]) == (400, "malformed")

    forged = make_request(NodeKey.generate(), NET, "t")
    forged["request"]["address"] = node.address
    r = await post(forged)
    assert (r.status_code, error_of(r)["cause"]) == (401, "bad_signature")
    assert "signed by" in r.json()["error"] and "own address" in r.json()["hint"]

    stale = make_request(node, NET, "t")
    stale["request"]["ts"] -= 600
    stale["sig"] = sign_obj(node, stale["request"])
    r = await post(stale)
    assert (r.status_code, error_of(r)["cause"]) == (401, "stale")
    r = await post(make_request(node, "othernet", "t"))
    assert (r.status_code, error_of(r)["cause"]) == (400, "wrong_network")

    r = await post(make_request(node, NET, "t"))
    assert (r.status_code, error_of(r)["cause"]) == (403, "not_licensed")
    assert f"licence buy --link {node.address}" in r.json()["hint"]

    oracle.chain.link(node.address, 7)
    request = make_request(node, NET, "t")
    r = await post(request)
    assert r.status_code == 200, r.text
    assert r.json()["record"]["address"] == node.address and r.json()["oracle"] == oracle.key.address
    r = await post(request)
    assert (r.status_code, error_of(r)["cause"]) == (409, "replayed") and "nonce" in r.json()["error"]

    oracle.chain.down = True
    r = await post(make_request(node, NET, "t"))
    assert (r.status_code, error_of(r)["cause"]) == (503, "chain_unavailable")

    # What FastAPI refuses before dAuth sees it has the same shape.
    r = await oracle.client.get("/v1/dauth/admit")
    assert (r.status_code, error_of(r)["cause"]) == (405, "method_not_allowed")


async def test_the_admitted_set_and_status_routes(oracle: Oracle, tmp_path: Path) -> None:
    node = NodeKey.generate()
    oracle.chain.link(node.address, 3)
    assert (await oracle.client.post("/v1/dauth/admit", json=make_request(node, NET, "t"))).status_code == 200
    data = (await oracle.client.get("/v1/dauth/admitted")).json()
    assert data["enabled"] is True and data["count"] == 1
    assert data["oracles"] == [oracle.key.address.lower()]
    assert data["admitted"][node.address.lower()]["record"]["licence"] == {"type": "ND", "token_id": 3}
    status = (await oracle.client.get("/v1/dauth/status")).json()
    assert status["state"] == "oracle" and status["admitted"] is True and status["admitted_count"] == 1
    assert status["network_config"]["chain_id"] == 31337
    r = await oracle.client.post("/v1/dauth/retry")  # the operator's call: no token, no retry
    assert (r.status_code, error_of(r)["cause"]) == (401, "unauthenticated")
    token = {"authorization": f"Bearer {(tmp_path / 'oracle' / 'dauth' / 'api-token').read_text().strip()}"}
    r = await oracle.client.post("/v1/dauth/retry", headers=token)
    assert r.json() == {"retrying": False, "state": "oracle"}
    # /openapi.json describes the answers and the error shape.
    spec = (await oracle.client.get("/openapi.json")).json()
    admit = spec["paths"]["/v1/dauth/admit"]["post"]
    assert admit["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/AdmitAnswer")
    assert admit["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorAnswer")
    assert "request" in admit["requestBody"]["content"]["application/json"]["schema"]["properties"]
    for path in ("/v1/dauth/admitted", "/v1/dauth/status", "/v1/dauth/retry"):
        assert "4XX" in next(iter(spec["paths"][path].values()))["responses"]


async def test_an_edge_node_reads_the_refusal_then_is_admitted_on_retry(
    oracle: Oracle, tmp_path: Path
) -> None:
    key = NodeKey.generate()
    # The edge node's peer client reaches the oracle's app in process.
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=oracle.app), timeout=10)
    edge = DauthService(
        network=NET,
        oracles=[oracle.key.address],
        oracle_urls=["http://oracle/"],
        retry_initial=30.0,
        retry_max=60.0,
    )
    running = Running()
    try:
        app = await start_node(running, tmp_path / "edge", key, edge, http)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")

        async def status() -> dict[str, Any]:
            data: dict[str, Any] = (await client.get("/v1/dauth/status")).json()
            return data

        async def refused() -> dict[str, Any] | None:
            s = await status()
            return s if s["last_refusal"] else None

        s = await async_wait_for(refused, 10, "the first refusal")
        assert s is not None
        assert s["state"] == "waiting" and s["admitted"] is False
        assert s["last_refusal"]["cause"] == "not_licensed"
        assert key.address in s["last_refusal"]["error"]
        assert "licence buy --link" in s["last_refusal"]["hint"]
        assert not edge.admits(NodeKey.generate().address) and edge.admits(oracle.key.address)
        # Edges do not answer admission requests.
        r = await client.post("/v1/dauth/admit", json=make_request(key, NET, "t"))
        assert (r.status_code, error_of(r)["cause"]) == (404, "not_oracle")

        oracle.chain.link(key.address, 9)
        token = {"authorization": f"Bearer {(tmp_path / 'edge' / 'dauth' / 'api-token').read_text().strip()}"}
        r = await client.post("/v1/dauth/retry", headers={"authorization": "Bearer wrong"})
        assert (r.status_code, error_of(r)["cause"]) == (401, "bad_token")
        r = await client.post("/v1/dauth/retry", headers=token)
        assert r.json() == {"retrying": True, "state": "waiting"}
        s = await async_wait_for(
            lambda: _admitted(status), 10, "admission after the retry (the backoff is far longer)"
        )
        assert s is not None
        assert s["record"]["record"]["licence"]["token_id"] == 9 and s["last_refusal"] is None
        assert s["network_config"]["oracles"] == [oracle.key.address]
        assert edge.admits(key.address) and edge.is_admitted(key.address)
        await client.aclose()
    finally:
        await running.stop()
        await http.aclose()


async def _admitted(status: Any) -> dict[str, Any] | None:
    s: dict[str, Any] = await status()
    return s if s["state"] == "admitted" else None
