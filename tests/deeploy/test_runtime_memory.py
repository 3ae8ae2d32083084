"""The in-memory runtime tests use in place of a real one: it serves HTTP on the replica's port, and a
test can make a replica crash, answer 500, or refuse to start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from r1os.deeploy.runtimes import MemoryRuntime, ReplicaLaunch, RuntimeFailure
from tests.deeploy.test_runtime_process import free_port


def launch(tmp_path: Path, rid: str, port: int | None = None) -> ReplicaLaunch:
    return ReplicaLaunch(
        replica_id=rid,
        app=f"0xowner/{rid}",
        runtime="process",
        command=["anything"],
        folder=tmp_path / rid,
        run_dir=tmp_path / "run" / rid,
        port=port or free_port(),
    )


async def test_serves_health_and_echo_then_crashes_and_restarts(tmp_path: Path) -> None:
    rt = MemoryRuntime("process")
    assert rt.name == "process" and MemoryRuntime.unavailable() is None
    one = launch(tmp_path, "one")
    await rt.start(one)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{one.port}") as c:
        r = await c.get("/a/b?c=1")
        assert r.status_code == 200 and r.json() == {"replica": "one", "path": "/a/b?c=1", "method": "GET"}
        r = await c.post("/p", json={"big": "x" * 100_000})  # a body, on the same connection
        assert r.json()["method"] == "POST"
        rt.set_unhealthy("one")
        assert (await c.get("/")).status_code == 500
        rt.set_unhealthy("one", False)
        assert (await c.get("/")).status_code == 200
    assert (await rt.status("one")).state == "running"
    assert rt.running() == ["one"] and rt.launch_of("one") == one

    await rt.crash("one", exit_code=3)
    st = await rt.status("one")
    assert (st.state, st.exit_code) == ("failed", 3)
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{one.port}/")

    await rt.start(one)  # the agent restarts it on the same port
    assert rt.starts["one"] == 2 and rt.total_starts() == 2 and len(rt.launches) == 2
    await rt.crash("one", exit_code=0)
    assert (await rt.status("one")).state == "exited"
    await rt.aclose()


async def test_logs_follow_stop_and_refusals(tmp_path: Path) -> None:
    rt = MemoryRuntime()
    a = launch(tmp_path, "a")
    await rt.start(a)
    with pytest.raises(RuntimeFailure, match="already running"):
        await rt.start(a)
    with pytest.raises(RuntimeFailure, match="cannot listen"):
        await rt.start(launch(tmp_path, "b", port=a.port))
    rt.fail_starts = "no room"
    with pytest.raises(RuntimeFailure, match="no room"):
        await rt.start(launch(tmp_path, "c"))
    rt.fail_starts = None

    lines: list[str] = []

    async def consume() -> None:
        async for line in rt.follow("a"):
            lines.append(line)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    async with httpx.AsyncClient() as c:
        await c.get(f"http://127.0.0.1:{a.port}/x")
    await rt.stop("a")
    await asyncio.wait_for(task, 5)
    assert lines == ["GET /x 200", "stopped by the node"]
    assert (await rt.logs("a", 2)) == lines
    assert (await rt.status("a")).state == "stopped"
    assert (await rt.status("nobody")).state == "stopped"
    assert [x async for x in rt.follow("a")] == []
    await rt.aclose()
