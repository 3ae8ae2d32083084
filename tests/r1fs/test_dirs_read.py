"""Reading UnixFS folders (`_unixfs_dir`): list, look up, resolve paths (plain and HAMT), walk a tree,
and refuse hostile folders (bad names, duplicates, a HAMT that lies, too deep, too wide, too many)."""

from __future__ import annotations

import pytest

from r1os.r1fs import Cid, CorruptBlock, import_bytes
from r1os.r1fs._dag import DAG_PB, _field_bytes, _field_varint
from r1os.r1fs._errors import DagRefused
from r1os.r1fs._unixfs_dir import (
    BadDirectory,
    BadPath,
    DirEntry,
    NotADirectory,
    NotFoundInDir,
    TreeLimits,
    build_dir,
    encode_dir_node,
    import_entries,
    list_all,
    lookup,
    read_dir_block,
    resolve,
    walk_tree,
)
from tests.r1fs._trees import MemBlocks, content, items


@pytest.fixture(scope="module")
def nested() -> tuple[MemBlocks, Cid]:
    mem = MemBlocks()
    return mem, import_entries(items("nested"), mem.put).cid


@pytest.fixture(scope="module")
def sharded() -> tuple[MemBlocks, Cid]:
    mem = MemBlocks()
    return mem, import_entries(items("hamt_in_subfolder"), mem.put).cid


async def test_list_and_resolve_plain(nested: tuple[MemBlocks, Cid]) -> None:
    mem, root = nested
    names = [e.name for e in await list_all(root, mem.get)]
    assert names == ["top.txt", "w", "x"]
    r = await resolve(root, "x/y/z/deep.txt", mem.get)
    assert r.kind == "file" and mem.blocks[r.cid] == content(42, 8) and r.name == "deep.txt"
    assert len(r.parents) == 4 and r.parents[0] == root
    assert (await resolve(root, "/x//y/", mem.get)).kind == "directory"
    assert (await resolve(root, "", mem.get)).cid == root
    assert (await resolve(root, "x/emptydir", mem.get)).kind == "directory"
    with pytest.raises(NotFoundInDir):
        await resolve(root, "x/nope", mem.get)
    with pytest.raises(NotADirectory):
        await resolve(root, "top.txt/more", mem.get)
    for bad in ("x/../x", "./x", "x/."):
        with pytest.raises(BadPath):
            await resolve(root, bad, mem.get)
    with pytest.raises(NotADirectory):
        [e async for e in _aiter(list_all(r.cid, mem.get))]


async def _aiter(coro):  # type: ignore[no-untyped-def]
    for e in await coro:
        yield e


async def test_hamt_lookup_list_and_walk(sharded: tuple[MemBlocks, Cid]) -> None:
    mem, root = sharded
    big = await resolve(root, "big", mem.get)
    assert read_dir_block(big.cid, mem.blocks[big.cid]).sharded
    name = "entry-with-a-longer-name-004321.json"
    e = await lookup(big.cid, name, mem.get)
    assert e is not None and mem.blocks[e.cid] == b"big/" + name.encode()  # each holds its path
    assert await lookup(big.cid, "entry-with-a-longer-name-999999.json", mem.get) is None
    listed = await list_all(big.cid, mem.get)
    assert len(listed) == 4600 and listed[0].name.endswith("000000.json")
    walked = [item async for item in walk_tree(root, mem.get)]
    assert walked[0].path == "" and walked[0].kind == "directory"
    assert [i.path for i in walked[1:3]] == ["big", "big/entry-with-a-longer-name-000000.json"]
    assert len(walked) == 1 + 1 + 4600 + 1
    with pytest.raises(DagRefused):
        await list_all(big.cid, mem.get, limits=TreeLimits(max_dir_entries=1000))
    with pytest.raises(DagRefused):
        [i async for i in walk_tree(root, mem.get, limits=TreeLimits(max_entries=100))]


async def test_the_reader_takes_the_deepest_tree_the_importer_makes() -> None:
    mem = MemBlocks()
    limits = TreeLimits(max_depth=6)
    deepest = import_entries([("/".join(["d"] * 6), None)], mem.put, limits=limits).cid
    assert len([i async for i in walk_tree(deepest, mem.get, limits=limits)]) == 7
    with pytest.raises(DagRefused):
        import_entries([("/".join(["d"] * 7), None)], limits=limits)
    deeper = import_entries([("/".join(["d"] * 7), None)], mem.put).cid
    with pytest.raises(DagRefused):
        [i async for i in walk_tree(deeper, mem.get, limits=limits)]


async def test_walk_bounds_depth() -> None:
    mem = MemBlocks()
    root = import_entries([("/".join(["d"] * 10) + "/f", b"x")], mem.put).cid
    assert len([i async for i in walk_tree(root, mem.get)]) == 12
    with pytest.raises(DagRefused):
        [i async for i in walk_tree(root, mem.get, limits=TreeLimits(max_depth=5))]


def _raw_dir(links: list[tuple[Cid, bytes, int]], data: bytes = b"\x08\x01") -> tuple[Cid, bytes]:
    parts = [
        _field_bytes(2, _field_bytes(1, c.raw) + _field_bytes(2, n) + _field_varint(3, t))
        for c, n, t in links
    ]
    block = b"".join(parts) + _field_bytes(1, data)
    return Cid.for_block(DAG_PB, block), block


LEAF = import_bytes(b"hi").cid


@pytest.mark.parametrize("name", [b"a/b", b"..", b".", b"", b"a\x00b", b"x" * 256])
def test_hostile_names_refused(name: bytes) -> None:
    cid, block = _raw_dir([(LEAF, name, 2)])
    with pytest.raises(BadDirectory) as exc:
        read_dir_block(cid, block)
    assert exc.value.cause == "bad_directory" and exc.value.status == 422


def test_duplicate_names_refused() -> None:
    cid, block = _raw_dir([(LEAF, b"same", 2), (LEAF, b"same", 2)])
    with pytest.raises(BadDirectory, match="two entries"):
        read_dir_block(cid, block)


def test_bad_utf8_and_garbage_refused() -> None:
    cid, block = _raw_dir([(LEAF, b"\xff\xfe", 2)])
    with pytest.raises(CorruptBlock):
        read_dir_block(cid, block)
    junk = b"\x12\xff\xff\xff"
    with pytest.raises(CorruptBlock):
        read_dir_block(Cid.for_block(DAG_PB, junk), junk)


def _hamt_data(bitfield: bytes, hash_type: int = 0x22, fanout: int = 256) -> bytes:
    return (
        _field_varint(1, 5)
        + _field_bytes(2, bitfield)
        + _field_varint(5, hash_type)
        + _field_varint(6, fanout)
    )


async def test_hamt_that_lies_is_refused() -> None:
    mem = MemBlocks()
    entries = [DirEntry(f"n{i}", LEAF, 2) for i in range(40)]
    good = build_dir(entries, mem.put, threshold=1)
    node = read_dir_block(good.cid, mem.blocks[good.cid])
    assert node.sharded and len(await list_all(good.cid, mem.get)) == 40
    slot, name = node.slots[0], node.entries[0].name
    bit = (1 << slot).to_bytes(32, "big")
    # an entry filed in a slot its name does not hash to
    wrong = (slot + 1) % 256
    cid, block = _raw_dir(
        [(LEAF, f"{wrong:02X}{name}".encode(), 2)], _hamt_data((1 << wrong).to_bytes(32, "big"))
    )
    with pytest.raises(BadDirectory, match="hashes to"):
        read_dir_block(cid, block)
    cases = [
        _raw_dir([(LEAF, f"{slot:02X}{name}".encode(), 2)], _hamt_data(bit, hash_type=0x12)),  # not murmur3
        _raw_dir([(LEAF, f"{slot:02X}{name}".encode(), 2)], _hamt_data(bit, fanout=100)),  # bad fanout
        _raw_dir([(LEAF, f"{slot:02X}{name}".encode(), 2)], _hamt_data(b"\x00" * 32)),  # slot not in bitfield
        _raw_dir([(LEAF, f"ZZ{name}".encode(), 2)], _hamt_data(bit)),  # not a slot
        _raw_dir([(LEAF, f"{slot:02X}a/b".encode(), 2)], _hamt_data(bit)),  # a name with '/'
        _raw_dir([(LEAF, b"0", 2)], _hamt_data(bit)),  # too short
    ]
    for cid, block in cases:
        with pytest.raises(BadDirectory):
            read_dir_block(cid, block)
    # a child shard that is not a shard, or a shard linked twice
    plain = encode_dir_node([])
    plain_cid = Cid.for_block(DAG_PB, plain)
    mem.put(plain_cid, plain)
    cid, block = _raw_dir([(plain_cid, b"00", 4)], _hamt_data(b"\x01"))
    mem.put(cid, block)
    with pytest.raises(BadDirectory):
        await list_all(cid, mem.get)


def test_build_refuses_bad_entries() -> None:
    with pytest.raises(BadPath):
        import_entries([("a/../b", b"x")])
    with pytest.raises(BadPath):
        import_entries([("a", b"x"), ("a", b"y")])
    with pytest.raises(BadPath):
        import_entries([("a", b"x"), ("a/b", b"y")])
    with pytest.raises(BadPath):
        import_entries([("/etc/passwd", b"x")])
    with pytest.raises(DagRefused):
        import_entries([(f"f{i}", b"x") for i in range(20)], limits=TreeLimits(max_dir_entries=10))
    with pytest.raises(DagRefused):
        import_entries([("/".join(["d"] * 20), None)], limits=TreeLimits(max_depth=8))
