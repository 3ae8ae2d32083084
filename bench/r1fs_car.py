"""R1FS gateway benchmark: a CAR of a file against the file itself, from the same node, paired.

Baseline: the node's gateway serving the file's bytes (`GET /ipfs/<cid>`) to a bare client that throws
them away. Rows, each run right after a baseline run so a noisy neighbour slows both alike: the same
file as a CARv1 (`?format=car`: every block with its CID, in depth-first order) thrown away, and
`R1fsClient.export_car` (the CAR hashed block by block on the client, as `r1os fs export` does, and
written to a file). Prints each row's best rate, its range, the paired baseline's best and the ratio
of the two bests (baseline time / row time).

Run: `.venv/bin/python bench/r1fs_car.py [--mib 200] [--repeat 5]` (a one-node devnet, no chain).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from r1os.devnet import Devnet
from r1os.r1fs import R1fsClient


async def drain(url: str) -> int:
    n = 0
    async with httpx.AsyncClient(timeout=120) as h, h.stream("GET", url) as r:
        async for piece in r.aiter_raw():
            n += len(piece)
    return n


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


def line(label: str, size: int, rows: list[float], bases: list[float]) -> None:
    best = min(rows)
    rate = size / best / 2**20
    spread = f"({size / max(rows) / 2**20:5.0f}-{rate:5.0f})"
    print(
        f"  {label:<48} {rate:6.0f} MiB/s {spread}  base {size / min(bases) / 2**20:5.0f}  "
        f"{min(bases) / best:5.2f}x",
        flush=True,
    )


async def bench(url: str, token: str, work: Path, mib: int, repeat: int) -> None:
    path = work / "input.bin"
    path.write_bytes(os.urandom(mib * 2**20))
    size = path.stat().st_size
    async with R1fsClient(url, token=token) as fs:
        cid = (await fs.add_file(path))["cid"]
        file_url, car_url = f"{url}/ipfs/{cid}", f"{url}/ipfs/{cid}?format=car"
        await drain(file_url)  # what a first request loads: not timed
        out = work / "out.car"
        rows: dict[str, tuple[list[float], list[float]]] = {"car": ([], []), "export": ([], [])}

        async def export() -> None:
            await fs.export_car(cid, out)
            out.unlink()

        for _ in range(repeat):
            for name, fn in (("car", lambda: drain(car_url)), ("export", export)):
                rows[name][1].append(await timed(lambda: drain(file_url)))
                rows[name][0].append(await timed(fn))
    print(f"{mib} MiB of random bytes; best of {repeat} (range); {os.cpu_count()} cores")
    line("GET ?format=car, discarded (base: the file)", size, *rows["car"])
    line("export_car: hashed, written (base: the file)", size, *rows["export"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="r1fs-car-bench-") as tmp:
        work = Path(tmp)
        dn = Devnet(work / "devnet")
        state = dn.up(nodes=1, oracles=0, heartbeat=1.0, chain=False, timeout=90)
        try:
            node = state.nodes[0]
            token = (Path(node.home) / "api-token").read_text().strip()
            asyncio.run(bench(node.url, token, work, args.mib, args.repeat))
        finally:
            dn.down()


if __name__ == "__main__":
    main()
