"""The node's IPFS gateway (`/ipfs/<cid>[/<path>]`): raw blocks and CARs as the Trustless Gateway spec
asks (formats, headers, dag-scope, entity-bytes, dups, the probe CID), paths through folders with
index.html and listings, and CAR import (`POST /v1/r1fs/import`) with its refusals."""

from __future__ import annotations

import hashlib

import pytest

import r1os.r1fs._gateway as gateway_module
from r1os.identity import NodeKey
from r1os.r1fs import CHUNK_SIZE, import_bytes
from r1os.r1fs._car import encode_header, encode_section, read_car
from r1os.r1fs._dag import DAG_PB, Cid, _field_bytes, _field_varint, read_file_node
from r1os.r1fs._errors import DagRefused
from r1os.r1fs._unixfs_dir import DirEntry, build_dir
from tests.r1fs._content import mod251
from tests.r1fs.conftest import Served

DATA = mod251(2 * CHUNK_SIZE + 7)  # three leaves under one node
CAR = "application/vnd.ipld.car"


def store_bytes(s: Served, data: bytes) -> tuple[Cid, dict[Cid, bytes]]:
    """`data` as a file in the node's store (not pinned); its root and blocks in DFS order."""
    blocks: dict[Cid, bytes] = {}

    def put(cid: Cid, block: bytes) -> None:
        blocks.setdefault(cid, bytes(block))
        s.svc.store.put(cid, block)

    result = import_bytes(data, put)
    return result.cid, blocks


def folder(s: Served, entries: dict[str, Cid]) -> Cid:
    """A plain UnixFS folder (dag-pb, links sorted by name, Data = {Type: Directory}) in the store."""
    links = b"".join(
        _field_bytes(2, _field_bytes(1, cid.raw) + _field_bytes(2, name.encode()) + _field_varint(3, 10))
        for name, cid in sorted(entries.items())
    )
    block = links + _field_bytes(1, _field_varint(1, 1))
    cid = Cid.for_block(DAG_PB, block)
    s.svc.store.put(cid, block)
    return cid


def dfs(root: Cid, blocks: dict[Cid, bytes]) -> list[Cid]:
    """The blocks of a one-level file in depth-first order (the root, then its leaves in file order)."""
    return [root] + [c for c, _ in read_file_node(root, blocks[root]).children]


def assert_trustless_headers(r: object, kind: str, cid: Cid) -> None:
    h = r.headers  # type: ignore[attr-defined]
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "public, max-age=29030400, immutable"
    assert h["vary"] == "Accept" and h["etag"].startswith(f'"{cid}')
    assert h["content-disposition"] == f'attachment; filename="{cid}.{kind}"'
    assert str(cid) in h["x-ipfs-roots"].split(",")


async def test_raw_block_by_format_or_accept(served: Served) -> None:
    root, blocks = store_bytes(served, DATA)
    for kw in ({"params": {"format": "raw"}}, {"headers": {"Accept": "application/vnd.ipld.raw"}}):
        r = await served.client.get(f"/ipfs/{root}", **kw)  # type: ignore[arg-type]
        assert r.status_code == 200 and r.content == blocks[root]
        assert hashlib.sha256(r.content).digest() == root.digest
        assert r.headers["content-type"] == "application/vnd.ipld.raw"
        assert_trustless_headers(r, "bin", root)
    leaf = dfs(root, blocks)[1]
    r = await served.client.head(f"/ipfs/{leaf}?format=raw")
    assert r.status_code == 200 and r.headers["content-length"] == str(CHUNK_SIZE) and not r.content
    etag = r.headers["etag"]
    r = await served.client.get(f"/ipfs/{leaf}?format=raw", headers={"If-None-Match": etag})
    assert r.status_code == 304
    # format wins over Accept; a path is not for raw blocks; a missing block is a 404
    r = await served.client.get(f"/ipfs/{root}?format=raw", headers={"Accept": CAR})
    assert r.content == blocks[root]
    r = await served.client.get(f"/ipfs/{root}/x?format=raw")
    assert r.status_code == 400 and r.json()["cause"] == "bad_request"
    missing = Cid.for_block(DAG_PB, b"nothing")
    r = await served.client.get(f"/ipfs/{missing}?format=raw")
    assert r.status_code == 404 and r.json()["cause"] == "not_found"


async def test_car_of_a_file_in_dfs_order_each_block_once(served: Served) -> None:
    root, blocks = store_bytes(served, DATA)
    r = await served.client.get(f"/ipfs/{root}", params={"format": "car"})
    assert r.status_code == 200
    assert r.headers["content-type"] == f"{CAR}; version=1; order=dfs; dups=n"
    assert_trustless_headers(r, "car", root)
    roots, got = read_car(r.content)  # every block verified against its CID
    assert roots == [root] and [b.cid for b in got] == dfs(root, blocks)
    # Accept alone, with the params the spec lists; HEAD has the headers and no body
    r2 = await served.client.get(f"/ipfs/{root}", headers={"Accept": f"{CAR}; version=1; order=dfs; dups=n"})
    assert r2.content == r.content and r2.headers["content-location"] == f"/ipfs/{root}?format=car"
    assert "content-location" not in r.headers  # asked with format= already
    r3 = await served.client.head(f"/ipfs/{root}?format=car")
    assert r3.status_code == 200 and not r3.content and r3.headers["etag"] == r.headers["etag"]
    r4 = await served.client.get(f"/ipfs/{root}?format=car", headers={"If-None-Match": r.headers["etag"]})
    assert r4.status_code == 304


async def test_dag_scope_and_entity_bytes(served: Served) -> None:
    root, blocks = store_bytes(served, DATA)
    leaves = dfs(root, blocks)[1:]
    etags = set()

    async def car(**params: str) -> list[Cid]:
        r = await served.client.get(f"/ipfs/{root}", params={"format": "car", **params})
        assert r.status_code == 200, r.text
        etags.add(r.headers["etag"])
        return [b.cid for b in read_car(r.content)[1]]

    assert await car(**{"dag-scope": "block"}) == [root]
    assert await car(**{"dag-scope": "entity"}) == [root, *leaves]
    assert await car(**{"entity-bytes": f"{CHUNK_SIZE}:{CHUNK_SIZE + 1}"}) == [root, leaves[1]]
    assert await car(**{"entity-bytes": f"{CHUNK_SIZE - 1}:{CHUNK_SIZE}"}) == [root, *leaves[:2]]
    assert await car(**{"entity-bytes": "-1:*"}) == [root, leaves[2]]
    assert await car(**{"entity-bytes": "0:-8"}) == [root, *leaves[:2]]
    assert await car(**{"entity-bytes": "10:5"}) == [root]  # no bytes: the root alone (as dag-scope=block)
    assert len(etags) == 7  # the ETag names the scope and the range
    r = await served.client.get(f"/ipfs/{root}", params={"format": "car", "entity-bytes": f"{len(DATA)}:*"})
    assert r.status_code == 400 and r.json()["cause"] == "bad_range"
    for bad in ({"entity-bytes": "1-2"}, {"entity-bytes": "x:*"}, {"dag-scope": "most"}, {"car-dups": "q"}):
        r = await served.client.get(f"/ipfs/{root}", params={"format": "car", **bad})
        assert r.status_code == 400 and r.json()["cause"] == "bad_request", bad


async def test_dups_y_sends_a_block_every_time_it_occurs(served: Served) -> None:
    root, blocks = store_bytes(served, bytes(3 * CHUNK_SIZE))  # three identical leaves
    leaf = next(c for c in blocks if c != root)
    r = await served.client.get(f"/ipfs/{root}?format=car")
    assert [b.cid for b in read_car(r.content)[1]] == [root, leaf]
    r = await served.client.get(f"/ipfs/{root}", headers={"Accept": f"{CAR}; dups=y"})
    assert r.headers["content-type"].endswith("dups=y")
    assert [b.cid for b in read_car(r.content)[1]] == [root, leaf, leaf, leaf]


async def test_formats_and_variants_not_made_here(served: Served) -> None:
    root, _ = store_bytes(served, DATA)
    r = await served.client.get(f"/ipfs/{root}?format=tar")
    assert r.status_code == 400 and r.json()["cause"] == "bad_request"
    r = await served.client.get(f"/ipfs/{root}", headers={"Accept": f"{CAR}; version=2"})
    assert r.status_code == 406 and r.json()["cause"] == "not_acceptable"
    r = await served.client.get(f"/ipfs/{root}", params={"format": "car", "car-order": "weird"})
    assert r.status_code == 406
    # hostile headers and parameters: an endless Accept is not parsed (the file), a long range refused
    r = await served.client.get(f"/ipfs/{root}", headers={"Accept": f"{CAR}, " + "x/y, " * 500})
    assert r.status_code == 200 and r.content == DATA
    r = await served.client.get(f"/ipfs/{root}", params={"format": "car", "entity-bytes": "1" * 60 + ":*"})
    assert r.status_code == 400 and r.json()["cause"] == "bad_request"
    r = await served.client.get(f"/ipfs/{root}", headers={"Accept": f"{CAR}; q=oops, text/html"})
    assert r.status_code == 200 and r.content == DATA  # a q that is not a number: not accepted
    # a browser's Accept gets the file itself
    r = await served.client.get(f"/ipfs/{root}", headers={"Accept": "text/html,*/*;q=0.8"})
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["content-security-policy"].startswith("sandbox")


async def test_probe_cid_and_only_if_cached(served: Served) -> None:
    r = await served.client.get("/ipfs/bafkqaaa", params={"format": "raw"})
    assert r.status_code == 200 and r.content == b""
    r = await served.client.get("/ipfs/bafkqaaa", headers={"Accept": CAR})
    roots, blocks = read_car(r.content) if False else (None, None)  # the probe root is an identity CID
    assert r.status_code == 200 and r.headers["content-type"].startswith(CAR)
    assert r.content[1:].find(b"\x01\x55\x00\x00") > 0 and roots is None and blocks is None
    root, _ = store_bytes(served, b"cached")
    missing = Cid.for_block(DAG_PB, b"elsewhere")
    cc = {"Cache-Control": "only-if-cached"}
    r = await served.client.head(f"/ipfs/{root}?format=raw", headers=cc)
    assert r.status_code == 200
    r = await served.client.get(f"/ipfs/{missing}?format=raw", headers=cc)
    assert r.status_code == 412 and r.json()["cause"] == "not_cached"


async def test_paths_index_html_and_listings(served: Served) -> None:
    a, _ = store_bytes(served, b"hello a\n")
    index, _ = store_bytes(served, b"<h1>site</h1>")
    big, big_blocks = store_bytes(served, DATA)
    odd = '<b>&"x".txt'
    site = folder(served, {"index.html": index, "big.bin": big})
    plain = folder(served, {odd: a})
    top = folder(served, {"a.txt": a, "site": site, "plain": plain})
    r = await served.client.get(f"/ipfs/{top}/a.txt")
    assert r.status_code == 200 and r.content == b"hello a\n"
    assert r.headers["content-type"].startswith("text/plain") and r.headers["etag"] == f'"{a}"'
    assert r.headers["x-ipfs-roots"] == f"{top},{a}" and r.headers["x-ipfs-path"] == f"/ipfs/{top}/a.txt"
    r = await served.client.get(f"/ipfs/{top}/site/big.bin", headers={"Range": "bytes=5-9"})
    assert r.status_code == 206 and r.content == DATA[5:10]
    r = await served.client.head(f"/ipfs/{top}/site/big.bin")
    assert r.headers["content-length"] == str(len(DATA)) and not r.content
    # a folder: redirected to its path with a slash, then its index.html, else a listing
    r = await served.client.get(f"/ipfs/{top}/site")
    assert r.status_code == 301 and r.headers["location"] == f"/ipfs/{top}/site/"
    r = await served.client.get(f"/ipfs/{top}/site/")
    assert r.status_code == 200 and r.content == b"<h1>site</h1>"
    assert r.headers["content-type"].startswith("text/html")
    assert "sandbox" in r.headers["content-security-policy"]
    r = await served.client.get(f"/ipfs/{top}/plain/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    page = r.text
    assert "&lt;b&gt;&amp;&quot;x&quot;.txt" in page and odd not in page
    assert 'href="%3Cb%3E%26%22x%22.txt"' in page and str(a) in page
    r = await served.client.get(f"/ipfs/{top}/")
    assert all(f">{n}<" in r.text for n in ("a.txt", "site", "plain"))
    # what is not there, and paths that try to climb out
    r = await served.client.get(f"/ipfs/{top}/nope.txt")
    assert r.status_code == 404 and r.json()["cause"] == "not_found"
    r = await served.client.get(f"/ipfs/{top}/a.txt/deeper")
    assert r.status_code == 404
    for bad in ("site//big.bin", "site/%2E%2E/a.txt", "site/%2E/big.bin", "x/" * 70, "y" * 5000):
        r = await served.client.get(f"/ipfs/{top}/{bad}")
        assert r.status_code == 400 and r.json()["cause"] == "bad_path", bad
    # a CAR of a path: the folders on the way, then the entity; its header names the entity
    r = await served.client.get(f"/ipfs/{top}/site/big.bin?format=car")
    roots, got = read_car(r.content)
    assert roots == [big] and [b.cid for b in got] == [top, site, *dfs(big, big_blocks)]
    assert r.headers["x-ipfs-roots"] == f"{top},{site},{big}"
    r = await served.client.get(f"/ipfs/{top}/site?format=car&dag-scope=entity")
    assert [b.cid for b in read_car(r.content)[1]] == [top, site]
    r = await served.client.get(f"/ipfs/{top}?format=car&dag-scope=all")
    cids = [b.cid for b in read_car(r.content)[1]]
    assert cids[:3] == [top, a, plain] and set(cids) == {top, a, plain, site, index, *big_blocks}


# -- import -------------------------------------------------------------------------------------------


def car_of(root: Cid, blocks: dict[Cid, bytes]) -> bytes:
    return encode_header([root.raw]) + b"".join(encode_section(c, b) for c, b in blocks.items())


async def test_import_a_car_then_read_it(served: Served) -> None:
    blocks: dict[Cid, bytes] = {}
    root = import_bytes(DATA, lambda c, b: blocks.setdefault(c, bytes(b))).cid
    r = await served.client.post(
        "/v1/r1fs/import", content=car_of(root, blocks), headers={"Content-Type": CAR}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["roots"] == [str(root)] and out["blocks"] == 4 and out["pinned"] is True
    assert str(root) in served.svc.pins and served.svc.pins[str(root)]["size"] == len(DATA)
    r = await served.client.get(f"/ipfs/{root}")
    assert r.content == DATA
    # and out again: the same CAR bytes
    r = await served.client.get(f"/ipfs/{root}?format=car")
    assert r.content == car_of(root, {c: blocks[c] for c in dfs(root, blocks)})


async def test_import_refuses_bad_cars_and_pins_nothing(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    blocks: dict[Cid, bytes] = {}
    root = import_bytes(DATA, lambda c, b: blocks.setdefault(c, bytes(b))).cid
    good = car_of(root, blocks)
    tampered = bytearray(good)
    tampered[-1] ^= 0xFF
    lacking = car_of(root, {c: b for c, b in blocks.items() if c == root})
    cases = [  # first the one lacking blocks (the next ones leave blocks for GC, as a failed add does)
        (lacking, 400, "bad_car", "lacks 3 block(s)"),
        (good[:-100], 400, "bad_car", "cut short"),
        (bytes(tampered), 400, "bad_car", "does not match its hash"),
        (b"\x05hello", 400, "bad_car", "not dag-cbor"),
        (b"x" * (4 * 1024 * 1024 + 1), 413, "too_large", "exceeds the limit"),
    ]
    for body, status, cause, words in cases:
        r = await served.client.post("/v1/r1fs/import", content=body)
        assert r.status_code == status, r.text
        assert r.json()["cause"] == cause and words in r.json()["error"], r.json()
    assert served.svc.pins == {}
    assert "r1fs import refused (400)" in caplog.text
    r = await served.call(None, "POST", "/v1/r1fs/import", content=good)
    assert r.status_code == 401
    key = NodeKey.generate()
    signed = await served.call(key, "POST", "/v1/r1fs/import?replicas=1", content=good, streamed=True)
    assert signed.status_code == 200, signed.text


async def test_hamt_sharded_folders(served: Served) -> None:
    # 600 entries in a HAMT (built as kubo shards a big folder): two levels of shards, 256 slots each
    files = {f"file-{i:04d}.txt": store_bytes(served, f"content {i}\n".encode())[0] for i in range(600)}
    blocks: dict[Cid, bytes] = {}

    def put(cid: Cid, block: bytes) -> None:
        blocks[cid] = bytes(block)
        served.svc.store.put(cid, block)

    built = build_dir([DirEntry(n, c, 12) for n, c in files.items()], put, threshold=0)
    assert built.sharded and built.blocks > 1
    r = await served.client.get(f"/ipfs/{built.cid}/file-0421.txt")
    assert r.status_code == 200 and r.content == b"content 421\n"
    assert (await served.client.get(f"/ipfs/{built.cid}/file-9999.txt")).status_code == 404
    page = (await served.client.get(f"/ipfs/{built.cid}/")).text
    assert all(f">{n}<" in page for n in files)
    # the CAR of a path through the shards: the root shard, the shards on the name's way, the file
    r = await served.client.get(f"/ipfs/{built.cid}/file-0421.txt?format=car")
    cids = [b.cid for b in read_car(r.content)[1]]
    assert cids[0] == built.cid and cids[-1] == files["file-0421.txt"] and set(cids[:-1]) <= set(blocks)
    # entity: every shard (enough to list the folder), none of the files
    r = await served.client.get(f"/ipfs/{built.cid}?format=car&dag-scope=entity")
    assert {b.cid for b in read_car(r.content)[1]} == set(blocks)


async def test_a_car_past_the_block_bound_is_cut_short(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_upload 4 MiB bounds a walk to the blocks of a 4 MiB file (~80) plus TREE_BLOCKS (a tree's
    # folders and other files; 0 here): a folder linking one 17-block file 20 times, with dups=y, is
    # 341 blocks; the status went out before, so the stream is cut (a real client sees a short CAR)
    monkeypatch.setattr(gateway_module, "TREE_BLOCKS", 0)
    root, _ = store_bytes(served, bytes(4 * CHUNK_SIZE * 4))
    many = folder(served, {f"copy{i}": root for i in range(20)})
    r = await served.client.get(f"/ipfs/{many}?format=car")  # each block once: 3 blocks
    assert len(read_car(r.content)[1]) == 3
    with pytest.raises((DagRefused, RuntimeError)):  # RuntimeError: the test transport's report of it
        await served.client.get(f"/ipfs/{many}?format=car&car-dups=y")


async def test_import_a_folder_car_pins_the_whole_tree(served: Served) -> None:
    blocks: dict[Cid, bytes] = {}

    def put(cid: Cid, block: bytes) -> None:
        blocks[cid] = bytes(block)

    a = import_bytes(b"alpha\n", put).cid
    big = import_bytes(DATA, put).cid
    sub = build_dir([DirEntry("big.bin", big, len(DATA) + 200)], put)
    top = build_dir([DirEntry("a.txt", a, 6), DirEntry("sub", sub.cid, sub.tsize)], put)
    r = await served.client.post("/v1/r1fs/import", content=car_of(top.cid, blocks))
    assert r.status_code == 200 and r.json()["roots"] == [str(top.cid)], r.text
    assert served.svc.pins[str(top.cid)]["size"] == sum(len(b) for b in blocks.values())
    gc = await served.client.post("/v1/r1fs/gc")
    assert gc.json()["removed"] == 0 and gc.json()["kept"] == len(blocks)
    r = await served.client.get(f"/ipfs/{top.cid}/sub/big.bin")
    assert r.content == DATA
