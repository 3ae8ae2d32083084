"""Deeploy on a real devnet (node processes, embedded broker, real bubblewrap sandboxes): the
issue's own checks - a model served through a node that holds no replica, a sandboxed app that cannot
read the node's keystore or another app's folder, and a replacement after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.deeploy import load_spec, parse_spec
from r1os.deeploy._requests import sign_app_request
from r1os.deeploy.runtimes.process import ProcessRuntime
from r1os.devnet import Devnet, DevnetState
from r1os.identity import NodeKey
from tests.conftest import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        ProcessRuntime.unavailable() is not None, reason=f"no sandbox: {ProcessRuntime.unavailable()}"
    ),
]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, DevnetState]]:
    dn = Devnet(tmp_path_factory.mktemp("deeploy") / "devnet")
    try:
        yield dn, dn.up(nodes=5, oracles=3, heartbeat=1.0, chain=False, timeout=90)
    finally:
        dn.down()


OWNER = NodeKey.generate()


def request(state: DevnetState, node: int, action: str, spec: Any = None, **kw: Any) -> httpx.Response:
    name = spec.name if spec is not None else kw.pop("name")
    signed = sign_app_request(OWNER, network=state.network, action=action, name=name, spec=spec, **kw)
    return httpx.post(
        state.nodes[node].url + "/v1/apps/requests", content=signed.model_dump_json(), timeout=30
    )


def view(state: DevnetState, name: str, node: int = 0) -> dict[str, Any]:
    return httpx.get(f"{state.nodes[node].url}/v1/apps/{OWNER.address.lower()}/{name}", timeout=5).json()


def wait_healthy(state: DevnetState, name: str, n: int, timeout: float = 60) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        v = view(state, name)
        return v if v.get("healthy") == n else None

    return wait_for(ok, timeout, f"{n} healthy replicas of {name}")


def test_inference_answers_through_a_node_without_replica(devnet: tuple[Devnet, DevnetState]) -> None:
    from sklearn.datasets import load_digits

    _, state = devnet
    spec = load_spec(EXAMPLES / "inference" / "app.yaml")
    assert spec.replicas == 2
    r = request(state, 4, "deploy", spec)
    assert r.status_code == 200, r.text
    v = wait_healthy(state, "inference", 2)
    hosts = {x["node"] for x in v["replicas"]}
    outsider = next(n for n in state.nodes if n.address.lower() not in hosts)
    digits = load_digits()
    inputs = digits.data[-20:].tolist()
    answer = httpx.post(f"{outsider.url}/apps/inference/predict", json={"inputs": inputs}, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 20
    assert sum(p == t for p, t in zip(predictions, digits.target[-20:], strict=True)) >= 18
    bad = httpx.post(f"{outsider.url}/apps/inference/predict", json={"inputs": [[1, 2]]}, timeout=30)
    assert 400 <= bad.status_code < 500, bad.text


SNOOP = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

def attempt(path):
    try:
        with open(path, "rb") as f:
            f.read(1)
        return "read"
    except OSError as exc:
        return type(exc).__name__

def attempt_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "wrote"
    except OSError as exc:
        return type(exc).__name__

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        out = {
            "keystore": attempt(os.environ["NODE_KEYSTORE"]),
            "token": attempt(os.environ["NODE_TOKEN"]),
            "other_app": attempt(os.environ["OTHER_APP_FILE"]),
            "write_home": attempt_write(os.environ["NODE_HOME"] + "/planted"),
            "own": attempt("app.py"),
        }
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_process_app_cannot_read_the_keystore_or_another_app(devnet: tuple[Devnet, DevnetState]) -> None:
    _, state = devnet
    echo = load_spec(EXAMPLES / "echo" / "app.yaml").model_copy(update={"replicas": 5})
    assert request(state, 0, "deploy", echo).status_code == 200
    wait_healthy(state, "echo", 5)  # an echo replica on every node: its folder is "another app's"
    home = Path(state.nodes[3].home)
    other = home / "services" / "deeploy" / "apps" / f"{OWNER.address.lower()}-echo" / "app.py"
    assert other.exists()
    spec = parse_spec(
        json.dumps(
            {
                "name": "snoop",
                "command": ["python3", "app.py", "{port}"],
                "files": {"app.py": SNOOP},
                "placement": {"nodes": [state.nodes[3].address]},
                "env": {
                    "NODE_KEYSTORE": str(home / "keys" / "node.json"),
                    "NODE_TOKEN": str(home / "api-token"),
                    "OTHER_APP_FILE": str(other),
                    "NODE_HOME": str(home),
                },
            }
        )
    )
    assert (home / "keys" / "node.json").exists()
    assert request(state, 0, "deploy", spec).status_code == 200
    wait_healthy(state, "snoop", 1)
    seen = httpx.get(f"{state.nodes[1].url}/apps/snoop/", timeout=10).json()
    assert seen["own"] == "read"
    assert seen["keystore"] != "read" and seen["token"] != "read" and seen["other_app"] != "read", seen
    # Writing "into the node's home" lands, at most, in the sandbox's own scratch space (the folders
    # above the app's are empty tmpfs there): nothing reaches the real home.
    assert not (home / "planted").exists(), seen
    assert request(state, 0, "delete", name="snoop").status_code == 200
    assert request(state, 0, "delete", name="echo").status_code == 200


def test_sigkill_a_node_holding_a_replica(devnet: tuple[Devnet, DevnetState]) -> None:
    _, state = devnet
    spec = load_spec(EXAMPLES / "echo" / "app.yaml").model_copy(update={"name": "echo2"})
    # Keep the oracles out: killing an edge node is the case under test.
    edges = [n for n in state.nodes if not n.oracle]
    assert request(state, 0, "deploy", spec).status_code == 200
    v = wait_healthy(state, "echo2", 2)
    victim = next((n for n in edges if n.address.lower() in {x["node"] for x in v["replicas"]}), None)
    assert victim is not None, v
    entry = next(
        n for n in state.nodes if n.oracle and n.address.lower() not in {x["node"] for x in v["replicas"]}
    )
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()

    def replaced() -> bool:
        now = view(state, "echo2", node=state.nodes.index(entry))
        nodes = {x["node"] for x in now["replicas"] if x["healthy"]}
        return len(nodes) == 2 and victim.address.lower() not in nodes

    wait_for(replaced, 30, "a replacement replica, healthy")
    # Offline is declared after 3 missed 1 s heartbeats; the replacement must serve within 10 s of it.
    assert time.monotonic() - killed < 3 * 1.0 + 1.0 + 10.0
    for _ in range(10):
        assert httpx.get(f"{entry.url}/apps/echo2/", timeout=10).status_code == 200
