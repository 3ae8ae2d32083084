from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1os.errors import WireError
from r1os.identity import NodeKey
from r1os.wire import EnvelopeSigner, EnvelopeVerifier, canonical_bytes, envelope_digest

NET = "testnet"
KEY = NodeKey.generate()
OTHER = NodeKey.generate()


def verifier(**kw: Any) -> EnvelopeVerifier:
    return EnvelopeVerifier(NET, known_types={"hb", "gossip"}, **kw)


def cause_of(v: EnvelopeVerifier, raw: bytes) -> str:
    with pytest.raises(WireError) as info:
        v.verify(raw)
    return info.value.cause


def test_roundtrip() -> None:
    signer = EnvelopeSigner(KEY, NET)
    env = verifier().verify(signer.seal("hb", {"cpu": 0.5, "tags": ["a"], "n": {"z": 1, "a": 2}}))
    assert env.sender == KEY.address and env.type == "hb" and env.payload["n"] == {"z": 1, "a": 2}


def test_encoding_is_deterministic() -> None:
    a = canonical_bytes({"b": 1, "a": {"y": [1, 2], "x": None}})
    b = canonical_bytes({"a": {"x": None, "y": [1, 2]}, "b": 1})
    assert a == b == b'{"a":{"x":null,"y":[1,2]},"b":1}'


def test_seq_is_fresh_across_restarts() -> None:
    first = orjson.loads(EnvelopeSigner(KEY, NET).seal("hb", {}))["seq"]
    second = orjson.loads(EnvelopeSigner(KEY, NET).seal("hb", {}))["seq"]
    assert second > first


def forge(body: dict[str, Any], key: NodeKey) -> bytes:
    canonical = canonical_bytes(body)
    sig = key.sign_digest(envelope_digest(canonical))
    return canonical[:-1] + b',"sig":"0x' + sig.hex().encode() + b'"}'


def body(**over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "network": NET,
        "type": "hb",
        "sender": KEY.address,
        "seq": 1,
        "ts": int(time.time() * 1000),
        "ttl": 60,
        "payload": {},
    }
    b.update(over)
    return b


def test_each_rejection_cause() -> None:
    v = verifier(max_size=4096)
    good = EnvelopeSigner(KEY, NET).seal("hb", {"x": 1})
    # forged: signed by another key while claiming KEY as sender
    assert cause_of(v, forge(body(), OTHER)) == "bad_signature"
    # tampered: payload changed after signing
    assert cause_of(v, good.replace(b'"x":1', b'"x":2')) == "bad_signature"
    assert cause_of(v, b"x" * 5000) == "oversize"
    assert cause_of(v, b"\x00\xff garbage") == "malformed"
    assert cause_of(v, b"[1,2,3]") == "malformed"
    assert cause_of(v, orjson.dumps({"network": NET})) == "malformed"
    assert cause_of(v, forge(body(network="other"), KEY)) == "wrong_network"
    assert cause_of(v, forge(body(type="nope"), KEY)) == "unknown_type"
    assert cause_of(v, forge(body(ts=int(time.time() * 1000) + 3_600_000), KEY)) == "clock_skew"
    assert cause_of(v, forge(body(ts=int(time.time() * 1000) - 61_000), KEY)) == "expired"
    assert cause_of(v, forge(body(ts=int(time.time() * 1000) - 40_000, ttl=120), KEY)) == "clock_skew"
    assert cause_of(v, forge(body(seq=True), KEY)) == "malformed"
    # non-canonical encoding of a validly signed message (a space added)
    assert cause_of(v, good.replace(b'"ttl":', b'"ttl": ')) == "malformed"
    # replay: first copy accepted, second refused
    v.verify(good)
    assert cause_of(v, good) == "replayed"
    # high-s twin of a valid signature is refused (malleability)
    fresh = EnvelopeSigner(KEY, NET).seal("hb", {})
    obj = orjson.loads(fresh)
    sig = bytes.fromhex(obj["sig"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = n - int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + s.to_bytes(32, "big") + bytes([sig[64] ^ 1])
    assert cause_of(v, fresh.replace(obj["sig"][2:].encode(), twin.hex().encode())) == "bad_signature"
    assert v.accepted == 1


def test_not_admitted_hook() -> None:
    v = verifier(admitted=lambda sender, _type: sender != KEY.address)
    assert cause_of(v, EnvelopeSigner(KEY, NET).seal("hb", {})) == "not_admitted"
    assert v.verify(EnvelopeSigner(OTHER, NET).seal("hb", {})).sender == OTHER.address


def test_replay_window_out_of_order() -> None:
    v = verifier(replay_window=64)
    raws = [forge(body(seq=s), KEY) for s in (100, 98, 99, 200, 150, 140)]
    for raw in raws:
        v.verify(raw)
    for raw in raws:
        assert cause_of(v, raw) == "replayed"
    assert cause_of(v, forge(body(seq=120), KEY)) == "replayed"  # older than the window


def test_rejections_logged_once_per_cause(caplog: pytest.LogCaptureFixture) -> None:
    v = verifier()
    with caplog.at_level(logging.WARNING, logger="r1os.wire"):
        for _ in range(50):
            assert v.accept(b"garbage") is None
            assert v.accept(b"y" * (2 * 1024 * 1024)) is None
    assert v.rejections["malformed"] == 50 and v.rejections["oversize"] == 50
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if "oversize" in r.getMessage()]) == 1


def test_payload_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(WireError, match="canonical JSON"):
        EnvelopeSigner(KEY, NET).seal("hb", {"big": 2**70})


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False)
)
payloads = st.dictionaries(st.text(max_size=6), scalars | st.lists(scalars, max_size=3), max_size=3)


@st.composite
def mutations(draw: st.DrawFn) -> tuple[bytes, bytes]:
    raw = EnvelopeSigner(KEY, NET).seal(draw(st.sampled_from(["hb", "gossip"])), draw(payloads))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "field"]))
    if kind == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        out = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif kind == "truncate":
        out = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "insert":
        i = draw(st.integers(0, len(raw)))
        out = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i:]
    elif kind == "delete":
        i = draw(st.integers(0, len(raw) - 1))
        out = raw[:i] + raw[i + 1 :]
    else:
        obj = orjson.loads(raw)
        name = draw(st.sampled_from(["network", "type", "sender", "seq", "ts", "ttl", "payload"]))
        new = {
            "network": "x" + obj["network"],
            "type": "gossip" if obj["type"] == "hb" else "hb",
            "sender": OTHER.address,
            "seq": obj["seq"] + 1,
            "ts": obj["ts"] - 1,
            "ttl": obj["ttl"] - 1,
            "payload": {**obj["payload"], "injected": True},
        }[name]
        obj[name] = new
        out = canonical_bytes({k: v for k, v in obj.items() if k != "sig"})[:-1]
        out += b',"sig":"' + obj["sig"].encode() + b'"}'
    return raw, out


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutations())
def test_no_mutated_envelope_is_accepted(pair: tuple[bytes, bytes]) -> None:
    original, mutated = pair
    v = verifier()
    assert v.accept(mutated) is None, mutated
    assert sum(v.rejections.values()) == 1
    assert v.accept(original) is not None  # the verifier still works after hostile input


def test_own_messages_are_dropped_before_the_signature_check_and_not_counted() -> None:
    v = verifier(own_address=KEY.address)
    mine = EnvelopeSigner(KEY, NET).seal("hb", {})
    forged_as_me = forge(body(seq=99), OTHER)  # claims to be from KEY, signed by OTHER
    theirs = EnvelopeSigner(OTHER, NET).seal("hb", {})
    assert v.accept(mine) is None and v.accept(forged_as_me) is None
    assert v.own_dropped == 2 and sum(v.rejections.values()) == 0 and v.accepted == 0
    env = v.accept(theirs)
    assert env is not None and env.sender == OTHER.address and v.accepted == 1
    assert v.accept(b"garbage") is None and v.rejections["malformed"] == 1  # others still checked
