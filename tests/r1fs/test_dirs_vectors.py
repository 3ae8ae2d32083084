"""Folder CIDs equal those of real IPFS implementations (`ipfs add -r --cid-version=1`).

Where each vector comes from (never from r1os itself):
- `vectors/js_dirs.json`: the JavaScript IPFS importer (npm ipfs-unixfs-importer 17.1.1) set up as kubo's
  `ipfs add -r --cid-version=1`: CIDv1, raw leaves, fixed 256 KiB chunks, balanced layout of 174 links,
  HAMT sharding (fanout 256, murmur3) past 262144 bytes of links' (name + CID) estimate ('links-bytes',
  boxo's default HAMTSizeEstimation), made by `vectors/gen_dirs.mjs` over the trees of
  `vectors/dir_trees.json`. The test re-runs the importer when its packages are installed
  (tests/r1fs/vectors/npm, or R1FS_NPM_DIR).
- `vectors/kubo_dirs.json`: CIDs written in kubo's own tests: test/sharness/t0260-sharding.sh's
  SHARDEDV1 (2000 files `file<i>` holding "<i>\n", `ipfs add -r --cid-version=1` with sharding forced
  on by a 1-byte threshold), t0044-add-symlink.sh's folder with symbolic links (CIDv1), and
  test/cli/files_test.go's empty folder (CIDv0 of the same block).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from r1os.r1fs import parse_cid
from r1os.r1fs._unixfs_dir import HAMT_THRESHOLD, import_entries, import_tree, read_dir_block
from tests.r1fs._trees import HERE, TREES, MemBlocks, items, write

JS = {v["name"]: v for v in json.loads((HERE / "js_dirs.json").read_text())["vectors"]}
NPM = Path(os.environ.get("R1FS_NPM_DIR", HERE / "npm" / "node_modules"))


def test_vectors_cover_what_the_issue_asks() -> None:
    assert {
        "empty_folder", "small_files", "nested", "big_file_in_folder", "hamt_over_threshold",
        "flat_at_threshold", "hamt_in_subfolder",
    } <= set(JS)  # fmt: skip
    big = next(e for e in TREES["big_file_in_folder"]["entries"] if e["path"] == "model/weights.bin")
    assert big["size"] > 174 * 262144  # a second level of file nodes


@pytest.mark.parametrize("name", sorted(JS))
def test_js_importer_dir_vectors(name: str) -> None:
    mem = MemBlocks()
    result = import_entries(items(name), mem.put)
    assert str(result.cid) == JS[name]["cid"]
    assert result.dag_size == JS[name]["size"]  # the root link's Tsize agrees too


def test_sharding_threshold_is_kubos() -> None:
    """At exactly 262144 bytes of estimate the folder stays plain; one byte more and it is a HAMT."""
    mem = MemBlocks()
    flat = import_entries(items("flat_at_threshold"), mem.put)
    hamt = import_entries(items("hamt_over_threshold"), mem.put)
    assert not read_dir_block(flat.cid, mem.blocks[flat.cid]).sharded
    assert read_dir_block(hamt.cid, mem.blocks[hamt.cid]).sharded
    assert HAMT_THRESHOLD == 262144


KUBO = {v["name"]: v for v in json.loads((HERE / "kubo_dirs.json").read_text())["vectors"]}


def test_kubo_sharness_sharded_folder() -> None:
    """kubo test/sharness/t0260-sharding.sh, SHARDEDV1: a HAMT of 2000 raw-leaf files, CIDv1."""
    v = KUBO["sharness_t0260_sharded_v1"]
    files = [(f"file{i}", f"{i}\n".encode()) for i in range(1, 2001)]
    assert str(import_entries(files, threshold=v["threshold"]).cid) == v["cid"]


def test_kubo_sharness_symlinks(tmp_path: Path) -> None:
    """kubo test/sharness/t0044-add-symlink.sh: symbolic links are stored as links (UnixFS Symlink),
    a dangling one too; from disk, and from the tar stream `r1os fs add -r` sends."""
    import asyncio

    from r1os.r1fs._tar import import_tar, tar_folder

    v = KUBO["sharness_t0044_symlinks_v1"]
    files = tmp_path / "files"
    (files / "foo").mkdir(parents=True)
    (files / "bar").mkdir()
    (files / "foo" / "baz").write_text("some text\n")
    (files / "bar" / "baz").symlink_to("files/foo/baz")
    (files / "bad").symlink_to("files/does/not/exist")
    assert str(import_tree(files).cid) == v["cid"]

    async def stream():  # type: ignore[no-untyped-def]
        for piece in tar_folder(files):
            yield piece

    assert str(asyncio.run(import_tar(stream())).cid) == v["cid"]


def test_kubo_empty_folder() -> None:
    """kubo's empty UnixFS folder (test/cli/files_test.go), as CIDv1."""
    cid = import_entries([]).cid
    assert cid == parse_cid(KUBO["empty_unixfs_dir"]["cid"])
    assert str(cid) == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def test_folder_on_disk_gives_the_same_cid(tmp_path: Path) -> None:
    """`import_tree` (what `r1os fs add -r` runs) on the tree laid out on disk; hidden names are left
    out as kubo leaves them out without --hidden."""
    folder = write("nested", tmp_path / "nested")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    (folder / "x" / ".hidden").write_text("no")
    assert str(import_tree(folder).cid) == JS["nested"]["cid"]
    assert str(import_tree(folder, hidden=True).cid) != JS["nested"]["cid"]


@pytest.mark.skipif(
    not (NPM / "ipfs-unixfs-importer").is_dir() or shutil.which("node") is None,
    reason="install tests/r1fs/vectors/npm (npm install) or set R1FS_NPM_DIR to re-run the JS importer",
)
def test_js_dir_vectors_regenerate() -> None:
    env = {**os.environ, "R1FS_NPM_DIR": str(NPM)}
    out = subprocess.run(
        ["node", str(HERE / "gen_dirs.mjs")], capture_output=True, check=True, timeout=120, text=True, env=env
    )
    fresh = {v["name"]: (v["cid"], v["size"]) for v in json.loads(out.stdout)["vectors"]}
    assert fresh == {k: (v["cid"], v["size"]) for k, v in JS.items()}
