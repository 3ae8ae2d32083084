"""CIDs and the dag-pb/UnixFS encoding kubo uses for files, written from the specs.

A file is cut into 256 KiB chunks stored as raw blocks (codec 0x55). When there is more than one chunk,
dag-pb nodes (codec 0x70) link them in a balanced tree of at most 174 links per node; each node's Data is
a UnixFS `File` record with the file size under it and the size of each child. The protobuf messages are
tiny, so they are encoded here by hand, byte for byte as kubo does (links before Data in a PBNode, an empty
link Name always present):

    PBNode  { repeated PBLink Links = 2; optional bytes Data = 1; }
    PBLink  { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    UnixFS  { Type Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
              repeated uint64 blocksizes = 4; ... }      (Type File = 2, Raw = 0)
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass, field

from multiformats import CID

from r1os.r1fs._errors import BadCid, CorruptBlock, DagRefused

CHUNK_SIZE = 262144
MAX_LINKS = 174

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12

UNIXFS_RAW = 0
UNIXFS_DIRECTORY = 1
UNIXFS_FILE = 2
UNIXFS_SYMLINK = 4
UNIXFS_HAMT_SHARD = 5

#: What a block holds besides a chunk: a dag-pb leaf wraps its 256 KiB in ~20 bytes of protobuf, a node
#: of 174 links is ~9 KiB. Nothing a valid file is made of is bigger than a chunk and this.
BLOCK_OVERHEAD = 1024
#: Largest block accepted from a peer, an import or the store (cause `corrupt_block`); a peer's body is
#: never read past it. R1FS's own leaves are 256 KiB, but a folder just under kubo's sharding threshold
#: is a single block of up to ~390 KB (256 KiB of names and CIDs plus ~18 bytes of protobuf per link),
#: and other IPFS importers write 1 MiB leaves (kubo's unixfs-v1-2025 profile): 1 MiB and its wrapping.
MAX_BLOCK_SIZE = 1024 * 1024 + BLOCK_OVERHEAD
#: Deepest a file's tree may be (cause `dag_limit`): 174 links per level give 4 levels for 1.3 TiB of
#: 256 KiB leaves; the bound keeps every walk (and the exporter's recursion) short.
MAX_DEPTH = 16
#: Deepest a folder's whole DAG may be (cause `dag_limit`): its nested folders (at most 64,
#: `TreeLimits`), their HAMT levels and a file's tree at the bottom.
MAX_TREE_DEPTH = 128
#: Block references a file may make per byte it holds (cause `dag_limit`): at most one per this many
#: bytes, plus REF_SLACK. A valid file has one per 256 KiB; a tree whose links point at one tiny leaf
#: over and over (a 25 KB DAG "holding" 174^3 copies of a byte) is refused before it is expanded.
MIN_MEAN_LEAF = 1024
REF_SLACK = 64
#: Entries (files and folders) a folder tree may hold (cause `dag_limit`).
MAX_TREE_ENTRIES = 100_000
#: The largest file a DAG may declare unless told otherwise (a node passes its max_upload).
DEFAULT_MAX_FILE = 64 * 1024**3


# -- varints and CIDs ---------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at `pos`; return (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


_RAW_PREFIX = b"\x01" + varint(RAW) + bytes([SHA2_256, 32])
_PB_PREFIX = b"\x01" + varint(DAG_PB) + bytes([SHA2_256, 32])


def cid_bytes(codec: int, digest: bytes) -> bytes:
    """Binary CIDv1 with a sha2-256 multihash."""
    return (_RAW_PREFIX if codec == RAW else _PB_PREFIX) + digest


def cid_str(raw: bytes) -> str:
    """Binary CID to its base32 text form (`bafk...` for raw, `bafy...` for dag-pb): multibase `b`,
    RFC 4648 lower-case without padding (the stdlib codec is ~40x faster than a generic multibase one)."""
    return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def _fast_parse(text: str) -> Cid | None:
    """The common case (a base32 CIDv1 of what R1FS holds) without the generic decoder."""
    if len(text) != 59 or text[0] != "b":
        return None
    body = text[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (ValueError, binascii.Error):
        return None
    if len(raw) == 36 and raw[:4] in (_RAW_PREFIX, _PB_PREFIX) and text == cid_str(raw):
        return Cid(RAW if raw[:4] == _RAW_PREFIX else DAG_PB, raw[4:])
    return None


@dataclass(frozen=True)
class Cid:
    """A parsed CIDv1 with a sha2-256 digest: all that R1FS stores or serves."""

    codec: int
    digest: bytes

    @property
    def raw(self) -> bytes:
        return cid_bytes(self.codec, self.digest)

    @functools.cached_property
    def text(self) -> str:
        return cid_str(self.raw)

    def __str__(self) -> str:
        return self.text

    @classmethod
    def for_block(cls, codec: int, data: bytes) -> Cid:
        return cls(codec, hashlib.sha256(data).digest())


#: Longest CID text (or binary CID) looked at (cause `bad_cid`): a base32 CIDv1 of a sha2-256 block is 59
#: characters, a CIDv0 46; the rest of the bound is room for other bases of the same 36 bytes.
MAX_CID_LENGTH = 100


def parse_cid(text: str | bytes) -> Cid:
    """Parse a CID (text or binary); only what R1FS can hold (v1, raw or dag-pb, sha2-256) passes.

    CIDv0 (`Qm...`) is accepted and read as its dag-pb CIDv1 equivalent.
    """
    if isinstance(text, str):
        fast = _fast_parse(text.strip())
        if fast is not None:
            return fast
    elif len(text) == 36 and text[:4] in (_RAW_PREFIX, _PB_PREFIX):
        return Cid(RAW if text[:4] == _RAW_PREFIX else DAG_PB, bytes(text[4:]))
    if len(text) > MAX_CID_LENGTH:  # never hand the generic decoder a megabyte of "CID"
        raise BadCid(f"not a CID: {len(text)} characters, more than any CID R1FS holds ({MAX_CID_LENGTH})")
    try:
        cid = CID.decode(text.strip() if isinstance(text, str) else text)
    except Exception as exc:  # multiformats raises a variety of errors for garbage input
        raise BadCid(f"not a CID: {str(text)[:80]!r} ({exc})") from None
    if cid.hashfun.code != SHA2_256 or len(cid.raw_digest) != 32:
        raise BadCid(f"unsupported hash function {cid.hashfun.name} in {text!s:.80}")
    if cid.codec.code not in (RAW, DAG_PB):
        raise BadCid(f"unsupported codec {cid.codec.name} in {text!s:.80}")
    return Cid(cid.codec.code, bytes(cid.raw_digest))


def verify_block(cid: Cid, data: bytes | bytearray | memoryview) -> None:
    """Raise `CorruptBlock` unless `data` hashes to `cid`."""
    if hashlib.sha256(data).digest() != cid.digest:
        raise CorruptBlock(f"block {cid} does not match its hash")


# -- protobuf -------------------------------------------------------------------------------------


def _field_bytes(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def _field_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def encode_unixfs_file(filesize: int, blocksizes: list[int]) -> bytes:
    """UnixFS Data of an interior file node: Type=File, filesize, blocksizes; no inline data."""
    parts = [_field_varint(1, UNIXFS_FILE), _field_varint(3, filesize)]
    parts.extend(_field_varint(4, s) for s in blocksizes)
    return b"".join(parts)


@dataclass(frozen=True)
class Link:
    cid: Cid
    tsize: int  # cumulative size of the child's whole DAG (block bytes)
    filesize: int  # file bytes under the child


def encode_file_node(links: list[Link]) -> bytes:
    """A dag-pb PBNode over `links`, as kubo writes it (Links first, empty Name, then Data)."""
    parts = []
    for link in links:
        body = _field_bytes(1, link.cid.raw) + _field_bytes(2, b"") + _field_varint(3, link.tsize)
        parts.append(_field_bytes(2, body))
    data = encode_unixfs_file(sum(x.filesize for x in links), [x.filesize for x in links])
    parts.append(_field_bytes(1, data))
    return b"".join(parts)


@dataclass
class UnixFsData:
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    hash_type: int | None = None  # a HAMT shard's hash function (murmur3-x64-64: 0x22)
    fanout: int | None = None  # a HAMT shard's fan-out


@dataclass
class PbNode:
    links: list[tuple[Cid, str, int]]  # (cid, name, tsize)
    data: bytes | None


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split a protobuf message into (field number, wire type, value) for varint and bytes fields."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = read_varint(buf, pos)
            out.append((num, wire, value))
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            out.append((num, wire, buf[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
    return out


def decode_pbnode(block: bytes) -> PbNode:
    """Decode a dag-pb block; raises `CorruptBlock` on anything the dag-pb spec does not allow."""
    try:
        links: list[tuple[Cid, str, int]] = []
        data: bytes | None = None
        for num, wire, value in _fields(block):
            if num == 2 and wire == 2 and isinstance(value, bytes):
                cid: Cid | None = None
                name, tsize = "", 0
                for lnum, lwire, lvalue in _fields(value):
                    if lnum == 1 and lwire == 2 and isinstance(lvalue, bytes):
                        try:
                            cid = parse_cid(lvalue)
                        except BadCid as exc:
                            raise ValueError(f"bad link: {exc}") from None
                    elif lnum == 2 and lwire == 2 and isinstance(lvalue, bytes):
                        name = lvalue.decode()
                    elif lnum == 3 and lwire == 0 and isinstance(lvalue, int):
                        tsize = lvalue
                    else:
                        raise ValueError(f"unexpected PBLink field {lnum}")
                if cid is None:
                    raise ValueError("link without a hash")
                links.append((cid, name, tsize))
            elif num == 1 and wire == 2 and isinstance(value, bytes):
                data = value
            else:
                raise ValueError(f"unexpected PBNode field {num}")
        return PbNode(links, data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptBlock(f"not a dag-pb node: {exc}") from None


def decode_unixfs(data: bytes) -> UnixFsData:
    try:
        out = UnixFsData(type=-1)
        for num, wire, value in _fields(data):
            if num == 1 and wire == 0 and isinstance(value, int):
                out.type = value
            elif num == 2 and wire == 2 and isinstance(value, bytes):
                out.data = value
            elif num == 3 and wire == 0 and isinstance(value, int):
                out.filesize = value
            elif num == 4 and isinstance(value, int):
                out.blocksizes.append(value)
            elif num == 4 and isinstance(value, bytes):  # packed encoding, allowed by proto2 readers
                pos = 0
                while pos < len(value):
                    v, pos = read_varint(value, pos)
                    out.blocksizes.append(v)
            elif num == 5 and wire == 0 and isinstance(value, int):
                out.hash_type = value
            elif num == 6 and wire == 0 and isinstance(value, int):
                out.fanout = value
            # mode, mtime: not needed to read a file or a folder
        if out.type < 0:
            raise ValueError("UnixFS Data without a Type")
        return out
    except ValueError as exc:
        raise CorruptBlock(f"bad UnixFS data: {exc}") from None


@dataclass
class FileNode:
    """What the exporter needs of one block: its inline bytes and its children with their sizes."""

    data: bytes
    children: list[tuple[Cid, int]]  # (cid, file bytes under it)
    filesize: int
    folder: bool = False  # a folder's node (`read_dag_node`): children are entries, sizes their Tsizes


def read_file_node(cid: Cid, block: bytes) -> FileNode:
    """Interpret a block of a UnixFS file (raw leaf or dag-pb File/Raw node). Whatever a node declares
    is checked against itself here, before anyone acts on it: at most MAX_LINKS links, one size per
    link, sizes that add up to the file size, and no raw leaf said to hold more than a block can."""
    if len(block) > MAX_BLOCK_SIZE:
        raise CorruptBlock(f"block {cid} is {len(block)} bytes, more than any valid block ({MAX_BLOCK_SIZE})")
    if cid.codec == RAW:
        return FileNode(block, [], len(block))
    node = decode_pbnode(block)
    if node.data is None:
        raise CorruptBlock(f"dag-pb node {cid} has no UnixFS data")
    fs = decode_unixfs(node.data)
    if fs.type not in (UNIXFS_FILE, UNIXFS_RAW):
        kind = "a directory" if fs.type == UNIXFS_DIRECTORY else f"UnixFS type {fs.type}"
        raise CorruptBlock(f"{cid} is {kind}, not a file")
    if len(node.links) > MAX_LINKS:
        raise DagRefused(f"{cid} has {len(node.links)} links, more than {MAX_LINKS} per node")
    if node.links and len(fs.blocksizes) != len(node.links):
        raise CorruptBlock(f"{cid}: {len(node.links)} links but {len(fs.blocksizes)} block sizes")
    children = [(c, s) for (c, _n, _t), s in zip(node.links, fs.blocksizes, strict=False)]
    parts = len(fs.data) + sum(s for _, s in children)
    if fs.filesize is not None and fs.filesize != parts:
        raise CorruptBlock(f"{cid} says {fs.filesize} bytes but its parts hold {parts}")
    for child, size in children:
        if child.codec == RAW and size > MAX_BLOCK_SIZE:  # a claim no block can back: never act on it
            raise CorruptBlock(f"{cid} says its raw leaf {child} holds {size} bytes, more than a block can")
    return FileNode(fs.data, children, parts)


@dataclass(frozen=True)
class DagLimits:
    """The bounds a node puts on a file's DAG before it walks, fetches or streams it (cause `dag_limit`,
    except what `read_file_node` checks block by block). Every walk of a node goes through these, so a
    small DAG cannot make a node do more work than the bytes it really holds."""

    max_file: int = DEFAULT_MAX_FILE
    """Largest file size a root may declare (a node: its max_upload)."""
    max_depth: int = MAX_DEPTH
    min_mean_leaf: int = MIN_MEAN_LEAF
    max_entries: int = MAX_TREE_ENTRIES
    """Entries a folder tree may hold (each adds at most its root block and a folder or shard block)."""

    @property
    def max_blocks(self) -> int:
        """Distinct blocks a file of max_file bytes has in 256 KiB leaves and 174-link nodes."""
        leaves = -(-self.max_file // CHUNK_SIZE)
        return leaves + leaves // (MAX_LINKS - 1) + REF_SLACK

    @property
    def max_tree_blocks(self) -> int:
        """Distinct blocks a folder tree may have: a max_file's worth of file blocks, plus two per
        entry (its root, its share of folder and shard blocks)."""
        return self.max_blocks + 2 * self.max_entries

    def max_refs(self, filesize: int) -> int:
        """Block references (each link followed, repeats included) a file of `filesize` may make."""
        return REF_SLACK + filesize // self.min_mean_leaf

    def check_root(self, cid: Cid, node: FileNode) -> None:
        if node.filesize > self.max_file:
            raise DagRefused(f"{cid} says it holds {node.filesize} bytes, more than this node's limit")

    def check_depth(self, cid: Cid, depth: int, *, tree: bool = False) -> None:
        bound = MAX_TREE_DEPTH if tree else self.max_depth
        if depth > bound:
            raise DagRefused(f"the tree under {cid} is deeper than {bound} levels")

    def check_blocks(self, cid: Cid, blocks: int, *, tree: bool = False) -> None:
        bound = self.max_tree_blocks if tree else self.max_blocks
        if blocks > bound:
            what = "folder tree" if tree else "file"
            raise DagRefused(f"the {what} under {cid} has more than {bound} distinct blocks")


def too_many_refs(root: Cid) -> DagRefused:
    return DagRefused(
        f"the file under {root} references more blocks than its size allows "
        f"(a DAG that repeats blocks to expand without bound?)"
    )


class RefBudget:
    """Counts the block references an in-order walk follows (repeats count each time)."""

    __slots__ = ("left", "root")

    def __init__(self, root: Cid, limits: DagLimits, filesize: int) -> None:
        self.root = root
        self.left = limits.max_refs(filesize)

    def take(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise too_many_refs(self.root)


def read_dag_node(cid: Cid, block: bytes) -> FileNode:
    """A block of a file *or* of a folder, as what a walk of the whole DAG needs (GC, completeness,
    pins): its children. A file's node is `read_file_node`'s; a folder's (plain or HAMT shard) lists
    every link with its Tsize as the size under it, and `filesize` the sum of those (what it declares
    it holds, checked against the node's bounds like a file's size). A symlink has no children."""
    if cid.codec == RAW:
        return read_file_node(cid, block)
    if len(block) > MAX_BLOCK_SIZE:
        raise CorruptBlock(f"block {cid} is {len(block)} bytes, more than any valid block ({MAX_BLOCK_SIZE})")
    node = decode_pbnode(block)
    if node.data is None:
        raise CorruptBlock(f"dag-pb node {cid} has no UnixFS data")
    kind = decode_unixfs(node.data).type
    if kind in (UNIXFS_FILE, UNIXFS_RAW):
        return read_file_node(cid, block)
    if kind in (UNIXFS_DIRECTORY, UNIXFS_HAMT_SHARD):
        children = [(c, t) for c, _n, t in node.links]
        return FileNode(b"", children, sum(t for _c, t in children), folder=True)
    if kind == UNIXFS_SYMLINK:
        return FileNode(b"", [], 0)
    raise CorruptBlock(f"{cid} is UnixFS type {kind}, neither a file nor a folder")
