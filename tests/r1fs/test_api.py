"""The node's R1FS HTTP API and gateway: add, get, Range, ETag, pins, GC and bad input."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from r1os.r1fs import CHUNK_SIZE, BadCid, BlockNotFound, R1fsError, TooLarge, import_bytes, parse_cid
from r1os.r1fs._client import _answer, _raise_for
from tests.r1fs._content import mod251, rot
from tests.r1fs.conftest import Served

DATA = mod251(2 * CHUNK_SIZE + 100)
CID = str(import_bytes(DATA).cid)


async def add(s: Served, data: bytes = DATA, **params: object) -> dict[str, object]:
    r = await s.client.post("/v1/r1fs/add", content=data, params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_add_then_gateway_get(served: Served) -> None:
    out = await add(served)
    assert out["cid"] == CID and out["size"] == len(DATA) and out["blocks"] == 4
    r = await served.client.get(f"/ipfs/{CID}")
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["etag"] == f'"{CID}"' and r.headers["accept-ranges"] == "bytes"
    r = await served.client.get(f"/ipfs/{CID}", headers={"If-None-Match": f'"{CID}"'})
    assert r.status_code == 304
    r = await served.client.head(f"/ipfs/{CID}")
    assert r.status_code == 200 and r.headers["content-length"] == str(len(DATA)) and r.content == b""
    r = await served.client.get("/v1/r1fs/get", params={"cid": CID})
    assert r.content == DATA and "attachment" in r.headers["content-disposition"]


async def test_empty_file(served: Served) -> None:
    out = await add(served, b"")
    assert out["cid"] == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    r = await served.client.get(f"/ipfs/{out['cid']}")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"
    r = await served.client.get(f"/ipfs/{out['cid']}", headers={"Range": "bytes=0-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-9", 0, 9),
        (f"bytes={CHUNK_SIZE - 3}-{CHUNK_SIZE + 3}", CHUNK_SIZE - 3, CHUNK_SIZE + 3),
        ("bytes=100-", 100, len(DATA) - 1),
        ("bytes=-10", len(DATA) - 10, len(DATA) - 1),
        (f"bytes=-{len(DATA) * 2}", 0, len(DATA) - 1),
        (f"bytes=5-{len(DATA) * 3}", 5, len(DATA) - 1),
        (f"bytes={len(DATA) - 1}-", len(DATA) - 1, len(DATA) - 1),
    ],
)
async def test_ranges(served: Served, header: str, start: int, end: int) -> None:
    await add(served)
    r = await served.client.get(f"/ipfs/{CID}", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.content == DATA[start : end + 1]


@pytest.mark.parametrize(
    "header", [f"bytes={len(DATA)}-", f"bytes={len(DATA) + 5}-{len(DATA) + 9}", "bytes=-0"]
)
async def test_unsatisfiable_ranges(served: Served, header: str) -> None:
    await add(served)
    r = await served.client.get(f"/ipfs/{CID}", headers={"Range": header})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize("header", ["bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=x-y", "bytes=-"])
async def test_unusable_ranges_send_the_whole_file(served: Served, header: str) -> None:
    await add(served)
    r = await served.client.get(f"/ipfs/{CID}", headers={"Range": header})
    assert r.status_code == 200 and r.content == DATA


async def test_block_endpoint_serves_raw_blocks(served: Served) -> None:
    await add(served)
    r = await served.client.get(f"/v1/r1fs/block/{CID}")
    assert r.status_code == 200
    root = parse_cid(CID)
    assert len(r.content) < 1000 and r.content == served.svc.store.get(root)
    r = await served.client.get("/v1/r1fs/block/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert r.status_code == 404


@pytest.mark.parametrize(
    "bad", ["nope", "Qm123", "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"]
)
async def test_malformed_cids_get_400_and_a_log_line(
    served: Served, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="r1os.r1fs.api"):
        for url in (f"/ipfs/{bad}", f"/v1/r1fs/block/{bad}", f"/v1/r1fs/stat?cid={bad}"):
            r = await served.client.get(url)
            assert r.status_code == 400 and "error" in r.json(), url
        r = await served.client.post("/v1/r1fs/pin", json={"cid": bad})
        assert r.status_code == 400
    assert "refused (400)" in caplog.text


async def test_unknown_cid_is_404_without_peers(served: Served) -> None:
    r = await served.client.get(f"/ipfs/{CID}")
    assert r.status_code == 404 and "no online node" in r.json()["error"]


async def test_oversized_upload_is_refused(served: Served) -> None:
    big = b"x" * (4 * 1024 * 1024 + 1)
    r = await served.client.post("/v1/r1fs/add", content=big)
    assert r.status_code == 413

    async def unsized() -> object:
        for _ in range(5):
            yield b"y" * (1024 * 1024)

    r = await served.client.post("/v1/r1fs/add", content=unsized())
    assert r.status_code == 413
    assert served.svc.ls() == []


async def test_truncated_upload_is_refused(served: Served) -> None:
    r = await served.client.post("/v1/r1fs/add", content=b"z" * 1000, headers={"content-length": "5000"})
    assert r.status_code == 400
    assert "Content-Length" in r.json()["error"] and served.svc.ls() == []


async def test_pin_unpin_ls_stat_and_gc(served: Served) -> None:
    await add(served)
    other = await add(served, mod251(CHUNK_SIZE * 3, start=1), pin="false")
    pins = (await served.client.get("/v1/r1fs/ls")).json()["pins"]
    assert [p["cid"] for p in pins] == [CID] and pins[0]["kind"] == "user"
    stat = (await served.client.get("/v1/r1fs/stat", params={"cid": CID})).json()
    assert stat["size"] == len(DATA) and stat["local"] and stat["complete"] and stat["pinned"] == "user"
    gc = (await served.client.post("/v1/r1fs/gc")).json()
    assert gc["removed"] == 4 and gc["kept"] == 4  # the unpinned file's blocks went
    stat = (await served.client.get("/v1/r1fs/stat", params={"cid": other["cid"]})).json()
    assert stat["local"] is False
    assert (await served.client.post("/v1/r1fs/unpin", json={"cid": CID})).json()["unpinned"] is True
    assert (await served.client.post("/v1/r1fs/gc")).json()["removed"] == 4
    assert (await served.client.get(f"/ipfs/{CID}")).status_code == 404


async def test_corrupt_local_block_is_not_served_as_the_file(served: Served) -> None:
    served.svc.store.verify_reads = True
    await add(served)
    root = parse_cid(CID)
    leaf = next(c for c in served.svc.store.dag_blocks(root) if c.codec == 0x55)
    rot(served.svc.store, leaf)
    r = await served.client.get(f"/ipfs/{CID}")
    # The fetch step notices the block is gone (dropped as corrupt) and finds no provider for it.
    assert r.status_code in (404, 502)


async def test_metrics_are_registered(served: Served) -> None:
    from prometheus_client import generate_latest

    await add(served)
    text = generate_latest(served.svc.ctx.metrics).decode()
    assert 'r1os_r1fs_pins{kind="user"} 1.0' in text and "r1os_r1fs_corrupt_from_peer_total 0.0" in text


async def test_bad_requests_answer_error_cause_and_hint(served: Served) -> None:
    """Every refusal, from the gateway and the API alike, is the node's one error shape."""
    await add(served)
    missing = str(import_bytes(b"not stored here").cid)
    short = {"content-length": "5000"}
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/ipfs/nope", {}, 400, "bad_cid"),
        ("HEAD", "/v1/r1fs/get?cid=Qm123", {}, 400, "bad_cid"),
        ("GET", "/v1/r1fs/stat?cid=nope", {}, 400, "bad_cid"),
        ("GET", "/v1/r1fs/block/nope", {}, 400, "bad_cid"),
        ("GET", f"/ipfs/{missing}", {}, 404, "not_found"),
        ("GET", f"/v1/r1fs/get?cid={missing}", {}, 404, "not_found"),
        ("GET", f"/v1/r1fs/block/{missing}", {}, 404, "not_found"),
        ("GET", f"/ipfs/{CID}/some/path", {}, 404, "not_found"),
        ("GET", f"/ipfs/{CID}", {"headers": {"Range": f"bytes={len(DATA)}-"}}, 416, "bad_range"),
        ("POST", "/v1/r1fs/add", {"content": b"z" * 1000, "headers": short}, 400, "bad_upload"),
        ("POST", "/v1/r1fs/add", {"content": b"x" * (4 * 1024 * 1024 + 1)}, 413, "too_large"),
        ("POST", "/v1/r1fs/add?replicas=0", {"content": b"x"}, 422, "invalid_request"),
        ("POST", "/v1/r1fs/pin", {"json": {"cid": "nope"}}, 400, "bad_cid"),
        ("POST", "/v1/r1fs/pin", {"json": {"cid": missing}}, 404, "not_found"),
        ("POST", "/v1/r1fs/pin", {"json": {"cid": CID, "replicas": 0}}, 422, "invalid_request"),
        ("POST", "/v1/r1fs/unpin", {"json": {}}, 422, "invalid_request"),
        ("GET", "/v1/r1fs/stat", {}, 422, "invalid_request"),
    ]
    for method, url, kw, status, cause in cases:
        r = await served.client.request(method, url, **kw)
        assert r.status_code == status, (method, url, r.text)
        if method == "HEAD":
            continue  # no body on a HEAD answer
        body = r.json()
        assert set(body) == {"error", "cause", "hint"}, (url, body)
        assert body["cause"] == cause and body["error"], (url, body)
    r = await served.client.get("/ipfs/nope")
    assert "CIDv1" in r.json()["hint"]
    assert served.svc.ls()[0].cid == CID  # nothing pinned by the refused uploads


@pytest.mark.parametrize(
    ("status", "body", "cls", "cause"),
    [
        (404, {"error": "nobody has it", "cause": "not_found", "hint": None}, BlockNotFound, "not_found"),
        (400, {"error": "bad", "cause": "bad_cid", "hint": "use CIDv1"}, BadCid, "bad_cid"),
        (413, {"error": "big", "cause": "too_large", "hint": None}, TooLarge, "too_large"),
        (422, {"error": "replicas: too small", "cause": "invalid_request", "hint": "see"}, R1fsError,
         "invalid_request"),
        (502, "<html>bad gateway</html>", R1fsError, "bad_gateway"),  # a proxy's page, not a node's answer
        (404, "", BlockNotFound, "not_found"),
    ],
)  # fmt: skip
def test_clients_raise_the_error_a_node_answered(
    status: int, body: object, cls: type[R1fsError], cause: str
) -> None:
    content = json.dumps(body).encode() if isinstance(body, dict) else str(body).encode()
    with pytest.raises(cls) as caught:
        _raise_for(httpx.Response(status, content=content), "get")
    err = caught.value
    assert type(err) is cls and err.status == status and err.cause == cause
    assert str(err).startswith("get: ") and f"(HTTP {status})" in str(err)
    if isinstance(body, dict):
        assert body["error"] in str(err) and err.hint == (body["hint"] or cls.hint)
    elif body:
        assert "bad gateway" in str(err)


@pytest.mark.parametrize("content", [b"<html>a login page</html>", b"[1, 2]", b""])
def test_clients_refuse_an_answer_that_is_not_a_json_object(content: bytes) -> None:
    with pytest.raises(R1fsError) as caught:
        _answer(httpx.Response(200, content=content), "stat")
    assert caught.value.cause == "bad_answer" and "not a JSON object" in str(caught.value)
    assert _answer(httpx.Response(200, json={"cid": "x"}), "stat") == {"cid": "x"}
