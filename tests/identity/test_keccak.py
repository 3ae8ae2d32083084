"""keccak-256 as r1os computes it (pycryptodome's compiled Keccak called directly), checked against eth_hash,
and the fallback to eth_hash where the direct call is not available."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak as reference
from hypothesis import given
from hypothesis import strategies as st

from r1os.identity import _keccak, keccak256


@given(st.binary(max_size=600))
def test_matches_eth_hash(data: bytes) -> None:
    assert keccak256(data) == reference(data)


def test_known_digests_and_other_byte_types() -> None:
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    # 136 bytes is keccak-256's rate: one block exactly, then the padding in a block of its own
    for size in (135, 136, 137, 272, 1 << 20):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert keccak256(data) == reference(data)
    assert keccak256(bytearray(b"abc")) == keccak256(memoryview(b"abc")) == reference(b"abc")  # type: ignore[arg-type]


def test_the_direct_call_is_used_here() -> None:
    # pycryptodome is a dependency: the direct call must be the one in use, or the memory it saves is not
    assert _keccak.keccak256.__module__ == "r1os.identity._keccak"


def test_falls_back_to_eth_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise OSError("no compiled Keccak here")

    monkeypatch.setattr(_keccak, "_direct", missing)
    chosen = _keccak._choose()
    assert chosen(b"abc") == reference(b"abc")
    assert chosen.__module__ != "r1os.identity._keccak"
