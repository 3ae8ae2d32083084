"""Issue 12, attack 4: every body a replica takes from a peer is read with a cap and a deadline.

A hostile peer (a small HTTP server here) answers with an endless body, a body declared as 300 MiB, one
that dribbles a byte at a time, a gzip bomb, or an answer with more batches than any answer may hold.
Real nodes announce batches to be pulled from it, or run anti-entropy against it: each refuses with a
cause, the memory they spend stays bounded, and they keep replicating meanwhile."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import orjson
import pytest

from r1os.cstore import MSG_BATCH, CStoreError
from r1os.cstore._fanout import MAX_PULLS
from r1os.cstore._peer import PeerRef
from r1os.cstore._sync import MAX_SYNC_BATCHES, MAX_SYNC_BODY
from r1os.identity import NodeKey
from tests.conftest import async_wait_for
from tests.cstore.cluster import Cluster
from tests.cstore.hostile import HostilePeer, memory_peak

#: What a capped read may leave in flight besides the cap: loopback socket buffers on both sides.
SOCKET_SLACK = 16 * 1024 * 1024


@pytest.fixture
async def cluster(tmp_path):  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path, 3)
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def hostile(request: pytest.FixtureRequest) -> AsyncIterator[HostilePeer]:
    peer = HostilePeer(request.param)
    await peer.start()
    yield peer
    await peer.stop()


async def _announce(cluster: Cluster, url: str) -> str:
    """Node 0 announces a batch too large to travel inline, to be pulled from `url`."""
    batch_id = secrets.token_hex(32)
    await cluster.nodes[0].broadcast(MSG_BATCH, {"id": batch_id, "url": url})
    return batch_id


async def _still_replicating(cluster: Cluster, tag: str) -> None:
    """A write on node 0 reaches the other nodes, and each answers /v1/health."""
    key = f"node:{cluster.nodes[0].address.lower()}:{tag}"
    await cluster.cstore(0).set(key, tag)

    async def everywhere() -> bool:
        return all([await cluster.cstore(i).get(key) == tag for i in (1, 2)])

    await async_wait_for(everywhere, 10, "a write to replicate past the hostile peer")
    for node in cluster.nodes:
        assert (await cluster.http.get(f"{node.url}/v1/health")).status_code == 200


@pytest.mark.parametrize("hostile", ["endless", "declared"], indirect=True)
async def test_announced_batch_with_a_huge_body_is_cut_at_the_cap(
    cluster: Cluster, hostile: HostilePeer
) -> None:
    before = [cluster.cstore(i).rejections["too_large"] for i in (1, 2)]

    async def refused() -> bool:
        return all(cluster.cstore(i).rejections["too_large"] > before[n] for n, i in enumerate((1, 2)))

    with memory_peak() as peak:
        await _announce(cluster, hostile.url)
        await async_wait_for(refused, 20, "both replicas to refuse the announced body as too large")
    cap = cluster.cstore(1).limits.max_batch_bytes
    # Two replicas pulled; each stopped at the cap (the declared one before reading any of it), where
    # reading it whole would have cost 300 MiB each.
    assert hostile.requests == 2
    assert hostile.sent <= 2 * (cap + SOCKET_SLACK), hostile.sent
    assert peak.mib < 4 * cap / 2**20 + 16, peak.mib
    await async_wait_for(lambda: _none_open(hostile), 5, "the replicas to hang up")
    await _still_replicating(cluster, "after-endless")


async def _none_open(peer: HostilePeer) -> bool:
    return peer.open == 0


@pytest.mark.parametrize("hostile", ["dribble"], indirect=True)
async def test_a_dribbling_peer_neither_blocks_replication_nor_holds_pulls(
    cluster: Cluster, hostile: HostilePeer
) -> None:
    svc = cluster.cstore(1)
    svc.peers.timeout = 2.0
    await _announce(cluster, hostile.url)
    await async_wait_for(lambda: _pulling(svc), 5, "node 1 to start pulling from the dribbling peer")
    # While the pull hangs, broadcasts keep being applied: the pull does not run on the message loop.
    await _still_replicating(cluster, "while-dribbling")
    assert svc._pulling, "the pull ended before the write replicated: the test proves nothing"
    # More announcements than pulls allowed at once: the rest is left to anti-entropy, and counted.
    busy = svc.rejections["busy"]
    for _ in range(MAX_PULLS + 3):
        await _announce(cluster, hostile.url)

    async def turned_away() -> bool:
        return svc.rejections["busy"] > busy

    await async_wait_for(turned_away, 5, "announcements past the pull limit to be refused as busy")
    assert len(svc._pulling) <= MAX_PULLS
    timeouts = svc.rejections["timeout"]

    async def cut_off() -> bool:
        return not svc._pulling and svc.rejections["timeout"] > timeouts

    await async_wait_for(cut_off, 10, "the dribbling pulls to be cut off at the deadline")
    await _still_replicating(cluster, "after-dribbling")


async def _pulling(svc) -> bool:  # type: ignore[no-untyped-def]
    return bool(svc._pulling)


@pytest.mark.parametrize(
    ("hostile", "cause"),
    [("endless", "too_large"), ("declared", "too_large"), ("gzip", "unreachable"), ("json", "too_large")],
    indirect=["hostile"],
)
async def test_anti_entropy_with_a_hostile_peer_is_bounded(
    cluster: Cluster, hostile: HostilePeer, cause: str
) -> None:
    """A round's answer is read with the same cap: a peer answering with an endless or huge body, a
    gzip bomb or more batches than an answer may hold costs the asker its cap, and nothing is merged."""
    if hostile.mode == "json":
        hostile.body = orjson.dumps({"batches": ["x"] * (MAX_SYNC_BATCHES + 1), "want": []})
    svc = cluster.cstore(1)
    entries = len(svc.state)
    with memory_peak() as peak, pytest.raises(CStoreError) as info:
        await svc.sync_with(PeerRef(NodeKey.generate().address, hostile.url))
    assert info.value.cause == cause, info.value
    assert hostile.paths == ["/v1/cstore/sync"]  # nothing pushed to it either
    # At most the answer's cap was read (a body held whole would be 300 MiB, or 64 MiB inflated).
    assert hostile.sent <= MAX_SYNC_BODY + SOCKET_SLACK, hostile.sent
    assert peak.mib < 3 * MAX_SYNC_BODY / 2**20 + 16, peak.mib
    assert len(svc.state) == entries
    await _still_replicating(cluster, f"after-{hostile.mode}")


async def test_announcements_are_checked_before_anything_is_fetched(cluster: Cluster) -> None:
    """An announcement names a batch id (64 hex digits) and an http(s) URL of bounded length; anything
    else is refused as it arrives, with nothing fetched."""
    svc = cluster.cstore(1)
    before = svc.rejections.copy()
    good_id = secrets.token_hex(32)
    for payload in (
        {"id": "../../admin", "url": "http://127.0.0.1:9"},
        {"id": good_id.upper(), "url": "http://127.0.0.1:9"},
        {"id": good_id, "url": "file:///etc/passwd"},
        {"id": good_id, "url": 5},
        {"id": good_id, "url": "http://x/" + "a" * 5000},
        {"batches": ["x"] * 2001},
    ):
        await cluster.nodes[0].broadcast(MSG_BATCH, payload)

    async def all_refused() -> bool:
        after = svc.rejections
        return after["malformed"] - before["malformed"] == 4 and after["too_large"] - before["too_large"] == 2

    await async_wait_for(all_refused, 10, "every bad announcement to be refused")
    assert not svc._pulling
    await _still_replicating(cluster, "after-bad-announcements")


async def test_an_honest_large_batch_still_travels_by_pull(cluster: Cluster) -> None:
    """The path the caps guard still works: a batch over the inline limit is announced and pulled."""
    key = f"node:{cluster.nodes[0].address.lower()}:big"
    value = "v" * (400 * 1024)
    await cluster.cstore(0).set(key, value)

    async def pulled() -> bool:
        return all([await cluster.cstore(i).get(key) == value for i in (1, 2)])

    await async_wait_for(pulled, 10, "the announced batch to be pulled by every replica")
