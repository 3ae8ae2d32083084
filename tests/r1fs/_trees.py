"""The directory trees of `vectors/dir_trees.json`, as (path, bytes or None for a folder) pairs or on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1os.r1fs import BlockStore, Cid

HERE = Path(__file__).parent / "vectors"
TREES: dict[str, dict[str, Any]] = {
    t["name"]: t for t in json.loads((HERE / "dir_trees.json").read_text())["trees"]
}


def content(size: int, seed: int) -> bytes:
    """Byte i is (i + seed) mod 251."""
    period = bytes((i + seed) % 251 for i in range(251))
    return (period * (size // 251 + 1))[:size]


def items(name: str) -> Iterator[tuple[str, bytes | None]]:
    for e in TREES[name]["entries"]:
        if "many" in e:
            m = e["many"]
            for i in range(m["count"]):
                entry = f"{m['prefix']}{i:0{m['digits']}d}{m['suffix']}"
                yield entry, entry.encode()
        elif e.get("dir"):
            yield e["path"], None
        else:
            yield e["path"], content(e["size"], e["seed"])


def write(name: str, folder: Path) -> Path:
    """Lay the tree out under `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for path, data in items(name):
        target = folder / path
        if data is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return folder


class MemBlocks:
    """A dict of blocks with the reader's `get_block` and the builder's `put`."""

    def __init__(self) -> None:
        self.blocks: dict[Cid, bytes] = {}

    def put(self, cid: Cid, data: bytes) -> None:
        self.blocks[cid] = bytes(data)

    async def get(self, cid: Cid) -> bytes:
        from r1os.r1fs import BlockNotFound

        if cid not in self.blocks:
            raise BlockNotFound(f"{cid} missing")
        return self.blocks[cid]


def into_store(store: BlockStore, mem: MemBlocks) -> None:
    for cid, data in mem.blocks.items():
        store.put(cid, data)
