"""R1FS folders benchmark: each row beside a baseline measured right before it, in the same run, on the
same files (baseline, row, baseline, row, ...), best of `--repeat`; prints the ratio of the two bests
(baseline time / row time: 1.0 = as fast as the baseline).

Rows:
- many small files, CID only (`import_tree`, what `r1os fs add -r --only-hash` runs) against the floor of
  any importer: open, read and sha256 every file, one after the other;
- a folder holding one big file, CID only, against `import_file` of that file alone (what the folder
  machinery costs on top of the file);
- the same small files read back from a tar stream (`import_tar` over `tar_folder`: what a node does
  with an `add-tree` upload, without the network) against `import_tree` on the folder.

Run: `.venv/bin/python bench/r1fs_dirs.py [--files 3000] [--size 4096] [--mib 64] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from r1os.r1fs import import_file
from r1os.r1fs._tar import import_tar, tar_folder
from r1os.r1fs._unixfs_dir import import_tree


def make_small(folder: Path, files: int, size: int) -> int:
    total = 0
    for i in range(files):
        sub = folder / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        (sub / f"file-{i:06d}.bin").write_bytes(data)
        total += len(data)
    return total


def read_and_hash(folder: Path) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            hashlib.sha256(p.read_bytes()).digest()


def tar_import(folder: Path) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in tar_folder(folder):
            yield piece

    asyncio.run(import_tar(pieces()))


def best(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pair(
    name: str, base_name: str, base: Callable[[], object], row: Callable[[], object], repeat: int
) -> None:
    bases, rows = [], []
    for _ in range(repeat):
        bases.append(best(base))
        rows.append(best(row))
    b, r = min(bases), min(rows)
    print(
        f"{name:<44} best {r * 1000:8.1f} ms (range {min(rows) * 1000:.1f}-{max(rows) * 1000:.1f})  "
        f"{base_name} {b * 1000:8.1f} ms  ratio {b / r:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small"
        make_small(small, args.files, args.size)
        big = Path(tmp) / "big"
        (big / "model").mkdir(parents=True)
        weights = big / "model" / "weights.bin"
        weights.write_bytes(os.urandom(args.mib * 1024 * 1024))
        print(
            f"{args.files} files of {args.size} bytes in 20 folders; one file of {args.mib} MiB in a folder"
        )
        pair(
            "small files: CID only (import_tree)", "read+sha256 each file",
            lambda: read_and_hash(small), lambda: import_tree(small), args.repeat,
        )  # fmt: skip
        pair(
            "big file in a folder: CID only (import_tree)", "import_file alone",
            lambda: import_file(weights), lambda: import_tree(big), args.repeat,
        )  # fmt: skip
        pair(
            "small files from a tar stream (import_tar)", "import_tree",
            lambda: import_tree(small), lambda: tar_import(small), args.repeat,
        )  # fmt: skip


if __name__ == "__main__":
    main()
