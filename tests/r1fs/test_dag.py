"""DAG shapes and the dag-pb/UnixFS encoding, read back by the decoder and checked against the specs."""

from __future__ import annotations

import hashlib

import pytest

from r1os.r1fs import (
    CHUNK_SIZE,
    MAX_LINKS,
    BadCid,
    CorruptBlock,
    R1fsError,
    import_bytes,
    parse_cid,
    read_file_node,
)
from r1os.r1fs._dag import DAG_PB, RAW, decode_pbnode, decode_unixfs
from tests.r1fs._content import mod251


def collect(data: bytes) -> tuple[object, dict[object, bytes]]:
    blocks: dict[object, bytes] = {}
    result = import_bytes(data, lambda cid, block: blocks.__setitem__(cid, block))
    return result, blocks


def depth(root: object, blocks: dict[object, bytes]) -> int:
    node = read_file_node(root, blocks[root])  # type: ignore[arg-type]
    return 0 if not node.children else 1 + depth(node.children[0][0], blocks)


def test_single_chunk_is_a_raw_leaf() -> None:
    result, blocks = collect(b"x" * CHUNK_SIZE)
    assert result.cid.codec == RAW and len(blocks) == 1 and str(result.cid).startswith("bafkrei")
    assert result.cid.digest == hashlib.sha256(b"x" * CHUNK_SIZE).digest()


def test_two_chunks_make_one_node_with_unixfs_sizes() -> None:
    data = mod251(CHUNK_SIZE + 1)
    result, blocks = collect(data)
    assert result.cid.codec == DAG_PB and str(result.cid).startswith("bafybei")
    root = blocks[result.cid]
    pb = decode_pbnode(root)
    assert [t for _, _, t in pb.links] == [CHUNK_SIZE, 1] and all(n == "" for _, n, _ in pb.links)
    fs = decode_unixfs(pb.data or b"")
    assert (fs.type, fs.filesize, fs.blocksizes, fs.data) == (2, CHUNK_SIZE + 1, [CHUNK_SIZE, 1], b"")
    # Links are encoded before Data (field 2 first), as kubo writes PBNode.
    assert root[0] == 0x12 and root[-len(pb.data or b"") - 2] == 0x0A
    assert result.dag_size == len(root) + CHUNK_SIZE + 1


@pytest.mark.parametrize(
    ("chunks", "levels", "root_links"),
    [(174, 1, 174), (175, 2, 2), (174 * 2, 2, 2), (174 * 2 + 1, 2, 3)],
)
def test_balanced_layout(chunks: int, levels: int, root_links: int) -> None:
    # Every chunk differs (mod 251 stream), so no two leaves dedupe.
    result, blocks = collect(mod251(chunks * CHUNK_SIZE))
    assert depth(result.cid, blocks) == levels
    root = read_file_node(result.cid, blocks[result.cid])
    assert len(root.children) == root_links <= MAX_LINKS
    assert root.filesize == chunks * CHUNK_SIZE
    first = read_file_node(root.children[0][0], blocks[root.children[0][0]])
    if levels == 2:
        assert len(first.children) == MAX_LINKS  # left subtrees are full, only the last is short


@pytest.mark.parametrize(
    "text",
    ["", "hello", "Qm" + "1" * 44, "bafy" + "a" * 10, "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93b"],
)
def test_malformed_or_foreign_cids_are_refused(text: str) -> None:
    with pytest.raises(BadCid):
        parse_cid(text)


def test_cids_of_other_codecs_are_refused() -> None:
    # A dag-cbor CID (bafyrei...) is a valid CID but not a UnixFS file.
    with pytest.raises(BadCid, match="codec"):
        parse_cid("bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")


def test_cidv0_is_read_as_its_v1_form() -> None:
    v0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"  # kubo's CIDv0 of an empty UnixFS dir
    assert str(parse_cid(v0)).startswith("bafybei")


@pytest.mark.parametrize("block", [b"\xff", b"\x12\x05\x0a\x03abc", b"\x0a\x05ab", b"\x1a\x00"])
def test_garbage_dag_pb_is_refused(block: bytes) -> None:
    cid = parse_cid("bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi")
    with pytest.raises(CorruptBlock):
        read_file_node(cid, block)


def test_hostile_cids_and_protobuf_claims_are_refused_cheaply() -> None:
    """Lengths a CID or a block declares are checked against the bytes there, never used to allocate."""
    import base64

    from r1os.r1fs._dag import MAX_CID_LENGTH, _field_bytes, varint

    huge_digest = b"\x01\x55\x12" + varint(2**62) + b"x" * 32  # a multihash that claims 2^62 bytes
    wrong_length = b"\x01\x55\x12\x20" + b"x" * 31  # says 32, has 31
    for raw in (huge_digest, wrong_length, b"\x01\x55\x12\x20" + b"x" * 200):
        with pytest.raises(BadCid):
            parse_cid(raw)
        with pytest.raises(BadCid):
            parse_cid("b" + base64.b32encode(raw).decode().lower().rstrip("="))
    with pytest.raises(BadCid, match="more than any CID"):
        parse_cid("b" + "a" * (MAX_CID_LENGTH + 1))
    cid = parse_cid("bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi")
    long_link = _field_bytes(2, _field_bytes(1, b"\x01\x55\x12\x20" + b"y" * 10_000))
    endless_field = b"\x12" + varint(2**63 - 1) + b"zz"  # a field that claims 2^63 bytes
    for block in (long_link + _field_bytes(1, b"\x08\x02"), endless_field):
        with pytest.raises(CorruptBlock):
            read_file_node(cid, block)


def test_a_node_is_checked_against_itself() -> None:
    from r1os.r1fs import Cid
    from r1os.r1fs._dag import MAX_BLOCK_SIZE, Link, _field_bytes, encode_file_node, encode_unixfs_file

    leaf = Cid.for_block(RAW, b"x")
    cid = parse_cid("bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi")
    # A raw leaf said to hold more than any block can (the fetcher would size a buffer by it).
    with pytest.raises(CorruptBlock, match="more than a block can"):
        read_file_node(cid, encode_file_node([Link(leaf, 1, MAX_BLOCK_SIZE + 1)]))
    # A file size that its parts do not add up to.
    link = _field_bytes(2, _field_bytes(1, leaf.raw) + _field_bytes(2, b"") + b"\x18\x01")
    lying = link + _field_bytes(1, encode_unixfs_file(10**12, [1]))
    with pytest.raises(CorruptBlock, match="parts hold"):
        read_file_node(cid, lying)
    # More links than a node may have.
    with pytest.raises(R1fsError, match="links"):
        read_file_node(cid, encode_file_node([Link(leaf, 1, 1)] * (MAX_LINKS + 1)))
    # A block bigger than any valid one.
    with pytest.raises(CorruptBlock, match="more than any valid block"):
        read_file_node(Cid.for_block(RAW, b""), b"r" * (MAX_BLOCK_SIZE + 1))
