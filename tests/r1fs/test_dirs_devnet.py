"""Folders across real nodes: `r1os fs add -r` on one node, `fs ls` and `fs get -o DIR` on another
(which fetches the tree), a pin that pulls the whole tree, and replicas of a folder kept whole."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r1os.devnet import Devnet
from r1os.devnet._state import DevnetState
from r1os.identity import NodeKey
from r1os.r1fs import R1fsClient, parse_cid
from r1os.r1fs._store import BlockStore
from tests.conftest import async_wait_for
from tests.r1fs._trees import HERE, write
from tests.r1fs.conftest import devnet_with

JS = {v["name"]: v["cid"] for v in json.loads((HERE / "js_dirs.json").read_text())["vectors"]}
ENV = {"R1OS_R1FS__GRACE": "4", "R1OS_R1FS__RECONCILE_INTERVAL": "0.5"}
USER = NodeKey.generate()


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, DevnetState]]:
    with devnet_with(tmp_path_factory, "r1fs-dirs", ENV, nodes=2) as net:
        yield net


def cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from r1os.cli import app

    return CliRunner().invoke(app, ["fs", *args])


def files_of(folder: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
        if not p.name.startswith(".")
    }


def test_cli_add_r_ls_get_on_another_node_and_pin(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    _, state = devnet
    a, b = state.nodes[0].url, state.nodes[1].url
    folder = write("nested", tmp_path / "nested")
    (folder / ".hidden").write_text("left out, as by ipfs add -r")
    want = JS["nested"]  # from the JS importer configured as kubo, not from r1os

    assert cli("add", str(folder)).exit_code != 0  # a folder needs -r
    only = cli("add", "-r", "--only-hash", str(folder))
    assert only.exit_code == 0 and only.output.strip() == want
    added = cli("add", "-r", str(folder), "--node", a, "--json")
    assert added.exit_code == 0, added.output
    out = json.loads(added.output)
    assert out["cid"] == want and out["files"] == 4

    listed = cli("ls", want, "--node", b, "--json")  # B has nothing yet: it fetches the folder's blocks
    assert listed.exit_code == 0, listed.output
    assert [e["name"] for e in json.loads(listed.output)] == ["top.txt", "w", "x"]
    sub = cli("ls", f"{want}/x/y", "--node", b)
    assert "also-empty/" in sub.output and "z/" in sub.output

    dest = tmp_path / "copy"
    got = cli("get", want, "-o", str(dest), "--node", b)
    assert got.exit_code == 0, got.output
    assert files_of(dest) == files_of(folder)

    pinned = cli("pin", want, "--node", b)
    assert pinned.exit_code == 0, pinned.output
    store = BlockStore(Path(state.nodes[1].home) / "services" / "r1fs" / "blocks", readonly=True)
    try:
        assert store.is_complete(parse_cid(want))
    finally:
        store.close()


async def test_a_folder_pinned_with_two_replicas_is_copied_whole(
    devnet: tuple[Devnet, DevnetState], tmp_path: Path
) -> None:
    _, state = devnet
    a, b = state.nodes[0], state.nodes[1]
    folder = write("small_files", tmp_path / "small")
    async with R1fsClient(a.url, key=USER) as ca:
        out = await ca.add_tree(folder, replicas=2)
    cid = out["cid"]
    assert cid == JS["small_files"]

    async def replicated() -> bool:
        async with R1fsClient(b.url) as cb:
            st = await cb.stat(cid)
        return bool(st["complete"] and st["pinned"])

    await async_wait_for(replicated, 30, "node B to hold the whole folder as a replica")


def test_blocking_sdk_round_trip(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    """The SDK's blocking client (`Session(...).r1fs`): add_tree on A, list_dir and get_tree from B."""
    from r1os.sdk import R1fs

    _, state = devnet
    folder = write("big_file_in_folder", tmp_path / "big")
    with R1fs(state.nodes[0].url, key=USER) as fa:
        out = fa.add_tree(folder)
    assert out["cid"] == JS["big_file_in_folder"]  # a 175-chunk file inside a folder
    with R1fs(state.nodes[1].url) as fb:
        model = fb.list_dir(out["cid"], "model")
        assert [(e["name"], e["size"]) for e in model] == [("weights.bin", 174 * 262144 + 1)]
        counts = fb.get_tree(out["cid"], tmp_path / "copy")
    assert counts["files"] == 2 and files_of(tmp_path / "copy") == files_of(folder)


def test_get_writes_links_that_stay_inside_and_skips_the_others(
    devnet: tuple[Devnet, DevnetState], tmp_path: Path
) -> None:
    _, state = devnet
    folder = tmp_path / "links"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f.txt").write_text("inside")
    (folder / "inside").symlink_to("sub/f.txt")
    (folder / "sub" / "up").symlink_to("../sub/f.txt")
    (folder / "abs").symlink_to("/etc/passwd")
    (folder / "sub" / "out").symlink_to("../../escape")
    added = cli("add", "-r", str(folder), "--node", state.nodes[0].url, "--json")
    assert added.exit_code == 0, added.output
    dest = tmp_path / "copy"
    got = cli("get", json.loads(added.output)["cid"], "-o", str(dest), "--node", state.nodes[1].url)
    assert got.exit_code == 0, got.output
    assert "skipped 2 symbolic link(s)" in got.output
    assert os.readlink(dest / "inside") == "sub/f.txt" and (dest / "inside").read_text() == "inside"
    assert os.readlink(dest / "sub" / "up") == "../sub/f.txt"
    assert not (dest / "abs").is_symlink() and not (dest / "sub" / "out").is_symlink()
