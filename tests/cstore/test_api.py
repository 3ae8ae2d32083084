"""CSTORE's HTTP routes on their own (one replica, no broker): every refusal answers the node's one
error shape with a fitting status, and /openapi.json describes every answer."""

from __future__ import annotations

import time

from fastapi import FastAPI

from r1os.cstore import CStoreService, Op, sign_batch
from r1os.identity import NodeKey
from tests.cstore.conftest import client, operator_token, refusal


def _signed(key: NodeKey, ops: list[Op]) -> bytes:
    return sign_batch(key, ops, time.time_ns() // 1_000_000, 0)


async def test_bad_requests_answer_one_error_shape(replica: tuple[CStoreService, FastAPI]) -> None:
    svc, app = replica
    me = svc.ctx.address.lower()
    async with client(app, token=operator_token(svc)) as http:
        # a malformed batch
        refusal(await http.post("/v1/cstore/batch", content=b"\x00garbage"), 400, "malformed")
        # a signed write to a key in no namespace, through the node's own signer: not allowed, with a hint
        body = refusal(
            await http.post(
                "/v1/cstore/write", json={"ops": [{"op": "set", "key": "nowhere:x", "value": 1}]}
            ),
            403,
            "forbidden",
        )
        assert "node:<your address>" in body["hint"]
        # another key's namespace, signed by its writer
        intruder = NodeKey.generate()
        foreign = _signed(intruder, [Op("set", f"node:{me}:x", value=1)])
        refusal(await http.post("/v1/cstore/batch", content=foreign), 403, "forbidden")
        refusal(await http.post("/v1/cstore/write", content=b"{not json"), 400, "malformed")
        refusal(await http.post("/v1/cstore/write", json={"ops": [{"op": "rename"}]}), 400, "malformed")
        refusal(await http.post("/v1/cstore/sync", json={"digests": "not base64!"}), 400, "malformed")
        refusal(await http.post("/v1/cstore/sync", json=[1, 2]), 400, "malformed")
        refusal(await http.post("/v1/cstore/push", json={"batches": "x"}), 400, "malformed")
        # bad queries: the node's validation answer, in the same shape
        refusal(await http.get("/v1/cstore/get"), 422, "invalid_request")
        refusal(await http.get("/v1/cstore/lag", params={"since_ms": "yesterday"}), 422, "invalid_request")
        # a write route asked with the wrong method
        refusal(await http.get("/v1/cstore/batches"), 405, "method_not_allowed")
        # nothing there, nothing yet
        refusal(await http.get("/v1/cstore/batch/" + "0" * 64), 404, "not_found")
        refusal(
            await http.get("/v1/cstore/wait", params={"key": f"node:{me}:w", "timeout": 0}), 408, "timeout"
        )
        # too many batches in one request: refused whole, and counted
        before = svc.rejections["too_large"]
        refusal(await http.post("/v1/cstore/batches", content=b"\n\n"), 413, "too_large")
        assert svc.rejections["too_large"] == before + 1
        # a namespace over its quota
        svc.max_keys_per_namespace = 1
        ok = await http.post(
            "/v1/cstore/write", json={"ops": [{"op": "set", "key": f"node:{me}:a", "value": 1}]}
        )
        assert ok.status_code == 200 and set(ok.json()) == {"id", "ops", "writer"}, ok.text
        over = {"ops": [{"op": "set", "key": f"node:{me}:b", "value": 2}]}
        refusal(await http.post("/v1/cstore/write", json=over), 429, "quota")
    # unsigned writes without the operator's token, from this machine or another: the node signs for
    # its operator only
    for host in ("127.0.0.1", "10.1.2.3"):
        async with client(app, host=host) as anyone:
            refusal(await anyone.post("/v1/cstore/write", json=over), 401, "unauthenticated")


async def test_answers_match_their_models(replica: tuple[CStoreService, FastAPI]) -> None:
    svc, app = replica
    writer = NodeKey.generate()
    ns = f"app:{writer.address.lower()}"
    raw = _signed(writer, [Op("set", f"{ns}:k", value={"v": 1}), Op("hset", f"{ns}:h", "f", [1])])
    async with client(app) as http:
        r = await http.post("/v1/cstore/batch", content=raw)
        assert r.status_code == 200 and set(r.json()) == {"id", "ops", "hlc"}, r.text
        batch_id = r.json()["id"]
        assert (await http.get("/v1/cstore/get", params={"key": f"{ns}:k"})).json() == {
            "key": f"{ns}:k", "found": True, "value": {"v": 1},
        }  # fmt: skip
        assert (await http.get("/v1/cstore/hget", params={"key": f"{ns}:h", "field": "f"})).json() == {
            "key": f"{ns}:h", "field": "f", "found": True, "value": [1],
        }  # fmt: skip
        assert (await http.get("/v1/cstore/hgetall", params={"key": f"{ns}:h"})).json()["fields"] == {
            "f": [1]
        }
        assert (await http.get("/v1/cstore/keys", params={"prefix": ns})).json()["keys"] == [
            f"{ns}:h",
            f"{ns}:k",
        ]
        waited = await http.get("/v1/cstore/wait", params={"key": f"{ns}:k"})
        assert waited.json() == {"key": f"{ns}:k", "field": None, "value": {"v": 1}}
        assert (await http.get(f"/v1/cstore/batch/{batch_id}")).content == raw
        stats = (await http.get("/v1/cstore/stats")).json()
        assert stats["entries"] == 2 and stats["digest"] == svc.state.digest()
        hlc = (await http.get("/v1/cstore/hlc")).json()
        assert [hlc["wall_ms"], hlc["counter"]] == list(svc.hlc)
        both = b"\n".join([raw, b"junk"])
        results = (await http.post("/v1/cstore/batches", content=both)).json()["results"]
        assert results[0] == {"id": batch_id, "ops": 2} and results[1]["cause"] == "malformed"


def test_openapi_describes_every_answer() -> None:
    from fastapi import APIRouter

    from r1os.cstore._api import add_routes

    router = APIRouter()
    add_routes(router, CStoreService())  # routes call the service only when asked
    app = FastAPI()
    app.include_router(router)
    paths = app.openapi()["paths"]
    operations = [
        (p, m, op) for p, ops in paths.items() for m, op in ops.items() if p.startswith("/v1/cstore/")
    ]
    assert len(operations) == 14
    for path, method, op in operations:
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok.get("$ref", "").startswith("#/components/schemas/"), (method, path, ok)
        for status in ("4XX", "5XX"):
            error = op["responses"][status]["content"]["application/json"]["schema"]
            assert error["$ref"].endswith("/ErrorAnswer"), (method, path, status)
        assert "422" not in op["responses"], (method, path)  # validation errors are 4XX, same shape
    assert "requestBody" in paths["/v1/cstore/batches"]["post"]


async def test_key_listings_come_in_bounded_pages(replica: tuple[CStoreService, FastAPI]) -> None:
    """Anyone may list keys, so no answer is the whole key set: pages of at most 10,000, a cursor."""
    svc, app = replica
    writer = NodeKey.generate()
    ns = f"app:{writer.address.lower()}"
    ops = [Op("set", f"{ns}:k{i:05d}", value=i) for i in range(2500)]
    ops.append(Op("hset", f"{ns}:h", "f", 1))
    async with client(app) as http:
        assert (await http.post("/v1/cstore/batch", content=_signed(writer, ops))).status_code == 200
        first = (await http.get("/v1/cstore/keys", params={"prefix": ns})).json()
        assert len(first["keys"]) == 1000 and first["next"] == first["keys"][-1] == f"{ns}:k00998"  # after :h
        seen = list(first["keys"])
        after = first["next"]
        while after:
            page = (
                await http.get("/v1/cstore/keys", params={"prefix": ns, "after": after, "limit": 700})
            ).json()
            assert len(page["keys"]) <= 700
            seen += page["keys"]
            after = page["next"]
        assert seen == sorted(seen) and len(seen) == len(set(seen)) == 2501
        assert seen == await svc.keys(ns)
        for bad in ({"limit": 0}, {"limit": 10_001}, {"limit": "x"}):
            refusal(await http.get("/v1/cstore/keys", params={"prefix": ns, **bad}), 422, "invalid_request")
