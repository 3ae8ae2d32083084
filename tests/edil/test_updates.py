"""Signed updates: a good one passes, and each kind of bad one is refused with its cause and one log line."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from typing import Any

import numpy as np
import pytest

from r1os.edil import _updates
from r1os.edil._updates import (
    MAGIC,
    SignedUpdate,
    UpdateHeader,
    UpdateRefused,
    check_update,
    pack_chunks,
    pack_vector,
    parse_signed_update,
    sign_update,
    unpack_blob,
)
from r1os.identity import NodeKey

ALICE = NodeKey(hashlib.sha256(b"alice").digest())
BOB = NodeKey(hashlib.sha256(b"bob").digest())
MALLORY = NodeKey(hashlib.sha256(b"mallory").digest())
FP = "ab" * 32
CHUNKS = [os.urandom(300), os.urandom(500), os.urandom(70)]


def _ckks(key: NodeKey = ALICE, **over: Any) -> tuple[SignedUpdate, bytes]:
    blob = over.pop("blob", pack_chunks(CHUNKS))
    args: dict[str, Any] = dict(
        network="devnet",
        job="job-1",
        round=2,
        privacy="ckks",
        blob=blob,
        length=5000,
        chunks=3,
        samples=120,
        context_fingerprint=FP,
    )
    args.update(over)
    return sign_update(key, **args), blob


def _check(signed: Any, blob: bytes, **over: Any) -> UpdateHeader:
    args: dict[str, Any] = dict(
        network="devnet",
        job="job-1",
        round=2,
        participants={ALICE.address, BOB.ai_address},
        context_fingerprint=FP,
        length=5000,
        seen=set(),
        privacy="ckks",
        chunks=3,
    )
    args.update(over)
    return check_update(signed, blob, **args)


def _refused(cause: str, signed: Any, blob: bytes, caplog: pytest.LogCaptureFixture, **over: Any) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="r1os.edil"), pytest.raises(UpdateRefused) as info:
        _check(signed, blob, **over)
    assert info.value.cause == cause, str(info.value)
    lines = [r.getMessage() for r in caplog.records if r.name == "r1os.edil"]
    assert len(lines) == 1 and f"cause={cause}" in lines[0], lines


def test_a_ckks_update_round_trips() -> None:
    signed, blob = _ckks()
    again = parse_signed_update(signed.to_json())
    header = _check(again, blob)
    assert header == signed.header and header.participant == ALICE.address and header.samples == 120
    assert unpack_blob(blob) == CHUNKS
    # Addresses in any case or as 0xai_ count; BOB is listed by its 0xai_ form.
    signed_b, blob_b = _ckks(BOB)
    assert _check(signed_b.model_dump(mode="json"), blob_b).participant == BOB.address


@pytest.mark.parametrize(
    ("privacy", "dtype"), [("plain", "float64"), ("plain", "float32"), ("masked", "float64")]
)
def test_a_vector_update_round_trips(privacy: str, dtype: Any) -> None:
    vec = np.random.default_rng(0).normal(0, 1, 650)
    blob = pack_vector(vec, dtype)
    signed = sign_update(
        ALICE,
        network="devnet",
        job="job-1",
        round=0,
        privacy=privacy,
        blob=blob,
        length=650,
        chunks=1,
        samples=9,
    )
    header = _check(signed, blob, round=0, length=650, privacy=privacy, context_fingerprint=None)
    assert header.privacy == privacy
    out = unpack_blob(blob)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert np.allclose(out, vec, atol=1e-6 if dtype == "float32" else 0)
    assert len(blob) == 11 + (8 if dtype == "float64" else 4) * 650


def test_bad_signatures_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    signed, blob = _ckks()
    # Mallory signs a header naming Alice.
    forged = SignedUpdate(
        header=signed.header, signature="0x" + MALLORY.sign_digest(signed.header.digest()).hex()
    )
    _refused("bad_signature", forged, blob, caplog)
    # A field changed after signing.
    changed = SignedUpdate(
        header=signed.header.model_copy(update={"samples": 10_000}), signature=signed.signature
    )
    _refused("bad_signature", changed, blob, caplog)
    # A signature that does not recover.
    _refused("bad_signature", SignedUpdate(header=signed.header, signature="0x" + "00" * 65), blob, caplog)


def test_other_jobs_non_participants_and_other_rounds_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    signed, blob = _ckks()
    _refused("wrong_job", signed, blob, caplog, job="job-2")
    _refused("wrong_job", signed, blob, caplog, network="mainnet")
    m_signed, m_blob = _ckks(MALLORY)
    _refused("not_participant", m_signed, m_blob, caplog)
    _refused("stale_round", signed, blob, caplog, round=3)
    _refused("stale_round", signed, blob, caplog, round=1)
    assert "future" in str(pytest.raises(UpdateRefused, _check, signed, blob, round=1).value)


def test_a_participant_counted_this_round_is_a_replay(caplog: pytest.LogCaptureFixture) -> None:
    signed, blob = _ckks()
    _refused("replayed", signed, blob, caplog, seen={ALICE.address.lower()})
    # A second, freshly signed update of the same participant too.
    again, blob2 = _ckks(samples=7)
    _refused("replayed", again, blob2, caplog, seen={ALICE.address})


def test_another_context_or_privacy_is_wrong_context(caplog: pytest.LogCaptureFixture) -> None:
    signed, blob = _ckks()
    _refused("wrong_context", signed, blob, caplog, context_fingerprint="cd" * 32)
    _refused("wrong_context", signed, blob, caplog, privacy="plain")
    plain_blob = pack_vector(np.zeros(5000))
    plain = sign_update(
        ALICE,
        network="devnet",
        job="job-1",
        round=2,
        privacy="plain",
        blob=plain_blob,
        length=5000,
        chunks=1,
        samples=3,
    )
    _refused("wrong_context", plain, plain_blob, caplog)


def test_sizes_that_do_not_match_are_wrong_size(caplog: pytest.LogCaptureFixture) -> None:
    signed, blob = _ckks()
    _refused("wrong_size", signed, blob, caplog, length=4999)
    _refused("wrong_size", signed, blob, caplog, chunks=4)
    _refused("wrong_size", signed, blob + b"x", caplog)  # not the blob the header signs
    _refused("wrong_size", signed, pack_chunks(CHUNKS[:2]), caplog)
    # The header claims 3 ciphertexts, the blob (correctly signed) holds 2.
    two, two_blob = _ckks(blob=pack_chunks(CHUNKS[:2]))
    _refused("wrong_size", two, two_blob, caplog)
    # A plain vector shorter than the model.
    short = pack_vector(np.zeros(4000))
    s = sign_update(
        ALICE,
        network="devnet",
        job="job-1",
        round=2,
        privacy="plain",
        blob=short,
        length=5000,
        chunks=1,
        samples=3,
    )
    _refused("wrong_size", s, short, caplog, privacy="plain", context_fingerprint=None)


def test_malformed_headers_and_blobs_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    signed, blob = _ckks()
    _refused("malformed", b"{not json", blob, caplog)
    _refused("malformed", {"header": {}, "signature": "0x"}, blob, caplog)
    _refused("malformed", b"x" * (_updates.MAX_HEADER_BYTES + 1), blob, caplog)
    # Well signed, but the blob is garbage.
    junk = os.urandom(2000)
    s, _ = _ckks(blob=junk)
    _refused("malformed", s, junk, caplog)
    # A ckks header over a vector blob, and a masked update in float32.
    vec_blob = pack_vector(np.zeros(5000))
    s, _ = _ckks(blob=vec_blob)
    _refused("malformed", s, vec_blob, caplog)
    f32 = pack_vector(np.zeros(5000), "float32")
    masked = sign_update(
        ALICE,
        network="devnet",
        job="job-1",
        round=2,
        privacy="masked",
        blob=f32,
        length=5000,
        chunks=1,
        samples=3,
    )
    _refused("malformed", masked, f32, caplog, privacy="masked", context_fingerprint=None)


def test_headers_that_contradict_themselves_do_not_build() -> None:
    with pytest.raises(UpdateRefused):
        _ckks(context_fingerprint=None)
    with pytest.raises(UpdateRefused):
        _ckks(privacy="plain")  # a plain update names no context
    with pytest.raises(UpdateRefused):
        _ckks(samples=-1)


def _blob_cause(blob: bytes) -> str:
    with pytest.raises(UpdateRefused) as info:
        unpack_blob(blob)
    return info.value.cause


def test_hostile_blobs_are_refused_before_they_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    good = pack_chunks(CHUNKS)
    head = struct.Struct("<6sBI")
    cases = {
        "empty": b"",
        "short": good[:5],
        "magic": b"XXXXXX" + good[6:],
        "kind": head.pack(MAGIC, 9, 1) + b"\x00" * 8,
        "truncated": good[:-1],
        "cut in a prefix": good[: head.size + 2],
        "trailing": good + b"\x00",
        "oversized prefix": head.pack(MAGIC, 0, 1) + struct.pack("<I", 0xFFFFFFFF) + b"abc",
        "prefix past the end": head.pack(MAGIC, 0, 1) + struct.pack("<I", 1000) + b"abc",
        "zero-length chunk": head.pack(MAGIC, 0, 1) + struct.pack("<I", 0),
        "vector short": head.pack(MAGIC, 1, 10) + b"\x00" * 79,
        "vector not finite": head.pack(MAGIC, 1, 1) + struct.pack("<d", float("nan")),
    }
    for name, blob in cases.items():
        assert _blob_cause(blob) == "malformed", name
    for blob in (
        head.pack(MAGIC, 0, 0),
        head.pack(MAGIC, 0, 100_000),
        head.pack(MAGIC, 1, 0),
        head.pack(MAGIC, 1, 2**31),
    ):
        assert _blob_cause(blob) == "wrong_size"
    rng = np.random.default_rng(5)
    for _ in range(200):
        assert _blob_cause(rng.bytes(int(rng.integers(0, 400)))) in {"malformed", "wrong_size"}
    monkeypatch.setattr(_updates, "MAX_BLOB_BYTES", 100)
    assert _blob_cause(good) == "wrong_size"


def test_packing_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(UpdateRefused):
        pack_chunks([])
    with pytest.raises(UpdateRefused):
        pack_chunks([b""])
    with pytest.raises(UpdateRefused):
        pack_vector(np.array([1.0, np.inf]))
    with pytest.raises(UpdateRefused):
        pack_vector(np.zeros((3, 3)))
