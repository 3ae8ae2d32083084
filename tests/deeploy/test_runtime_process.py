"""The `process` runtime against real bubblewrap: replicas serve, log, exit, stop (the whole tree), get
their env and nothing of the node's, stay inside their folder and within their memory."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from r1os.deeploy.runtimes import ReplicaLaunch, RuntimeFailure, _sandbox
from r1os.deeploy.runtimes import process as process_mod
from r1os.deeploy.runtimes.process import ProcessRuntime
from tests.conftest import async_wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"
KEYSTORE_SECRET = "keystore-secret-0123456789abcdef"
TOKEN_SECRET = "api-token-secret-fedcba9876543210"
OTHER_SECRET = "other-app-secret-5555"

pytestmark = pytest.mark.skipif(
    _sandbox.unavailable() is not None, reason=f"no sandbox here: {_sandbox.unavailable()}"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeLayout:
    """A node's home as a node lays it out: keystore and api-token at the top, app folders and the
    runtime's folders below, and a second app beside the one under test."""

    home: Path
    apps: Path
    runs: Path

    @classmethod
    def make(cls, root: Path) -> NodeLayout:
        home = root / "node"
        (home / "keys").mkdir(parents=True)
        (home / "keys" / "node.json").write_text(json.dumps({"crypto": KEYSTORE_SECRET}))
        (home / "api-token").write_text(TOKEN_SECRET)
        apps = home / "services" / "deeploy" / "apps"
        runs = home / "services" / "deeploy" / "run"
        other = apps / "0xother-b-1"
        other.mkdir(parents=True)
        (other / "secret.txt").write_text(OTHER_SECRET)
        runs.mkdir(parents=True)
        return cls(home, apps, runs)

    def launch(
        self,
        rid: str,
        command: list[str] | None = None,
        files: dict[str, str] | None = None,
        **kw: object,
    ) -> ReplicaLaunch:
        folder = self.apps / rid
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            (folder / name).write_text(content)
        port = int(kw.pop("port", 0)) or free_port()  # type: ignore[call-overload]
        env = {"PORT": str(port), **dict(kw.pop("env", {}))}  # type: ignore[call-overload]
        runtime = kw.pop("runtime", "process")
        return ReplicaLaunch(
            replica_id=rid,
            app=f"0xowner/{rid}",
            runtime=runtime,  # type: ignore[arg-type]
            command=command or [],
            folder=folder,
            run_dir=self.runs / rid,
            port=port,
            env=env,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture
def node(tmp_path: Path) -> NodeLayout:
    return NodeLayout.make(tmp_path)


@pytest.fixture
async def runtime() -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime()
    yield rt
    await rt.aclose()


async def wait_state(rt: ProcessRuntime, rid: str, *states: str, timeout: float = 10.0) -> object:
    async def check() -> object:
        st = await rt.status(rid)
        return st if st.state in states else None

    return await async_wait_for(check, timeout, f"{rid} to be {'/'.join(states)}")


async def wait_log(rt: ProcessRuntime, rid: str, text: str, timeout: float = 10.0) -> list[str]:
    async def check() -> list[str] | None:
        lines = await rt.logs(rid, 1000)
        return lines if any(text in line for line in lines) else None

    return await async_wait_for(check, timeout, f"{text!r} in the log of {rid}")


async def get_json(url: str, timeout: float = 10.0) -> dict[str, object]:
    async def check() -> dict[str, object] | None:
        async with httpx.AsyncClient() as c:
            r = await c.get(url)
            return r.json() if r.status_code == 200 else None

    return await async_wait_for(check, timeout, f"GET {url}")


def test_the_sandbox_is_available_with_limits() -> None:
    assert ProcessRuntime.unavailable() is None
    assert ProcessRuntime().limits


async def test_echo_example_serves_http_and_its_log_shows(node: NodeLayout, runtime: ProcessRuntime) -> None:
    app = (EXAMPLES / "echo" / "app.py").read_text()
    launch = node.launch("echo-1", ["python3", "app.py"], files={"app.py": app}, env={"R1OS_APP": "0xo/echo"})
    await runtime.start(launch)
    body = await get_json(f"http://127.0.0.1:{launch.port}/hello?x=1")
    assert body["path"] == "/hello?x=1" and body["app"] == "0xo/echo"
    await wait_log(runtime, "echo-1", "GET /hello?x=1")
    st = await runtime.status("echo-1")
    assert st.state == "running" and st.pid
    assert (launch.run_dir / process_mod.LOG_NAME).exists()
    assert not (launch.folder / process_mod.LOG_NAME).exists()  # the log is not the app's to touch


async def test_exit_codes(node: NodeLayout, runtime: ProcessRuntime) -> None:
    await runtime.start(node.launch("ok", ["sh", "-c", "echo done"]))
    await runtime.start(node.launch("bad", ["sh", "-c", "echo oops >&2; exit 3"]))
    await runtime.start(node.launch("missing", ["no-such-program-here"]))
    ok = await wait_state(runtime, "ok", "exited", "failed")
    bad = await wait_state(runtime, "bad", "exited", "failed")
    missing = await wait_state(runtime, "missing", "exited", "failed")
    assert (ok.state, ok.exit_code) == ("exited", 0)  # type: ignore[attr-defined]
    assert (bad.state, bad.exit_code) == ("failed", 3)  # type: ignore[attr-defined]
    assert "oops" in bad.detail  # type: ignore[attr-defined]
    assert missing.state == "failed" and "no-such-program-here" in missing.detail  # type: ignore[attr-defined]
    assert "done" in await runtime.logs("ok")
    # A finished replica may be started again under the same id.
    await runtime.start(node.launch("ok", ["sh", "-c", "echo again"]))
    await wait_log(runtime, "ok", "again")


async def test_env_is_the_launchs_and_not_the_nodes(
    node: NodeLayout, runtime: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("R1OS_NODE_ONLY_SECRET", "node-env-secret")
    launch = node.launch(
        "env", ["sh", "-c", 'echo "vars: $FOO|$PORT|$HOME|$R1OS_NODE_ONLY_SECRET|"'], env={"FOO": "bar"}
    )
    await runtime.start(launch)
    await wait_state(runtime, "env", "exited")
    lines = await runtime.logs("env")
    assert f"vars: bar|{launch.port}|/tmp||" in lines


async def test_start_refuses_what_it_cannot_run(node: NodeLayout, runtime: ProcessRuntime) -> None:
    launch = node.launch("twice", ["sleep", "60"])
    await runtime.start(launch)
    with pytest.raises(RuntimeFailure, match="already running"):
        await runtime.start(launch)
    with pytest.raises(RuntimeFailure, match="needs a command"):
        await runtime.start(node.launch("nocmd", []))
    gone = node.launch("gone", ["true"])
    gone.folder.rmdir()
    with pytest.raises(RuntimeFailure, match="does not exist"):
        await runtime.start(gone)
    assert (await runtime.status("never-started")).state == "stopped"
    assert await runtime.logs("never-started") == []


async def test_stop_is_graceful_first(node: NodeLayout, runtime: ProcessRuntime) -> None:
    script = "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    await runtime.start(node.launch("grace", ["sh", "-c", script]))
    await wait_log(runtime, "grace", "up")
    await runtime.stop("grace", timeout=10)
    st = await runtime.status("grace")
    assert st.state == "stopped"
    assert "bye" in await runtime.logs("grace")


async def test_stop_kills_the_whole_tree(node: NodeLayout, runtime: ProcessRuntime) -> None:
    # Children that ignore SIGTERM, one of them in a session of its own: only SIGKILL ends them.
    script = "trap '' TERM; sleep 1000 & setsid sleep 1001 & sh -c 'sleep 1002' & echo spawned; wait"
    await runtime.start(node.launch("tree", ["sh", "-c", script]))
    await wait_log(runtime, "tree", "spawned")
    st = await runtime.status("tree")
    assert st.pid is not None
    root = psutil.Process(st.pid)

    def sleepers() -> list[psutil.Process]:
        return [p for p in root.children(recursive=True) if p.name() == "sleep"]

    await async_wait_for(lambda: asyncio.sleep(0, len(sleepers()) == 3), 10, "three sleepers")
    tree = [root, *root.children(recursive=True)]
    await runtime.stop("tree", timeout=0.5)
    assert (await runtime.status("tree")).state == "stopped"

    def alive() -> list[int]:
        out = []
        for p in tree:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return out

    # All of them die (zombies at most, until their reaper collects them).
    await async_wait_for(lambda: asyncio.sleep(0, not alive()), 5, "every process of the replica to die")


async def test_follow_gives_new_lines_until_the_end(node: NodeLayout, runtime: ProcessRuntime) -> None:
    script = "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second; echo third"
    launch = node.launch("follow", ["sh", "-c", script])
    await runtime.start(launch)
    await wait_log(runtime, "follow", "first")
    seen: list[str] = []

    async def consume() -> None:
        async for line in runtime.follow("follow"):
            seen.append(line)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)  # let the follower register before the app goes on
    (launch.folder / "go").touch()
    await asyncio.wait_for(task, 10)  # ends when the replica does
    assert seen[:2] == ["second", "third"]
    assert "exited with code 0" in seen[-1]
    assert [line async for line in runtime.follow("follow")] == []


async def test_log_is_bounded_and_rotates(
    node: NodeLayout, runtime: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_mod, "LOG_MAX_BYTES", 64 << 10)
    script = "i=0; while [ $i -lt 3000 ]; do echo line-$i-" + "x" * 40 + "; i=$((i+1)); done"
    launch = node.launch("chatty", ["sh", "-c", script])
    await runtime.start(launch)
    await wait_state(runtime, "chatty", "exited")
    log = launch.run_dir / process_mod.LOG_NAME
    assert log.stat().st_size <= 64 << 10
    assert log.with_name(log.name + ".1").stat().st_size <= 64 << 10
    tail = await runtime.logs("chatty", 3)
    assert tail[-2].startswith("line-2999-") and "exited with code 0" in tail[-1]
    assert len(await runtime.logs("chatty", 1500)) == 1500  # spans the rotated file


PROBE = r"""
import json, os
report = {}
def attempt(name, fn):
    try:
        report[name] = "ok: " + str(fn())[:200]
    except Exception as exc:
        report[name] = "denied: " + type(exc).__name__
home = os.environ["NODE_HOME"]
attempt("read_keystore", lambda: open(home + "/keys/node.json").read())
attempt("read_token", lambda: open(home + "/api-token").read())
attempt("list_home", lambda: os.listdir(home))
attempt("list_apps", lambda: os.listdir(os.path.dirname(os.getcwd())))
attempt("read_other_app", lambda: open(os.environ["OTHER_APP"] + "/secret.txt").read())
attempt("write_home", lambda: open(home + "/planted", "w").write("x"))
attempt("write_other_app", lambda: open(os.environ["OTHER_APP"] + "/planted", "w").write("x"))
attempt("write_usr", lambda: open("/usr/planted", "w").write("x"))
attempt("write_venv", lambda: open(os.environ["VENV"] + "/planted", "w").write("x"))
attempt("write_root", lambda: open("/planted", "w").write("x"))
attempt("read_shadow", lambda: open("/etc/shadow").read() or "empty")
attempt("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("pid1", lambda: open("/proc/1/cmdline").read().split("\0")[0])
attempt("mount", lambda: os.system("mount -t tmpfs none /usr 2>/dev/null") or "mounted")
attempt("uid", lambda: os.getuid())
attempt("write_own", lambda: open("own.txt", "w").write("mine"))
attempt("write_tmp", lambda: open("/tmp/r1os-sandbox-probe-scratch", "w").write("scratch"))
json.dump(report, open("report.json", "w"), indent=1)
print("REPORT", json.dumps(report))
"""


async def test_a_replica_cannot_reach_the_node_or_other_apps(
    node: NodeLayout, runtime: ProcessRuntime
) -> None:
    other = node.apps / "0xother-b-1"
    launch = node.launch(
        "probe",
        ["python3", "probe.py"],
        files={"probe.py": PROBE},
        env={"NODE_HOME": str(node.home), "OTHER_APP": str(other), "VENV": sys.prefix},
    )
    await runtime.start(launch)
    st = await wait_state(runtime, "probe", "exited", "failed")
    logs = "\n".join(await runtime.logs("probe", 1000))
    assert st.state == "exited", logs  # type: ignore[attr-defined]
    report = json.loads((launch.folder / "report.json").read_text())
    for name in (
        "read_keystore",
        "read_token",
        "read_other_app",
        "write_other_app",
        "write_usr",
        "write_venv",
        "write_root",
    ):
        assert report[name].startswith("denied"), (name, report[name])
    # Only the empty path down to the app folder exists (the mount point), none of what is there.
    assert report["list_home"] == "ok: ['services']"
    assert report["list_apps"] == "ok: ['probe']"
    # Its own PID namespace: only bubblewrap's init and the app; none of the node's processes.
    assert report["pid1"] == f"ok: {_sandbox.BWRAP}"
    assert len(json.loads(report["pids"].removeprefix("ok: "))) <= 3
    assert report["read_shadow"] in ("ok: empty", "denied: PermissionError", "denied: FileNotFoundError")
    assert report["mount"] != "ok: mounted"
    assert report["uid"] == f"ok: {_sandbox.SANDBOX_UID}"
    assert report["write_own"] == "ok: 4" and (launch.folder / "own.txt").read_text() == "mine"
    assert report["write_tmp"] == "ok: 7"
    assert not await asyncio.to_thread(os.path.exists, "/tmp/r1os-sandbox-probe-scratch")
    # The path down to the app folder lies in the replica's private /tmp when the node's home is under
    # /tmp: a write there lands in that tmpfs, never on the host (checked below).
    assert report["write_home"] in ("ok: 1", "denied: OSError", "denied: PermissionError")
    # Nothing of the node's leaked into what the app could write out, and nothing was planted.
    for secret in (KEYSTORE_SECRET, TOKEN_SECRET, OTHER_SECRET):
        assert secret not in logs and secret not in json.dumps(report)
    planted = [p for p in (node.home / "planted", other / "planted", Path(sys.prefix) / "planted")]
    assert not any(p.exists() for p in planted)
    assert sorted(os.listdir(other)) == ["secret.txt"]


def test_what_lies_inside_a_bound_folder_stays_hidden(tmp_path: Path) -> None:
    # A node home inside a folder the sandbox binds (as a venv holding a node's home would be):
    # the node home is covered, and so are the app's siblings, while the app folder stays usable.
    base = tmp_path / "prefix"
    home = base / "node"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "node.json").write_text(KEYSTORE_SECRET)
    (base / "lib.txt").write_text("shared\n")
    apps = tmp_path / "prefix2" / "apps"
    (apps / "other").mkdir(parents=True)
    (apps / "other" / "secret.txt").write_text(OTHER_SECRET)
    folder = apps / "mine"
    folder.mkdir()
    script = (
        f"cat {base}/lib.txt; ls {home}; cat {home}/keys/node.json 2>&1; "
        f'echo "apps: $(ls {apps})"; cat {apps}/other/secret.txt 2>&1; echo hello > here.txt; cat here.txt'
    )
    argv = _sandbox.bwrap_command(
        folder, ["sh", "-c", script], hidden=[home], extra_ro=[base, tmp_path / "prefix2"]
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.stdout.startswith("shared\n"), out
    assert KEYSTORE_SECRET not in out.stdout and OTHER_SECRET not in out.stdout
    assert "apps: mine\n" in out.stdout
    assert out.stdout.rstrip().endswith("hello")
    assert (folder / "here.txt").read_text() == "hello\n"
    with pytest.raises(ValueError, match="must stay hidden"):
        _sandbox.bwrap_command(folder, ["true"], hidden=[base], extra_ro=[base])


HOG = (
    "b = bytearray({mb} << 20); b[::4096] = b'x' * len(range(0, len(b), 4096)); print('survived', flush=True)"
)


@pytest.mark.parametrize("limits", ["auto", "rlimit"])
async def test_memory_limit_is_enforced(node: NodeLayout, limits: str) -> None:
    rt = ProcessRuntime(limits=limits)  # type: ignore[arg-type]
    try:
        await rt.start(node.launch("small", ["python3", "-c", HOG.format(mb=16)], memory_mb=128))
        await rt.start(node.launch("hog", ["python3", "-c", HOG.format(mb=512)], memory_mb=96))
        small = await wait_state(rt, "small", "exited", "failed", timeout=20)
        hog = await wait_state(rt, "hog", "exited", "failed", timeout=20)
        assert small.state == "exited"  # type: ignore[attr-defined]
        assert hog.state == "failed"  # type: ignore[attr-defined]
        logs = "\n".join(await rt.logs("hog", 100))
        assert "survived" not in logs
        if rt.limits.startswith("cgroup"):
            assert "memory limit (96 MiB)" in hog.detail  # type: ignore[attr-defined]
        else:
            assert "MemoryError" in logs
    finally:
        await rt.aclose()


async def test_cpu_quota_throttles_a_busy_replica(node: NodeLayout) -> None:
    rt = ProcessRuntime()
    if not rt.limits.startswith("cgroup"):
        pytest.skip(f"no cgroups here ({rt.limits})")
    try:
        await rt.start(node.launch("busy", ["python3", "-c", "while True: pass"], cpu=0.1))
        rep = rt._replicas["busy"]
        cpu_group = next(g for g in rep.confinement.groups if (g / "cpu.stat").exists())

        def throttled() -> bool:
            stat = dict(line.split() for line in (cpu_group / "cpu.stat").read_text().splitlines())
            return int(stat.get("nr_throttled", stat.get("nr_periods_throttled", "0"))) > 0

        await async_wait_for(lambda: asyncio.sleep(0, throttled()), 10, "the replica to be throttled")
    finally:
        await rt.aclose()
