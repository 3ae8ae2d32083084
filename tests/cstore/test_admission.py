"""The routes between replicas (anti-entropy digests and pushes, batch pulls) on a network that runs
dAuth: only admitted nodes (oracles, and a node itself) take part, by signed requests; reads of public
data stay anonymous. Real nodes with real dAuth services: node 0 is the network's oracle and admits
nodes 1 and 2 by records in `net:dauth:admitted`, as oracles do."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from r1os.cstore import CStoreError, Op, sign_batch
from r1os.cstore._peer import PeerRef
from r1os.cstore._state import BUCKETS
from r1os.dauth import AdmissionRecord, DauthService, SignedRecord
from r1os.dauth._models import ADMITTED_KEY, sign_obj
from r1os.identity import NodeKey
from r1os.node import Service
from r1os.wire import sign_request
from tests.conftest import async_wait_for
from tests.cstore.cluster import Cluster


def record(node: str, oracle: NodeKey) -> dict[str, Any]:
    rec = AdmissionRecord.model_validate(
        {"network": "ctest", "address": node, "licence": {"type": "ND", "token_id": 1}, "epoch": 1,
         "expires": int(time.time()) + 3600}
    )  # fmt: skip
    return SignedRecord(
        record=rec, signatures={oracle.address.lower(): sign_obj(oracle, rec.body())}
    ).model_dump()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    holder: dict[str, str] = {}

    def dauth(i: int) -> list[Service]:
        # An edge node whose trusted oracle is node 0 (its oracle URL answers nothing: no admission
        # is asked for, node 0 writes the records itself).
        return [DauthService(network="ctest", oracles=[holder["oracle"]], oracle_urls=["http://127.0.0.1:9"],
                             retry_initial=60, retry_max=60)]  # fmt: skip

    c = Cluster(tmp_path, 3, services=dauth, mesh=False)
    oracle = c.key(0)
    holder["oracle"] = oracle.address
    await c.start()
    for i in (1, 2):
        address = c.nodes[i].address
        await c.cstore(0).hset(ADMITTED_KEY, address.lower(), record(address, oracle))
    await c.wait_mesh()  # heartbeats of nodes 1 and 2 count once they are admitted
    yield c
    await c.stop()


def sync_body() -> bytes:
    return orjson.dumps({"digests": base64.b64encode(bytes(16 * BUCKETS)).decode(), "horizon": None})


def signed(key: NodeKey, target: str, method: str, path: str, body: bytes) -> dict[str, str]:
    auth = sign_request(key, network="ctest", target=target, method=method, path=path, body=body)
    return {"authorization": auth, "content-type": "application/json"}


async def test_outsiders_are_kept_out_of_replication(cluster: Cluster) -> None:
    node = cluster.nodes[1]
    outsider = NodeKey.generate()
    batch_id = "0" * 64
    routes = [
        ("POST", "/v1/cstore/sync", sync_body()),
        ("POST", "/v1/cstore/push", orjson.dumps({"batches": []})),
        ("GET", f"/v1/cstore/batch/{batch_id}", b""),
    ]
    for method, path, body in routes:
        url = node.url + path
        tries = [
            ({"content-type": "application/json"}, 401, "unauthenticated"),
            (signed(outsider, node.address, method, path, body), 403, "not_admitted"),
            # signed by an admitted node, but for another node: not a proof for this one
            (signed(cluster.key(2), cluster.nodes[0].address, method, path, body), 401, "bad_signature"),
        ]
        for headers, status, cause in tries:
            r = await cluster.http.request(method, url, content=body or None, headers=headers)
            answer = r.json()
            assert (r.status_code, answer["cause"]) == (status, cause), (path, r.text)
            assert set(answer) == {"error", "cause", "hint"}, answer
        # an admitted node, and the network's oracle, are let in (an unknown batch is simply not there)
        for i in (0, 2):
            r = await cluster.http.request(
                method,
                url,
                content=body or None,
                headers=signed(cluster.key(i), node.address, method, path, body),
            )
            assert r.status_code == (404 if method == "GET" else 200), (path, i, r.text)
    assert cluster.cstore(1).rejections["not_admitted"] == 3
    # reads of public data stay anonymous
    for path, params in (("get", {"key": "k"}), ("keys", {"prefix": ""}), ("hgetall", {"key": ADMITTED_KEY})):
        r = await cluster.http.get(f"{node.url}/v1/cstore/{path}", params=params)
        assert r.status_code == 200, r.text
    fields = (await cluster.http.get(f"{node.url}/v1/cstore/hgetall", params={"key": ADMITTED_KEY})).json()
    assert set(fields["fields"]) == {cluster.nodes[i].address.lower() for i in (1, 2)}


async def test_admitted_nodes_replicate_by_signed_requests(cluster: Cluster) -> None:
    """Anti-entropy and batch pulls between admitted nodes work: each request is signed by its node."""
    a = cluster.nodes[0]
    # A batch too large to travel inline is announced and pulled (a signed GET) by every replica.
    big = f"node:{a.address.lower()}:big"
    await cluster.cstore(0).set(big, "v" * (400 * 1024))

    async def pulled() -> bool:
        return all([await cluster.cstore(i).get(big) is not None for i in (1, 2)])

    await async_wait_for(pulled, 10, "the announced batch to be pulled by admitted replicas")
    # A batch only node 2 holds (pushed to it alone) reaches node 1 by a signed anti-entropy round.
    writer = NodeKey.generate()
    key = f"app:{writer.address.lower()}:only-on-2"
    raw = sign_batch(writer, [Op("set", key, value=1)], time.time_ns() // 1_000_000 - 5_000, 0)
    body = orjson.dumps({"batches": [raw.decode()]})
    headers = signed(cluster.key(0), cluster.nodes[2].address, "POST", "/v1/cstore/push", body)
    r = await cluster.http.post(f"{cluster.nodes[2].url}/v1/cstore/push", content=body, headers=headers)
    assert r.json() == {"applied": 1, "refused": 0}
    peer = PeerRef(cluster.nodes[2].address, cluster.nodes[2].url)

    async def synced() -> bool:
        await cluster.cstore(1).sync_with(peer)
        return await cluster.cstore(1).get(key) == 1

    await async_wait_for(synced, 10, "node 1 to pull the batch from node 2 by anti-entropy")
    # the background rounds run signed too: nobody refused anyone
    await async_wait_for(lambda: _rounds(cluster), 10, "background anti-entropy rounds")
    assert all(cluster.cstore(i).rejections["not_admitted"] == 0 for i in range(3))


async def _rounds(cluster: Cluster) -> bool:
    return all(cluster.cstore(i).syncs >= 1 for i in range(3))


async def test_a_node_that_loses_admission_is_refused(cluster: Cluster) -> None:
    peer = PeerRef(cluster.nodes[1].address, cluster.nodes[1].url)
    assert await cluster.cstore(2).sync_with(peer) is not None
    await cluster.cstore(0).hdel(ADMITTED_KEY, cluster.nodes[2].address.lower())

    async def revoked() -> bool:
        return await cluster.cstore(1).hget(ADMITTED_KEY, cluster.nodes[2].address.lower()) is None

    await async_wait_for(revoked, 10, "the revocation to reach node 1")
    with pytest.raises(CStoreError) as info:
        await cluster.cstore(2).sync_with(peer)
    assert info.value.cause == "unreachable" and "not_admitted" in str(info.value), info.value
