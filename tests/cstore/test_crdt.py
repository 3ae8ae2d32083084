"""The CRDT core: same batches in any order give byte-identical state; bad batches are refused."""

from __future__ import annotations

import random
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1os.cstore import CStoreError, CStoreState, HybridClock, Op, Timestamp, decode_batch, sign_batch
from r1os.identity import NodeKey

WRITERS = [NodeKey.generate() for _ in range(3)]
ORACLE = WRITERS[2]
NOW = 1_800_000_000_000


def own(key: NodeKey, name: str) -> str:
    return f"node:{key.address.lower()}:{name}"


def make(key: NodeKey, ops: list[Op], wall: int = NOW, counter: int = 0) -> bytes:
    return sign_batch(key, ops, wall, counter)


def decode(raw: bytes, now: int = NOW):  # type: ignore[no-untyped-def]
    return decode_batch(raw, now_ms=now, oracles=frozenset({ORACLE.address.lower()}))


def test_lww_register_and_tombstone() -> None:
    a = WRITERS[0]
    k = own(a, "x")
    s = CStoreState()
    s.apply(decode(make(a, [Op("set", k, value=1)], NOW, 0)))
    s.apply(decode(make(a, [Op("del", k)], NOW + 5, 0)))
    assert s.get(k, NOW + 10) is None
    # an older write arriving late does not resurrect the key
    assert s.apply(decode(make(a, [Op("set", k, value=2)], NOW + 1, 0))) == []
    assert s.get(k, NOW + 10) is None
    assert s.keys("node:", NOW + 10) == []


def test_ttl_expiry_and_gc() -> None:
    a = WRITERS[0]
    s = CStoreState()
    s.apply(decode(make(a, [Op("set", own(a, "t"), value="v", expires_ms=NOW + 1000)])))
    assert s.get(own(a, "t"), NOW + 999) == "v"
    assert s.get(own(a, "t"), NOW + 1000) is None
    assert s.gc(NOW - 1) == 0
    assert s.gc(NOW + 2000) == 1 and len(s) == 0 and s.live_batches() == []


def test_hashes_and_pub_fields() -> None:
    a, b = WRITERS[0], WRITERS[1]
    s = CStoreState()
    s.apply(decode(make(a, [Op("hset", "pub:r1fs:prov:x", a.address.lower(), {"size": 1})])))
    s.apply(decode(make(b, [Op("hset", "pub:r1fs:prov:x", b.address.lower(), {"size": 1})])))
    assert set(s.hgetall("pub:r1fs:prov:x", NOW)) == {a.address.lower(), b.address.lower()}
    s.apply(decode(make(b, [Op("hdel", "pub:r1fs:prov:x", b.address.lower())], NOW + 1)))
    assert list(s.hgetall("pub:r1fs:prov:x", NOW + 2)) == [a.address.lower()]


def test_refusals() -> None:
    a, b = WRITERS[0], WRITERS[1]
    good = make(a, [Op("set", own(a, "k"), value=1)])
    # forged: b's key signs a batch that claims a as writer
    obj = orjson.loads(good)
    forged = make(b, [Op("set", own(a, "k"), value=1)]).replace(b.address.encode(), a.address.encode())
    with pytest.raises(CStoreError) as e:
        decode(forged)
    assert e.value.cause in ("bad_signature", "malformed")
    tampered = good.replace(b':k",null,1,', b':k",null,2,')
    assert tampered != good
    with pytest.raises(CStoreError) as e:
        decode(tampered)
    assert e.value.cause == "bad_signature"
    for raw, cause in [
        (make(b, [Op("set", own(a, "k"), value=1)]), "forbidden"),  # b writing a's namespace
        (make(a, [Op("set", "net:config", value=1)]), "forbidden"),  # non-oracle writing net:
        (make(a, [Op("set", "pub:x", value=1)]), "forbidden"),  # pub: is hashes only
        (make(a, [Op("hset", "pub:x", b.address.lower(), 1)]), "forbidden"),  # someone else's field
        (make(a, [Op("set", "elsewhere", value=1)]), "forbidden"),  # no namespace
        (make(a, [Op("set", own(a, "k"), value=1)], NOW + 3_600_000), "clock_skew"),
        (make(a, [Op("set", own(a, "k"), value="x" * (1024 * 1024 + 1))]), "too_large"),
        (make(a, [Op("set", own(a, "k" * 600), value=1)]), "too_large"),
        (b"garbage", "malformed"),
        (good[:-5], "malformed"),
    ]:
        with pytest.raises(CStoreError) as info:
            decode(raw)
        assert info.value.cause == cause, (raw[:80], info.value)
    assert decode(make(ORACLE, [Op("set", "net:config", value=1)])).writer == ORACLE.address
    assert obj["writer"] == a.address


def test_hlc_orders_after_what_it_saw() -> None:
    wall = [100]
    clock = HybridClock(lambda: wall[0])
    t1 = clock.reserve(3)
    assert t1 == Timestamp(100, 0) and clock.last == Timestamp(100, 2)
    assert clock.reserve() == Timestamp(100, 3)
    clock.observe(Timestamp(500, 7))
    assert clock.reserve() == Timestamp(500, 8)
    wall[0] = 600
    assert clock.reserve() == Timestamp(600, 0)


@st.composite
def histories(draw: st.DrawFn) -> list[bytes]:
    keys = [f"k{i}" for i in range(4)]
    batches = []
    for _ in range(draw(st.integers(1, 12))):
        w = draw(st.sampled_from(WRITERS))
        ops = []
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["set", "del", "hset", "hdel"]))
            name = draw(st.sampled_from(keys))
            ttl = draw(st.sampled_from([None, None, 5]))
            expires = None if ttl is None or kind.endswith("del") else NOW + ttl
            if kind == "set":
                ops.append(
                    Op(
                        "set",
                        f"app:{w.address.lower()}:{name}",
                        value=draw(st.integers(0, 3)),
                        expires_ms=expires,
                    )
                )
            elif kind == "del":
                ops.append(Op("del", f"app:{w.address.lower()}:{name}"))
            elif kind == "hset":
                ops.append(Op("hset", f"pub:{name}", w.address.lower(), draw(st.integers(0, 3)), expires))
            else:
                ops.append(Op("hdel", f"pub:{name}", w.address.lower()))
        # few distinct clock values so ties between writers really happen
        batches.append(make(w, ops, NOW + draw(st.integers(0, 3)), draw(st.integers(0, 2))))
    return batches


@settings(max_examples=300, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_any_order_gives_identical_state(batches: list[bytes], rnd: random.Random) -> None:
    decoded = [decode(b) for b in batches]
    reference = CStoreState()
    for b in decoded:
        reference.apply(b)
    for _ in range(3):
        order = decoded + rnd.sample(decoded, k=min(3, len(decoded)))  # duplicates delivered too
        rnd.shuffle(order)
        replica = CStoreState()
        for b in order:
            replica.apply(b)
        assert replica.export() == reference.export()
        assert replica.bucket_digests(NOW + 10) == reference.bucket_digests(NOW + 10)
        assert sorted(replica.live_batches()) == sorted(reference.live_batches())
    # the live batches alone rebuild the same state (what compaction and anti-entropy rely on)
    rebuilt = CStoreState()
    for raw in reference.live_batches():
        rebuilt.apply(decode(raw))
    assert rebuilt.export() == reference.export()


def test_anti_entropy_buckets_find_the_difference() -> None:
    a = WRITERS[0]
    left, right = CStoreState(), CStoreState()
    shared = [decode(make(a, [Op("set", own(a, f"s{i}"), value=i)], NOW, i * 2)) for i in range(50)]
    for b in shared:
        left.apply(b)
        right.apply(b)
    extra = decode(make(a, [Op("set", own(a, "only-left"), value=1)], NOW + 1))
    left.apply(extra)
    diff = right.differing_buckets(left.bucket_digests(NOW + 10), NOW + 10)
    assert len(diff) == 1
    for raw in left.batches_in(diff):
        right.apply(decode(raw))
    assert right.export() == left.export()
    assert time.time() > 0
