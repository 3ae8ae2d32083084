"""`r1os app` against a real in-process Deeploy network (three nodes, node 0 the oracle; replicas run by the
in-memory runtime). The CLI runs in a worker thread (typer's CliRunner) while the nodes serve in the test's
event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r1os.identity import NodeKey
from r1os.sdk import AsyncSession
from tests.cli.runner import Group, isolate
from tests.deeploy.cluster import DeeployNet

pytestmark = pytest.mark.timeout(120)

cli = Group("app")

SPEC = """\
name: echo
runtime: process
command: [serve, "{port}"]
replicas: 2
env: {GREETING: hello}
secrets: {TOKEN: not-for-your-eyes}
health: {http: /, interval_s: 0.2, failures: 2, grace_s: 5}
"""


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[DeeployNet]:
    async with DeeployNet.in_memory(tmp_path, 3) as n:
        async with AsyncSession(n.url(0)) as s:
            for _ in range(200):
                if len(await s.apps.nodes()) == 3:
                    break
                await asyncio.sleep(0.05)
        yield n


async def test_deploy_status_update_scale_logs_delete(net: DeeployNet, tmp_path: Path) -> None:
    owner = NodeKey.generate()
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC)
    url = net.url(1)
    node = ["--node", url]
    addresses = {net.key(i).address.lower() for i in range(3)}

    def script() -> None:
        out = cli.ok(["deploy", str(spec), *node], owner)
        assert f"deploy accepted: {owner.address.lower()}/echo v1" in out
        assert out.count("healthy (v1)") == 2
        assert "ready: 2/2 replica(s) healthy at v1" in out
        assert f"URL: {url}/apps/echo/" in out

        status = cli.json(["status", "echo", *node])
        assert status["app"] == f"{owner.address.lower()}/echo" and status["version"] == 1
        assert len(status["replicas"]) == 2
        for r in status["replicas"]:
            assert r["node"] in addresses and r["state"] == "running" and r["healthy"] is True
        assert "not-for-your-eyes" not in json.dumps(status)
        table = cli.ok(["status", "echo", *node])
        assert all(r["node"] in table for r in status["replicas"]) and "2/2 healthy" in table

        listed = cli.json(["ls", *node])
        assert [a["app"] for a in listed] == [status["app"]]
        assert cli.json(["ls", "--owner", NodeKey.generate().address, *node]) == []
        assert "echo" in cli.ok(["ls", *node])
        hosts = cli.json(["nodes", *node])
        assert {h["address"] for h in hosts} == addresses and all("process" in h["runtimes"] for h in hosts)
        assert "nodes that run apps" in cli.ok(["nodes", *node])

        spec.write_text(SPEC.replace("hello", "bonjour"))
        out = cli.ok(["update", str(spec), *node], owner)
        assert "update accepted" in out and "v2" in out and "ready: 2/2 replica(s) healthy at v2" in out
        assert {r["version"] for r in cli.json(["status", "echo", *node])["replicas"]} == {2}

        out = cli.ok(["scale", "echo", "1", *node], owner)
        assert "ready: 1/1" in out
        assert len(cli.json(["status", "echo", *node])["replicas"]) == 1

        # Logs: the owner's (each line as the replica wrote it: one replica now); refused to another key.
        logs = cli.run(["logs", "echo", "--tail", "3", *node], owner)
        assert logs.exit_code == 0, logs.output
        assert len(logs.stdout.splitlines()) == 3 and "GET / 200" in logs.stdout
        first = cli.run(["logs", "echo", "--tail", "10000", *node], owner).stdout.splitlines()[0]
        assert first.startswith("started on port")
        other = cli.error(["logs", "echo", "--owner", owner.address, *node], NodeKey.generate())
        assert "forbidden" in other

        out = cli.ok(["delete", "echo", *node], owner)
        assert f"deleted {owner.address.lower()}/echo" in out
        assert "no_app" in cli.error(["status", "echo", "--owner", owner.address, *node])

    await asyncio.to_thread(script)


async def test_refusals_are_one_line_with_a_hint(net: DeeployNet, tmp_path: Path) -> None:
    owner = NodeKey.generate()
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("replicas: 2", "replicas: many"))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(SPEC.replace("health:", "helth:"))
    node = ["--node", net.url(2)]

    def script() -> None:
        cli.ok(["deploy", str(spec), "--no-wait", *node], owner)
        twice = cli.error(["deploy", str(spec), *node], owner)
        assert "exists (version 1)" in twice and "(conflict)" in twice and "r1os app update" in twice

        assert "error: replicas: " in cli.error(["deploy", str(bad), *node], owner)
        assert "error: helth: unknown field" in cli.error(["deploy", str(unknown), *node], owner)

        no_key = cli.error(["deploy", str(spec), *node])
        assert "owner's key" in no_key and "hint: " in no_key
        assert "owner's key" in cli.error(["delete", "echo", *node])

        assert "no_app" in cli.error(["scale", "nothing-here", "2", *node], owner)
        assert "no app named nothing-here" in cli.error(["status", "nothing-here", *node])

        # Waiting that runs out says where the replicas are.
        spec.write_text(SPEC.replace("name: echo", "name: slow"))
        slow = cli.error(["deploy", str(spec), "--timeout", "0", *node], owner)
        assert "0 of 2 replica(s) healthy at version 1 after 0 s" in slow and "r1os app status slow" in slow

        unreachable = cli.error(["ls", "--node", "http://127.0.0.1:9"])
        assert "cannot reach the node" in unreachable

    await asyncio.to_thread(script)


async def test_node_defaults_to_r1os_api_url(net: DeeployNet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1OS_API_URL", net.url(0))

    def script() -> None:
        assert cli.json(["ls"]) == []
        assert len(cli.json(["nodes"])) == 3

    await asyncio.to_thread(script)
