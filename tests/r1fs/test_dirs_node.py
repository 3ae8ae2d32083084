"""Folders on a node: the tar upload route, listing, whole-tree pins and GC, and hostile uploads."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from r1os.r1fs import parse_cid
from r1os.r1fs._tar import tar_folder
from r1os.r1fs._unixfs_dir import TreeLimits
from tests.r1fs._trees import HERE, write
from tests.r1fs.conftest import Served

JS = {v["name"]: v["cid"] for v in json.loads((HERE / "js_dirs.json").read_text())["vectors"]}


def tar_of(folder: Path) -> bytes:
    return b"".join(tar_folder(folder))


def tar_command(folder: Path) -> bytes:
    return subprocess.run(["tar", "-C", str(folder), "-cf", "-", "."], capture_output=True, check=True).stdout


def tar_with(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "/etc/passwd"
    return info, data


async def test_add_tree_list_pin_and_gc_whole_tree(served: Served, tmp_path: Path) -> None:
    folder = write("nested", tmp_path / "nested")
    r = await served.client.post(
        "/v1/r1fs/add-tree", content=tar_of(folder), headers={"content-type": "application/x-tar"}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["cid"] == JS["nested"] and out["files"] == 4 and out["dirs"] == 7 and out["pinned"]
    root = out["cid"]
    listing = (await served.client.get("/v1/r1fs/dir", params={"cid": root})).json()
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [
        ("top.txt", "file"), ("w", "directory"), ("x", "directory"),
    ]  # fmt: skip
    assert listing["entries"][0]["size"] == 11 and listing["next"] is None
    sub = (await served.client.get("/v1/r1fs/dir", params={"cid": root, "path": "x/y"})).json()
    assert [e["name"] for e in sub["entries"]] == ["also-empty", "z"]
    params = {"cid": root, "limit": 1, "after": "top.txt"}
    page = (await served.client.get("/v1/r1fs/dir", params=params)).json()
    assert [e["name"] for e in page["entries"]] == ["w"] and page["next"] == "w"
    z = (await served.client.get("/v1/r1fs/dir", params={"cid": root, "path": "x/y/z"})).json()
    deep = z["entries"][0]
    assert (await served.client.get(f"/v1/r1fs/get?cid={deep['cid']}")).content == write_bytes(42, 8)
    stat = (await served.client.get("/v1/r1fs/stat", params={"cid": root})).json()
    assert stat["pinned"] == "user" and stat["complete"]

    # GC keeps every block of the pinned tree, and frees them all once it is unpinned
    store = served.svc.store
    blocks = set(store.dag_blocks(parse_cid(root)))
    assert len(blocks) >= 10
    await served.client.post("/v1/r1fs/gc")
    assert all(store.has(c) for c in blocks)
    assert (await served.client.post("/v1/r1fs/unpin", json={"cid": root})).json()["unpinned"]
    await served.client.post("/v1/r1fs/gc")
    assert not any(store.has(c) for c in blocks)


def write_bytes(size: int, seed: int) -> bytes:
    from tests.r1fs._trees import content

    return content(size, seed)


async def test_symbolic_links_are_stored_as_links_and_listed_with_their_target(served: Served) -> None:
    body = tar_with(entry("f", b"data"), entry("to-f", b"", tarfile.SYMTYPE))
    out = (await served.client.post("/v1/r1fs/add-tree", content=body)).json()
    listing = (await served.client.get("/v1/r1fs/dir", params={"cid": out["cid"]})).json()["entries"]
    assert [(e["name"], e["type"], e["target"]) for e in listing] == [
        ("f", "file", None), ("to-f", "symlink", "/etc/passwd"),
    ]  # fmt: skip
    r = await served.client.get("/v1/r1fs/dir", params={"cid": out["cid"], "path": "to-f/x"})
    assert (r.status_code, r.json()["cause"]) == (400, "not_a_directory")  # a link is never followed


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
async def test_a_tar_made_by_the_tar_command_uploads_as_is(served: Served, tmp_path: Path) -> None:
    """GNU tar (or bsdtar) output, padded to its 10 KiB records, with its Content-Length."""
    folder = write("nested", tmp_path / "n")
    body = tar_command(folder)
    assert len(body) % 10240 == 0
    r = await served.client.post("/v1/r1fs/add-tree", content=body)
    assert r.status_code == 200 and r.json()["cid"] == JS["nested"], r.text
    r = await served.client.post("/v1/r1fs/add-tree", content=body + tar_with(entry("more")))
    assert (r.status_code, r.json()["cause"]) == (400, "bad_upload")  # a second archive is not dropped


async def test_dir_route_refusals(served: Served, tmp_path: Path) -> None:
    folder = write("small_files", tmp_path / "s")
    root = (await served.client.post("/v1/r1fs/add-tree", content=tar_of(folder))).json()["cid"]
    assert root == JS["small_files"]
    for params, status, cause in [
        ({"cid": root, "path": "a.txt"}, 400, "not_a_directory"),
        ({"cid": root, "path": "../x"}, 400, "bad_path"),
        ({"cid": root, "path": "nope"}, 404, "not_found"),
        ({"cid": "bafy-not-a-cid"}, 400, "bad_cid"),
        ({"cid": root, "limit": 0}, 422, "invalid_request"),
        ({"cid": root, "path": "a" * 5000}, 422, "invalid_request"),
    ]:
        r = await served.client.get("/v1/r1fs/dir", params=params)
        assert (r.status_code, r.json()["cause"]) == (status, cause), (params, r.text)


async def test_hostile_tar_uploads_are_refused(served: Served) -> None:
    cases = [
        (tar_with(entry("../escape")), 400, "bad_path"),
        (tar_with(entry("/etc/passwd")), 400, "bad_path"),
        (tar_with(entry("a/../../b")), 400, "bad_path"),
        (tar_with(entry("hard", b"", tarfile.LNKTYPE)), 400, "bad_path"),
        (tar_with(entry("fifo", b"", tarfile.FIFOTYPE)), 400, "bad_path"),
        (tar_with(entry("same"), entry("same")), 400, "bad_path"),
        (tar_with(entry("f"), entry("f/g")), 400, "bad_path"),
        (b"\x01" * 512, 400, "bad_upload"),  # not a tar header (checksum)
        (tar_with(entry("cut", b"y" * 5000))[:1500], 400, "bad_upload"),  # ends inside a file
    ]
    for body, status, cause in cases:
        r = await served.client.post("/v1/r1fs/add-tree", content=body)
        assert (r.status_code, r.json()["cause"]) == (status, cause), r.text
    # bounds: fan-out, entries, depth, size
    served.svc.tree = TreeLimits(max_dir_entries=5, max_entries=50, max_depth=4, max_size=1000)
    for body in (
        tar_with(*(entry(f"f{i}") for i in range(6))),
        tar_with(*(entry(f"d{i // 5}/f{i}") for i in range(60))),
        tar_with(entry("a/b/c/d/e/f")),
        tar_with(entry("big", b"z" * 1001)),
    ):
        r = await served.client.post("/v1/r1fs/add-tree", content=body)
        assert (r.status_code, r.json()["cause"]) == (422, "dag_limit"), r.text
    big = b"\0" * (4 * 1024 * 1024 + 1)
    r = await served.client.post("/v1/r1fs/add-tree", content=big)
    assert (r.status_code, r.json()["cause"]) == (413, "too_large")
    r = await served.call(None, "POST", "/v1/r1fs/add-tree", content=tar_with(entry("a")))
    assert r.status_code == 401
    assert served.svc.pins == {}


async def test_a_hamt_folder_on_a_node_lists_in_pages_and_stays_whole_through_gc(tmp_path: Path) -> None:
    from r1os.r1fs import R1fsSettings
    from tests.r1fs.conftest import serve

    folder = write("hamt_in_subfolder", tmp_path / "h")
    async with serve(tmp_path / "node", R1fsSettings(max_upload=64 * 1024 * 1024)) as s:
        out = (await s.client.post("/v1/r1fs/add-tree", content=tar_of(folder))).json()
        assert out["cid"] == JS["hamt_in_subfolder"] and out["files"] == 4601
        names: list[str] = []
        after = ""
        while True:
            params = {"cid": out["cid"], "path": "big", "limit": 2000, **({"after": after} if after else {})}
            page = (await s.client.get("/v1/r1fs/dir", params=params)).json()
            names += [e["name"] for e in page["entries"]]
            if not page["next"]:
                break
            after = page["next"]
        assert len(names) == 4600 and names == sorted(names)
        await s.client.post("/v1/r1fs/gc")
        assert s.svc.store.is_complete(parse_cid(out["cid"]))


def _plant(s: Served, blocks: dict[Any, bytes]) -> None:
    for cid, data in blocks.items():
        s.svc.store.put(cid, data)


async def test_hostile_folders_in_the_store_are_refused(served: Served) -> None:
    from r1os.r1fs import Cid
    from r1os.r1fs._dag import DAG_PB, _field_bytes, _field_varint
    from r1os.r1fs._unixfs_dir import import_entries
    from tests.r1fs._trees import MemBlocks

    leaf = import_bytes_put(served, b"hi")
    # a folder whose entry is named '..'
    link = _field_bytes(2, _field_bytes(1, leaf.raw) + _field_bytes(2, b"..") + _field_varint(3, 2))
    bad = link + _field_bytes(1, b"\x08\x01")
    bad_cid = Cid.for_block(DAG_PB, bad)
    served.svc.store.put(bad_cid, bad)
    # folders nested deeper than the node allows (built with a looser bound)
    mem = MemBlocks()
    deep = import_entries([("/".join(["d"] * 70), None)], mem.put, limits=TreeLimits(max_depth=100)).cid
    _plant(served, mem.blocks)
    for cid, status, cause in [(bad_cid, 422, "bad_directory"), (deep, 422, "dag_limit")]:
        r = await served.client.post("/v1/r1fs/pin", json={"cid": str(cid)})
        assert (r.status_code, r.json()["cause"]) == (status, cause), r.text
    r = await served.client.get("/v1/r1fs/dir", params={"cid": str(bad_cid)})
    assert (r.status_code, r.json()["cause"]) == (422, "bad_directory")
    assert served.svc.pins == {}


def import_bytes_put(served: Served, data: bytes) -> Any:
    from r1os.r1fs import import_bytes

    return import_bytes(data, served.svc.store.put).cid


def test_a_client_never_writes_outside_its_folder(tmp_path: Path) -> None:
    from r1os.r1fs._client import _dir_target
    from r1os.r1fs._unixfs_dir import BadDirectory

    dest = tmp_path / "out"
    dest.mkdir()
    assert _dir_target(dest, "a/b.txt") == dest / "a" / "b.txt"
    for hostile in ("../x", "a/../../x", "/etc/passwd", "a//b", ".", "a/./b"):
        with pytest.raises(BadDirectory):
            _dir_target(dest, hostile)
    (dest / "link").symlink_to(tmp_path)
    with pytest.raises(BadDirectory):
        _dir_target(dest, "link/x")
