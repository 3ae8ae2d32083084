"""Every value a client, a peer or a message declares to CSTORE is bounded where it enters: hostile
values (malformed, oversized, negative, NaN, huge integers) get a clear refusal with a cause, the
refusal is counted and logged, and the replica keeps working."""

from __future__ import annotations

import base64
import logging
import math
import time
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from r1os.cstore import CStoreError, CStoreService, HybridClock, Op, Timestamp, sign_batch
from r1os.cstore._hlc import MAX_COUNTER, MAX_LEAD_MS
from r1os.cstore._ops import DEFAULT_MAX_TTL_MS, STATUS_BY_CAUSE
from r1os.cstore._state import BUCKETS
from r1os.cstore._sync import MAX_SYNC_BATCHES, MAX_SYNC_REQUEST
from r1os.identity import NodeKey
from tests.cstore.conftest import client, operator_token, refusal

Replica = tuple[CStoreService, FastAPI]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _raw(key: NodeKey, hlc: Any, ops: Any) -> bytes:
    """A batch signed as its writer would, whatever its fields hold (canonical JSON where possible)."""
    from r1os.wire import canonical_bytes, envelope_digest

    body = {"v": 1, "writer": key.address, "hlc": hlc, "ops": ops}
    canonical = canonical_bytes(body)
    sig = key.sign_digest(envelope_digest(canonical))
    return canonical[:-1] + b',"sig":"0x' + sig.hex().encode() + b'"}'


def test_the_clock_never_fails_and_follows_remote_stamps_only_so_far() -> None:
    wall = 1_000_000
    clock = HybridClock(lambda: wall)
    clock.observe(Timestamp(wall, MAX_COUNTER))  # a stamp at the largest counter
    assert clock.reserve(10) == Timestamp(wall + 1, 0)  # rolls into the next millisecond
    clock.observe(Timestamp(wall + 1, MAX_COUNTER - 3))
    assert clock.reserve(3) == Timestamp(wall + 1, MAX_COUNTER - 2)  # exactly fits: counters up to MAX
    assert clock.reserve() == Timestamp(wall + 2, 0)
    clock.observe(Timestamp(wall + 29_000, 2**64 - 1))  # the attack's stamp
    assert clock.last == Timestamp(wall + MAX_LEAD_MS, 0)
    assert clock.reserve(10_000) == Timestamp(wall + MAX_LEAD_MS, 1)
    for bad in (0, -1, MAX_COUNTER + 2):
        with pytest.raises(ValueError):
            clock.reserve(bad)


async def test_hostile_batches_are_refused_with_a_cause(
    replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    svc, app = replica
    key = NodeKey.generate()
    ns = f"app:{key.address.lower()}:"
    now = now_ms()
    one = [["set", ns + "k", None, 1, None]]
    deep = _raw(key, [now, 0], [["set", ns + "k", None, "DEEP", None]])
    deep = deep.replace(b'"DEEP"', b"[" * 2000 + b"1" + b"]" * 2000)
    cases: list[tuple[str, bytes, str]] = [
        ("hlc float", _raw(key, [1.5, 0], one), "malformed"),
        ("hlc string", _raw(key, [str(now), 0], one), "malformed"),
        ("hlc bool", _raw(key, [True, 0], one), "malformed"),
        ("hlc too short", _raw(key, [now], one), "malformed"),
        (
            "hlc huge int",
            _raw(key, [now, 0], one).replace(b'"hlc":[%d,' % now, b'"hlc":[18446744073709551616,'),
            "malformed",
        ),
        ("no ops", _raw(key, [now, 0], []), "too_large"),
        (
            "10,001 ops",
            _raw(key, [now, 0], [["set", f"{ns}{i}", None, 1, None] for i in range(10_001)]),
            "too_large",
        ),
        ("key of 513 bytes", _raw(key, [now, 0], [["set", ns + "k" * 513, None, 1, None]]), "too_large"),
        ("control character", _raw(key, [now, 0], [["set", ns + "a\x00b", None, 1, None]]), "malformed"),
        ("empty field", _raw(key, [now, 0], [["hset", ns + "h", "", 1, None]]), "malformed"),
        (
            "value over 1 MiB",
            _raw(key, [now, 0], [["set", ns + "k", None, "x" * (1 << 20), None]]),
            "too_large",
        ),
        ("negative expiry", _raw(key, [now, 0], [["set", ns + "k", None, 1, -1]]), "malformed"),
        ("float expiry", _raw(key, [now, 0], [["set", ns + "k", None, 1, 1.5]]), "malformed"),
        (
            "expiry past the longest TTL",
            _raw(key, [now, 0], [["set", ns + "k", None, 1, now + DEFAULT_MAX_TTL_MS + 1]]),
            "too_large",
        ),
        ("expiry 2**64 - 1", _raw(key, [now, 0], [["set", ns + "k", None, 1, 2**64 - 1]]), "too_large"),
        ("unknown op", _raw(key, [now, 0], [["rename", ns + "k", None, 1, None]]), "malformed"),
        ("op of 3 parts", _raw(key, [now, 0], [["set", ns + "k", None]]), "malformed"),
        ("NaN value", _raw(key, [now, 0], one).replace(b"1,null]]", b"NaN,null]]"), "malformed"),
        (
            "huge int value",
            _raw(key, [now, 0], one).replace(b"1,null]]", b"18446744073709551616,null]]"),
            "malformed",
        ),
        ("value nested 2,000 deep", deep, "malformed"),
        (
            "garbage signature",
            _raw(key, [now, 0], one).replace(b'"sig":"0x', b'"sig":"zz', 1),
            "bad_signature",
        ),
        (
            "not an address",
            _raw(key, [now, 0], one).replace(key.address.encode(), b"nobody"),
            "bad_signature",
        ),
        ("far future", _raw(key, [now + 3_600_000, 0], one), "clock_skew"),
        ("counter past the maximum", _raw(key, [now, MAX_COUNTER + 1], one), "clock_skew"),
    ]
    caplog.set_level(logging.WARNING, "r1os.cstore")
    async with client(app) as http:
        for what, raw, cause in cases:
            r = await http.post("/v1/cstore/batch", content=raw)
            assert r.json().get("cause") == cause, (what, r.status_code, r.text[:300])
            refusal(r, STATUS_BY_CAUSE[cause], cause)
        # the replica is fine: a good batch goes through, and its stats answer
        ok = await http.post(
            "/v1/cstore/batch", content=sign_batch(key, [Op("set", ns + "ok", value=1)], now, 0)
        )
        assert ok.status_code == 200, ok.text
        stats = (await http.get("/v1/cstore/stats")).json()
    causes = {cause for _, _, cause in cases}
    assert {c for c in stats["rejected"] if stats["rejected"][c]} >= causes
    logged = {
        r.getMessage().split(": ")[1].split(" ")[0] for r in caplog.records if "refused" in r.getMessage()
    }
    assert logged >= causes, logged


async def test_hostile_requests_are_refused_with_a_cause(
    replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    """The write route (the operator's), the replication routes and the query parameters."""
    svc, app = replica
    me = f"node:{svc.ctx.address.lower()}:"
    caplog.set_level(logging.WARNING, "r1os.cstore")

    def op(**fields: Any) -> dict[str, Any]:
        return {"op": "set", "key": me + "k", "value": 1, **fields}

    writes: list[tuple[str, bytes, str]] = [
        ("not JSON", b"{nope", "malformed"),
        ("NaN ttl", b'{"ops": [{"op": "set", "key": "%s", "ttl": NaN}]}' % (me + "k").encode(), "malformed"),
        ("a list", b"[1, 2]", "malformed"),
        ("ops not a list", orjson.dumps({"ops": {"op": "set"}}), "malformed"),
        ("no ops", orjson.dumps({"ops": []}), "too_large"),
        ("10,001 ops", orjson.dumps({"ops": [op(key=f"{me}{i}") for i in range(10_001)]}), "too_large"),
        ("an op that is a string", orjson.dumps({"ops": ["set"]}), "malformed"),
        ("unknown op", orjson.dumps({"ops": [op(op="rename")]}), "malformed"),
        ("key a number", orjson.dumps({"ops": [op(key=5)]}), "malformed"),
        ("field a list", orjson.dumps({"ops": [op(op="hset", field=["f"])]}), "malformed"),
        ("ttl a string", orjson.dumps({"ops": [op(ttl="inf")]}), "malformed"),
        ("ttl true", orjson.dumps({"ops": [op(ttl=True)]}), "malformed"),
        ("ttl 1e300", orjson.dumps({"ops": [op(ttl=1e300)]}), "too_large"),
        ("ttl of 11 years", orjson.dumps({"ops": [op(ttl=11 * 365 * 86400)]}), "too_large"),
        (
            "value 2**64 (a float to JSON)",
            orjson.dumps({"ops": [op(value=2**64 - 1)]}).replace(
                b"18446744073709551615", b"18446744073709551616"
            ),
            "",
        ),
    ]
    async with client(app, token=operator_token(svc)) as http:
        for what, body, cause in writes:
            r = await http.post("/v1/cstore/write", content=body)
            if not cause:  # a value JSON carries inexactly is stored as it was read (a float): no harm
                assert r.status_code == 200, (what, r.text)
                continue
            assert r.json().get("cause") == cause, (what, r.status_code, r.text[:300])
            refusal(r, STATUS_BY_CAUSE[cause], cause)

    digests = base64.b64encode(bytes(16 * BUCKETS)).decode()
    replication: list[tuple[str, str, bytes, int, str]] = [
        ("sync over its cap", "/v1/cstore/sync", b" " * (MAX_SYNC_REQUEST + 1), 413, "too_large"),
        ("sync digests short", "/v1/cstore/sync", orjson.dumps({"digests": "AAAA"}), 400, "malformed"),
        ("sync digests a number", "/v1/cstore/sync", orjson.dumps({"digests": 5}), 400, "malformed"),
        (
            "sync horizon float",
            "/v1/cstore/sync",
            orjson.dumps({"digests": digests, "horizon": 1.5}),
            400,
            "malformed",
        ),
        (
            "sync horizon huge",
            "/v1/cstore/sync",
            b'{"digests": "%s", "horizon": 1e400}' % digests.encode(),
            400,
            "malformed",
        ),
        (
            "push 1,001 batches",
            "/v1/cstore/push",
            orjson.dumps({"batches": ["x"] * (MAX_SYNC_BATCHES + 1)}),
            413,
            "too_large",
        ),
        ("push not a list", "/v1/cstore/push", orjson.dumps({"batches": "x"}), 400, "malformed"),
        ("push a list", "/v1/cstore/push", b"[]", 400, "malformed"),
    ]
    async with client(app) as http:
        for what, path, body, status, cause in replication:
            r = await http.post(path, content=body)
            assert r.json().get("cause") == cause, (what, r.status_code, r.text[:300])
            refusal(r, status, cause)
        r = await http.post(
            "/v1/cstore/sync", content=orjson.dumps({"digests": digests, "horizon": -(2**62)})
        )
        assert r.status_code == 200 and r.json()["batches"] == []  # another horizon: the round is skipped
        refusal(await http.get("/v1/cstore/batch/..;admin"), 400, "malformed")
        refusal(await http.get("/v1/cstore/batch/" + "A" * 64), 400, "malformed")
        refusal(await http.get("/v1/cstore/batch/" + "0" * 64), 404, "not_found")
        refusal(
            await http.get("/v1/cstore/wait", params={"key": me + "w", "timeout": "nan"}), 400, "malformed"
        )
        refusal(await http.get("/v1/cstore/wait", params={"key": me + "w", "timeout": "-1"}), 408, "timeout")
        refusal(await http.get("/v1/cstore/lag", params={"since_ms": "1e400"}), 422, "invalid_request")
        assert (await http.get("/v1/cstore/lag", params={"since_ms": str(10**30)})).json()["n"] == 0
        assert (await http.get("/v1/cstore/get", params={"key": "k" * 20_000})).json()["found"] is False
        stats = (await http.get("/v1/cstore/stats")).json()
    assert stats["rejected"]["malformed"] >= 10 and stats["rejected"]["too_large"] >= 5
    logged = {
        r.getMessage().split(": ")[1].split(" ")[0] for r in caplog.records if "refused" in r.getMessage()
    }
    assert logged >= {"malformed", "too_large"}, logged


async def test_the_in_process_api_bounds_what_it_signs(replica: Replica) -> None:
    """Services of the node write through the same bounds: a TTL that is not a finite number or is
    too long, a value JSON cannot carry, an empty or oversized batch: each a CStoreError with a cause."""
    svc, _ = replica
    me = f"node:{svc.ctx.address.lower()}:"
    cases: list[tuple[str, Any, str]] = [
        ("NaN ttl", svc.set(me + "a", 1, ttl=math.nan), "malformed"),
        ("infinite ttl", svc.set(me + "a", 1, ttl=math.inf), "malformed"),
        ("ttl of a thousand years", svc.set(me + "a", 1, ttl=1000 * 365 * 86400.0), "too_large"),
        ("an integer JSON cannot hold", svc.set(me + "a", 2**64), "malformed"),
        ("not JSON at all", svc.set(me + "a", object()), "malformed"),
        ("no ops", svc.write([]), "too_large"),
        ("10,001 ops", svc.write([Op("set", f"{me}{i}", value=1) for i in range(10_001)]), "too_large"),
    ]
    for what, call, cause in cases:
        with pytest.raises(CStoreError) as info:
            await call
        assert info.value.cause == cause, (what, info.value)
    await svc.set(me + "fine", 1, ttl=60)
    assert await svc.get(me + "fine") == 1
