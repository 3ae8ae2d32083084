"""The `plugin` runtime: the worker serves a Python class in the sandbox (setup first, then
process(request) for every request), and the inference example classifies digits end to end."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from r1os.deeploy import load_spec
from r1os.deeploy.runtimes import _sandbox
from r1os.deeploy.runtimes.plugin import PluginRuntime
from tests.conftest import async_wait_for
from tests.deeploy.test_runtime_process import EXAMPLES, NodeLayout, wait_log, wait_state

pytestmark = pytest.mark.skipif(
    _sandbox.unavailable() is not None, reason=f"no sandbox here: {_sandbox.unavailable()}"
)

PLUGIN = """
import os, pathlib

class Echo:
    def setup(self):
        # Waits for the test to say go, so the test sees the worker before setup returns.
        while not pathlib.Path("go").exists():
            import time; time.sleep(0.02)
        self.ready = True

    def process(self, request):
        if request.path == "/boom":
            raise ValueError("no good")
        if request.path == "/status":
            return 418, {"teapot": True}
        if request.path == "/bytes":
            return b"raw\\x00bytes"
        if request.path == "/bad-status":
            return 999, {}
        return {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "json": request.json,
            "body": request.body.decode(errors="replace"),
            "agent": request.headers.get("x-test"),
            "ready": self.ready,
        }

    def teardown(self):
        pathlib.Path("torn-down").write_text("yes")
"""

BROKEN = """
class Broken:
    def setup(self):
        raise RuntimeError("cannot load the weights")
    def process(self, request):
        return {}
"""


@pytest.fixture
def node(tmp_path: Path) -> NodeLayout:
    return NodeLayout.make(tmp_path)


@pytest.fixture
async def runtime() -> AsyncIterator[PluginRuntime]:
    rt = PluginRuntime()
    yield rt
    await rt.aclose()


async def status_of(url: str) -> int | None:
    try:
        async with httpx.AsyncClient() as c:
            return (await c.get(url)).status_code
    except httpx.TransportError:
        return None


async def test_health_is_503_until_setup_returns_then_requests_are_served(
    node: NodeLayout, runtime: PluginRuntime
) -> None:
    launch = node.launch(
        "echo-p",
        runtime="plugin",
        plugin="echo_plugin:Echo",
        files={"echo_plugin.py": PLUGIN},
        env={"R1OS_HEALTH_PATH": "/healthz"},
    )
    base = f"http://127.0.0.1:{launch.port}"
    await runtime.start(launch)
    await async_wait_for(lambda: _is(status_of(f"{base}/healthz"), 503), 10, "the worker to listen")
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/predict", json={"x": 1})
        assert r.status_code == 503 and "starting" in r.json()["error"]
        (launch.folder / "go").touch()
        await async_wait_for(lambda: _is(status_of(f"{base}/healthz"), 200), 10, "setup to end")
        assert (await c.get("/healthz")).json() == {"ready": True}

        r = await c.post("/predict?k=v&n=1", json={"inputs": [1, 2]}, headers={"x-test": "yes"})
        assert r.status_code == 200
        assert r.json() == {
            "method": "POST",
            "path": "/predict",
            "query": {"k": "v", "n": "1"},
            "json": {"inputs": [1, 2]},
            "body": '{"inputs":[1,2]}',
            "agent": "yes",
            "ready": True,
        }
        r = await c.put("/text", content=b"plain words", headers={"content-type": "text/plain"})
        assert r.json()["json"] is None and r.json()["body"] == "plain words"
        assert (await c.get("/")).json()["method"] == "GET"  # "/" is not the health path here

        r = await c.post("/boom", json={})
        assert r.status_code == 500 and r.json() == {"error": "ValueError: no good"}
        r = await c.post("/x", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        r = await c.get("/status")
        assert r.status_code == 418 and r.json() == {"teapot": True}
        r = await c.get("/bytes")
        assert r.content == b"raw\x00bytes" and r.headers["content-type"] == "application/octet-stream"
        assert (await c.get("/bad-status")).status_code == 500
    # The failure left its traceback in the replica's log.
    lines = await wait_log(runtime, "echo-p", "ValueError: no good")
    assert any("Traceback" in line for line in lines)
    assert any("raise ValueError" in line for line in lines)


async def _is(coro: object, want: int) -> bool:
    return await coro == want  # type: ignore[misc]


async def test_oversized_body_is_refused_with_413(node: NodeLayout, runtime: PluginRuntime) -> None:
    launch = node.launch(
        "big", runtime="plugin", plugin="echo_plugin:Echo", files={"echo_plugin.py": PLUGIN, "go": ""}
    )
    await runtime.start(launch)
    await async_wait_for(lambda: _is(status_of(f"http://127.0.0.1:{launch.port}/"), 200), 10, "ready")

    def post_huge_header() -> bytes:
        with socket.create_connection(("127.0.0.1", launch.port), timeout=10) as s:
            s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{}" % (17 << 20))
            return s.recv(4096)

    answer = await asyncio.to_thread(post_huge_header)
    assert answer.startswith(b"HTTP/1.1 413")


async def test_setup_failure_exits_non_zero_with_the_traceback(
    node: NodeLayout, runtime: PluginRuntime
) -> None:
    await runtime.start(
        node.launch("broken", runtime="plugin", plugin="broken:Broken", files={"broken.py": BROKEN})
    )
    st = await wait_state(runtime, "broken", "exited", "failed")
    assert (st.state, st.exit_code) == ("failed", 1)  # type: ignore[attr-defined]
    logs = "\n".join(await runtime.logs("broken", 200))
    assert "RuntimeError: cannot load the weights" in logs and "Traceback" in logs
    await runtime.start(node.launch("nomod", runtime="plugin", plugin="missing_mod:X"))
    st = await wait_state(runtime, "nomod", "exited", "failed")
    assert st.state == "failed"  # type: ignore[attr-defined]
    assert "No module named 'missing_mod'" in "\n".join(await runtime.logs("nomod", 200))


async def test_stop_is_graceful_and_calls_teardown(node: NodeLayout, runtime: PluginRuntime) -> None:
    launch = node.launch(
        "tear", runtime="plugin", plugin="echo_plugin:Echo", files={"echo_plugin.py": PLUGIN, "go": ""}
    )
    await runtime.start(launch)
    await async_wait_for(lambda: _is(status_of(f"http://127.0.0.1:{launch.port}/"), 200), 10, "ready")
    await runtime.stop("tear", timeout=10)
    assert (await runtime.status("tear")).state == "stopped"
    assert (launch.folder / "torn-down").read_text() == "yes"
    assert "exited with code 0" not in "\n".join(await runtime.logs("tear"))


async def test_inference_example_classifies_digits_in_the_sandbox(
    node: NodeLayout, runtime: PluginRuntime
) -> None:
    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:
        pytest.skip("scikit-learn is not installed (pip install 'r1os[apps]')")
    # The data set as scikit-learn ships it (read here without importing scikit-learn).
    csv_gz = Path(list(found.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    rows = [
        [float(v) for v in line.split(",")] for line in gzip.decompress(csv_gz.read_bytes()).decode().split()
    ]
    x, y = [r[:64] for r in rows], [int(r[64]) for r in rows]
    spec = load_spec(EXAMPLES / "inference" / "app.yaml")
    assert spec.runtime == "plugin" and isinstance(spec.files, dict)
    picks = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 1000, 1796]
    inputs = [[float(v) for v in x[i]] for i in picks]
    # The request app.yaml's comment shows, with the answer it gives.
    shown = re.search(r"-d '(\{.*?\})'\n#\s+-> (\{.*\})", (EXAMPLES / "inference" / "app.yaml").read_text())
    assert shown is not None
    launch = node.launch(
        "inference",
        runtime="plugin",
        plugin=spec.plugin,
        files=spec.files,
        memory_mb=spec.resources.memory_mb,
        cpu=spec.resources.cpu,
        env={"R1OS_HEALTH_PATH": spec.health.http or "/"},
    )
    base = f"http://127.0.0.1:{launch.port}"
    await runtime.start(launch)

    async def ready() -> bool:
        st = await runtime.status("inference")
        assert st.state == "running", "\n".join(await runtime.logs("inference", 50))
        return await status_of(f"{base}{spec.health.http}") == 200

    await async_wait_for(ready, 30, "the model to be trained")
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/predict", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [int(y[i]) for i in picks]}
        r = await c.post("/predict", content=shown[1], headers={"content-type": "application/json"})
        assert r.json() == json.loads(shown[2])
        for bad in ({}, {"inputs": [[1, 2, 3]]}, {"inputs": [["a"] * 64]}, {"inputs": "x"}, [1]):
            r = await c.post("/predict", content=json.dumps(bad))
            assert r.status_code == 400, (bad, r.text)
            assert "error" in r.json()
        assert (await c.get("/predict")).status_code == 405
        assert (await c.post("/other", json={})).status_code == 404
