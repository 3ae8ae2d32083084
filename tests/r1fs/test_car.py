"""CARv1 read and written by `r1os.r1fs._car`: round trips, the header's bytes, and every kind of bad
CAR refused with cause `bad_car` (cut short, garbled, a block that lies about its hash, oversized
parts, CIDs R1FS cannot hold, CARv2)."""

from __future__ import annotations

import hashlib

import dag_cbor
import pytest
from multiformats import CID

from r1os.r1fs import CHUNK_SIZE, import_bytes
from r1os.r1fs._car import (
    CARV2_PRAGMA,
    MAX_HEADER,
    PROBE_CID_BYTES,
    BadCar,
    CarReader,
    encode_header,
    encode_section,
    read_car,
)
from r1os.r1fs._dag import MAX_BLOCK_SIZE, RAW, Cid, varint
from tests.r1fs._content import mod251

DATA = mod251(2 * CHUNK_SIZE + 7)


def _file_car(data: bytes = DATA) -> tuple[Cid, dict[Cid, bytes], bytes]:
    blocks: dict[Cid, bytes] = {}
    result = import_bytes(data, lambda c, b: blocks.setdefault(c, bytes(b)) is not None)
    car = encode_header([result.cid.raw]) + b"".join(encode_section(c, b) for c, b in blocks.items())
    return result.cid, blocks, car


def test_header_is_the_dag_cbor_every_car_tool_writes() -> None:
    # {roots: [bafkreihdwd...], version: 1} in canonical dag-cbor (keys by length): the bytes `ipfs dag
    # export` and @ipld/car write for one root, checked by hand from RFC 8949 and the dag-cbor spec.
    empty = Cid.for_block(RAW, b"")
    header = encode_header([empty.raw])
    body = header[1:]
    assert header[0] == len(body) == 58
    assert body[:1] == b"\xa2"  # a map of two
    assert body[1:7] == b"\x65roots" and body[7:9] == b"\x81\xd8"  # a list of one, tag 42
    assert body[9:12] == b"\x2a\x58\x25" and body[12:13] == b"\x00"  # 37 bytes: 0x00 then the CID
    assert body[13:49] == empty.raw and body[49:] == b"\x67version\x01"
    assert dag_cbor.decode(body) == {"roots": [CID.decode(empty.raw)], "version": 1}


def test_round_trip_in_any_pieces() -> None:
    root, blocks, car = _file_car()
    roots, got = read_car(car)
    assert roots == [root] and {b.cid: b.data for b in got} == blocks
    for step in (1, 7, 4096, 300_000):  # fed as an HTTP body or a file arrives: any cut
        reader = CarReader()
        out = []
        for i in range(0, len(car), step):
            out.extend(reader.feed(car[i : i + step]))
        reader.close()
        assert [b.cid for b in out] == [b.cid for b in got] and reader.offset == len(car)


def test_cidv0_sections_are_read_as_dag_pb() -> None:
    root, blocks, _ = _file_car()
    body = blocks[root]
    v0 = b"\x12\x20" + root.digest
    car = encode_header([root.raw]) + varint(len(v0) + len(body)) + v0 + body
    roots, got = read_car(car)
    assert got[0].cid == root


def test_probe_header_names_the_identity_cid() -> None:
    header = encode_header([PROBE_CID_BYTES])
    assert dag_cbor.decode(header[1:]) == {"roots": [CID.decode("bafkqaaa")], "version": 1}


def _refused(car: bytes, needle: str) -> None:
    with pytest.raises(BadCar) as info:
        read_car(car)
    assert info.value.cause == "bad_car" and info.value.status == 400
    assert needle in str(info.value), str(info.value)


def test_bad_cars_are_refused_with_their_reason() -> None:
    root, blocks, car = _file_car()
    header = encode_header([root.raw])
    first = next(iter(blocks))
    section = encode_section(first, blocks[first])
    _refused(b"", "ends before its header")
    _refused(header[:10], "header is cut short")
    _refused(car[:-5], "cut short")
    _refused(header + section[:3], "cut short")
    # a block whose bytes do not match its CID
    tampered = bytearray(section)
    tampered[-1] ^= 1
    _refused(header + bytes(tampered), "does not match its hash")
    # headers: garbage, wrong shape, version 2, CARv2's pragma, too long, too many roots
    _refused(varint(3) + b"\xff\xff\xff", "not dag-cbor")
    one = dag_cbor.encode({"version": 1})
    _refused(varint(len(one)) + one, "not {roots, version}")
    v2 = dag_cbor.encode({"roots": [CID.decode(root.raw)], "version": 2})
    _refused(varint(len(v2)) + v2, "CARv2")
    _refused(CARV2_PRAGMA + b"\x00" * 40, "CARv2")
    _refused(varint(MAX_HEADER + 1) + b"\xa2", "more than")
    many = dag_cbor.encode({"roots": [CID.decode(root.raw)] * 65, "version": 1})
    _refused(varint(len(many)) + many, "roots, more than")
    # sections: empty, longer than any block, a varint that never ends
    _refused(header + b"\x00", "is empty")
    _refused(header + varint(MAX_BLOCK_SIZE + 1000), "more than the largest block")
    _refused(header + b"\xff" * 11, "varint longer than 64 bits")


def test_cids_r1fs_cannot_hold_are_refused() -> None:
    root, blocks, _ = _file_car()
    header = encode_header([root.raw])
    data = b"hello"
    cbor = b"\x01\x71\x12\x20" + hashlib.sha256(data).digest()  # dag-cbor
    _refused(header + varint(len(cbor) + 5) + cbor + data, "codec 0x71")
    blake = b"\x01\x55\xa0\xe4\x02\x20" + b"\x00" * 32  # blake2b-256
    _refused(header + varint(len(blake) + 5) + blake + data, "hash function")
    ident = b"\x01\x55\x00\x05" + data
    _refused(header + varint(len(ident)) + ident, "hash function 0x0")
    v2 = b"\x02\x55\x12\x20" + hashlib.sha256(data).digest()
    _refused(header + varint(len(v2) + 5) + v2 + data, "CID version 2")
    odd_root = dag_cbor.encode({"roots": [CID.decode(b"\x01\x71\x12\x20" + b"\x00" * 32)], "version": 1})
    _refused(varint(len(odd_root)) + odd_root, "R1FS holds raw and dag-pb")
