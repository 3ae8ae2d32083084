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


def test_malformed_ops_are_refused() -> None:
    """Op shapes and names, in batches that take the common path (all sets or all hsets, no expiry)
    and in mixed ones, which are checked op by op."""
    a = WRITERS[0]
    k = own(a, "k")
    pub = a.address.lower()

    def raw_ops(ops: list[object]) -> bytes:
        # sign_batch encodes Op objects; these are raw lists, encoded and signed the same way
        from r1os.wire import canonical_bytes, envelope_digest

        body = {"v": 1, "writer": a.address, "hlc": [NOW, 0], "ops": ops}
        canonical = canonical_bytes(body)
        sig = a.sign_digest(envelope_digest(canonical))
        return canonical[:-1] + b',"sig":"0x' + sig.hex().encode() + b'"}'

    for ops, cause in [
        ([["set", k + "\n", None, 1, None]], "malformed"),  # control character in a key
        ([["set", k, None, 1, None], ["set", k + "\x00x", None, 1, None]], "malformed"),
        ([["hset", "pub:x", pub + "\x1f", 1, None]], "malformed"),  # ... in a field
        ([["hset", "pub:x", "", 1, None]], "malformed"),  # empty field
        ([["set", "", None, 1, None]], "malformed"),  # empty key
        ([["set", 5, None, 1, None]], "malformed"),  # key not a string
        ([["set", k, "f", 1, None]], "malformed"),  # set with a field
        ([["set", k, None, 1, None], ["del", k, None, 1, None]], "malformed"),  # del with a value
        ([["set", k, None, 1, -5]], "malformed"),  # negative expiry
        ([["set", k, None, 1, "soon"]], "malformed"),  # expiry not an integer
        ([["get", k, None, 1, None]], "malformed"),  # unknown kind
        ([[["set"], k, None, 1, None]], "malformed"),  # unhashable kind
        ([["set", k, None, 1]], "malformed"),  # four parts
        ([{"kind": "set"}], "malformed"),  # not a list
        ([["set", own(a, "é" * 300), None, 1, None]], "too_large"),  # 600 bytes in 300 characters
        ([["hset", "pub:x", pub, 1, None], ["set", own(a, "k" * 600), None, 1, None]], "too_large"),
    ]:
        with pytest.raises(CStoreError) as info:
            decode(raw_ops(ops))
        assert info.value.cause == cause, (ops, info.value)
    # and what is fine on both paths
    fine = [
        [["set", own(a, "é" * 100), None, {"x": [1]}, NOW + 5]],
        [["hset", "pub:x", pub, 1, None], ["hdel", "pub:y", pub, None, None]],
        [["set", k, None, 1, None], ["del", own(a, "j"), None, None, None]],
    ]
    for ops in fine:
        assert len(decode(raw_ops(ops)).ops) == len(ops)


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


def test_keys_are_counted_against_their_namespace() -> None:
    from r1os.cstore._quota import count_namespaces as _count_namespaces

    a, b = WRITERS[0].address, WRITERS[1].address
    keys = [
        f"app:{a.lower()}:x", f"app:{a.lower()}:y", f"app:{a}:z",  # same owner, any case
        f"node:{a.lower()}:n", f"app:{a.lower()}",  # the bare namespace counts too
        f"app:{b.lower()}:other", "pub:r1fs:prov:c", "net:config",  # someone else's; not owned
    ]  # fmt: skip
    want = {f"app:{a.lower()}": 4, f"node:{a.lower()}": 1, f"app:{b.lower()}": 1}
    assert _count_namespaces(keys, a) == want
    assert _count_namespaces(keys) == want
    assert _count_namespaces(keys[:2], a) == {f"app:{a.lower()}": 2}
