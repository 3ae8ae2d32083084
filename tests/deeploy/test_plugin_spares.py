"""Warm plugin workers (spares): started before any app, in a sandbox of their own, with the node's
preload modules imported; a claimed one serves the app exactly as a cold worker would (its env and
nothing else, its files as cwd, its isolation and limits), and is used once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from r1os.deeploy._service import available_runtimes
from r1os.deeploy.runtimes import ReplicaLaunch, _sandbox
from r1os.deeploy.runtimes.plugin import PluginRuntime
from r1os.node import DeeploySettings, NodeConfig
from tests.conftest import async_wait_for
from tests.deeploy.test_runtime_process import (
    HOG,
    KEYSTORE_SECRET,
    OTHER_SECRET,
    TOKEN_SECRET,
    NodeLayout,
    get_json,
    wait_log,
    wait_state,
)

pytestmark = pytest.mark.skipif(
    _sandbox.unavailable() is not None, reason=f"no sandbox here: {_sandbox.unavailable()}"
)

#: A module the worker itself never imports (so only a preload puts it in sys.modules).
PRELOADED = "xml.dom.minidom"

PROBE = """
import os, pathlib, sys

def attempt(fn):
    try:
        return "ok: " + str(fn())[:200]
    except Exception as exc:
        return "denied: " + type(exc).__name__

class Probe:
    def setup(self):
        self.preloaded = PRELOADED in sys.modules
        self.cwd_at_setup = sorted(os.listdir("."))
        self.tmp_at_setup = sorted(os.listdir("/tmp"))
        pathlib.Path("written-by-app.txt").write_text(os.environ.get("APP_VAR", ""))
        pathlib.Path("/tmp/leftover-" + os.environ.get("APP_VAR", "")).write_text("x")

    def process(self, request):
        home = os.environ.get("NODE_HOME", "/nonexistent")
        return {
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "preloaded": self.preloaded,
            "cwd_at_setup": self.cwd_at_setup,
            "tmp_at_setup": self.tmp_at_setup,
            "data": pathlib.Path("data.txt").read_text(),
            "path0_is_cwd": sys.path[0] == os.getcwd(),
            "read_keystore": attempt(lambda: open(home + "/keys/node.json").read()),
            "read_token": attempt(lambda: open(home + "/api-token").read()),
            "read_other": attempt(lambda: open(os.environ["OTHER_APP"] + "/secret.txt").read()),
            "stdin": attempt(lambda: sys.stdin.read()),
        }
""".replace("PRELOADED", repr(PRELOADED))

HOGGER = """
class Hog:
    def setup(self):
        HOG_LINE

    def process(self, request):
        return {}
"""


@pytest.fixture
def node(tmp_path: Path) -> NodeLayout:
    return NodeLayout.make(tmp_path)


def spare_dir(node: NodeLayout) -> Path:
    return node.apps.parent / "spares"


@pytest.fixture
async def warm(node: NodeLayout) -> AsyncIterator[PluginRuntime]:
    rt = PluginRuntime(
        spares=1, preload=[PRELOADED, "no_such_module_r1os"], hidden=[node.home], spare_dir=spare_dir(node)
    )
    rt.refill_delay = 0.0
    yield rt
    await rt.aclose()


async def ready(rt: PluginRuntime, n: int = 1) -> None:
    async def check() -> bool:
        return rt.spares_ready >= n

    await async_wait_for(check, 30, f"{n} spare(s) to be ready")


def env_of(got: dict[str, Any]) -> dict[str, str]:
    """The env a probe saw, PWD checked against its cwd and left out."""
    env: dict[str, str] = dict(got["env"])
    assert env.pop("PWD") == got["cwd"]
    return env


async def answer(launch: ReplicaLaunch) -> dict[str, Any]:
    """What the probe app answers (once it does)."""
    return dict(await get_json(f"http://127.0.0.1:{launch.port}/", timeout=30))


def probe_launch(node: NodeLayout, rid: str, app_var: str) -> ReplicaLaunch:
    return node.launch(
        rid,
        runtime="plugin",
        plugin="probe:Probe",
        files={"probe.py": PROBE, "data.txt": f"data of {rid}"},
        env={
            "APP_VAR": app_var,
            "NODE_HOME": str(node.home),
            "OTHER_APP": str(node.apps / "0xother-b-1"),
            "R1OS_HEALTH_PATH": "/health",
        },
    )


async def test_a_claimed_spare_serves_the_app_as_a_cold_worker_would(
    node: NodeLayout, warm: PluginRuntime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="r1os.deeploy")
    monkeypatch.setenv("NODE_ONLY_SECRET", "node-secret-value")
    await ready(warm)
    spare_names = [p.name for p in spare_dir(node).iterdir()]
    assert spare_names, "the spare's folder is made before any app"
    launch = probe_launch(node, "warm", "from-the-claim")
    await warm.start(launch)
    got = await answer(launch)
    # The claim's env, whole: what a cold worker gets (the sandbox's base and the launch's, and PWD as
    # bubblewrap sets it), nothing more.
    assert env_of(got) == _sandbox.sandbox_env(launch.env)
    assert "NODE_ONLY_SECRET" not in json.dumps(got)
    # The app's files are its cwd (and first on sys.path); the preloaded module was there for setup().
    assert got["cwd_at_setup"] == ["data.txt", "probe.py"]
    assert got["data"] == "data of warm"
    assert got["path0_is_cwd"] is True
    assert got["preloaded"] is True
    assert got["stdin"] == "ok: "  # /dev/null, not the node's pipe
    # Isolated as a cold replica: neither the node's home nor another app's folder.
    for key in ("read_keystore", "read_token", "read_other"):
        assert str(got[key]).startswith("denied"), (key, got[key])
    dumped = json.dumps(got)
    assert KEYSTORE_SECRET not in dumped and TOKEN_SECRET not in dumped and OTHER_SECRET not in dumped
    # On the host, launch.folder is the folder the app works in; the log is the replica's.
    assert (node.apps / "warm" / "written-by-app.txt").read_text() == "from-the-claim"
    assert (await warm.status("warm")).state == "running"
    logs = await wait_log(warm, "warm", "probe:Probe ready")
    assert "a warm worker" in logs[0]
    assert not any("spare ready" in line for line in logs)  # the spare's own lines are not the app's
    # Spares are never replicas, and a module that cannot be preloaded is said once.
    for name in spare_names:
        st = await warm.status(name)
        assert st.state == "stopped" and st.detail == "not known to this runtime"
    assert await warm.logs(spare_names[0]) == []
    skipped = [r for r in caplog.records if "no_such_module_r1os" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelno == logging.WARNING
    await warm.stop("warm")
    assert (await warm.status("warm")).state == "stopped"


async def test_a_spare_serves_one_app_once(node: NodeLayout, warm: PluginRuntime) -> None:
    # The first app leaves files in its folder and its /tmp; the second (on the next spare) sees none.
    await ready(warm)
    first = probe_launch(node, "first", "one")
    await warm.start(first)
    got1 = await answer(first)
    assert got1["preloaded"] is True
    await ready(warm)  # a new spare, started after the claim
    second = probe_launch(node, "second", "two")
    await warm.start(second)
    got2 = await answer(second)
    assert got2["preloaded"] is True
    assert got2["cwd_at_setup"] == ["data.txt", "probe.py"]
    assert not [n for n in got2["tmp_at_setup"] if n.startswith("leftover")]
    assert got2["env"]["APP_VAR"] == "two"
    assert (await warm.status("first")).state == "running"
    assert (node.apps / "first" / "written-by-app.txt").read_text() == "one"
    assert (node.apps / "second" / "written-by-app.txt").read_text() == "two"


async def test_without_a_spare_the_start_is_cold(node: NodeLayout, warm: PluginRuntime) -> None:
    warm.refill_delay = 3600.0  # the claimed spare is not replaced during this test
    await ready(warm)
    a, b = probe_launch(node, "a", "a"), probe_launch(node, "b", "b")
    await warm.start(a)
    await warm.start(b)  # no spare left: a cold worker
    got_a = await answer(a)
    got_b = await answer(b)
    assert got_a["preloaded"] is True
    assert got_b["preloaded"] is False
    assert env_of(got_b) == _sandbox.sandbox_env(b.env)
    assert got_b["cwd"] == str(node.apps / "b")
    assert got_b["cwd_at_setup"] == ["data.txt", "probe.py"]
    assert "a warm worker" not in (await warm.logs("b", 1000))[0]
    # And with spares off, every start is cold.
    cold = PluginRuntime(hidden=[node.home], spare_dir=spare_dir(node) / "off")
    try:
        c = probe_launch(node, "c", "c")
        await cold.start(c)
        got_c = await answer(c)
        assert got_c["preloaded"] is False
        assert cold.spares_ready == 0
        assert not (spare_dir(node) / "off").exists()
    finally:
        await cold.aclose()


@pytest.mark.parametrize("limits", ["auto", "rlimit"])
async def test_the_launchs_memory_limit_applies_once_claimed(node: NodeLayout, limits: str) -> None:
    # A spare waits under 1 GiB; the app's 96 MiB apply from its claim on.
    rt = PluginRuntime(limits=limits, spares=1, hidden=[node.home], spare_dir=spare_dir(node))  # type: ignore[arg-type]
    try:
        await ready(rt)
        code = HOGGER.replace("HOG_LINE", HOG.format(mb=512))
        hog = node.launch("hog", runtime="plugin", plugin="hog:Hog", files={"hog.py": code}, memory_mb=96)
        await rt.start(hog)
        st = await wait_state(rt, "hog", "exited", "failed", timeout=30)
        assert st.state == "failed"  # type: ignore[attr-defined]
        lines = await rt.logs("hog", 200)
        logs = "\n".join(lines)
        assert "a warm worker" in logs
        assert "survived" not in lines  # its print, not the traceback quoting it
        if rt.limits.startswith("cgroup"):
            assert "memory limit (96 MiB)" in st.detail  # type: ignore[attr-defined]
        else:
            assert "MemoryError" in logs
    finally:
        await rt.aclose()


def spare_pids(rt: PluginRuntime) -> list[int]:
    return [s.proc.pid for s in rt._spares.values()]


async def test_a_dead_spare_is_replaced(
    node: NodeLayout, warm: PluginRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="r1os.deeploy")
    await ready(warm)
    (first,) = list(warm._spares)
    rep = warm._spares[first]
    for pid in warm._app_pids(rep):
        os.kill(pid, signal.SIGKILL)

    async def replaced() -> bool:
        return bool(warm.spares_ready == 1 and first not in warm._spares)

    await async_wait_for(replaced, 30, "the dead spare to be replaced")
    assert any(f"plugin spare {first} ended" in r.getMessage() for r in caplog.records)
    assert not (spare_dir(node) / first).exists()
    # The new one serves as the first would have.
    launch = probe_launch(node, "after", "after")
    await warm.start(launch)
    got = await answer(launch)
    assert got["preloaded"] is True


async def test_aclose_stops_the_spares(node: NodeLayout) -> None:
    rt = PluginRuntime(spares=2, hidden=[node.home], spare_dir=spare_dir(node))
    await ready(rt, 2)
    tree: list[int] = []
    for rep in rt._spares.values():
        tree += [rep.proc.pid, *rt._app_pids(rep)]
    assert len(tree) >= 4
    await rt.aclose()

    def gone(pid: int) -> bool:
        try:
            return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True

    assert all(gone(p) for p in tree)
    assert list(spare_dir(node).iterdir()) == []
    await asyncio.sleep(0)  # no spare is started after aclose
    assert rt._spares == {}


def test_settings_reach_the_plugin_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1OS_DEEPLOY__PLUGIN_PRELOAD", '["numpy", "sklearn.svm"]')
    monkeypatch.setenv("R1OS_DEEPLOY__PLUGIN_SPARES", "2")
    settings = NodeConfig().deeploy
    assert settings.plugin_preload == ["numpy", "sklearn.svm"] and settings.plugin_spares == 2
    assert DeeploySettings().plugin_spares == 1 and DeeploySettings().plugin_preload == []
    with pytest.raises(ValueError, match="not a module name"):
        DeeploySettings(plugin_preload=["numpy; rm -rf"])
    with pytest.raises(ValueError):
        DeeploySettings(plugin_spares=-1)
    home = tmp_path / "node"
    spares = home / "services" / "deeploy" / "spares"
    rts = available_runtimes(
        settings.model_copy(update={"runtimes": ["plugin"]}), hidden=[home], spare_dir=spares
    )
    plugin = rts["plugin"]
    assert isinstance(plugin, PluginRuntime)
    assert plugin._spare_count == 2 and plugin._preload == ["numpy", "sklearn.svm"]
    assert plugin._spare_dir == spares
    # Without a folder for them, no spares.
    cold = available_runtimes(settings.model_copy(update={"runtimes": ["plugin"]}), hidden=[home])["plugin"]
    assert isinstance(cold, PluginRuntime) and cold._spare_count == 0
    assert sys.executable  # the spares run the node's own Python, as cold workers do
