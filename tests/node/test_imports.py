"""The import diet of a node: what a plain edge node's assembly loads, read from `sys.modules` in a fresh
interpreter (no timings). Every megabyte a module costs is paid once per node process, so the heavy
packages wait for the nodes and the work that need them: the chain client for chain work, numpy for a
training job, the Docker SDK for a Docker engine, the OracleSync service for oracles. And what a node
never uses is not loaded at all: a keystore library for its key file, eth_utils for checksums, httpx's
command-line client, trio, the websocket protocol before a websocket comes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# What the child does: assemble a node's services the way `python -m r1os.node` does, ask Deeploy which
# runtimes work here (it probes for a Docker engine), and list what got imported.
# It also does what a node process does at start besides: what `run_node` does first, the key file
# (created, then read), the shared HTTP client, the HTTP server's configuration.
PROBE = """
import json, sys, pathlib
from r1os.node._run import config_from
from r1os.node._assembly import build_services
from r1os.node import DeeploySettings
from r1os.deeploy._service import available_runtimes
from r1os.identity import load_or_create
from r1os.node._http import LazyWebSockets, peer_client
from r1os.node._memory import skip_unused_modules

skip_unused_modules()
config = config_from()
services = build_services(config)
runtimes = available_runtimes(DeeploySettings(), "0x" + "ab" * 20, [], spare_dir=None)
key_file = pathlib.Path(config.home_dir) / "keys" / "node.json"
created = load_or_create(key_file, "pw", strength="light")[0]
assert load_or_create(key_file, "pw")[0].address == created.address
client = peer_client()
import uvicorn
uvicorn.Config(lambda scope, receive, send: None, ws=LazyWebSockets, lifespan="off").load()
# a module marked absent (None) is not loaded
print(json.dumps({"services": [s.name for s in services], "runtimes": sorted(runtimes),
                  "modules": sorted(name for name, mod in sys.modules.items() if mod is not None)}))
"""

# Never needed by an edge node without a chain, a job or a Docker engine.
HEAVY = ("web3", "eth_account", "tenseal", "docker", "sklearn", "numpy", "torch")
# Never needed by a node at all (MiB per node process when they were loaded): keystore v3 is read with
# hashlib and cryptography (eth_keyfile with py_ecc and pycryptodome's ciphers, 3.4), EIP-55 addresses
# are made by r1os.identity (eth_utils and its dependencies, ~4.5), httpx's command-line client (rich
# and pygments, ~3), trio (httpcore's support for trio event loops, ~3), uvicorn's websocket protocol
# until a websocket upgrade (~0.5), pydantic v1 (~0.8), and cryptography until a payload is encrypted
# (its own OpenSSL, ~9 MiB RSS); keccak runs pycryptodome's compiled Keccak directly, not through cffi,
# which parses C declarations with pycparser (~1.5 MiB).
NEVER = (
    "cffi",
    "pycparser",
    "eth_hash",
    "cryptography",
    "pydantic.v1",
    "eth_keyfile",
    "py_ecc",
    "Crypto.Cipher",
    "Crypto.Protocol",
    "eth_utils",
    "eth_typing",
    "cytoolz",
    "httpx._main",
    "rich",
    "pygments",
    "trio",
    "websockets",
    "wsproto",
)


def _assemble(tmp_path: Path, **env: str) -> dict[str, list[str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("R1OS_") and k != "DOCKER_HOST"}
    child_env = {
        **base,
        "R1OS_HOME": str(tmp_path / "home"),
        "R1OS_NETWORK": "devnet",
        "R1OS_BROKER": "mqtt://127.0.0.1:1",
        "R1OS_ORACLES": "[]",
        # a Docker engine is looked for here only: the answer (none) does not depend on the machine
        "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}",
        **env,
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=child_env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _loaded(modules: list[str], top: str) -> bool:
    return any(m == top or m.startswith(top + ".") for m in modules)


def test_edge_node_assembly_leaves_heavy_packages_unimported(tmp_path: Path) -> None:
    edge = _assemble(tmp_path, R1OS_ORACLE="0")
    mods = edge["modules"]
    assert "docker" not in edge["runtimes"]
    assert {"cstore", "r1fs", "deeploy", "edil"} <= set(edge["services"])
    assert "oracle-sync" not in " ".join(edge["services"])
    loaded = [name for name in HEAVY if _loaded(mods, name)]
    assert loaded == [], f"an edge node's assembly imported {loaded}"
    unused = [name for name in NEVER if _loaded(mods, name)]
    assert unused == [], f"a node process imported {unused}, which it never uses"
    assert "httpcore" in mods and "r1os.identity._keystore" in mods  # what the probe did really ran
    assert "r1os.oracle._service" not in mods  # OracleSync runs on oracles only


def test_oracle_node_assembly_loads_the_oracle_service(tmp_path: Path) -> None:
    # the counterpart, so the test above cannot pass by not assembling anything
    oracle = _assemble(tmp_path, R1OS_ORACLE="1")
    assert "r1os.oracle._service" in oracle["modules"]
    assert len(oracle["services"]) > 5
