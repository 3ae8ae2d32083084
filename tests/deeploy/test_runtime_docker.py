"""The docker runtime against a real engine: a private dockerd this module starts (and stops), and a
busybox image imported into it with no registry. Skipped, with dockerd's reason, where none can start."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.deeploy.runtimes import ReplicaLaunch, RuntimeFailure
from r1os.deeploy.runtimes.docker import (
    LABEL_SCOPE,
    DockerRuntime,
    build_busybox_image,
    engine_unavailable,
    find_static_busybox,
)
from tests.conftest import async_wait_for
from tests.deeploy.dockerd import DockerdUnavailable, private_engine

IMAGE = "busybox:local"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """A private engine's socket URL, with busybox:local imported into it (once per module)."""
    try:
        find_static_busybox()
    except RuntimeFailure as exc:
        pytest.skip(f"{exc} ({exc.hint})")
    try:
        with private_engine() as dockerd:
            build_busybox_image(dockerd.url, IMAGE)
            yield dockerd.url
    except DockerdUnavailable as exc:
        pytest.skip(f"no Docker engine can start here: {exc}")


@pytest.fixture
async def runtime(engine: str, request: pytest.FixtureRequest) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(engine, scope=f"test-{request.node.name}")
    yield rt
    await rt.aclose()
    await rt.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_for(tmp_path: Path, rid: str, command: list[str], **kw: Any) -> ReplicaLaunch:
    folder = tmp_path / rid / "app"
    folder.mkdir(parents=True, exist_ok=True)
    port = kw.pop("port", None) or free_port()
    return ReplicaLaunch(
        replica_id=rid,
        app=f"0x{'ab' * 20}/{rid}",
        runtime="docker",
        command=[a.replace("{port}", str(port)) for a in command],
        image=kw.pop("image", IMAGE),
        folder=folder,
        run_dir=tmp_path / rid / "run",
        port=port,
        env={"PORT": str(port), **kw.pop("env", {})},
        **kw,
    )


def httpd(port_placeholder: str = "{port}") -> list[str]:
    return ["httpd", "-f", "-p", f"127.0.0.1:{port_placeholder}", "-h", "/app"]


async def get(port: int, path: str = "/") -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.get(f"http://127.0.0.1:{port}{path}", timeout=2)


def labeled(engine: str, scope: str) -> list[Any]:
    import docker

    client = docker.DockerClient(base_url=engine)
    try:
        return list(client.containers.list(all=True, filters={"label": f"{LABEL_SCOPE}={scope}"}))
    finally:
        client.close()


async def test_engine_answers_and_a_missing_one_says_why(engine: str) -> None:
    assert engine_unavailable(engine) is None
    assert DockerRuntime(engine).unavailable() is None
    reason = DockerRuntime.unavailable("unix:///nonexistent/docker.sock")
    assert reason is not None and "/nonexistent/docker.sock" in reason


async def test_httpd_serves_the_app_folder_on_its_port(runtime: DockerRuntime, tmp_path: Path) -> None:
    launch = launch_for(tmp_path, "web", httpd(), cpu=0.5, memory_mb=64)
    (launch.folder / "index.html").write_text("hello from the app folder\n")
    await runtime.start(launch)
    r = await async_wait_for(lambda: get(launch.port, "/index.html"), 20, "httpd to answer")
    assert r.status_code == 200 and r.text == "hello from the app folder\n"
    st = await runtime.status("web")
    assert st.state == "running" and st.container
    # the limits and labels reached the engine
    import docker

    client = docker.DockerClient(base_url=runtime.base_url)
    try:
        c = client.containers.get(runtime.container_name("web"))
        assert c.attrs["HostConfig"]["NanoCpus"] == 500_000_000
        assert c.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert c.attrs["HostConfig"]["NetworkMode"] == "host"
        assert c.attrs["Config"]["WorkingDir"] == "/app"
        assert c.labels["r1os.replica"] == "web"
    finally:
        client.close()


async def test_env_logs_and_exit_code(runtime: DockerRuntime, tmp_path: Path) -> None:
    # (stdout only: the engine copies stdout and stderr separately, so their mutual order is not kept;
    # stderr is checked where a missing program is reported)
    script = 'echo "greeting=$GREETING port=$PORT cwd=$(pwd)"; echo second; echo third; exit 3'
    launch = launch_for(tmp_path, "env", ["sh", "-c", script], env={"GREETING": "hi there"})
    await runtime.start(launch)

    async def ended() -> Any:
        st = await runtime.status("env")
        return st if st.state in ("exited", "failed") else None

    st = await async_wait_for(ended, 20, "the container to exit")
    assert st.state == "failed" and st.exit_code == 3 and "exit code 3" in st.detail
    lines = await runtime.logs("env", tail=10)
    assert lines == [f"greeting=hi there port={launch.port} cwd=/app", "second", "third"]
    assert await runtime.logs("env", tail=2) == ["second", "third"]


async def test_clean_exit_is_exited_with_code_zero(runtime: DockerRuntime, tmp_path: Path) -> None:
    await runtime.start(launch_for(tmp_path, "ok", ["true"]))

    async def ended() -> Any:
        st = await runtime.status("ok")
        return st if st.state in ("exited", "failed") else None

    st = await async_wait_for(ended, 20, "the container to exit")
    assert st.state == "exited" and st.exit_code == 0


async def test_stop_removes_the_container_and_keeps_its_last_lines(
    runtime: DockerRuntime, engine: str, tmp_path: Path
) -> None:
    launch = launch_for(tmp_path, "stopme", ["sh", "-c", "echo started; exec " + " ".join(httpd())])
    (launch.folder / "index.html").write_text("x")
    await runtime.start(launch)
    await async_wait_for(lambda: get(launch.port), 20, "httpd to answer")
    await runtime.stop("stopme", timeout=2)
    assert labeled(engine, runtime.scope) == []
    assert (await runtime.status("stopme")).state == "stopped"
    with pytest.raises(httpx.HTTPError):
        await get(launch.port)
    assert await runtime.logs("stopme") == ["started"]
    await runtime.stop("stopme")  # gone already: no error
    assert (await runtime.status("never-started")).state == "stopped"


async def test_start_replaces_a_leftover_of_the_same_replica(runtime: DockerRuntime, tmp_path: Path) -> None:
    launch = launch_for(tmp_path, "again", ["sleep", "60"])
    await runtime.start(launch)
    await runtime.start(launch)  # a node restarting after a crash starts the same replica again
    assert (await runtime.status("again")).state == "running"


async def test_missing_image_is_a_clear_error(runtime: DockerRuntime, tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure) as info:
        await runtime.start(launch_for(tmp_path, "noimg", ["true"], image="nosuch/image:1"))
    assert info.value.cause == "no_image"
    assert "nosuch/image:1" in str(info.value)
    assert info.value.hint and "docker load" in info.value.hint and "docker import" in info.value.hint
    assert (await runtime.status("noimg")).state == "stopped"


async def test_a_command_missing_from_the_image_fails_with_a_reason(
    runtime: DockerRuntime, tmp_path: Path
) -> None:
    # docker-init is PID 1, so the container starts and its exec fails inside it: the replica is
    # `failed` with the init's exit code and says (on stderr) which program was missing
    await runtime.start(launch_for(tmp_path, "badcmd", ["/no/such/program"]))

    async def ended() -> Any:
        st = await runtime.status("badcmd")
        return st if st.state in ("exited", "failed") else None

    st = await async_wait_for(ended, 20, "the container to exit")
    assert st.state == "failed" and st.exit_code not in (None, 0)
    assert any("/no/such/program" in line for line in await runtime.logs("badcmd"))


async def test_follow_gives_new_lines_then_ends_with_the_container(
    runtime: DockerRuntime, tmp_path: Path
) -> None:
    script = "while [ ! -f /app/go ]; do sleep 0.05; done; echo one; echo two"
    launch = launch_for(tmp_path, "follow", ["sh", "-c", script])
    await runtime.start(launch)
    lines = runtime.follow("follow")
    (launch.folder / "go").write_text("")

    async def collect() -> list[str]:
        return [line async for line in lines]

    assert await asyncio.wait_for(collect(), 20) == ["one", "two"]


async def test_closing_follow_closes_the_engine_stream(runtime: DockerRuntime, tmp_path: Path) -> None:
    script = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done"
    await runtime.start(launch_for(tmp_path, "ticker", ["sh", "-c", script]))
    lines = runtime.follow("ticker")
    first = await asyncio.wait_for(anext(lines), 20)
    assert first.startswith("tick ")
    await lines.aclose()  # type: ignore[attr-defined]

    async def pump_gone() -> bool:
        return not any(t.name == "r1os-docker-follow-ticker" for t in threading.enumerate())

    await async_wait_for(pump_gone, 10, "the log stream's thread to end")


async def test_aclose_removes_every_container_it_started(engine: str, tmp_path: Path) -> None:
    rt = DockerRuntime(engine, scope="test-aclose")
    for rid in ("a1", "a2"):
        await rt.start(launch_for(tmp_path, rid, ["sleep", "60"]))
    assert len(labeled(engine, "test-aclose")) == 2
    await rt.aclose()
    assert labeled(engine, "test-aclose") == []


async def test_cleanup_finds_what_a_crashed_runtime_left(engine: str, tmp_path: Path) -> None:
    crashed = DockerRuntime(engine, scope="test-crash")
    await crashed.start(launch_for(tmp_path, "left", ["sleep", "60"]))
    # the node died without aclose(); its successor finds the container by its scope label
    successor = DockerRuntime(engine, scope="test-crash")
    assert await successor.cleanup() == [successor.container_name("left")]
    assert labeled(engine, "test-crash") == []
    await successor.aclose()
    await crashed.aclose()


async def test_two_scopes_on_one_engine_do_not_collide(engine: str, tmp_path: Path) -> None:
    a, b = DockerRuntime(engine, scope="node-a"), DockerRuntime(engine, scope="node-b")
    try:
        await a.start(launch_for(tmp_path / "a", "same", ["sleep", "60"]))
        await b.start(launch_for(tmp_path / "b", "same", ["sleep", "60"]))
        assert a.container_name("same") != b.container_name("same")
        await a.stop("same", timeout=1)
        assert (await b.status("same")).state == "running"
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_docker_echo_example_serves_its_page(runtime: DockerRuntime, tmp_path: Path) -> None:
    from r1os.deeploy._spec import load_spec

    spec = load_spec(EXAMPLES / "docker-echo" / "app.yaml")
    assert spec.runtime == "docker" and spec.image == IMAGE and isinstance(spec.files, dict)
    launch = launch_for(
        tmp_path, "example", spec.command, cpu=spec.resources.cpu, memory_mb=spec.resources.memory_mb
    )
    for name, content in spec.files.items():
        (launch.folder / name).write_text(content)
    await runtime.start(launch)
    r = await async_wait_for(lambda: get(launch.port, spec.health.http or "/"), 20, "the example to answer")
    assert r.status_code == 200 and r.text == spec.files["index.html"]
