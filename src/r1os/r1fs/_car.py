"""CARv1 (Content Addressable aRchive), read and written as a stream: the format IPFS tools use to move
a DAG's blocks in one file or HTTP body (https://ipld.io/specs/transport/car/carv1/).

    car     = varint(len(header)) | header | section*
    header  = dag-cbor {"roots": [CID, ...], "version": 1}
    section = varint(len(cid) + len(block)) | cid (binary) | block

The header is encoded and decoded with the `dag-cbor` package (strict: canonical dag-cbor only, CIDs as
tag 42); the rest is varints and bytes. `CarReader` is a push parser: feed it the bytes as they come
(an HTTP body, a file read in pieces) and it hands back each block once it has all of it, its hash
checked against its CID. Nothing but the current section is buffered, and each is bounded, so a
hostile CAR costs at most one block of memory. Every refusal is a `BadCar` (cause `bad_car`) saying
what is wrong and where.

Only what R1FS stores passes: CIDv1 (or v0) with a sha2-256 multihash, codec raw or dag-pb, blocks up
to `MAX_BLOCK_SIZE`. CARv2 (a v1 CAR wrapped with an index) is recognised and refused by name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dag_cbor
from multiformats import CID

from r1os.r1fs._dag import DAG_PB, MAX_BLOCK_SIZE, RAW, SHA2_256, Cid, varint
from r1os.r1fs._errors import R1fsError

#: Longest CAR header read (cause `bad_car`): a header naming one root is ~60 bytes.
MAX_HEADER = 4096
#: Most roots a CAR header may name (cause `bad_car`).
MAX_ROOTS = 64
#: Longest binary CID in a section: v1, a 2-byte codec, sha2-256 (room to spare for odd varints).
MAX_SECTION_CID = 64
#: Largest section: a CID and the largest block R1FS holds.
MAX_SECTION = MAX_SECTION_CID + MAX_BLOCK_SIZE

#: The empty identity CID `bafkqaaa` (v1, raw, identity multihash of nothing): gateways answer it as a
#: probe (Trustless Gateway spec, Dedicated Probe Paths). R1FS stores no identity blocks.
PROBE_CID = "bafkqaaa"
PROBE_CID_BYTES = bytes([0x01, RAW, 0x00, 0x00])

#: The first bytes of every CARv2 file (its pragma: a v1-style header saying version 2).
CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")

_CODECS = {RAW: "raw", DAG_PB: "dag-pb"}


class BadCar(R1fsError):
    """A CAR is malformed, truncated, too big in a part, or holds blocks R1FS cannot store."""

    cause = "bad_car"
    status = 400
    hint = (
        "a CARv1 of raw and dag-pb blocks with sha2-256 CIDs (as `ipfs dag export` or `ipfs-car pack` write)"
    )


# -- writing ----------------------------------------------------------------------------------


def encode_header(roots: list[bytes]) -> bytes:
    """The CAR's header, length prefix included; `roots` are binary CIDs."""
    body: bytes = dag_cbor.encode({"roots": [CID.decode(r) for r in roots], "version": 1})
    return varint(len(body)) + body


def encode_section(cid: Cid, block: bytes | memoryview) -> bytes:
    """One block's section: its length prefix, binary CID and bytes (one copy, for one socket write)."""
    raw = cid.raw
    return varint(len(raw) + len(block)) + raw + bytes(block)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CarBlock:
    cid: Cid
    data: bytes


def _varint_at(buf: bytearray, pos: int, what: str) -> tuple[int, int] | None:
    """A varint at `pos`: (value, next position), None when `buf` ends inside it."""
    result = shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise BadCar(f"{what}: a varint longer than 64 bits")
    return None


def parse_section_cid(raw: bytes, at: int) -> tuple[Cid, int]:
    """The CID at the start of a section's bytes: (cid, its length). Refuses what R1FS cannot hold."""
    if raw[:2] == b"\x12\x20":  # CIDv0: a bare sha2-256 multihash, always dag-pb
        if len(raw) < 34:
            raise BadCar(f"section at byte {at}: CIDv0 cut short")
        return Cid(DAG_PB, bytes(raw[2:34])), 34
    buf = bytearray(raw[:MAX_SECTION_CID])
    pos = 0
    fields = []
    for what in ("CID version", "codec", "hash function", "digest length"):
        got = _varint_at(buf, pos, f"section at byte {at}")
        if got is None:
            raise BadCar(f"section at byte {at}: its CID is cut short ({what})")
        value, pos = got
        fields.append(value)
    version, codec, hashfn, length = fields
    if version != 1:
        raise BadCar(f"section at byte {at}: CID version {version}")
    if hashfn != SHA2_256 or length != 32:
        raise BadCar(
            f"section at byte {at}: hash function 0x{hashfn:x} ({length} bytes); R1FS holds sha2-256 blocks"
        )
    if codec not in _CODECS:
        raise BadCar(f"section at byte {at}: codec 0x{codec:x}; R1FS holds raw and dag-pb blocks")
    if pos + 32 > len(raw):
        raise BadCar(f"section at byte {at}: its CID is cut short (digest)")
    return Cid(codec, bytes(raw[pos : pos + 32])), pos + 32


def decode_header(body: bytes) -> list[Cid]:
    """The roots of a CARv1 header's dag-cbor body (without its length prefix)."""
    if len(body) + 1 == len(CARV2_PRAGMA) and CARV2_PRAGMA[1:] == body:
        raise BadCar(
            "this is a CARv2; R1FS reads CARv1", hint="convert it: `car convert` / `ipfs dag export` give v1"
        )
    try:
        header = dag_cbor.decode(body)
    except Exception as exc:  # the decoder raises several kinds of errors for garbage
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BadCar(f"the CAR header is not dag-cbor: {first}") from None
    if not isinstance(header, dict) or set(header) != {"roots", "version"}:
        raise BadCar("the CAR header is not {roots, version}")
    if header["version"] == 2:
        raise BadCar("this is a CARv2; R1FS reads CARv1", hint="convert it: `ipfs dag export` gives v1")
    if header["version"] != 1:
        raise BadCar(f"CAR version {header['version']!r}; R1FS reads version 1")
    listed = header["roots"]
    if not isinstance(listed, list) or not all(isinstance(r, CID) for r in listed):
        raise BadCar("the CAR header's roots are not a list of CIDs")
    roots = [r for r in listed if isinstance(r, CID)]
    if len(roots) > MAX_ROOTS:
        raise BadCar(f"the CAR header names {len(roots)} roots, more than {MAX_ROOTS}")
    out = []
    for r in roots:
        if r.hashfun.code != SHA2_256 or r.codec.code not in _CODECS:
            raise BadCar(
                f"root {r} is a {r.codec.name} CID hashed with {r.hashfun.name}; "
                "R1FS holds raw and dag-pb CIDs with sha2-256"
            )
        out.append(Cid(r.codec.code, bytes(r.raw_digest)))
    return out


class CarReader:
    """A streaming CARv1 parser: `feed` bytes as they arrive, get back the blocks completed by them
    (each verified against its CID); `close` at the end refuses a CAR cut short. `roots` is known once
    the header is in. `offset` counts the bytes consumed (for error messages and limits)."""

    def __init__(self, *, max_block: int = MAX_BLOCK_SIZE) -> None:
        self.roots: list[Cid] | None = None
        self.blocks = 0
        self.offset = 0  # bytes of the CAR consumed so far
        self._max_section = MAX_SECTION_CID + max_block
        self._max_block = max_block
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[CarBlock]:
        self._buf += data
        out: list[CarBlock] = []
        while True:
            got = _varint_at(self._buf, 0, f"byte {self.offset}")
            if got is None:
                if len(self._buf) > 10:
                    raise BadCar(f"byte {self.offset}: garbled length prefix")
                return out
            length, start = got
            if self.roots is None:
                if length > MAX_HEADER:
                    raise BadCar(f"the CAR header says it is {length} bytes, more than {MAX_HEADER}")
                if length == 0:
                    raise BadCar("the CAR header is empty")
            elif length > self._max_section:
                raise BadCar(
                    f"section at byte {self.offset} is {length} bytes: more than the largest block R1FS "
                    f"holds ({self._max_block} bytes)",
                    hint="R1FS stores files in blocks of up to 256 KiB, as `ipfs add` cuts them",
                )
            elif length == 0:
                raise BadCar(f"section at byte {self.offset} is empty")
            if len(self._buf) < start + length:
                return out
            body = bytes(self._buf[start : start + length])
            del self._buf[: start + length]
            at = self.offset
            self.offset += start + length
            if self.roots is None:
                self.roots = decode_header(body)
                continue
            cid, n = parse_section_cid(body, at)
            block = body[n:]
            if len(block) > self._max_block:
                raise BadCar(f"block {cid} is {len(block)} bytes, more than the largest R1FS holds")
            if hashlib.sha256(block).digest() != cid.digest:
                raise BadCar(f"block {cid} (section at byte {at}) does not match its hash")
            self.blocks += 1
            out.append(CarBlock(cid, block))

    def close(self) -> None:
        """The CAR ended: refuse it if it stopped inside the header or a section."""
        if self.roots is None:
            raise BadCar(
                "the CAR ends before its header"
                if not self.offset and not self._buf
                else "the CAR header is cut short"
            )
        if self._buf:
            raise BadCar(
                f"the CAR is cut short: {len(self._buf)} bytes of an unfinished section at byte {self.offset}"
            )


def read_car(data: bytes) -> tuple[list[Cid], list[CarBlock]]:
    """A whole CAR in memory (tests, small files): its roots and blocks."""
    reader = CarReader()
    blocks = reader.feed(data)
    reader.close()
    assert reader.roots is not None
    return reader.roots, blocks
