"""R1FS with real IPFS clients from npm (installed by `./dev setup` in tests/r1fs/interop/): on a
two-node devnet, the node that holds none of the content is the only gateway of `@helia/verified-fetch`,
which fetches a file and files inside a folder by `ipfs://` URL and checks every block against its CID
itself (the gateway fetches the blocks from the other node); `ipfs-car` unpacks CARs exported by
`r1os fs export` from that node into identical bytes, and CARs it packed import into r1os
(`r1os fs import`) with the same root CIDs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from r1os.devnet import Devnet
from r1os.devnet._state import DevnetState
from r1os.identity import NodeKey
from r1os.r1fs import CHUNK_SIZE, R1fs, import_bytes
from r1os.r1fs._car import encode_header, encode_section
from r1os.r1fs._dag import Cid
from r1os.r1fs._unixfs_dir import import_tree
from tests.r1fs._content import mod251
from tests.r1fs.conftest import devnet_with

INTEROP = Path(__file__).parent / "interop"
MODULES = INTEROP / "node_modules"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
USER = NodeKey.generate()


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, DevnetState]]:
    assert (MODULES / "@helia" / "verified-fetch").is_dir() and (MODULES / "ipfs-car").is_dir(), (
        "the npm clients are missing: ./dev setup installs them (npm ci in tests/r1fs/interop)"
    )
    with devnet_with(tmp_path_factory, "r1fs-interop", {}, nodes=2) as net:
        yield net


def node_js(*args: str | Path, cwd: Path = INTEROP) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run(
        [NODE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=90, check=False
    )


def ipfs_car(*args: str | Path) -> str:
    r = node_js(MODULES / "ipfs-car" / "bin.js", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def r1os(url: str, *args: str | Path) -> str:
    env = {**os.environ, "R1OS_PRIVATE_KEY": USER.private_key_hex}
    r = subprocess.run(
        [Path(sys.executable).parent / "r1os", *map(str, args), "--node", url],
        capture_output=True, text=True, timeout=90, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def make_folder(root: Path) -> dict[str, bytes]:
    files = {
        "hello.txt": b"hello from r1os\n",
        "model/weights.bin": mod251(3 * CHUNK_SIZE + 11),
        "model/config.json": b'{"layers": 2}\n',
        "docs/a b.md": b"# spaces in a name\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_verified_fetch_and_ipfs_car_against_a_node(
    devnet: tuple[Devnet, DevnetState], tmp_path: Path
) -> None:
    _, state = devnet
    url = state.nodes[0].url  # where the content is added
    gateway = state.nodes[1].url  # the clients' gateway: it has nothing, and fetches from node 0
    data = mod251(5 * CHUNK_SIZE // 2)  # three leaves under a dag-pb root
    folder = tmp_path / "site"
    files = make_folder(folder)
    with R1fs(url, key=USER) as fs:
        file_cid = fs.add_bytes(data)["cid"]
        assert file_cid == str(import_bytes(data).cid)
        # the folder, built as `ipfs add -r --cid-version=1` does, goes in as a CAR
        blocks: dict[Cid, bytes] = {}
        tree = import_tree(folder, lambda c, b: blocks.setdefault(c, bytes(b)))
        car = tmp_path / "site.car"
        car.write_bytes(
            encode_header([tree.cid.raw]) + b"".join(encode_section(c, b) for c, b in blocks.items())
        )
        assert r1os(url, "fs", "import", car).split() == [str(tree.cid)]

    # 1. verified-fetch, with the node as its only gateway: a file, and a file two folders down
    out = tmp_path / "fetched"
    out.mkdir()
    urls = [f"ipfs://{file_cid}", f"ipfs://{tree.cid}/model/weights.bin", f"ipfs://{tree.cid}/docs/a%20b.md"]
    r = node_js("fetch.mjs", gateway, out, *urls)
    assert r.returncode == 0, r.stdout + r.stderr
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert [a["status"] for a in answers] == [200, 200, 200], answers
    assert (out / "0.bin").read_bytes() == data
    assert (out / "1.bin").read_bytes() == files["model/weights.bin"]
    assert (out / "2.bin").read_bytes() == files["docs/a b.md"]

    # 2. ipfs-car unpacks what `r1os fs export` wrote: the file, and the folder
    exported = tmp_path / "file.car"
    r1os(gateway, "fs", "export", file_cid, "-o", exported)
    assert ipfs_car("roots", exported).split() == [file_cid]
    ipfs_car("unpack", exported, "--output", tmp_path / "file.out")
    assert (tmp_path / "file.out").read_bytes() == data
    r1os(gateway, "fs", "export", str(tree.cid), "-o", tmp_path / "tree.car")
    with R1fs(url) as fs:  # the SDK's blocking client, from the other node: the same bytes (DFS order)
        fs.export_car(str(tree.cid), tmp_path / "tree2.car")
    assert (tmp_path / "tree2.car").read_bytes() == (tmp_path / "tree.car").read_bytes()
    ipfs_car("unpack", tmp_path / "tree.car", "--output", tmp_path / "tree.out")
    for name, content in files.items():
        assert (tmp_path / "tree.out" / name).read_bytes() == content, name

    # 3. CARs ipfs-car packed (its own chunking: 1 MiB leaves) import into r1os with the same roots
    big = tmp_path / "big.bin"
    big.write_bytes(mod251(2 * 1024 * 1024 + 5))
    roots = {}
    for source, extra in ((big, ["--no-wrap"]), (folder, [])):
        packed = tmp_path / f"{source.name}.packed.car"
        ipfs_car("pack", source, *extra, "--output", packed)
        roots[source.name] = ipfs_car("roots", packed).split()
        if source == big:  # through the SDK's blocking client; the folder through the CLI
            with R1fs(url, key=USER) as fs:
                assert fs.import_car(packed)["roots"] == roots[source.name]
        else:
            assert r1os(url, "fs", "import", packed).split() == roots[source.name]
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get(f"/ipfs/{roots['big.bin'][0]}").content == big.read_bytes()
        packed_site = roots["site"][0]
        listing = http.get(f"/ipfs/{packed_site}/").text
        got = http.get(f"/ipfs/{packed_site}/model/config.json").content
        assert got == files["model/config.json"], listing
