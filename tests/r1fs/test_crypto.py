"""Private files: round trip, tampering, truncation and key sharing."""

from __future__ import annotations

import pytest

from r1os.errors import DecryptionError
from r1os.identity import NodeKey
from r1os.r1fs import Decryptor, Encryptor, decrypt_bytes, encrypt_bytes, new_key, unwrap_key, wrap_key
from r1os.r1fs._crypto import HEADER_SIZE


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5000])
def test_round_trip_at_segment_edges(size: int) -> None:
    key, data = new_key(), bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    blob = encrypt_bytes(key, data, segment=1000)
    assert data not in blob or size < 100
    assert decrypt_bytes(key, blob) == data


def test_streaming_in_odd_pieces_matches() -> None:
    key, data = new_key(), b"abcdefghij" * 1000
    enc = Encryptor(key, segment=333)
    blob = b"".join(enc.update(data[i : i + 77]) for i in range(0, len(data), 77)) + enc.finish()
    dec = Decryptor(key)
    out = b"".join(dec.update(blob[i : i + 101]) for i in range(0, len(blob), 101)) + dec.finish()
    assert out == data


@pytest.mark.parametrize("where", [0, HEADER_SIZE, HEADER_SIZE + 500, -1])
def test_any_flipped_byte_fails(where: int) -> None:
    key = new_key()
    blob = bytearray(encrypt_bytes(key, b"x" * 3000, segment=1000))
    blob[where] ^= 1
    with pytest.raises(DecryptionError):
        decrypt_bytes(key, bytes(blob))


def test_truncation_at_a_segment_boundary_fails() -> None:
    key = new_key()
    blob = encrypt_bytes(key, b"x" * 3000, segment=1000)
    with pytest.raises(DecryptionError):
        decrypt_bytes(key, blob[: HEADER_SIZE + 2 * 1016])


def test_wrong_key_fails() -> None:
    blob = encrypt_bytes(new_key(), b"secret")
    with pytest.raises(DecryptionError):
        decrypt_bytes(new_key(), blob)


def test_key_shared_with_a_node() -> None:
    node, other = NodeKey.generate(), NodeKey.generate()
    key = new_key()
    blob = wrap_key(key, node.public_key)
    assert unwrap_key(node, blob) == key
    with pytest.raises(DecryptionError):
        unwrap_key(other, blob)
