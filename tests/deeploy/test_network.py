"""Deeploy on a real in-process network: requests through any node, placement, health, proxy,
failover, rolling update, scale and delete, and the refusals the issue lists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.deeploy import parse_spec
from r1os.deeploy._requests import sign_app_request
from r1os.identity import NodeKey
from tests.conftest import async_wait_for
from tests.deeploy.cluster import DeeployNet

pytestmark = pytest.mark.timeout(120)

ECHO = (
    "name: echo\nruntime: process\ncommand: [serve, '{port}']\nreplicas: 2\n"
    "health: {http: /, interval_s: 0.2, failures: 2, grace_s: 5}\n"
)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[DeeployNet]:
    async with DeeployNet.in_memory(tmp_path, 4) as n:
        yield n


async def send(
    net: DeeployNet, node: int, key: NodeKey, action: str, spec: str | None = None, **kw: Any
) -> httpx.Response:
    parsed = parse_spec(spec) if spec else None
    name = parsed.name if parsed else kw.pop("name")
    signed = sign_app_request(key, network="dtest", action=action, name=name, spec=parsed, **kw)  # type: ignore[arg-type]
    return await net.post(node, "/v1/apps/requests", content=signed.model_dump_json())


async def status(net: DeeployNet, node: int, owner: str, name: str = "echo") -> dict[str, Any]:
    r = await net.get(node, f"/v1/apps/{owner}/{name}")
    assert r.status_code == 200, r.text
    return r.json()


async def healthy(net: DeeployNet, owner: str, n: int, version: int = 1, node: int = 0) -> dict[str, Any]:
    async def ok() -> dict[str, Any] | None:
        s = await status(net, node, owner)
        good = [r for r in s["replicas"] if r["healthy"] and r["version"] == version]
        return s if len(good) == n and len(s["replicas"]) == n else None

    return await async_wait_for(ok, 30, f"{n} healthy replicas at v{version}")


async def test_deploy_through_an_edge_then_serve_through_a_node_without_replica(net: DeeployNet) -> None:
    owner = NodeKey.generate()
    r = await send(net, 3, owner, "deploy", ECHO)  # node 3 is not an oracle: it forwards
    assert r.status_code == 200, r.text
    s = await healthy(net, owner.address.lower(), 2)
    hosts = {x["node"] for x in s["replicas"]}
    assert len(hosts) == 2
    outsider = next(i for i in range(4) if net.node(i).address.lower() not in hosts)
    answer = await net.get(outsider, "/apps/echo/hello?x=1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == "/hello?x=1"
    # Both owner-qualified and plain names route.
    answer = await net.get(outsider, f"/apps/{owner.address.lower()}/echo/x")
    assert answer.status_code == 200
    # The replica's app got its own identity and the node's API URL.
    host = [n.address.lower() for n in net.live()].index(sorted(hosts)[0])
    rep = net.memory[host].launches[-1]
    assert rep.env["R1OS_API_URL"].startswith("http://127.0.0.1:")
    assert NodeKey.from_hex(rep.env["R1OS_PRIVATE_KEY"]).address != net.node(0).address


async def test_refusals(net: DeeployNet) -> None:
    owner, mallory = NodeKey.generate(), NodeKey.generate()
    signed = sign_app_request(owner, network="dtest", action="deploy", name="echo", spec=parse_spec(ECHO))
    body = signed.model_dump_json()
    assert (await net.post(1, "/v1/apps/requests", content=body)).status_code == 200
    replay = await net.post(2, "/v1/apps/requests", content=body)
    assert replay.status_code == 400 and replay.json()["cause"] == "replayed", replay.text
    # Someone else cannot change or delete it: their request names their own app, or forges the owner.
    forged = sign_app_request(mallory, network="dtest", action="delete", name="echo").model_dump(mode="json")
    forged["request"]["owner"] = owner.address
    r = await net.post(0, "/v1/apps/requests", json=forged)
    assert r.status_code == 400 and r.json()["cause"] == "bad_signature"
    r = await send(net, 0, mallory, "delete", name="echo")
    assert r.status_code == 404 and r.json()["cause"] == "no_app"
    # Unsigned / malformed.
    r = await net.post(0, "/v1/apps/requests", content=b'{"request": 1}')
    assert r.status_code == 400 and r.json()["cause"] == "bad_request"
    # Beyond every node.
    r = await send(
        net, 0, owner, "deploy", ECHO.replace("name: echo", "name: huge") + "resources: {cpu: 64}\n"
    )
    assert r.status_code == 422 and r.json()["cause"] == "no_capacity" and "cpu" in r.json()["error"]
    # Deploying twice.
    r = await send(net, 0, owner, "deploy", ECHO)
    assert r.status_code == 409 and r.json()["hint"]
    # Clear secrets.
    clear = sign_app_request(
        owner, network="dtest", action="deploy", name="sec", spec=parse_spec(ECHO.replace("echo", "sec"))
    )
    data = clear.model_dump(mode="json")
    data["request"]["spec"]["secrets"] = {"TOKEN": "plain"}
    r = await net.post(0, "/v1/apps/requests", json=data)
    assert r.status_code == 400  # the signature no longer matches either: refused before anything else


async def test_failover_rolling_update_scale_delete(net: DeeployNet) -> None:
    owner = NodeKey.generate()
    oid = owner.address.lower()
    assert (await send(net, 0, owner, "deploy", ECHO)).status_code == 200
    s = await healthy(net, oid, 2)
    # Failover: kill a non-oracle node that holds a replica.
    addrs = [n.address.lower() for n in net.live()]
    victim = next(i for i in range(1, 4) if addrs[i] in {x["node"] for x in s["replicas"]})
    await net.kill(victim)

    async def moved() -> bool:
        st = await status(net, 0, oid)
        nodes = {x["node"] for x in st["replicas"] if x["healthy"]}
        return len(nodes) == 2 and addrs[victim] not in nodes

    await async_wait_for(moved, 30, "the lost replica to be placed and healthy elsewhere")
    # Rolling update: v2 replaces v1 one replica at a time; the app answers throughout.
    errors = 0
    stop = asyncio.Event()

    async def load() -> int:
        nonlocal errors
        done = 0
        while not stop.is_set():
            r = await net.get(0, "/apps/echo/")
            errors += r.status_code != 200
            done += 1
        return done

    loader = asyncio.create_task(load())
    assert (await send(net, 0, owner, "update", ECHO + "env: {V: '2'}\n")).status_code == 200
    await healthy(net, oid, 2, version=2)
    stop.set()
    served = await loader
    assert served > 0 and errors == 0
    # Scale up and down.
    assert (await send(net, 0, owner, "scale", name="echo", replicas=3)).status_code == 200
    await healthy(net, oid, 3, version=2)
    assert (await send(net, 0, owner, "scale", name="echo", replicas=1)).status_code == 200
    await healthy(net, oid, 1, version=2)
    # Delete: every replica stopped and its folder gone.
    assert (await send(net, 0, owner, "delete", name="echo")).status_code == 200

    def folders() -> list[Path]:
        found = []
        for n in net.live():
            for sub in ("apps", "run"):
                d = n.home / "services" / "deeploy" / sub
                found += list(d.iterdir()) if d.exists() else []
        return found

    async def gone() -> bool:
        if (await net.get(0, f"/v1/apps/{oid}/echo")).status_code != 404:
            return False
        agents_empty = all(not n.services[1].agent.replicas for n in net.live())  # type: ignore[attr-defined]
        return agents_empty and not folders()

    await async_wait_for(gone, 20, "every replica to stop and its folders to go")
