"""`session.apps` (async and sync) against a real in-process Deeploy network: three nodes (node 0 the oracle
that places apps), real HTTP, MQTT and CSTORE; replicas run by the in-memory runtime, which serves HTTP on
the port it is given so that the nodes' health checks pass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from r1os.deeploy._requests import SEALED_PREFIX, open_secrets
from r1os.errors import DecryptionError, RemoteError, SpecError
from r1os.identity import NodeKey
from r1os.sdk import AsyncSession, NotReady, Session
from r1os.sdk._apps import AmbiguousApp, NoHost, NoKey, NoSuchApp, read_spec
from tests.deeploy.cluster import DeeployNet

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cret-value-123"
ECHO = f"""
name: echo
runtime: process
command: [serve, "{{port}}"]
replicas: 2
env: {{GREETING: hello}}
secrets: {{TOKEN: {SECRET}}}
health: {{http: /, interval_s: 0.2, failures: 2, grace_s: 5}}
"""


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[DeeployNet]:
    async with DeeployNet.in_memory(tmp_path, 3) as n:
        yield n


async def _hosts_ready(s: AsyncSession, n: int) -> None:
    """Wait until the node knows `n` nodes that run apps (their heartbeats carry what they offer)."""
    for _ in range(200):
        if len(await s.apps.nodes()) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} hosts after 10 s")


async def test_deploy_update_scale_delete_through_an_edge_node(net: DeeployNet) -> None:
    owner = NodeKey.generate()
    async with AsyncSession(net.url(1), key=owner) as s:
        await _hosts_ready(s, 3)
        view = await s.apps.deploy(ECHO)
        assert (view.app, view.version, view.replicas_wanted) == (f"{owner.address.lower()}/echo", 1, 2)
        seen: list[int] = []
        ready = await s.apps.wait("echo", timeout=30, on_change=lambda v: seen.append(v.healthy))
        assert ready.healthy == 2 and len({r.node for r in ready.replicas}) == 2
        assert seen and seen[-1] == 2
        assert all(r.url and r.state == "running" for r in ready.replicas)

        # Anyone reads it, from any node, without a key: the one owner of "echo" is found by name.
        async with AsyncSession(net.url(2)) as anon:
            other = await anon.apps.status("echo")
            assert other.app == view.app and other.healthy == 2
            assert [a.app for a in await anon.apps.list()] == [view.app]
            assert await anon.apps.list(owner=NodeKey.generate().address) == []
            # The spec as stored: secret names only.
            assert other.spec["secrets"] == {"TOKEN": SEALED_PREFIX + "*"}

        v2 = await s.apps.update(ECHO.replace("hello", "bonjour"))
        assert v2.version == 2
        rolled = await s.apps.wait("echo", version=2, timeout=30)
        assert [r.version for r in rolled.replicas] == [2, 2]
        assert rolled.spec["env"] == {"GREETING": "bonjour"}

        assert (await s.apps.scale("echo", 3)).replicas_wanted == 3
        assert len((await s.apps.wait("echo", timeout=30)).replicas) == 3
        await s.apps.scale("echo", 1)
        assert len((await s.apps.wait("echo", timeout=30)).replicas) == 1

        assert await s.apps.delete("echo") == view.app
        with pytest.raises(RemoteError) as info:
            await s.apps.status("echo")
        assert info.value.cause == "no_app" and info.value.status == 404


async def test_secrets_are_sealed_before_they_leave(net: DeeployNet) -> None:
    """What goes on the wire holds no secret in clear, only one sealed copy per node that could host the
    app; each opens with that node's key (and only for this app and secret name)."""
    owner = NodeKey.generate()
    sent: list[bytes] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path == "/v1/apps/requests":
            sent.append(request.content)

    async with AsyncSession(net.url(1), key=owner) as s:
        s._http.event_hooks["request"].append(record)
        await _hosts_ready(s, 3)
        await s.apps.deploy(ECHO)
        ready = await s.apps.wait("echo", timeout=30)
    # The replicas got the secret, opened by their node.
    hosting = {r.node for r in ready.replicas}
    for i in range(3):
        if net.key(i).address.lower() in hosting:
            launch = net.memory[i].launches[-1]
            assert launch.env["TOKEN"] == SECRET and launch.env["GREETING"] == "hello"
    assert len(sent) == 1 and SECRET.encode() not in sent[0]
    request = json.loads(sent[0])["request"]
    assert request["spec"]["secrets"] == {"TOKEN": SEALED_PREFIX + "*"}
    nodes = {net.key(i).address.lower(): net.key(i) for i in range(3)}
    assert set(request["sealed"]) == set(nodes)
    for address, sealed in request["sealed"].items():
        assert open_secrets(nodes[address], "echo", sealed) == {"TOKEN": SECRET}
        with pytest.raises(DecryptionError):  # bound to the app's name
            open_secrets(nodes[address], "other", sealed)


async def test_placement_limits_where_secrets_go(net: DeeployNet) -> None:
    """A node the spec excludes gets no copy of the secrets."""
    owner = NodeKey.generate()
    excluded = net.key(2).address.lower()
    sent: list[bytes] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path == "/v1/apps/requests":
            sent.append(request.content)

    spec = ECHO.replace("replicas: 2", f"replicas: 1\nplacement: {{exclude: ['{excluded}']}}")
    async with AsyncSession(net.url(0), key=owner) as s:
        s._http.event_hooks["request"].append(record)
        await _hosts_ready(s, 3)
        await s.apps.deploy(spec)
        ready = await s.apps.wait("echo", timeout=30)
    assert ready.replicas[0].node != excluded
    assert excluded not in json.loads(sent[0])["request"]["sealed"]


async def test_refusals_are_clear(net: DeeployNet) -> None:
    owner = NodeKey.generate()
    async with AsyncSession(net.url(1), key=owner) as s:
        await _hosts_ready(s, 3)
        await s.apps.deploy(ECHO)
        with pytest.raises(RemoteError) as info:
            await s.apps.deploy(ECHO)
        assert info.value.cause == "conflict" and info.value.status == 409
        assert "app update" in (info.value.hint or "")

        with pytest.raises(SpecError) as bad:
            await s.apps.deploy(ECHO.replace("replicas: 2", "replicas: -1"))
        assert str(bad.value).startswith("replicas:")
        with pytest.raises(SpecError, match="cannot read"):
            await s.apps.deploy("no-such-spec.yaml")

        with pytest.raises(RemoteError) as missing:
            await s.apps.scale("nothing-here", 2)
        assert missing.value.cause == "no_app"

        huge = ECHO.replace("name: echo", "name: huge").replace(
            "replicas: 2", "replicas: 1\nresources: {cpu: 200}"
        )
        with pytest.raises(NoHost, match="no node that could run huge"):
            await s.apps.deploy(huge)  # refused here: no node could ever hold its secrets
        with pytest.raises(RemoteError) as no_room:
            await s.apps.deploy(huge.replace(f"secrets: {{TOKEN: {SECRET}}}", ""))
        assert no_room.value.cause == "no_capacity"

    # Without a key: changes are refused before anything is sent; reads work.
    async with AsyncSession(net.url(1)) as anon:
        with pytest.raises(NoKey, match="owner's key"):
            await anon.apps.deploy(ECHO.replace("name: echo", "name: other"))
        with pytest.raises(NoKey):
            await anon.apps.delete("echo")
        assert (await anon.apps.status("echo")).owner == owner.address.lower()
        with pytest.raises(NoSuchApp):
            await anon.apps.status("nothing-here")

    # Two owners with an app of the same name: a read without an owner must name one.
    async with AsyncSession(net.url(2), key=NodeKey.generate()) as s2:
        await s2.apps.deploy(ECHO)
    async with AsyncSession(net.url(1)) as anon:
        with pytest.raises(AmbiguousApp, match="2 owners"):
            await anon.apps.status("echo")
        assert (await anon.apps.status("echo", owner=owner.address)).owner == owner.address.lower()

    # A wait that cannot succeed says where each replica is.
    async with AsyncSession(net.url(1), key=owner) as s:
        with pytest.raises(NotReady, match="version 9"):
            await s.apps.wait("echo", version=9, timeout=0.2)


async def test_logs_are_the_owners(net: DeeployNet) -> None:
    owner = NodeKey.generate()
    async with AsyncSession(net.url(0), key=owner) as s:
        await _hosts_ready(s, 3)
        await s.apps.deploy(ECHO)
        ready = await s.apps.wait("echo", timeout=30)
        # Several nodes: each line names its node; the replicas' first line and the health checks.
        lines = await s.apps.logs("echo", tail=10_000)
        nodes = {r.node for r in ready.replicas}
        assert {line.split(": ", 1)[0] for line in lines} == nodes
        assert sum("started on port" in ln for ln in lines) == 2 and any("GET / 200" in ln for ln in lines)
        one = ready.replicas[0].node
        mine = await s.apps.logs("echo", node=one, tail=10_000)
        assert mine[0].startswith("started on port") and all(": " not in ln for ln in mine)
        assert len(await s.apps.logs("echo", node=one, tail=2)) == 2

        # Following: the tail first, then new lines as the replica writes them (health checks).
        async def follow(n: int) -> list[str]:
            got: list[str] = []
            async for line in s.apps.follow_logs("echo", tail=10_000, node=one):
                got.append(line)
                if len(got) == n:
                    break
            return got

        followed = await asyncio.wait_for(follow(len(mine) + 2), 20)
        assert followed[0].startswith("started on port") and followed[-1].startswith("GET / ")

    async with AsyncSession(net.url(0), key=NodeKey.generate()) as intruder:
        with pytest.raises(RemoteError) as info:
            await intruder.apps.logs("echo", owner=owner.address)
        assert info.value.status == 403 and info.value.cause == "forbidden"
    async with AsyncSession(net.url(0)) as anon:
        with pytest.raises(RemoteError) as info:
            await anon.apps.logs("echo")
        assert info.value.status in (401, 403)

    # A node's operator (its API token) reads the replica on that node only; the other node says why not.
    me = net.key(1).address.lower()
    async with AsyncSession(net.url(1), home=net.root / "n1") as operator:
        lines = await operator.apps.logs("echo", tail=10_000)
    for node in nodes:
        theirs = [ln.split(": ", 1)[1] for ln in lines if ln.startswith(node + ": ")]
        if node == me:
            assert theirs[0].startswith("started on port")
        else:
            assert theirs == ["[no logs from this node: wrong API token (bad_token)]"]


async def test_sync_session(net: DeeployNet, tmp_path: Path) -> None:
    owner = NodeKey.generate()
    spec_file = tmp_path / "app.yaml"
    spec_file.write_text(ECHO.replace(f"secrets: {{TOKEN: {SECRET}}}\n", ""))
    assert read_spec(str(spec_file)) == read_spec(spec_file)
    async with AsyncSession(net.url(1)) as s:
        await _hosts_ready(s, 3)

    def use() -> tuple[int, int, list[str], int]:
        with Session(net.url(1), key=owner) as s:
            view = s.apps.deploy(spec_file)
            ready = s.apps.wait("echo", timeout=30)
            hosts = s.apps.nodes()
            lines = s.apps.logs("echo", node=ready.replicas[0].node)
            followed = s.apps.follow_logs("echo", node=ready.replicas[0].node, tail=10_000)
            assert next(followed).startswith("started on port")
            followed.close()
            s.apps.scale("echo", 1)
            scaled = s.apps.wait("echo", timeout=30)
            s.apps.delete("echo")
            return view.version, ready.healthy, lines, len(hosts) + len(scaled.replicas)

    version, healthy, lines, count = await asyncio.to_thread(use)
    assert (version, healthy, count) == (1, 2, 4)
    assert lines[0].startswith("started on port")
