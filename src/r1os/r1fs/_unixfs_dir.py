"""UnixFS directories: read them (list, look up a name, resolve a path, walk a tree) and build them the
way kubo's `ipfs add -r --cid-version=1` does.

A directory is a dag-pb node whose UnixFS Data has Type=Directory and whose links are its entries
(`Name` = the entry's name, `Tsize` = the bytes of the entry's whole DAG), sorted by name. Past kubo's
sharding threshold it is a HAMT instead (UnixFS Type=HAMTShard, hashType murmur3-x64-64 = 0x22, fanout
256): each shard node's Data carries a bitfield of the slots in use, and each link is named by its slot
in two upper-case hex digits, followed by the entry's name for an entry, alone for a child shard. An
entry's slot at depth d is byte d of the first 8 bytes (big-endian h1) of murmur3-x64-128(name).

Kubo (boxo `ipld/unixfs/io/directory.go`, default "links" size estimation) turns a folder into a HAMT
when the sum over its entries of (name bytes + CID bytes) is more than 256 KiB (`HAMT_THRESHOLD`; a
folder exactly at it stays plain).

Everything here is pure: readers take a `get_block(cid) -> bytes` coroutine, builders a
`put(cid, block)` callable, so the gateway, the node's fetch and pins, and the tests drive it alike.
Every block read is checked against itself and against the tree's bounds (`TreeLimits`) before anyone
acts on it: names (no '/', '.', '..', NUL, empty, over 255 bytes), duplicates, a HAMT whose bitfield,
slots, names or depth do not agree, nesting depth, entries per folder and in all.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from r1os.r1fs._dag import (
    CHUNK_SIZE,
    DAG_PB,
    MAX_TREE_ENTRIES,
    RAW,
    UNIXFS_DIRECTORY,
    UNIXFS_FILE,
    UNIXFS_RAW,
    Cid,
    UnixFsData,
    _field_bytes,
    _field_varint,
    decode_pbnode,
    decode_unixfs,
)
from r1os.r1fs._errors import CorruptBlock, DagRefused, R1fsError
from r1os.r1fs._importer import ImportResult, import_bytes, import_file

UNIXFS_METADATA = 3
UNIXFS_SYMLINK = 4
UNIXFS_HAMT = 5

#: murmur3-x64-64 in the multicodec table: the only HAMT hash kubo writes or reads.
MURMUR3 = 0x22
HAMT_FANOUT = 256
#: kubo's HAMTShardingSize: a folder whose links' (name + CID) bytes pass it becomes a HAMT.
HAMT_THRESHOLD = 262144
#: Bytes of a binary CIDv1 with a sha2-256 multihash (what R1FS writes).
CID_BYTES = 36
#: Longest entry name accepted (bytes of UTF-8), as most file systems.
MAX_NAME = 255

Kind = Literal["file", "directory", "symlink"]
GetBlock = Callable[[Cid], Awaitable[bytes]]
PutBlock = Callable[[Cid, bytes], object]


class BadDirectory(R1fsError):
    """A directory block that decodes but cannot be a valid folder: a name with '/', '.', '..', NUL or
    nothing, two entries of one name, a HAMT whose bitfield, slots or names disagree."""

    cause = "bad_directory"
    status = 422
    hint = "the folder was not made by an IPFS importer; it cannot be read safely"


class BadPath(R1fsError):
    """A path (to resolve, or a name to add) that is not a plain relative path of entry names."""

    cause = "bad_path"
    status = 400
    hint = "paths are names separated by '/', without '.', '..' or empty names"


class NotFoundInDir(R1fsError):
    """A path under a directory names an entry that is not there."""

    cause = "not_found"
    status = 404


class NotADirectory(R1fsError):
    """A path goes on under a file, or a directory operation was asked of a file."""

    cause = "not_a_directory"
    status = 400


# -- bounds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeLimits:
    """What a node accepts of a folder's tree (cause `dag_limit`): checked as the tree is read or built,
    before anything past the bound is fetched or written."""

    max_depth: int = 64
    """Folders inside folders (the root is depth 0); a HAMT's own levels do not count here."""
    max_dir_entries: int = 100_000
    """Entries in one folder (its fan-out), whether plain or sharded."""
    max_entries: int = MAX_TREE_ENTRIES
    """Entries (files and folders) in the whole tree (the store's walks allow as many blocks)."""
    max_size: int = 64 * 1024**3
    """File bytes in the whole tree (a node: its max_upload)."""

    def depth(self, root: Cid | str, depth: int) -> None:
        if depth > self.max_depth:
            raise DagRefused(f"the tree under {root} nests folders deeper than {self.max_depth}")

    def fanout(self, cid: Cid | str, n: int) -> None:
        if n > self.max_dir_entries:
            raise DagRefused(f"folder {cid} has more than {self.max_dir_entries} entries")

    def entries(self, root: Cid | str, n: int) -> None:
        if n > self.max_entries:
            raise DagRefused(f"the tree under {root} has more than {self.max_entries} entries")

    def size(self, root: Cid | str, n: int) -> None:
        if n > self.max_size:
            raise DagRefused(f"the tree under {root} holds more than {self.max_size} bytes of files")


# -- murmur3 ------------------------------------------------------------------------------------

_M64 = 0xFFFFFFFFFFFFFFFF
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    k ^= k >> 33
    return k


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3 x64 128-bit (Austin Appleby's reference algorithm) as (h1, h2)."""
    h1 = h2 = seed
    n = len(data)
    end = n - n % 16
    for i in range(0, end, 16):
        k1 = int.from_bytes(data[i : i + 8], "little")
        k2 = int.from_bytes(data[i + 8 : i + 16], "little")
        h1 ^= (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64
        h1 = (_rotl(h1, 27) + h2) & _M64
        h1 = (h1 * 5 + 0x52DCE729) & _M64
        h2 ^= (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64
        h2 = (_rotl(h2, 31) + h1) & _M64
        h2 = (h2 * 5 + 0x38495AB5) & _M64
    tail = data[end:]
    if len(tail) > 8:
        h2 ^= (_rotl((int.from_bytes(tail[8:], "little") * _C2) & _M64, 33) * _C1) & _M64
    if tail:
        h1 ^= (_rotl((int.from_bytes(tail[:8], "little") * _C1) & _M64, 31) * _C2) & _M64
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    return h1, h2


def hamt_hash(name: bytes) -> bytes:
    """The 8 bytes a HAMT consumes for `name`: h1 of murmur3-x64-128, big-endian (Go's murmur3.New64)."""
    return murmur3_x64_128(name)[0].to_bytes(8, "big")


# -- entries and names --------------------------------------------------------------------------


@dataclass(frozen=True)
class DirEntry:
    """One entry of a folder: its name, the CID it links to, and the link's Tsize (the bytes of the
    entry's whole DAG, as the folder declares it: a hint, not checked until the entry is read)."""

    name: str
    cid: Cid
    tsize: int


def check_name(name: str, where: object = "") -> None:
    """Refuse a name that is not one plain path component (`BadDirectory`)."""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # a file system name that is not UTF-8 (os.fsdecode's surrogates)
        raise BadDirectory(f"folder {where} has an entry named {name[:80]!r}, which is not UTF-8") from None
    if not raw or name in (".", "..") or "/" in name or "\x00" in name or len(raw) > MAX_NAME:
        raise BadDirectory(f"folder {where} has an entry named {name[:80]!r}, which no folder may hold")


def split_path(path: str) -> list[str]:
    """A path under a CID as its names ('a/b//c/' -> ['a', 'b', 'c']); '.', '..' and NUL are refused
    (`BadPath`): a path never climbs out of the folder it starts in."""
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", "..") or "\x00" in p or len(p.encode("utf-8", "surrogatepass")) > MAX_NAME:
            raise BadPath(f"path {path[:120]!r} has a component {p[:40]!r} that is not a name")
    return parts


# -- decoding -----------------------------------------------------------------------------------


def kind_of(cid: Cid, block: bytes) -> Kind:
    """What a block's UnixFS node is: a raw block is a file; a dag-pb node says it in its Data."""
    if cid.codec == RAW:
        return "file"
    node = decode_pbnode(block)
    if node.data is None:
        raise CorruptBlock(f"dag-pb node {cid} has no UnixFS data")
    t = decode_unixfs(node.data).type
    if t in (UNIXFS_FILE, UNIXFS_RAW):
        return "file"
    if t in (UNIXFS_DIRECTORY, UNIXFS_HAMT):
        return "directory"
    if t == UNIXFS_SYMLINK:
        return "symlink"
    raise CorruptBlock(f"{cid} is UnixFS type {t}, neither a file nor a folder")


def symlink_target(cid: Cid, block: bytes) -> str:
    """A symbolic link's target, as stored (its bytes as UTF-8, bad bytes replaced)."""
    node = decode_pbnode(block)
    fs = decode_unixfs(node.data or b"")
    if fs.type != UNIXFS_SYMLINK:
        raise CorruptBlock(f"{cid} is not a symlink")
    return fs.data[:MAX_LINK_TARGET].decode("utf-8", "replace")


@dataclass
class DirBlock:
    """One decoded block of a folder. A plain folder: every entry in `entries`. A HAMT shard: the
    entries filed at this level in `entries` (with their slot in `slots`), and its child shards in
    `shards` as (slot, cid, tsize)."""

    cid: Cid
    sharded: bool
    entries: list[DirEntry]
    slots: list[int] = field(default_factory=list)
    shards: list[tuple[int, Cid, int]] = field(default_factory=list)
    fanout: int = 0


def _bits(fanout: int) -> int:
    return fanout.bit_length() - 1


def read_dir_block(
    cid: Cid, block: bytes, *, depth: int = 0, prefix: bytes = b"", fanout: int | None = None
) -> DirBlock:
    """Decode and check one block of a folder. For a HAMT shard, `depth` and `prefix` (the slots taken
    from the root shard down to this one) and the root's `fanout` let every entry be checked to sit in
    the slot its name hashes to (a name filed elsewhere could never be looked up, and could repeat)."""
    if cid.codec != DAG_PB:
        raise NotADirectory(f"{cid} is a raw block (a file), not a folder")
    node = decode_pbnode(block)
    if node.data is None:
        raise CorruptBlock(f"dag-pb node {cid} has no UnixFS data")
    fs = decode_unixfs(node.data)
    if fs.type == UNIXFS_DIRECTORY:
        if depth:
            raise BadDirectory(f"HAMT {cid}: a plain folder where a child shard should be")
        seen: set[str] = set()
        entries = []
        for link_cid, name, tsize in node.links:
            check_name(name, cid)
            if name in seen:
                raise BadDirectory(f"folder {cid} has two entries named {name[:80]!r}")
            seen.add(name)
            entries.append(DirEntry(name, link_cid, tsize))
        return DirBlock(cid, False, entries)
    if fs.type != UNIXFS_HAMT:
        if fs.type in (UNIXFS_FILE, UNIXFS_RAW, UNIXFS_SYMLINK):
            raise NotADirectory(
                f"{cid} is a {'symlink' if fs.type == UNIXFS_SYMLINK else 'file'}, not a folder"
            )
        raise CorruptBlock(f"{cid} is UnixFS type {fs.type}, not a folder")
    return _read_shard(cid, node.links, fs, depth, prefix, fanout)


def _read_shard(
    cid: Cid,
    links: list[tuple[Cid, str, int]],
    fs: UnixFsData,
    depth: int,
    prefix: bytes,
    parent_fanout: int | None,
) -> DirBlock:
    if fs.hash_type != MURMUR3:
        raise BadDirectory(f"HAMT {cid} uses hash {fs.hash_type}, not murmur3-x64-64 (0x22)")
    fanout = fs.fanout or 0
    if fanout < 8 or fanout > 1024 or fanout & (fanout - 1):
        raise BadDirectory(f"HAMT {cid} has fanout {fanout}, not a power of two from 8 to 1024")
    if parent_fanout is not None and fanout != parent_fanout:
        raise BadDirectory(f"HAMT {cid} has fanout {fanout} under a shard of {parent_fanout}")
    if fanout != 256 and depth * _bits(fanout) >= 64:
        raise BadDirectory(f"HAMT {cid} is deeper than its 64-bit hash allows")
    if depth * 8 >= 64:
        raise BadDirectory(f"HAMT {cid} is deeper than its 64-bit hash allows")
    if fanout != 256:
        # only kubo's width is read: slots of other widths straddle bytes; none of kubo's defaults use them
        raise BadDirectory(f"HAMT {cid} has fanout {fanout}; R1FS reads kubo's fanout of 256")
    bitfield = int.from_bytes(fs.data, "big")
    if bitfield >> fanout:
        raise BadDirectory(f"HAMT {cid}: its bitfield has slots past its fanout")
    pad = len(f"{fanout - 1:X}")
    used = [i for i in range(fanout) if bitfield >> i & 1]
    if len(used) != len(links):
        raise BadDirectory(f"HAMT {cid}: {len(links)} links for {len(used)} slots in its bitfield")
    out = DirBlock(cid, True, [], fanout=fanout)
    for (link_cid, name, tsize), slot in zip(links, used, strict=True):
        head = name[:pad]
        if len(head) != pad or any(ch not in "0123456789ABCDEFabcdef" for ch in head):
            raise BadDirectory(f"HAMT {cid}: link {name[:40]!r} does not start with a {pad}-digit slot")
        if int(head, 16) != slot:
            raise BadDirectory(f"HAMT {cid}: link {name[:40]!r} in slot {slot} of its bitfield")
        rest = name[pad:]
        if not rest:
            out.shards.append((slot, link_cid, tsize))
            continue
        check_name(rest, cid)
        h = hamt_hash(rest.encode("utf-8", "surrogatepass"))
        if h[:depth] != prefix or h[depth] != slot:
            raise BadDirectory(f"HAMT {cid}: entry {rest[:80]!r} is not in the slot its name hashes to")
        out.entries.append(DirEntry(rest, link_cid, tsize))
        out.slots.append(slot)
    return out


# -- reading folders ----------------------------------------------------------------------------


async def list_dir(
    cid: Cid, get_block: GetBlock, *, limits: TreeLimits | None = None
) -> AsyncIterator[DirEntry]:
    """The entries of the folder `cid` (plain or sharded). A plain folder gives them in its link order
    (by name, as kubo writes them); a HAMT in slot order. `NotADirectory` for a file. Bounded by
    `limits.max_dir_entries` (counted as they come)."""
    limits = limits or TreeLimits()
    top = read_dir_block(cid, await get_block(cid))
    if not top.sharded:
        limits.fanout(cid, len(top.entries))
        for e in top.entries:
            yield e
        return
    count = 0
    seen = {cid}

    async def walk(b: DirBlock, depth: int, prefix: bytes) -> AsyncIterator[DirEntry]:
        nonlocal count
        # entries and shards interleaved by slot, as the shard lists them
        items: list[tuple[int, DirEntry | tuple[Cid, int]]] = [
            (s, e) for s, e in zip(b.slots, b.entries, strict=True)
        ]
        items += [(s, (c, t)) for s, c, t in b.shards]
        items.sort(key=lambda x: x[0])
        for slot, item in items:
            if isinstance(item, DirEntry):
                count += 1
                limits.fanout(cid, count)
                yield item
                continue
            child = item[0]
            if child in seen:
                raise BadDirectory(f"HAMT {cid} links shard {child} twice")
            seen.add(child)
            sub = read_dir_block(
                child, await get_block(child), depth=depth + 1, prefix=prefix + bytes([slot]), fanout=b.fanout
            )
            if not sub.entries and not sub.shards:
                raise BadDirectory(f"HAMT {cid}: an empty child shard {child}")
            async for e in walk(sub, depth + 1, prefix + bytes([slot])):
                yield e

    async for e in walk(top, 0, b""):
        yield e


async def list_all(cid: Cid, get_block: GetBlock, *, limits: TreeLimits | None = None) -> list[DirEntry]:
    """The entries of a folder sorted by name (bytes of UTF-8, as kubo sorts links)."""
    out = [e async for e in list_dir(cid, get_block, limits=limits)]
    out.sort(key=lambda e: e.name.encode("utf-8", "surrogatepass"))
    return out


async def lookup(cid: Cid, name: str, get_block: GetBlock) -> DirEntry | None:
    """The entry `name` of folder `cid`, or None. A HAMT is followed along the name's hash only (one
    shard per level), so a huge folder costs a few blocks, not a listing."""
    check_name(name, cid)
    b = read_dir_block(cid, await get_block(cid))
    if not b.sharded:
        for e in b.entries:
            if e.name == name:
                return e
        return None
    h = hamt_hash(name.encode("utf-8", "surrogatepass"))
    depth = 0
    while True:
        slot = h[depth]
        for s, e in zip(b.slots, b.entries, strict=True):
            if s == slot:
                return e if e.name == name else None
        shard = next((c for s, c, _t in b.shards if s == slot), None)
        if shard is None:
            return None
        depth += 1
        b = read_dir_block(shard, await get_block(shard), depth=depth, prefix=h[:depth], fanout=b.fanout)


@dataclass(frozen=True)
class Resolved:
    """Where a path under a CID leads: the entry's CID, what it is, and the folders passed on the way
    (root first; the last is the folder holding the entry, empty for the root itself)."""

    cid: Cid
    kind: Kind
    parents: tuple[Cid, ...] = ()
    name: str = ""


async def resolve(root: Cid, path: str | Iterable[str], get_block: GetBlock) -> Resolved:
    """Follow `path` (a string 'a/b/c', or its names) from the folder `root`. `NotFoundInDir` when a
    name is missing, `NotADirectory` when the path goes on under a file, `BadPath` for '.', '..'."""
    names = split_path(path) if isinstance(path, str) else list(path)
    for n in names:
        if not n or n in (".", "..") or "/" in n:
            raise BadPath(f"{n[:40]!r} is not a name")
    cid = root
    block = await get_block(cid)
    kind = kind_of(cid, block)
    parents: list[Cid] = []
    name = ""
    for i, n in enumerate(names):
        if kind != "directory":
            where = "/".join(names[:i]) or str(root)
            raise NotADirectory(f"{where} is a {kind}: no {n!r} under it")
        entry = await lookup(cid, n, get_block)
        if entry is None:
            raise NotFoundInDir(f"no {'/'.join(names[: i + 1])!r} under {root}")
        parents.append(cid)
        cid, name = entry.cid, n
        block = await get_block(cid)
        kind = kind_of(cid, block)
    return Resolved(cid, kind, tuple(parents), name)


@dataclass(frozen=True)
class TreeItem:
    """One entry met by `walk_tree`: its path under the root ('' for the root), CID and kind."""

    path: str
    cid: Cid
    kind: Kind
    tsize: int


async def walk_tree(
    root: Cid, get_block: GetBlock, *, limits: TreeLimits | None = None
) -> AsyncIterator[TreeItem]:
    """Every entry of the tree under `root`, folders before what they hold, each folder's entries by
    name. Files are not read (only their root block, to tell a file from a folder or a symlink), so a
    caller fetches or copies them as it likes. Bounded by `limits`: depth of folders, entries per folder
    and in all. A folder linked twice in the tree is walked each time (a DAG may share subtrees), within
    the same bound on entries in all."""
    limits = limits or TreeLimits()
    count = 0
    block = await get_block(root)
    kind = kind_of(root, block)
    yield TreeItem("", root, kind, 0)
    if kind != "directory":
        return

    async def walk(cid: Cid, path: str, depth: int) -> AsyncIterator[TreeItem]:
        nonlocal count
        limits.depth(root, depth)
        for e in await list_all(cid, get_block, limits=limits):
            count += 1
            limits.entries(root, count)
            sub = f"{path}/{e.name}" if path else e.name
            k = kind_of(e.cid, await get_block(e.cid)) if e.cid.codec == DAG_PB else "file"
            yield TreeItem(sub, e.cid, k, e.tsize)
            if k == "directory":
                async for item in walk(e.cid, sub, depth + 1):
                    yield item

    async for item in walk(root, "", 0):
        yield item


# -- building folders ---------------------------------------------------------------------------


def encode_dir_node(entries: Iterable[DirEntry]) -> bytes:
    """A plain folder's dag-pb block: links sorted by name bytes (Hash, Name, Tsize), then Data
    {Type: Directory}, as kubo writes it."""
    parts = []
    for e in sorted(entries, key=lambda e: e.name.encode("utf-8", "surrogatepass")):
        body = (
            _field_bytes(1, e.cid.raw)
            + _field_bytes(2, e.name.encode("utf-8", "surrogatepass"))
            + _field_varint(3, e.tsize)
        )
        parts.append(_field_bytes(2, body))
    parts.append(_field_bytes(1, _field_varint(1, UNIXFS_DIRECTORY)))
    return b"".join(parts)


def _encode_shard(links: list[tuple[str, Cid, int]], bitfield: int) -> bytes:
    parts = [
        _field_bytes(
            2,
            _field_bytes(1, c.raw)
            + _field_bytes(2, n.encode("utf-8", "surrogatepass"))
            + _field_varint(3, t),
        )
        for n, c, t in links
    ]
    nbytes = (bitfield.bit_length() + 7) // 8
    data = (
        _field_varint(1, UNIXFS_HAMT)
        + _field_bytes(2, bitfield.to_bytes(nbytes, "big"))
        + _field_varint(5, MURMUR3)
        + _field_varint(6, HAMT_FANOUT)
    )
    parts.append(_field_bytes(1, data))
    return b"".join(parts)


def estimated_size(entries: Iterable[DirEntry]) -> int:
    """kubo's estimate of a plain folder's size: sum of (name bytes + CID bytes) over its links."""
    return sum(len(e.name.encode("utf-8", "surrogatepass")) + len(e.cid.raw) for e in entries)


@dataclass(frozen=True)
class BuiltDir:
    cid: Cid
    tsize: int  # bytes of the folder's whole DAG (what a parent's link says)
    blocks: int  # blocks written for the folder itself (1 plain, one per shard node)
    sharded: bool


def build_dir(
    entries: list[DirEntry], put: PutBlock | None = None, *, threshold: int = HAMT_THRESHOLD
) -> BuiltDir:
    """The folder holding `entries` (names checked, no duplicates): plain, or a HAMT past `threshold`."""
    names: set[str] = set()
    for e in entries:
        check_name(e.name, "being built")
        if e.name in names:
            raise BadPath(f"two entries named {e.name[:80]!r} in one folder")
        names.add(e.name)
    if estimated_size(entries) <= threshold:
        block = encode_dir_node(entries)
        cid = Cid.for_block(DAG_PB, block)
        if put is not None:
            put(cid, block)
        return BuiltDir(cid, len(block) + sum(e.tsize for e in entries), 1, False)
    return _build_hamt(entries, put)


def _build_hamt(entries: list[DirEntry], put: PutBlock | None) -> BuiltDir:
    hashed = [(hamt_hash(e.name.encode("utf-8", "surrogatepass")), e) for e in entries]
    blocks = 0

    def shard(items: list[tuple[bytes, DirEntry]], depth: int) -> tuple[Cid, int]:
        nonlocal blocks
        if depth >= 8:
            raise BadPath("names whose 64-bit hashes collide: no HAMT can hold them")
        slots: dict[int, list[tuple[bytes, DirEntry]]] = {}
        for h, e in items:
            slots.setdefault(h[depth], []).append((h, e))
        links: list[tuple[str, Cid, int]] = []
        bitfield = 0
        for slot in sorted(slots):
            bitfield |= 1 << slot
            group = slots[slot]
            if len(group) == 1:
                e = group[0][1]
                links.append((f"{slot:02X}{e.name}", e.cid, e.tsize))
            else:
                c, t = shard(group, depth + 1)
                links.append((f"{slot:02X}", c, t))
        block = _encode_shard(links, bitfield)
        cid = Cid.for_block(DAG_PB, block)
        if put is not None:
            put(cid, block)
        blocks += 1
        return cid, len(block) + sum(t for _n, _c, t in links)

    cid, tsize = shard(hashed, 0)
    return BuiltDir(cid, tsize, blocks, True)


#: Longest symbolic link target stored (bytes; Linux's PATH_MAX), cause `bad_path`.
MAX_LINK_TARGET = 4096


@dataclass(frozen=True)
class Symlink:
    """A symbolic link as a folder entry: a dag-pb node of UnixFS {Type: Symlink, Data: target}, as
    kubo's `ipfs add -r` stores one (the link itself, never what it points to)."""

    cid: Cid
    block: bytes
    target: str


def make_symlink(target: str) -> Symlink:
    raw = target.encode("utf-8", "surrogateescape")
    if not raw or b"\x00" in raw or len(raw) > MAX_LINK_TARGET:
        raise BadPath(f"symbolic link target {target[:80]!r} is empty, holds NUL or is too long")
    try:
        target.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPath(f"symbolic link target {target[:80]!r} is not UTF-8") from None
    block = _field_bytes(1, _field_varint(1, UNIXFS_SYMLINK) + _field_bytes(2, raw))
    return Symlink(Cid.for_block(DAG_PB, block), block, target)


@dataclass(frozen=True)
class TreeResult:
    cid: Cid
    size: int  # file bytes in the tree
    blocks: int  # blocks created (file leaves and nodes, folder nodes)
    dag_size: int  # bytes of every block (the root link's Tsize)
    files: int
    dirs: int  # folders, the root included


class TreeBuilder:
    """Collects a tree's entries in any order (`add_file`, `add_dir` by relative path) and builds its
    folders bottom-up (`finish`). Paths are checked (`BadPath`): no '.', '..', empty or absolute names,
    no file where a folder is or the other way round, no name twice. Bounded by `limits`."""

    def __init__(
        self,
        put: PutBlock | None = None,
        *,
        limits: TreeLimits | None = None,
        threshold: int = HAMT_THRESHOLD,
    ) -> None:
        self._put = put
        self._threshold = threshold
        self.limits = limits or TreeLimits()
        self._root: dict[str, object] = {}
        self.size = 0
        self.blocks = 0
        self.files = 0
        self.dirs = 1
        self._entries = 0

    def _folder(self, names: list[str], path: str) -> dict[str, object]:
        node = self._root
        for depth, n in enumerate(names, start=1):
            child = node.get(n)
            if child is None:
                self.limits.depth("the upload", depth)
                self._count(node, path)
                child = node[n] = {}
                self.dirs += 1
            if not isinstance(child, dict):
                raise BadPath(f"{path!r}: {n!r} is a file, not a folder")
            node = child
        return node

    def _count(self, node: dict[str, object], path: str) -> None:
        self._entries += 1
        self.limits.entries("the upload", self._entries)
        self.limits.fanout(f"of {path!r}", len(node) + 1)

    @staticmethod
    def _names(path: str) -> list[str]:
        if path.startswith("/"):
            raise BadPath(f"{path[:120]!r} is an absolute path")
        names = split_path(path)
        for n in names:
            try:
                check_name(n)
            except BadDirectory:
                raise BadPath(f"{path[:120]!r} has a name no folder may hold") from None
        return names

    def add_dir(self, path: str) -> None:
        names = self._names(path)
        if names:
            self._folder(names, path)

    def add_file(self, path: str, result: ImportResult) -> None:
        names = self._names(path)
        if not names:
            raise BadPath("a file needs a name inside the folder")
        parent = self._folder(names[:-1], path)
        if names[-1] in parent:
            raise BadPath(f"{path[:120]!r} is in the tree twice")
        self._count(parent, path)
        self.size += result.size
        self.limits.size("the upload", self.size)
        self.blocks += result.blocks
        self.files += 1
        parent[names[-1]] = result

    def add_symlink(self, path: str, target: str) -> None:
        """A symbolic link named `path` pointing at `target` (stored as it is, not followed)."""
        names = self._names(path)
        if not names:
            raise BadPath("a symbolic link needs a name inside the folder")
        link = make_symlink(target)
        parent = self._folder(names[:-1], path)
        if names[-1] in parent:
            raise BadPath(f"{path[:120]!r} is in the tree twice")
        self._count(parent, path)
        if self._put is not None:
            self._put(link.cid, link.block)
        self.blocks += 1
        parent[names[-1]] = link

    def finish(self) -> TreeResult:
        def build(node: dict[str, object]) -> BuiltDir:
            entries = []
            for name, child in node.items():
                if isinstance(child, dict):
                    d = build(child)
                    entries.append(DirEntry(name, d.cid, d.tsize))
                elif isinstance(child, Symlink):
                    entries.append(DirEntry(name, child.cid, len(child.block)))
                else:
                    assert isinstance(child, ImportResult)
                    entries.append(DirEntry(name, child.cid, child.dag_size))
            built = build_dir(entries, self._put, threshold=self._threshold)
            self.blocks += built.blocks
            return built

        root = build(self._root)
        return TreeResult(root.cid, self.size, self.blocks, root.tsize, self.files, self.dirs)


def import_tree(
    path: Path | str,
    put: PutBlock | None = None,
    *,
    hidden: bool = False,
    limits: TreeLimits | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> TreeResult:
    """Import a local folder as `ipfs add -r --cid-version=1` does (blocking); with `put=None` only the
    CID is computed. Hidden names (starting with '.') are left out unless `hidden`, as kubo does
    without `--hidden`. A symbolic link is stored as a link (its target as it is, never followed), as
    kubo stores it; devices, sockets and pipes are refused (`BadPath`).
    `progress(n)` is called with the bytes of each file once imported."""
    top = Path(path)
    if not top.is_dir():
        raise NotADirectory(f"{top} is not a folder")
    tree = TreeBuilder(put, limits=limits)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        here = Path(dirpath)
        rel = here.relative_to(top).as_posix()
        rel = "" if rel == "." else rel
        if not hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            filenames = [f for f in filenames if not f.startswith(".")]
        links = sorted(d for d in dirnames if (here / d).is_symlink())
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for d in dirnames:
            tree.add_dir(f"{rel}/{d}" if rel else d)
        for f in sorted([*filenames, *links]):
            p = here / f
            if p.is_symlink():
                tree.add_symlink(f"{rel}/{f}" if rel else f, os.readlink(p))
                continue
            if not p.is_file():
                raise BadPath(f"{p} is not a regular file, a folder or a symbolic link (a device, a pipe?)")
            # a file of a chunk or two is hashed here: a pool per small file costs more than it saves
            small = p.stat().st_size <= 2 * CHUNK_SIZE
            result = import_file(p, put, workers=0 if small else workers)
            tree.add_file(f"{rel}/{f}" if rel else f, result)
            if progress is not None:
                progress(result.size)
    return tree.finish()


def import_entries(
    items: Iterable[tuple[str, bytes | None]],
    put: PutBlock | None = None,
    *,
    limits: TreeLimits | None = None,
    threshold: int = HAMT_THRESHOLD,
) -> TreeResult:
    """Build a tree from (path, bytes) pairs held in memory, a folder as (path, None); `threshold`:
    kubo's Import.UnixFSHAMTDirectorySizeThreshold (its tests force sharding with 1 byte)."""
    tree = TreeBuilder(put, limits=limits, threshold=threshold)
    for p, data in items:
        if data is None:
            tree.add_dir(p)
        else:
            tree.add_file(p, import_bytes(data, put))
    return tree.finish()


def dir_cid_of(entries: Iterable[DirEntry]) -> Cid:
    """The CID of a plain folder of these entries (for tests and tools)."""
    return Cid.for_block(DAG_PB, encode_dir_node(entries))


__all__ = [
    "HAMT_THRESHOLD",
    "BadDirectory",
    "BadPath",
    "BuiltDir",
    "DirBlock",
    "DirEntry",
    "NotADirectory",
    "NotFoundInDir",
    "Resolved",
    "TreeBuilder",
    "TreeItem",
    "TreeLimits",
    "TreeResult",
    "Symlink",
    "make_symlink",
    "build_dir",
    "hamt_hash",
    "import_entries",
    "import_tree",
    "kind_of",
    "list_all",
    "list_dir",
    "lookup",
    "read_dir_block",
    "resolve",
    "split_path",
    "walk_tree",
]


async def hamt_lookup(
    cid: Cid, block: bytes, name: str, get_block: GetBlock, seen: list[tuple[Cid, bytes]] | None = None
) -> Cid | None:
    """The CID `name` links to in the HAMT shard `cid` (its `block` in hand), following the name's
    hash through child shards; each child shard read is appended to `seen` (a CAR of the path needs
    them). None when the name is not there. The shards are checked as `read_dir_block` checks them."""
    check_name(name, cid)
    b = read_dir_block(cid, block)
    if not b.sharded:
        raise NotADirectory(f"{cid} is a plain folder, not a HAMT shard")
    h = hamt_hash(name.encode("utf-8", "surrogatepass"))
    depth = 0
    while True:
        slot = h[depth]
        for s, e in zip(b.slots, b.entries, strict=True):
            if s == slot:
                return e.cid if e.name == name else None
        shard = next((c for s, c, _t in b.shards if s == slot), None)
        if shard is None:
            return None
        depth += 1
        data = await get_block(shard)
        if seen is not None:
            seen.append((shard, data))
        b = read_dir_block(shard, data, depth=depth, prefix=h[:depth], fanout=b.fanout)


async def hamt_entries(
    cid: Cid, block: bytes, get_block: GetBlock, *, limits: TreeLimits | None = None
) -> AsyncIterator[tuple[str, Cid, int]]:
    """The entries of the HAMT shard `cid` (its `block` in hand) as (name, CID, Tsize), in slot order
    through its child shards (see `list_dir`)."""

    async def first(c: Cid) -> bytes:
        return block if c == cid else await get_block(c)

    async for e in list_dir(cid, first, limits=limits):
        yield e.name, e.cid, e.tsize
