"""Private files: AES-256-GCM over the file before it is chunked, in segments so it streams.

Format (all integers big-endian):

    header   = "R1FE" | version (1 byte, = 1) | segment size S (4 bytes) | nonce prefix (8 random bytes)
    segments = AES-256-GCM(key, nonce = prefix | index (4 bytes), plaintext[i*S : (i+1)*S],
                           aad = header | last (1 byte: 1 on the final segment, else 0))

Every segment but the last holds exactly S plaintext bytes (S + 16 bytes of ciphertext with its tag); the
last holds 0..S bytes and is marked in its AAD, so dropping, reordering or truncating segments fails
authentication. The key is 32 random bytes per file; the owner keeps it, or shares it encrypted to a
recipient's node key with ECIES (`wrap_key` / `unwrap_key`). The CID is that of the encrypted bytes, so
storing nodes see only ciphertext.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

from r1os.errors import DecryptionError
from r1os.identity import NodeKey, encrypt_to

MAGIC = b"R1FE"
VERSION = 1
SEGMENT = 1024 * 1024
HEADER_SIZE = 4 + 1 + 4 + 8
TAG = 16

# cryptography is imported by the classes that use it: ~8 MiB a node does not load until it encrypts or
# decrypts a file.


def new_key() -> bytes:
    return os.urandom(32)


def _header(segment: int, prefix: bytes) -> bytes:
    return MAGIC + bytes([VERSION]) + struct.pack(">I", segment) + prefix


def _nonce(prefix: bytes, index: int) -> bytes:
    if index >= 1 << 32:
        raise DecryptionError("file too large for one key (2^32 segments)")
    return prefix + struct.pack(">I", index)


class Encryptor:
    """Push plaintext pieces in, get ciphertext pieces out; call `finish` once at the end."""

    def __init__(self, key: bytes, segment: int = SEGMENT) -> None:
        if len(key) != 32:
            raise ValueError("an R1FS file key is 32 bytes")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._prefix = os.urandom(8)
        self._header = _header(segment, self._prefix)
        self._segment = segment
        self._buf = bytearray()
        self._index = 0
        self._started = False

    def _seal(self, plain: bytes, last: bool) -> bytes:
        out = self._aead.encrypt(
            _nonce(self._prefix, self._index), plain, self._header + (b"\x01" if last else b"\x00")
        )
        self._index += 1
        return out

    def update(self, data: bytes) -> bytes:
        out = []
        if not self._started:
            out.append(self._header)
            self._started = True
        self._buf += data
        # Keep at least one byte back: the final segment must be sealed as the last one.
        while len(self._buf) > self._segment:
            out.append(self._seal(bytes(self._buf[: self._segment]), False))
            del self._buf[: self._segment]
        return b"".join(out)

    def finish(self) -> bytes:
        head = b"" if self._started else self._header
        self._started = True
        tail = self._seal(bytes(self._buf), True)
        self._buf.clear()
        return head + tail


class Decryptor:
    """Push ciphertext pieces in, get verified plaintext out; `finish` checks the file was whole."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise DecryptionError("an R1FS file key is 32 bytes")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._buf = bytearray()
        self._header: bytes | None = None
        self._prefix = b""
        self._segment = 0
        self._index = 0

    def _open(self, sealed: bytes, last: bool) -> bytes:
        assert self._header is not None
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._aead.decrypt(
                _nonce(self._prefix, self._index), sealed, self._header + (b"\x01" if last else b"\x00")
            )
        except InvalidTag:
            raise DecryptionError(
                f"segment {self._index} failed authentication: wrong key, or the file was altered"
            ) from None
        self._index += 1
        return plain

    def update(self, data: bytes) -> bytes:
        self._buf += data
        if self._header is None:
            if len(self._buf) < HEADER_SIZE:
                return b""
            header = bytes(self._buf[:HEADER_SIZE])
            if header[:4] != MAGIC or header[4] != VERSION:
                raise DecryptionError("not an R1FS encrypted file (bad header)")
            (self._segment,) = struct.unpack(">I", header[5:9])
            if not 0 < self._segment <= 64 * 1024 * 1024:
                raise DecryptionError("bad segment size in header")
            self._header, self._prefix = header, header[9:17]
            del self._buf[:HEADER_SIZE]
        out = []
        sealed = self._segment + TAG
        while len(self._buf) > sealed:
            out.append(self._open(bytes(self._buf[:sealed]), False))
            del self._buf[:sealed]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._header is None:
            raise DecryptionError("encrypted file is truncated (no header)")
        if len(self._buf) < TAG:
            raise DecryptionError("encrypted file is truncated")
        out = self._open(bytes(self._buf), True)
        self._buf.clear()
        return out


def encrypt_bytes(key: bytes, data: bytes, segment: int = SEGMENT) -> bytes:
    enc = Encryptor(key, segment)
    return enc.update(data) + enc.finish()


def decrypt_bytes(key: bytes, data: bytes) -> bytes:
    dec = Decryptor(key)
    return dec.update(data) + dec.finish()


def encrypt_iter(key: bytes, pieces: Iterable[bytes], segment: int = SEGMENT) -> Iterator[bytes]:
    enc = Encryptor(key, segment)
    for piece in pieces:
        out = enc.update(piece)
        if out:
            yield out
    yield enc.finish()


async def decrypt_aiter(key: bytes, pieces: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    dec = Decryptor(key)
    async for piece in pieces:
        out = dec.update(piece)
        if out:
            yield out
    yield dec.finish()


def wrap_key(key: bytes, recipient_public_key: bytes) -> bytes:
    """The file key encrypted to a node's public key (ECIES), for sharing a private file."""
    return encrypt_to(recipient_public_key, key)


def unwrap_key(node_key: NodeKey, blob: bytes) -> bytes:
    key = node_key.decrypt(blob)
    if len(key) != 32:
        raise DecryptionError("wrapped blob does not hold an R1FS file key")
    return key
