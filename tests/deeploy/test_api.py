"""Deeploy's routes against hostile input: bad owners and names, oversized and malformed requests,
logs for strangers and out-of-range tails (docs/security.md, "Deeploy")."""

from __future__ import annotations

from pathlib import Path

from r1os.identity import NodeKey
from r1os.wire import sign_request
from tests.deeploy.cluster import DeeployNet


async def test_hostile_input_to_the_app_routes(tmp_path: Path) -> None:
    async with DeeployNet.in_memory(tmp_path, 2) as net:
        r = await net.get(1, "/v1/apps", params={"owner": "not-an-address"})
        assert r.status_code == 400 and r.json()["cause"] == "bad_request"
        r = await net.get(1, "/v1/apps/0x1234/echo")
        assert r.status_code == 400 and r.json()["cause"] == "bad_request"
        r = await net.get(1, f"/v1/apps/0x{'ab' * 20}/echo")
        assert r.status_code == 404 and r.json()["cause"] == "no_app"
        r = await net.post(1, "/v1/apps/requests", content=b"{" * (5 * 1024 * 1024))
        assert r.status_code == 413
        for body in (b"", b"[]", b"\xff\xfe", b'{"request": {"action": "explode"}, "signature": "00"}'):
            r = await net.post(1, "/v1/apps/requests", content=body)
            assert r.status_code == 400 and r.json()["cause"] == "bad_request", (body, r.text)
        logs = f"/v1/apps/0x{'ab' * 20}/echo/logs"
        r = await net.get(1, logs)
        assert r.status_code == 401
        stranger = NodeKey.generate()
        node = net.node(1)
        path = logs + "?tail=-1"
        auth = sign_request(stranger, network="dtest", target=node.address, method="GET", path=path, body=b"")
        r = await net.get(1, path, headers={"authorization": auth})
        assert r.status_code == 422  # tail is 0..10,000, checked before anyone is asked for anything
        path = logs + "?tail=5"
        auth = sign_request(stranger, network="dtest", target=node.address, method="GET", path=path, body=b"")
        r = await net.get(1, path, headers={"authorization": auth})
        assert r.status_code == 403 and r.json()["cause"] == "forbidden"
        r = await net.get(1, "/apps/0xnot-hex/echo/")
        assert r.status_code == 404 and r.json()["cause"] == "no_app"
        r = await net.get(1, "/apps/echo/")
        assert r.status_code == 404 and r.json()["cause"] == "no_app"
