"""Deterministic test content: byte i of a file is (i mod 251), the rule the vectors were made with."""

from __future__ import annotations

from r1os.r1fs import BlockStore, Cid

_PERIOD = bytes(range(251))


def mod251(size: int, start: int = 0) -> bytes:
    """Bytes start .. start+size-1 of the stream (i mod 251)."""
    if size <= 0:
        return b""
    offset = start % 251
    reps = (offset + size) // 251 + 1
    return (_PERIOD * reps)[offset : offset + size]


def rot(store: BlockStore, cid: Cid) -> None:
    """Flip one bit in the middle of a stored block, in place in its pack file (size unchanged)."""
    where = store.locate(cid)
    assert where is not None, f"{cid} is not in the store"
    path, offset, length = where
    with open(path, "r+b") as fh:
        fh.seek(offset + length // 2)
        bit = fh.read(1)[0] ^ 0x10
        fh.seek(offset + length // 2)
        fh.write(bytes([bit]))
