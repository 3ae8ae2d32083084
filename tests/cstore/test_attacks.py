"""Issue 12's attacks on CSTORE, replayed against real nodes (real broker, HTTP and MQTT):

- attack 2: an outsider's batch stamped `[now + 29 s, 2**64 - 1]` poisoned every node's clock (own
  writes failed for 29 s); now such stamps are refused where they enter, the clock never fails, and what
  is accepted cannot drag a node's stamps far ahead;
- attack 8: `/v1/cstore/push` skipped the namespace quota (130,000 keys into a 100,000-key namespace);
  now every path that applies a batch counts it;
- attack 9: any local process had the node sign its writes (`net:` keys on an oracle); now only the
  node's operator, with the API token.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from r1os.cstore import MSG_BATCH, Op, sign_batch
from r1os.cstore._hlc import MAX_COUNTER, MAX_LEAD_MS
from r1os.cstore._peer import PeerRef
from r1os.identity import NodeKey
from r1os.wire import sign_request
from tests.conftest import async_wait_for
from tests.cstore.cluster import Cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, 3)
    await c.start()
    yield c
    await c.stop()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def entries(cluster: Cluster, i: int, prefix: str) -> int:
    """Entries (keys and hash fields) replica `i` holds under `prefix`."""
    state = cluster.cstore(i).state
    plain = sum(1 for k in state.strings if k.startswith(prefix))
    return plain + sum(len(f) for k, f in state.hashes.items() if k.startswith(prefix))


# -- attack 2: poisoned clocks ------------------------------------------------------------------------


async def test_poisoned_clocks_are_refused_and_own_writes_keep_working(cluster: Cluster) -> None:
    outsider = NodeKey.generate()
    own = f"app:{outsider.address.lower()}"
    now = now_ms()

    def stamped(wall: int, counter: int, n: int = 1) -> bytes:
        return sign_batch(outsider, [Op("set", f"{own}:k{i}", value=i) for i in range(n)], wall, counter)

    poisoned = {
        "the attack: 29 s ahead, counter 2**64 - 1": (stamped(now + 29_000, 2**64 - 1), "clock_skew"),
        "counter 2**64 - 1 alone": (stamped(now, 2**64 - 1), "clock_skew"),
        "counter one past the maximum": (stamped(now, MAX_COUNTER + 1), "clock_skew"),
        "ops counting past the maximum": (stamped(now, MAX_COUNTER, n=2), "clock_skew"),
        "far future": (stamped(now + 3_600_000, 0), "clock_skew"),
        "6 s ahead": (stamped(now + 6_000, 0), "clock_skew"),
        "negative wall": (stamped(-1, 0), "malformed"),
        "negative counter": (stamped(now, -1), "malformed"),
    }
    # Where a write enters: refused with its cause, whichever node is asked.
    for i, (what, (raw, cause)) in enumerate(poisoned.items()):
        r = await cluster.http.post(f"{cluster.nodes[i % 3].url}/v1/cstore/batch", content=raw)
        assert r.status_code == 400 and r.json()["cause"] == cause, (what, r.text)
    # Replicated as a node would (a broadcast and an anti-entropy push): refused there too.
    raws = [raw.decode() for raw, _ in poisoned.values()]
    before = [cluster.cstore(i).rejections.copy() for i in range(3)]
    await cluster.nodes[0].broadcast(MSG_BATCH, {"batches": raws})
    r = await cluster.http.post(f"{cluster.nodes[2].url}/v1/cstore/push", json={"batches": raws})
    assert r.json() == {"applied": 0, "refused": len(raws)}

    async def refused_on_replicas() -> bool:
        skew = [cluster.cstore(i).rejections["clock_skew"] - before[i]["clock_skew"] for i in (1, 2)]
        return skew == [6, 12]  # node 2 refused them twice: broadcast and push

    await async_wait_for(refused_on_replicas, 10, "the replicas to refuse the poisoned broadcast")
    for i in range(3):
        assert cluster.cstore(i).hlc.wall_ms <= now_ms() + MAX_LEAD_MS
        assert await cluster.cstore(i).get(f"{own}:k0") is None

    # Inside the bounds (4 s ahead, the largest counter) a batch is accepted, and harmless: every node's
    # own writes work at once, stamped at most MAX_LEAD_MS ahead, and every peer takes them.
    edge = stamped(now_ms() + 4_000, MAX_COUNTER)
    r = await cluster.http.post(f"{cluster.nodes[0].url}/v1/cstore/batch", content=edge)
    assert r.status_code == 200, r.text
    await async_wait_for(lambda: _everywhere(cluster, f"{own}:k0", 0), 10, "the edge batch to replicate")
    for i, node in enumerate(cluster.nodes):
        key = f"node:{node.address.lower()}:after"
        await cluster.cstore(i).set(key, i)
        assert cluster.cstore(i).hlc.wall_ms <= now_ms() + MAX_LEAD_MS
        await async_wait_for(
            lambda k=key, v=i: _everywhere(cluster, k, v), 10, f"node {i}'s write to replicate"
        )
    # over HTTP too, where the attack answered errors: the node's operator writes through the node
    headers = {"authorization": f"Bearer {cluster.token(0)}"}
    ops = {"ops": [{"op": "set", "key": f"node:{cluster.nodes[0].address.lower()}:http", "value": 1}]}
    r = await cluster.http.post(f"{cluster.nodes[0].url}/v1/cstore/write", json=ops, headers=headers)
    assert r.status_code == 200, r.text
    assert not any(
        cluster.cstore(i).rejections["clock_skew"] > before[i]["clock_skew"] + 12 for i in range(3)
    )


async def _everywhere(cluster: Cluster, key: str, value: object) -> bool:
    return all([await cluster.cstore(i).get(key) == value for i in range(3)])


# -- attack 8: the namespace quota on every path ---------------------------------------------------------


async def test_push_cannot_pass_the_namespace_quota(cluster: Cluster) -> None:
    """The attack as it was: 130,000 keys pushed into a namespace capped at 100,000."""
    outsider = NodeKey.generate()
    ns = f"app:{outsider.address.lower()}:"
    wall = now_ms()
    raws = [
        sign_batch(outsider, [Op("set", f"{ns}k{b}:{i}", value=i) for i in range(1000)], wall, b * 1000)
        for b in range(130)
    ]
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(
            f"{cluster.nodes[1].url}/v1/cstore/push", json={"batches": [raw.decode() for raw in raws]}
        )
    assert r.status_code == 200, r.text
    # A replica takes 1 % over the cap (writes that raced through two entry nodes), never more.
    assert r.json() == {"applied": 101, "refused": 29}
    assert entries(cluster, 1, ns) == 101_000
    assert cluster.cstore(1).rejections["quota"] == 29
    # Where writes enter, the cap holds exactly: one more key is refused.
    more = sign_batch(outsider, [Op("set", f"{ns}one-more", value=1)], now_ms(), 0)
    r = await cluster.http.post(f"{cluster.nodes[1].url}/v1/cstore/batch", content=more)
    assert r.status_code == 429 and r.json()["cause"] == "quota", r.text

    # Anti-entropy spreads what node 1 holds; every replica ends with the same, capped namespace.
    async def converged() -> bool:
        return len(set(await cluster.digests())) == 1

    await async_wait_for(converged, 60, "the replicas to converge on the capped namespace")
    assert [entries(cluster, i, ns) for i in range(3)] == [101_000] * 3


async def test_every_path_counts_entries_against_the_quota(cluster: Cluster) -> None:
    """With a cap of 100 entries: hash fields, `pub:` fields and tombstones count like keys, and
    batches arriving by broadcast, by push or by anti-entropy are checked like those posted."""
    for i in range(3):
        cluster.cstore(i).max_keys_per_namespace = 100
    outsider = NodeKey.generate()
    w = outsider.address.lower()
    url = cluster.nodes[0].url
    wall = now_ms()

    async def post(ops: list[Op], counter: int) -> httpx.Response:
        return await cluster.http.post(
            f"{url}/v1/cstore/batch", content=sign_batch(outsider, ops, wall, counter)
        )

    # one hash with 150 fields; 150 pub: hashes with the outsider's field; 150 deletes of nothing
    hash_ops = [Op("hset", f"app:{w}:h", f"f{i}", i) for i in range(150)]
    pub_ops = [Op("hset", f"pub:spam:{i}", w, i) for i in range(150)]
    del_ops = [Op("del", f"node:{w}:gone{i}") for i in range(150)]
    for n, ops in enumerate((hash_ops, pub_ops, del_ops)):
        r = await post(ops[:100], n * 1000)
        assert r.status_code == 200, r.text
        r = await post(ops[100:], n * 1000 + 100)
        assert r.status_code == 429 and r.json()["cause"] == "quota", r.text
    assert entries(cluster, 0, f"app:{w}:") == 100
    assert entries(cluster, 0, "pub:spam:") == 100
    assert entries(cluster, 0, f"node:{w}:") == 100

    # broadcast: a node relays 150 one-key batches of a fresh namespace; replicas take 101 (cap + 1 %)
    other = NodeKey.generate()
    ons = f"app:{other.address.lower()}:"
    relayed = [sign_batch(other, [Op("set", f"{ons}b{i}", value=i)], wall, i).decode() for i in range(150)]
    await cluster.nodes[0].broadcast(MSG_BATCH, {"batches": relayed})

    async def capped() -> bool:
        return [entries(cluster, i, ons) for i in (1, 2)] == [101, 101]

    await async_wait_for(capped, 10, "the replicas to cap the relayed namespace")

    # anti-entropy: a replica with a higher cap holds 150; one with the cap of 100 pulls 101 from it
    third = NodeKey.generate()
    tns = f"app:{third.address.lower()}:"
    cluster.cstore(2).max_keys_per_namespace = 1000
    pushed = [sign_batch(third, [Op("set", f"{tns}s{i}", value=i)], wall, i).decode() for i in range(150)]
    r = await cluster.http.post(f"{cluster.nodes[2].url}/v1/cstore/push", json={"batches": pushed})
    assert r.json() == {"applied": 150, "refused": 0}
    node2 = PeerRef(cluster.nodes[2].address, cluster.nodes[2].url)
    await async_wait_for(lambda: _synced_with(cluster, node2, tns), 20, "node 0 to pull the namespace")
    assert entries(cluster, 0, tns) == 101


async def _synced_with(cluster: Cluster, peer: PeerRef, prefix: str) -> bool:
    await cluster.cstore(0).sync_with(peer)
    return entries(cluster, 0, prefix) >= 101


# -- attack 9: only the node's operator has the node sign --------------------------------------------------


async def test_only_the_operator_writes_as_the_node(cluster: Cluster) -> None:
    """On an oracle, unsigned `/v1/cstore/write` of a `net:` key (as the attack did to
    `net:dauth:admitted`): refused without the API token, with a wrong one, or signed by another key
    (even the node's own key: only the token makes a caller the node's operator)."""
    oracle = cluster.nodes[0]
    for i in range(3):
        cluster.cstore(i).oracles = frozenset({oracle.address.lower()})
    url = f"{oracle.url}/v1/cstore/write"
    field = cluster.nodes[1].address.lower()
    body = orjson.dumps({"ops": [{"op": "hdel", "key": "net:dauth:admitted", "field": field}]})
    outsider = NodeKey.generate()

    def signed(key: NodeKey) -> str:
        return sign_request(
            key, network="ctest", target=oracle.address, method="POST", path="/v1/cstore/write", body=body
        )

    tries = [
        (None, 401, "unauthenticated"),  # from this machine, as the attack did
        ("Bearer not-the-token", 401, "bad_token"),
        (f"Bearer {cluster.token(1)}", 401, "bad_token"),  # another node's token
        (signed(outsider), 403, "forbidden"),
        (signed(cluster.key(0)), 403, "forbidden"),
    ]
    for auth, status, cause in tries:
        headers = {"content-type": "application/json", **({"authorization": auth} if auth else {})}
        r = await cluster.http.post(url, content=body, headers=headers)
        answer = r.json()
        assert (r.status_code, answer.get("cause")) == (status, cause), (auth, r.text)
        assert set(answer) == {"error", "cause", "hint"} and answer["error"], answer
    assert cluster.cstore(0).applied_batches == 0
    # the operator, with the token read from the node's home: the node signs, and it replicates
    set_body = {"ops": [{"op": "hset", "key": "net:dauth:admitted", "field": "x", "value": 1}]}
    r = await cluster.http.post(url, json=set_body, headers={"authorization": f"Bearer {cluster.token(0)}"})
    assert r.status_code == 200 and r.json()["writer"] == oracle.address, r.text

    async def replicated() -> bool:
        return all([await cluster.cstore(i).hget("net:dauth:admitted", "x") == 1 for i in range(3)])

    await async_wait_for(replicated, 10, "the operator's write to replicate")
