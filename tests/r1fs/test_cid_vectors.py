"""R1FS CIDs equal those of real IPFS implementations for the same bytes.

Where each vector comes from (never from r1os itself):
- `vectors/kubo_sharness.json`: expected CIDs written in kubo's own sharness tests
  (test/sharness/t0040-add-and-cat.sh, github.com/ipfs/kubo). The two large ones hash Go's seeded
  math/rand stream (kubo's `random-data` tool before kubo commit 4d210882c); `vectors/random_data.go`
  regenerates those bytes, so they run where a Go toolchain is installed and are skipped elsewhere.
- `vectors/js_importer.json`: output of the JavaScript IPFS importer (npm ipfs-unixfs-importer 17.1.1)
  configured as kubo's `ipfs add --cid-version=1` (raw leaves, 256 KiB chunks, balanced layout of 174
  links, single chunk reduced to its leaf), made by `vectors/gen_vectors.mjs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from r1os.r1fs import CHUNK_SIZE, import_bytes, import_file
from tests.r1fs._content import mod251

HERE = Path(__file__).parent / "vectors"
JS = json.loads((HERE / "js_importer.json").read_text())["vectors"]
KUBO = json.loads((HERE / "kubo_sharness.json").read_text())["vectors"]


def test_js_vectors_cover_the_required_sizes() -> None:
    sizes = {v["size"] for v in JS}
    assert {0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10 * 1024 * 1024} <= sizes
    assert max(sizes) > 174 * CHUNK_SIZE  # needs a second DAG level


@pytest.mark.parametrize("vector", JS, ids=[v["name"] for v in JS])
def test_js_importer_vectors(vector: dict[str, object]) -> None:
    size = vector["size"]
    assert isinstance(size, int) and vector["content"] == "byte i = i mod 251"
    assert str(import_bytes(mod251(size)).cid) == vector["cid"]


LITERAL = [v for v in KUBO if "literal" in v["content"]]
RANDOM = [v for v in KUBO if "go_math_rand" in v["content"]]


@pytest.mark.parametrize("vector", LITERAL, ids=[v["name"] for v in LITERAL])
def test_kubo_sharness_literal_vectors(vector: dict[str, dict[str, str]]) -> None:
    data = vector["content"]["literal"].encode()
    assert str(import_bytes(data).cid) == vector["cid"]


@pytest.mark.skipif(
    shutil.which("go") is None, reason="needs a Go toolchain to regenerate kubo's random-data"
)
@pytest.mark.parametrize("vector", RANDOM, ids=[v["name"] for v in RANDOM])
def test_kubo_sharness_random_data_vectors(
    vector: dict[str, dict[str, dict[str, int]]], tmp_path: Path
) -> None:
    spec = vector["content"]["go_math_rand"]
    out = tmp_path / "data"
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": "-mod=mod"}
    with open(out, "wb") as fh:
        subprocess.run(
            ["go", "run", str(HERE / "random_data.go"), str(spec["size"]), str(spec["seed"])],
            stdout=fh, check=True, env=env, timeout=120,
        )  # fmt: skip
    sha1 = hashlib.sha1(out.read_bytes()).hexdigest()
    assert sha1 == vector["content"]["sha1"], "the generator does not reproduce kubo's bytes"
    assert str(import_file(out).cid) == vector["cid"]


@pytest.mark.skipif(
    not (Path(os.environ.get("R1FS_NPM_DIR", "/nonexistent")) / "ipfs-unixfs-importer").is_dir()
    or shutil.which("node") is None,
    reason="set R1FS_NPM_DIR to a node_modules with ipfs-unixfs-importer to re-run the JS importer",
)
def test_js_vectors_regenerate() -> None:
    out = subprocess.run(
        ["node", str(HERE / "gen_vectors.mjs")], capture_output=True, check=True, timeout=300, text=True
    )
    fresh = {v["name"]: v["cid"] for v in json.loads(out.stdout)["vectors"]}
    assert fresh == {v["name"]: v["cid"] for v in JS}
