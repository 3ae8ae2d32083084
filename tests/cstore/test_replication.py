"""Replication between real nodes: fast path, partitions healed by anti-entropy, restarts, ACLs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r1os.cstore import CStoreError, Op, sign_batch
from r1os.identity import NodeKey
from tests.conftest import async_wait_for
from tests.cstore.cluster import Cluster


@pytest.fixture
async def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path, 3)
    await c.start()
    yield c
    await c.stop()


def ns(node) -> str:  # type: ignore[no-untyped-def]
    return f"node:{node.address.lower()}"


async def test_write_on_one_readable_on_all(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    await cluster.cstore(0).set(f"{ns(a)}:greeting", {"hello": "world"})
    await cluster.cstore(0).hset(f"{ns(a)}:h", "f1", [1, 2])

    async def everywhere() -> bool:
        vals = [await cluster.cstore(i).get(f"{ns(a)}:greeting") for i in range(3)]
        hs = [await cluster.cstore(i).hget(f"{ns(a)}:h", "f1") for i in range(3)]
        return vals == [{"hello": "world"}] * 3 and hs == [[1, 2]] * 3

    await async_wait_for(everywhere, 10, "the write to reach every replica")
    # and over each node's HTTP API
    for node in cluster.nodes:
        r = await cluster.http.get(f"{node.url}/v1/cstore/get", params={"key": f"{ns(a)}:greeting"})
        assert r.json() == {"key": f"{ns(a)}:greeting", "found": True, "value": {"hello": "world"}}
    await cluster.cstore(0).delete(f"{ns(a)}:greeting")

    async def gone() -> bool:
        return all([await cluster.cstore(i).get(f"{ns(a)}:greeting") is None for i in range(3)])

    await async_wait_for(gone, 10, "the delete to reach every replica")
    assert len(set(await cluster.digests())) == 1


async def test_partition_heals_with_same_winner(cluster: Cluster) -> None:
    """Cut node 2 off the broker, write the same pub: field on both sides, heal, compare digests."""
    cut = cluster.nodes[2]
    cluster.proxies[2].cut()
    await async_wait_for(lambda: _false_if(cut.transport.connected), 10, "node 2 to lose its broker")
    key = "pub:shared"
    # Both sides write (each may only write its own field in pub:, plus its own namespace).
    for i in (0, 2):
        node = cluster.nodes[i]
        await cluster.cstore(i).set(f"{ns(node)}:side", f"written on {i}")
        await cluster.cstore(i).hset(key, node.address.lower(), i)
    # A key both sides race on: node 0's namespace written by node 0 before and during the cut.
    await cluster.cstore(0).set(f"{ns(cluster.nodes[0])}:race", "first")
    await cluster.cstore(0).set(f"{ns(cluster.nodes[0])}:race", "second")
    assert await cluster.cstore(2).get(f"{ns(cluster.nodes[0])}:race") is None  # really partitioned
    cluster.proxies[2].heal()

    async def converged() -> bool:
        return len(set(await cluster.digests())) == 1 and len(cluster.cstore(0).state) >= 5

    await async_wait_for(converged, 10, "all replicas equal within 10 s of healing")
    for i in range(3):
        assert await cluster.cstore(i).get(f"{ns(cluster.nodes[0])}:race") == "second"
        assert await cluster.cstore(i).hgetall(key) == {
            cluster.nodes[0].address.lower(): 0, cluster.nodes[2].address.lower(): 2,
        }  # fmt: skip


async def _false_if(flag: bool) -> bool:
    return not flag


async def test_late_joiner_converges_by_anti_entropy(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    for i in range(200):
        await cluster.cstore(0).set(f"{ns(a)}:k{i}", i)
    newcomer = await cluster.add_node(3)
    await cluster.wait_mesh()

    async def caught_up() -> bool:
        return len(set(await cluster.digests())) == 1

    await async_wait_for(caught_up, 15, "the new node to converge without the broadcasts")
    assert await cluster.cstore(3).get(f"{ns(a)}:k199") == 199
    assert cluster.cstore(3).syncs >= 1 or cluster.cstore(0).syncs >= 1
    assert newcomer.address not in {n.address for n in cluster.nodes[:3]}


async def test_a_replica_that_starts_late_syncs_at_once(tmp_path: Path) -> None:
    """Rounds every 30 s (jittered, never before 24 s): a replica that starts after a write was broadcast
    has it within seconds, from a round a start asks for (the wait's 15 s end before any timed round of
    either replica could run)."""
    c = Cluster(tmp_path, 1, sync_interval=30)
    await c.start()
    try:
        a = c.nodes[0]
        await c.cstore(0).set(f"{ns(a)}:early", "before you came")
        await c.add_node(1)

        async def caught_up() -> bool:
            return await c.cstore(1).get(f"{ns(a)}:early") == "before you came"

        await async_wait_for(caught_up, 15, "the write made before the replica started")
        # by a round a start asked for: the newcomer's, or the first replica's, which was still looking
        # for a peer to ask when the newcomer came (timed rounds come every 24-36 s)
        assert c.cstore(0)._sync.nudged_rounds + c.cstore(1)._sync.nudged_rounds >= 1
    finally:
        await c.stop()


async def test_restart_keeps_state(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.nodes[0]
    await cluster.cstore(0).set(f"{ns(a)}:durable", "yes")
    await cluster.cstore(0).hset(f"{ns(a)}:h", "x", 1)
    before = cluster.cstore(0).state.export()
    await a.stop()
    from r1os.cstore import CStoreService
    from r1os.node import Node

    again = Node(a.config, password="pw", services=[CStoreService(sync_interval=60)])
    await again.start()
    try:
        svc = again.services[0]
        assert isinstance(svc, CStoreService)
        assert svc.state.export() == before
        assert await svc.get(f"{ns(a)}:durable") == "yes"
        assert again.address == a.address
    finally:
        await again.stop()
        cluster.nodes[0] = again  # stop() is idempotent in the fixture teardown


async def test_forged_and_foreign_writes_are_refused_everywhere(cluster: Cluster) -> None:
    client = NodeKey.generate()
    victim = cluster.nodes[1]
    url = cluster.nodes[0].url
    # a client writing its own app namespace through node 0: accepted, replicated
    own = sign_batch(client, [Op("set", f"app:{client.address.lower()}:cfg", value=1)], *_hlc())
    r = await cluster.http.post(f"{url}/v1/cstore/batch", content=own)
    assert r.status_code == 200, r.text
    # the same client writing the victim node's namespace: refused with a clear error
    foreign = sign_batch(client, [Op("set", f"{ns(victim)}:evil", value=1)], *_hlc())
    r = await cluster.http.post(f"{url}/v1/cstore/batch", content=foreign)
    assert r.status_code == 403 and r.json()["cause"] == "forbidden"
    # a forged batch (signed by another key) and one stamped far in the future
    forged = own.replace(b":cfg", b":cfx")
    r = await cluster.http.post(f"{url}/v1/cstore/batch", content=forged)
    assert r.status_code == 403 and r.json()["cause"] == "bad_signature"
    wall, _ = _hlc()
    future = sign_batch(client, [Op("set", f"app:{client.address.lower()}:f", value=1)], wall + 3_600_000, 0)
    r = await cluster.http.post(f"{url}/v1/cstore/batch", content=future)
    assert r.status_code == 400 and r.json()["cause"] == "clock_skew"
    r = await cluster.http.post(f"{url}/v1/cstore/batch", content=b"\x00garbage")
    assert r.status_code == 400 and r.json()["cause"] == "malformed"
    # pushed straight to a replica's anti-entropy endpoint: refused there too
    r = await cluster.http.post(
        f"{victim.url}/v1/cstore/push", json={"batches": [foreign.decode(), forged.decode(), 5]}
    )
    assert r.json() == {"applied": 0, "refused": 3}

    async def replicated() -> bool:
        return all([await cluster.cstore(i).get(f"app:{client.address.lower()}:cfg") == 1 for i in range(3)])

    await async_wait_for(replicated, 10, "the allowed client write to replicate")
    for i in range(3):
        assert await cluster.cstore(i).get(f"{ns(victim)}:evil") is None
    assert cluster.cstore(1).rejections["forbidden"] >= 1


async def test_limits_give_clear_errors(cluster: Cluster) -> None:
    svc = cluster.cstore(0)
    a = cluster.nodes[0]
    with pytest.raises(CStoreError, match="exceeds"):
        await svc.set(f"{ns(a)}:big", "x" * (1024 * 1024 + 10))
    with pytest.raises(CStoreError, match="longer than"):
        await svc.set(f"{ns(a)}:" + "k" * 600, 1)
    svc.max_keys_per_namespace = 3
    for i in range(3):
        await svc.set(f"{ns(a)}:q{i}", i)
    with pytest.raises(CStoreError) as info:
        await svc.set(f"{ns(a)}:q3", 3)
    assert info.value.cause == "quota"
    await svc.set(f"{ns(a)}:q0", "overwrite is fine")


def _hlc() -> tuple[int, int]:
    import time

    return time.time_ns() // 1_000_000, 0


async def test_concurrent_writes_travel_together(cluster: Cluster) -> None:
    """Batches accepted while a broadcast is on its way share the next message; each is still
    checked on its own by every replica."""
    from r1os.cstore import MSG_BATCH

    messages: list[int] = []

    async def count(env) -> None:  # type: ignore[no-untyped-def]
        messages.append(len(env.payload.get("batches", [None])))

    cluster.nodes[1].on(MSG_BATCH, count)
    client = NodeKey.generate()
    own = f"app:{client.address.lower()}"
    wall, _ = _hlc()
    raws = [sign_batch(client, [Op("set", f"{own}:c{i}", value=i)], wall, i) for i in range(20)]
    svc = cluster.cstore(0)
    await asyncio.gather(*(svc.submit(raw) for raw in raws))

    async def everywhere() -> bool:
        return all([await cluster.cstore(i).get(f"{own}:c19") == 19 for i in range(3)])

    await async_wait_for(everywhere, 10, "the concurrent writes to replicate")
    assert sum(messages) == 20 and len(messages) < 20, messages
    assert len(set(await cluster.digests())) == 1


async def test_a_bad_batch_in_a_group_is_refused_alone(cluster: Cluster) -> None:
    from r1os.cstore import MSG_BATCH

    client = NodeKey.generate()
    own = f"app:{client.address.lower()}"
    good = sign_batch(client, [Op("set", f"{own}:good", value=1)], *_hlc())
    forged = good.replace(b":good", b":evil")
    foreign = sign_batch(client, [Op("set", f"{ns(cluster.nodes[1])}:x", value=1)], *_hlc())
    before = cluster.cstore(1).rejections.copy()
    payload = {"batches": [forged.decode(), good.decode(), foreign.decode(), 5]}
    await cluster.nodes[0].broadcast(MSG_BATCH, payload)

    async def applied() -> bool:
        return all([await cluster.cstore(i).get(f"{own}:good") == 1 for i in (1, 2)])

    await async_wait_for(applied, 10, "the good batch of the group to be applied")
    after = cluster.cstore(1).rejections
    assert after["bad_signature"] - before["bad_signature"] == 1
    assert after["forbidden"] - before["forbidden"] == 1
    assert after["malformed"] - before["malformed"] == 1
    assert await cluster.cstore(1).get(f"{own}:evil") is None


async def test_several_batches_in_one_request(cluster: Cluster) -> None:
    """POST /v1/cstore/batches: one signed batch per line, each accepted or refused on its own."""
    client = NodeKey.generate()
    own = f"app:{client.address.lower()}"
    wall, _ = _hlc()
    good = [sign_batch(client, [Op("set", f"{own}:m{i}", value=i)], wall, i) for i in range(5)]
    forged = good[0].replace(b":m0", b":mx")
    foreign = sign_batch(client, [Op("set", f"{ns(cluster.nodes[1])}:x", value=1)], wall, 9)
    body = b"\n".join([good[0], forged, good[1], foreign, *good[2:]]) + b"\n"
    url = f"{cluster.nodes[0].url}/v1/cstore/batches"
    r = await cluster.http.post(url, content=body)
    assert r.status_code == 200, r.text
    causes = [x.get("cause") for x in r.json()["results"]]
    assert causes == [None, "bad_signature", None, "forbidden", None, None, None]
    assert [x["ops"] for x in r.json()["results"] if "ops" in x] == [1] * 5

    async def everywhere() -> bool:
        return all([await cluster.cstore(i).get(f"{own}:m4") == 4 for i in range(3)])

    await async_wait_for(everywhere, 10, "the accepted batches to replicate")
    assert await cluster.cstore(2).get(f"{own}:mx") is None
    for bad in (b"", b"\n\n", b"\n".join([good[0]] * 1001)):
        r = await cluster.http.post(url, content=bad)
        assert r.status_code == 413 and r.json()["cause"] == "too_large", bad[:20]
    r = await cluster.http.post(url, content=b"not a batch\n")
    assert r.status_code == 200 and r.json()["results"][0]["cause"] == "malformed"


async def test_oversized_request_bodies_are_refused_before_they_are_held(cluster: Cluster) -> None:
    """Every write and sync route caps its body; a declared or streamed excess is a 413."""
    node = cluster.nodes[0].url
    small, big = b"x" * (2 * 1024 * 1024), b"x" * (64 * 1024 * 1024 + 1)
    for path, body in (("batch", small), ("write", small), ("batches", big), ("push", big), ("sync", big)):
        r = await cluster.http.post(f"{node}/v1/cstore/{path}", content=body)
        assert r.status_code == 413 and r.json()["cause"] == "too_large", path

    async def endless() -> AsyncIterator[bytes]:  # no Content-Length: chunked, checked as it streams
        for _ in range(3):
            yield b"y" * (1024 * 1024)

    r = await cluster.http.post(f"{node}/v1/cstore/batch", content=endless())
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
    assert (await cluster.http.get(f"{node}/v1/health")).status_code == 200
