"""Issue 12 against the real R1FS service in process: hostile DAGs already on the node (as if fetched
before, or pinned by an older node), quotas and pins per pinner, who may call what, every declared
value bounded where it enters, GC beside an upload that stays open, the local socket's callers.

The same attacks across real node processes are in test_hostile.py."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from r1os.identity import NodeKey
from r1os.r1fs import CHUNK_SIZE, R1fsError, R1fsSettings, import_bytes
from r1os.r1fs._dag import Cid
from r1os.r1fs._local import MAX_MESSAGE, _raw, local_call, local_path
from r1os.wire import sign_request
from tests.conftest import async_wait_for
from tests.r1fs._content import mod251
from tests.r1fs._hostile import Blocks, LoopLag, chain, claimed_leaf, fanout_bomb, many_leaves
from tests.r1fs.conftest import Served, serve

ALICE, BOB, MALLORY = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
KIB = 1024


def plant(s: Served, blocks: Blocks) -> None:
    """Blocks on the node's disk as if fetched earlier (or kept by a node from before the bounds)."""
    for cid, block in blocks.items():
        s.svc.store.put(cid, block)


def error(r: Any, status: int, cause: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["cause"] == cause, r.text


# -- attack 3: DAGs that expand without bound --------------------------------------------------


@pytest.mark.parametrize(
    ("bomb", "status", "cause"),
    [
        (lambda: fanout_bomb(levels=3), 422, "dag_limit"),  # says 5.3 MB: more than the node's 4 MiB
        (lambda: fanout_bomb(levels=2), 422, "dag_limit"),  # 30,450 references for 30 KB of "file"
        (lambda: chain(200), 422, "dag_limit"),  # 200 levels of one link
        (lambda: claimed_leaf(), 502, "corrupt_block"),  # a 1-byte leaf said to hold 1 GiB
        (lambda: many_leaves(100), 422, "dag_limit"),  # 100 distinct leaves: past 80 for a 4 MiB file
    ],
    ids=["declared-size", "fan-out", "deep", "claimed-leaf", "distinct-blocks"],
)
async def test_a_hostile_dag_here_is_refused_before_it_is_expanded(
    served: Served, tmp_path: Path, bomb: Any, status: int, cause: str
) -> None:
    root, blocks = bomb()
    plant(served, blocks)
    async with LoopLag() as lag:
        t0 = time.monotonic()
        for url in (f"/ipfs/{root}", f"/v1/r1fs/get?cid={root}"):
            error(await served.client.get(url), status, cause)
        error(await served.client.post("/v1/r1fs/pin", json={"cid": str(root)}), status, cause)
        out = tmp_path / "out.bin"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT)
        try:
            assert served.svc.local is not None
            with pytest.raises(R1fsError) as caught:
                await asyncio.to_thread(local_call, served.svc.local.name, {"op": "get", "cid": str(root)},
                                        fd, timeout=10)  # fmt: skip
            assert caught.value.cause == cause
        finally:
            os.close(fd)
        took = time.monotonic() - t0
    assert took < 3, f"{took:.1f} s to refuse"
    assert lag.worst < 0.5, f"the loop stalled {lag.worst:.2f} s"
    assert served.svc.pins == {}


async def test_gc_walks_each_block_of_a_pinned_bomb_once(served: Served, monkeypatch: Any) -> None:
    """Attack 3's GC variant: a pin whose DAG links one block 5.3 million times (pinned on an older
    node, or before the node's limits were lowered) is walked once per distinct block."""
    root, blocks = fanout_bomb(levels=3)
    plant(served, blocks)
    served.svc.keep(str(root), 174**3, kind="user")
    garbage = import_bytes(mod251(3 * CHUNK_SIZE), served.svc.store.put).cid
    reads: list[Cid] = []
    get = served.svc.store.get
    monkeypatch.setattr(served.svc.store, "get", lambda cid, **kw: reads.append(cid) or get(cid, **kw))
    async with LoopLag() as lag:
        t0 = time.monotonic()
        gc = (await served.client.post("/v1/r1fs/gc")).json()
        took = time.monotonic() - t0
    assert gc["kept"] == 4 and gc["removed"] == 4 and not gc["busy"]
    # Each block read once by the walk (the 3 interior ones), and once more if compaction moves it.
    assert max(Counter(reads).values()) <= 2 and not served.svc.store.has(garbage)
    assert all(served.svc.store.has(c) for c in blocks)
    assert took < 2 and lag.worst < 0.5


# -- attacks 5 and 6: who may pin, unpin, collect; quotas ---------------------------------------


async def test_only_a_pinner_releases_its_pin(served: Served) -> None:
    data = mod251(CHUNK_SIZE + 5)
    added = await served.call(ALICE, "POST", "/v1/r1fs/add", content=data, streamed=True)
    cid = added.json()["cid"]
    assert (await served.call(BOB, "POST", "/v1/r1fs/pin", json={"cid": cid})).status_code == 200
    assert served.svc.book.pinners(cid).keys() == {ALICE.address.lower(), BOB.address.lower()}
    # Nobody else: anonymous is refused, a stranger releases nothing, nor may it name a pinner.
    error(await served.call(None, "POST", "/v1/r1fs/unpin", json={"cid": cid}), 401, "unauthenticated")
    r = await served.call(MALLORY, "POST", "/v1/r1fs/unpin", json={"cid": cid})
    assert r.status_code == 200 and r.json()["unpinned"] is False and r.json()["pinners_left"] == 2
    body = {"cid": cid, "pinner": ALICE.address}
    error(await served.call(MALLORY, "POST", "/v1/r1fs/unpin", json=body), 403, "forbidden")
    # GC is the operator's: neither anonymous nor a key may run it.
    error(await served.call(None, "POST", "/v1/r1fs/gc"), 401, "unauthenticated")
    error(await served.call(MALLORY, "POST", "/v1/r1fs/gc"), 403, "forbidden")
    # Bob releases his own pin: Alice's holds the file.
    r = await served.call(BOB, "POST", "/v1/r1fs/unpin", json={"cid": cid})
    assert r.json()["released"] == [BOB.address.lower()] and r.json()["pinners_left"] == 1
    assert (await served.client.post("/v1/r1fs/gc")).json()["removed"] == 0
    assert (await served.client.get(f"/ipfs/{cid}")).content == data
    # The operator may release anyone's.
    r = await served.client.post("/v1/r1fs/unpin", json={"cid": cid, "pinner": ALICE.address})
    assert r.json()["released"] == [ALICE.address.lower()] and r.json()["pinners_left"] == 0
    assert (await served.client.post("/v1/r1fs/gc")).json()["removed"] == 3  # 2 leaves, 1 node
    # ls shows pinners to the operator only
    await served.call(ALICE, "POST", "/v1/r1fs/add", content=data, streamed=True)
    assert (await served.client.get("/v1/r1fs/ls")).json()["pins"][0]["pinners"] == [ALICE.address.lower()]
    assert (await served.call(None, "GET", "/v1/r1fs/ls")).json()["pins"][0]["pinners"] is None


async def test_adds_and_pins_need_a_caller(served: Served) -> None:
    for url in ("/v1/r1fs/add", "/v1/r1fs/add?replicas=64"):
        error(await served.call(None, "POST", url, content=b"x" * 1000), 401, "unauthenticated")
    error(await served.call(None, "POST", "/v1/r1fs/pin", json={"cid": str(Cid.for_block(0x55, b"x"))}),
          401, "unauthenticated")  # fmt: skip
    # An upload streams: a signature over its body's hash would make the node hold the body to check it.
    auth = sign_request(ALICE, network="test", target=served.svc.me, method="POST", path="/v1/r1fs/add",
                        body=b"x" * 1000)  # fmt: skip
    r = await served.call(None, "POST", "/v1/r1fs/add", content=b"x" * 1000, headers={"authorization": auth})
    error(r, 401, "bad_auth")
    assert served.svc.pins == {} and served.svc.store.stats()["blocks"] == 0


@pytest.fixture
async def tight(tmp_path: Path) -> AsyncIterator[Served]:
    limits = R1fsSettings(
        max_upload=4 * 1024 * KIB, quota_bytes=1024 * KIB, quota_pins=2, max_pins=3, max_replicas=3
    )
    async with serve(tmp_path, limits) as s:
        yield s


async def test_quotas_per_address(tight: Served) -> None:
    s = tight
    first = await s.call(ALICE, "POST", "/v1/r1fs/add", content=mod251(600 * KIB), streamed=True)
    assert first.status_code == 200
    # By Content-Length, before a byte is stored:
    r = await s.call(ALICE, "POST", "/v1/r1fs/add", content=mod251(600 * KIB, 1), streamed=True)
    error(r, 429, "quota")
    # Replicas count: 300 KiB x 2 copies is 600 KiB more.
    r = await s.call(ALICE, "POST", "/v1/r1fs/add?replicas=2", content=mod251(300 * KIB, 2), streamed=True)
    error(r, 429, "quota")

    async def endless() -> AsyncIterator[bytes]:  # no Content-Length: refused while it streams
        for _ in range(64):
            yield b"e" * (64 * KIB)

    r = await s.call(ALICE, "POST", "/v1/r1fs/add", content=endless(), streamed=True)
    error(r, 429, "quota")
    assert s.svc.book.usage(ALICE.address).bytes == 600 * KIB  # the refused uploads hold nothing
    # Replicas past the node's bound, and past any node's.
    error(
        await s.call(BOB, "POST", "/v1/r1fs/add?replicas=4", content=b"b", streamed=True),
        422,
        "too_many_replicas",
    )
    error(
        await s.call(BOB, "POST", "/v1/r1fs/add?replicas=65", content=b"b", streamed=True),
        422,
        "invalid_request",
    )
    # Pins: two per address, three for all signed callers together.
    assert (await s.call(ALICE, "POST", "/v1/r1fs/add", content=b"a2", streamed=True)).status_code == 200
    error(await s.call(ALICE, "POST", "/v1/r1fs/add", content=b"a3", streamed=True), 429, "quota")
    assert (await s.call(BOB, "POST", "/v1/r1fs/add", content=b"b1", streamed=True)).status_code == 200
    error(await s.call(MALLORY, "POST", "/v1/r1fs/add", content=b"m1", streamed=True), 429, "quota")
    # The operator has no quota.
    assert (await s.client.post("/v1/r1fs/add", content=mod251(2 * 1024 * KIB))).status_code == 200


async def test_unpinned_adds_count_until_gc(tight: Served) -> None:
    s = tight
    r = await s.call(ALICE, "POST", "/v1/r1fs/add?pin=false", content=mod251(900 * KIB), streamed=True)
    assert r.status_code == 200 and s.svc.pins == {}
    r = await s.call(ALICE, "POST", "/v1/r1fs/add?pin=false", content=mod251(200 * KIB, 9), streamed=True)
    error(r, 429, "quota")
    assert (await s.client.post("/v1/r1fs/gc")).json()["removed"] > 0
    r = await s.call(ALICE, "POST", "/v1/r1fs/add?pin=false", content=mod251(200 * KIB, 9), streamed=True)
    assert r.status_code == 200


async def test_a_full_disk_refuses_adds_and_fetches(tmp_path: Path) -> None:
    async with serve(tmp_path, R1fsSettings(max_upload=4 * 1024 * KIB, min_free_disk=1 << 60)) as s:
        error(await s.client.post("/v1/r1fs/add", content=b"x" * 1000), 507, "no_space")
        assert s.svc.store.stats()["blocks"] == 0


async def test_fetches_at_once_are_bounded(tmp_path: Path) -> None:
    async with serve(tmp_path, R1fsSettings(max_upload=4 * 1024 * KIB, max_fetches=1)) as s:
        hang = asyncio.Event()
        fetch = s.svc.fetcher._fetch

        async def slow_fetch(root: Cid, span: tuple[int, int] | None = None, planned: Any = None) -> None:
            await hang.wait()
            await fetch(root, span, planned)

        s.svc.fetcher._fetch = slow_fetch  # type: ignore[method-assign]
        first = s.svc.fetcher.fetch_task(Cid.for_block(0x55, b"one"))
        # A file whose root is here but not all of it: its read needs a fetch, one too many now.
        cid = (await s.client.post("/v1/r1fs/add", content=mod251(2 * CHUNK_SIZE))).json()["cid"]
        s.svc.store.remove(_leaves(s, cid)[0])
        error(await s.client.get(f"/v1/r1fs/get?cid={cid}"), 503, "busy")
        error(await s.client.get(f"/ipfs/{Cid.for_block(0x55, b'elsewhere')}"), 503, "busy")  # its root too
        hang.set()
        with pytest.raises(R1fsError):
            await first  # nobody has "one"
        assert (await s.client.get(f"/v1/r1fs/get?cid={cid}")).status_code == 404  # no longer busy


def _leaves(s: Served, cid: str) -> list[Cid]:
    from r1os.r1fs import parse_cid

    return [c for c in s.svc.store.dag_blocks(parse_cid(cid)) if c.codec == 0x55]


# -- attack 10: GC does not wait for an upload that stays open ---------------------------------


async def test_gc_runs_while_an_upload_stays_open(served: Served) -> None:
    garbage = (await served.client.post("/v1/r1fs/add?pin=false", content=mod251(2 * CHUNK_SIZE))).json()
    more = asyncio.Event()
    data = mod251(3 * CHUNK_SIZE + 11, start=4)

    async def slow() -> AsyncIterator[bytes]:
        yield data[: 2 * CHUNK_SIZE]  # two leaves written, then the client goes quiet
        await more.wait()
        yield data[2 * CHUNK_SIZE :]

    upload = asyncio.create_task(served.call(ALICE, "POST", "/v1/r1fs/add", content=slow(), streamed=True))
    await async_wait_for(lambda: asyncio.sleep(0, served.svc.store.stats()["blocks"] >= 5), 5, "two leaves")
    t0 = time.monotonic()
    gc = (await served.client.post("/v1/r1fs/gc")).json()
    assert time.monotonic() - t0 < 2
    assert not gc["busy"] and gc["removed"] == 3 and gc["held"] >= 2  # the garbage went, the upload's not
    assert not served.svc.store.has(Cid.for_block(0x70, b"")) and garbage["cid"] not in served.svc.pins
    more.set()
    r = await upload
    assert r.status_code == 200 and r.json()["cid"] == str(import_bytes(data).cid)
    assert (await served.client.get(f"/ipfs/{r.json()['cid']}")).content == data


# -- every declared value bounded where it enters -----------------------------------------------


async def test_declared_values_are_bounded(served: Served) -> None:
    data = mod251(CHUNK_SIZE + 1)
    cid = (await served.client.post("/v1/r1fs/add", content=data)).json()["cid"]
    t0 = time.monotonic()
    error(await served.client.get("/ipfs/b" + "a" * 20_000), 400, "bad_cid")  # a CID of 20 KB
    error(await served.client.get("/v1/r1fs/stat", params={"cid": "Qm" + "1" * 5000}), 400, "bad_cid")
    assert time.monotonic() - t0 < 1
    error(await served.client.post("/v1/r1fs/pin", json={"cid": "b" * 200}), 422, "invalid_request")
    error(await served.client.post("/v1/r1fs/unpin", json={"cid": cid, "pinner": "0x" + "a" * 100}),
          422, "invalid_request")  # fmt: skip
    error(
        await served.client.post("/v1/r1fs/pin", json={"cid": cid, "replicas": 10**6}), 422, "invalid_request"
    )
    # Content-Length that is not a size
    for bad in ("9" * 30, "12abc"):
        r = await served.client.post("/v1/r1fs/add", content=b"x", headers={"content-length": bad})
        assert r.status_code == 400, r.text
    # Ranges: past any file, or a list of many, are ignored (the whole file), never a 500.
    for header in ("bytes=0-" + "9" * 40, "bytes=" + ",".join(f"{i}-{i}" for i in range(500)),
                   "bytes=99999999999999999999-"):  # fmt: skip
        r = await served.client.get(f"/ipfs/{cid}", headers={"Range": header})
        assert r.status_code in (200, 416), (header[:30], r.status_code)
        if r.status_code == 200:
            assert r.content == data


def test_a_block_bigger_than_any_valid_one_is_refused(served: Served) -> None:
    from r1os.r1fs._dag import MAX_BLOCK_SIZE

    big = b"b" * (MAX_BLOCK_SIZE + 1)
    with pytest.raises(R1fsError, match="more than any valid block"):
        served.svc.store.put(Cid.for_block(0x55, big), big)


# -- the local socket: who calls it ----------------------------------------------------------


async def test_a_local_add_needs_a_caller_and_counts_against_it(served: Served, tmp_path: Path) -> None:
    assert served.svc.local is not None
    name = served.svc.local.name
    src = tmp_path / "in.bin"
    src.write_bytes(mod251(CHUNK_SIZE * 2 + 3))
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(R1fsError) as caught:
            await asyncio.to_thread(local_call, name, {"op": "add"}, fd, timeout=10)
        assert caught.value.status == 401
        request = {"op": "add", "pin": True, "replicas": 1}
        auth = sign_request(ALICE, network="test", target=served.svc.me, method="POST",
                            path=local_path(request), body=None)  # fmt: skip
        out = await asyncio.to_thread(local_call, name, {**request, "auth": auth}, fd, timeout=10)
        assert served.svc.book.pinners(out["cid"]).keys() == {ALICE.address.lower()}
        with pytest.raises(R1fsError) as caught:  # the same signature again: a replay
            await asyncio.to_thread(local_call, name, {**request, "auth": auth}, fd, timeout=10)
        assert caught.value.cause == "replayed"
        forged = {
            **request,
            "replicas": 2,
            "auth": sign_request(  # signed for other parameters
                ALICE,
                network="test",
                target=served.svc.me,
                method="POST",
                path=local_path(request),
                body=None,
            ),
        }
        with pytest.raises(R1fsError) as caught:
            await asyncio.to_thread(local_call, name, forged, fd, timeout=10)
        assert caught.value.cause == "bad_signature"

        def oversized() -> dict[str, Any]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.settimeout(10)
                s.connect(_raw(name))
                s.sendmsg([b"{" + b" " * MAX_MESSAGE + b"}"],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])  # fmt: skip
                return json.loads(s.recv(65536))  # type: ignore[no-any-return]

        assert "at most" in (await asyncio.to_thread(oversized))["error"]
    finally:
        os.close(fd)


async def test_ls_answers_a_page_at_a_time(served: Served) -> None:
    cids = sorted(
        [(await served.client.post("/v1/r1fs/add", content=b"f%d" % i)).json()["cid"] for i in range(5)]
    )
    seen: list[str] = []
    after = ""
    while True:
        page = (await served.client.get("/v1/r1fs/ls", params={"limit": 2, "after": after})).json()
        assert len(page["pins"]) <= 2
        seen += [p["cid"] for p in page["pins"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == cids
    error(await served.client.get("/v1/r1fs/ls", params={"limit": 10**6}), 422, "invalid_request")


async def test_entries_of_all_signed_callers_together_are_bounded(tight: Served) -> None:
    """Keys cost nothing: past max_pins entries (pins, or unpinned adds until GC) for all signed callers
    together, the next new caller is refused, whatever its own quota."""
    for i, key in enumerate((ALICE, BOB, NodeKey.generate())):
        r = await tight.call(key, "POST", "/v1/r1fs/add?pin=false", content=b"u%d" % i, streamed=True)
        assert r.status_code == 200
    r = await tight.call(MALLORY, "POST", "/v1/r1fs/add?pin=false", content=b"m", streamed=True)
    error(r, 429, "quota")
    await tight.client.post("/v1/r1fs/gc")  # the unpinned adds are gone: their entries too
    r = await tight.call(MALLORY, "POST", "/v1/r1fs/add?pin=false", content=b"m", streamed=True)
    assert r.status_code == 200


async def test_a_stat_lists_a_bounded_number_of_provider_records(tmp_path: Path) -> None:
    from r1os.r1fs import R1fsService
    from r1os.r1fs._providers import PROV
    from tests.conftest import lone_context
    from tests.r1fs.conftest import stop
    from tests.r1fs.test_service import MemoryKv

    kv = MemoryKv()
    ctx = lone_context("r1fs", tmp_path)
    svc = R1fsService(kv=kv)
    await svc.start(ctx)
    try:

        async def body() -> AsyncIterator[bytes]:
            yield b"provided"

        cid = str((await svc.add_stream(body())).cid)
        for _ in range(300):  # anyone with a key writes its own field: 300 keys, 300 "providers"
            await kv.hset(
                PROV + cid, NodeKey.generate().address.lower(), {"size": 1, "ts": 0, "replica": False}
            )
        out = await svc.stat(cid)
        assert out.providers is not None and len(out.providers) == 64
        assert out.providers[0].address == svc.me and out.replicas_live == 1
    finally:
        await stop(svc, ctx)


async def test_the_limits_come_from_the_nodes_settings(tmp_path: Path, monkeypatch: Any) -> None:
    from r1os.node import NodeConfig

    monkeypatch.setenv("R1OS_R1FS__MAX_REPLICAS", "2")
    monkeypatch.setenv("R1OS_R1FS__QUOTA_PINS", "7")
    settings = NodeConfig().r1fs
    async with serve(tmp_path, settings) as s:
        assert (s.svc.settings.max_replicas, s.svc.settings.quota_pins) == (2, 7)
        r = await s.call(ALICE, "POST", "/v1/r1fs/add?replicas=3", content=b"x", streamed=True)
        error(r, 422, "too_many_replicas")
