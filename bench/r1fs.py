"""R1FS benchmark: every figure beside a baseline measured in the same run on the same bytes.

Add (target >= 0.8x of the baseline): `hashlib.sha256` in one call over the file's bytes in memory,
one thread. Rows: the CID alone (in memory and reading the file), the file into a block store (one
file per 256 KiB block) and an HTTP upload to a node; beside them, what this file system costs to
create the same number of 256 KiB files with no hashing at all (the floor under a one-file-per-block
store).

Cross-node get (target >= 0.5x of the baseline): `shutil.copyfile` of the same file to a new file.
Rows: a bare aiohttp download of the file between two local processes (the server sends with
sendfile), first thrown away, then hashed per 256 KiB and written as one file per block (the floor
under any fetch that verifies and stores blocks); then R1FS itself on a devnet: node B pins a file
only node A holds (every block verified, then stored on B), and node D streams it to a local file
through its HTTP API while it fetches it from A; beside them, A's gateway serving the file to a bare
aiohttp client (the serving side alone).

Run: `.venv/bin/python bench/r1fs.py [--mib 200] [--repeat 3] [--dir DIR]`. File creation cost
depends on the folder (see docs/r1fs.md, Performance): the output prints it for the folder used.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from r1os.devnet import Devnet
from r1os.r1fs import CHUNK_SIZE, BlockStore, R1fsClient, import_bytes, import_file
from r1os.r1fs._importer import default_workers


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of each of `repeat` runs, each started with no dirty pages left by the one before."""
    times = []
    for _ in range(repeat):
        os.sync()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def line(
    label: str, times: list[float], size: int, baseline: float | None = None, target: float | None = None
) -> float:
    """Print the best rate (and the range), with its ratio to the baseline's best; returns the best."""
    best = min(times)
    rate = size / best / 2**20
    spread = f"({size / max(times) / 2**20:5.0f}-{rate:5.0f})" if len(times) > 1 else " " * 13
    text = f"  {label:<62} {rate:7.0f} MiB/s {spread}"
    if baseline is not None:
        ratio = baseline / best
        text += f"  {ratio:5.2f}x"
        if target is not None:
            text += f" (target {target}x: {'met' if ratio >= target else 'NOT met'})"
    print(text, flush=True)
    return best


def fresh(work: Path, name: str) -> Path:
    return work / f"{name}-{time.monotonic_ns()}"


def write_pieces(path: Path, root: Path) -> None:
    """The file's 256 KiB pieces as new files in `root`'s 1024 folders (made beforehand, as a block
    store's are when its node starts), like a block store but no hashing, no temp names."""
    with open(path, "rb", buffering=0) as fh:
        i = 0
        while chunk := fh.read(CHUNK_SIZE):
            (root / f"{i % 1024:03x}" / str(i)).write_bytes(chunk)
            i += 1


def shards(root: Path) -> Path:
    """`root` with 1024 empty folders, as a block store prepares them when its node starts."""
    root.mkdir()
    for i in range(1024):
        (root / f"{i:03x}").mkdir()
    return root


def prepared(root: Path) -> BlockStore:
    return BlockStore(root)


def create_cost(work: Path, n: int = 400) -> float:
    """Microseconds to create one empty file here (varies by folder on some file systems)."""
    d = fresh(work, "probe")
    d.mkdir()
    t = time.perf_counter()
    for i in range(n):
        os.close(os.open(d / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.perf_counter() - t) / n * 1e6


def bench_add(data: bytes, path: Path, work: Path, repeat: int) -> None:
    size = len(data)
    workers = default_workers()
    print(f"\nADD  (baseline: hashlib.sha256 in one call over the {size >> 20} MiB in memory, one thread)")
    base = line(
        "hashlib.sha256, one call (baseline)", timed(lambda: hashlib.sha256(data).digest(), repeat), size
    )
    line(
        f"only-hash: CID of the bytes in memory ({workers} hashing threads)",
        timed(lambda: import_bytes(data), repeat), size, base, 0.8,
    )  # fmt: skip
    line(
        f"only-hash: CID reading the file ({workers} hashing threads)",
        timed(lambda: import_file(path), repeat), size, base, 0.8,
    )  # fmt: skip
    line(
        "only-hash: CID reading the file, one thread",
        timed(lambda: import_file(path, workers=0), repeat), size, base,
    )  # fmt: skip
    print(f"  [creating one empty file here takes {create_cost(work):.0f} us]")
    roots = [shards(fresh(work, "pieces")) for _ in range(repeat)]
    floor = line(
        f"fs floor: the {size // CHUNK_SIZE} pieces written as new files, no hashing",
        timed(lambda: write_pieces(path, roots.pop()), repeat), size, base,
    )  # fmt: skip
    stores = [prepared(fresh(work, "store")) for _ in range(2 * repeat)]
    store = line(
        f"add into a block store: read, hash, write blocks ({workers} threads)",
        timed(lambda: import_file(path, stores.pop().put), repeat), size, base, 0.8,
    )  # fmt: skip
    line(
        "add into a block store, all in one thread",
        timed(lambda: import_file(path, stores.pop().put, workers=0), repeat), size, base,
    )  # fmt: skip
    print(f"  [the block store add runs at {floor / store:.2f}x of the fs floor]")


_SERVER = """
import sys
from aiohttp import web
path = sys.argv[1]
async def get(request):
    return web.FileResponse(path)
app = web.Application()
app.router.add_get("/f", get)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=lambda *a: print("ready", flush=True))
"""


async def bare_download(url: str, root: Path | None) -> int:
    """GET `url` with aiohttp; with `root`, hash each 256 KiB and write it as a new file under
    `root`, in a pool of threads, as R1FS does with fetched blocks."""
    import aiohttp

    got = 0
    loop = asyncio.get_running_loop()

    def store(i: int, data: bytes) -> None:
        hashlib.sha256(data).digest()
        fd = os.open(f"{root}/{i % 1024:03x}/{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)

    async with aiohttp.ClientSession() as http, http.get(url) as r:
        if root is None:
            async for piece in r.content.iter_chunked(1 << 20):
                got += len(piece)
            return got
        with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 1))) as pool:
            pending: list[asyncio.Future[None]] = []
            size = int(r.headers["Content-Length"])
            i = 0
            while got < size:
                data = await r.content.readexactly(min(CHUNK_SIZE, size - got))
                pending.append(loop.run_in_executor(pool, store, i, data))
                got += len(data)
                i += 1
                if len(pending) >= 16:
                    await pending.pop(0)
            await asyncio.gather(*pending)
    return got


def bench_floor(path: Path, work: Path, repeat: int) -> float:
    size = path.stat().st_size
    print(f"\nCROSS-NODE GET  (baseline: shutil.copyfile of the same {size >> 20} MiB file to a new file)")
    copy = line(
        "local file copy (baseline)",
        timed(lambda: shutil.copyfile(path, fresh(work, "copy")), repeat), size,
    )  # fmt: skip
    port = 20000 + os.getpid() % 20000
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(path), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and "ready" in server.stdout.readline()
        url = f"http://127.0.0.1:{port}/f"
        line(
            "floor: bare aiohttp GET, other process, sendfile -> discard",
            timed(lambda: asyncio.run(bare_download(url, None)), repeat), size, copy,
        )  # fmt: skip
        roots = [shards(fresh(work, "bare")) for _ in range(repeat)]  # as a node has them ready
        line(
            "floor: the same, hashing 256 KiB pieces, writing them as files",
            timed(lambda: asyncio.run(bare_download(url, roots.pop())), repeat), size, copy,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait()
    return copy


async def wait_provided(url: str, cid: str) -> None:
    async with httpx.AsyncClient() as h:
        for _ in range(200):
            s = (await h.get(f"{url}/v1/r1fs/stat", params={"cid": cid})).json()
            if s.get("providers"):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never saw a provider of {cid}")


async def bench_nodes(
    dn: Devnet, path: Path, small: Path, work: Path, copy: float, repeat: int, size: int
) -> None:
    a, *pullers, getter = dn.state().nodes
    async with R1fsClient(a.url) as ca:
        base = timed(lambda: hashlib.sha256(path.read_bytes()).digest(), repeat)
        t = time.perf_counter()
        out = await ca.add_file(path)
        upload = time.perf_counter() - t
        warm = (await ca.add_file(small))["cid"]
    cid = out["cid"]
    print("\nDEVNET  (node A holds the file; each other node fetches it once, from A)")
    sha_disk = line("sha256 of the file read from disk (baseline of the next row)", base, size)
    line("add over HTTP to node A (uvicorn, streamed body)", [upload], size, sha_disk, 0.8)
    served = []
    for _ in range(repeat):
        t = time.perf_counter()
        await bare_download(f"{a.url}/ipfs/{cid}", None)
        served.append(time.perf_counter() - t)
    line("node A's gateway alone: the file to an aiohttp client -> discard", served, size, copy)
    warmups = []
    for n in [*pullers, getter]:
        await wait_provided(n.url, cid)
        async with R1fsClient(n.url) as c:  # a node's first fetch loads its HTTP client: not timed
            t = time.perf_counter()
            await c.pin(warm)
            warmups.append(time.perf_counter() - t)
    print(
        f"  [a node's first fetch also loads aiohttp: {min(warmups):.2f}-{max(warmups):.2f} s, not counted]"
    )
    pulls = []
    for n in pullers:
        os.sync()
        async with R1fsClient(n.url) as c:
            t = time.perf_counter()
            await c.pin(cid)
            pulls.append(time.perf_counter() - t)
    line(f"node pulls the file from A into its store ({len(pulls)} nodes)", pulls, size, copy, 0.5)
    os.sync()
    async with R1fsClient(getter.url) as c:
        t = time.perf_counter()
        await c.get_to(cid, work / "got.bin")
        cross = time.perf_counter() - t
        line("get on a node without it, streamed to a local file", [cross], size, copy, 0.5)
        again = []
        for _ in range(repeat):
            os.sync()
            t = time.perf_counter()
            await c.get_to(cid, work / "got2.bin")
            again.append(time.perf_counter() - t)
        line("get again, now local to that node, to a local file", again, size, copy)
    same = (work / "got.bin").read_bytes() == path.read_bytes()  # noqa: ASYNC240
    print(f"  byte-identical: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=200, help="file size in MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pullers", type=int, default=2, help="devnet nodes that each pull the file once")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: the system temp folder)")
    ap.add_argument("--no-devnet", action="store_true", help="skip the cross-node part")
    args = ap.parse_args()
    size = args.mib * 2**20
    with tempfile.TemporaryDirectory(prefix="r1fs-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        data = os.urandom(size)
        path = work / "input.bin"
        path.write_bytes(data)
        small = work / "small.bin"
        small.write_bytes(os.urandom(2**20))
        print(
            f"{args.mib} MiB of random bytes in {work}; best of {args.repeat} (range in brackets); "
            f"{os.cpu_count()} cores; ratios are baseline time / row time"
        )
        bench_add(data, path, work, args.repeat)
        del data
        copy = bench_floor(path, work, args.repeat)
        if not args.no_devnet:
            dn = Devnet(work / "devnet")
            dn.up(nodes=2 + args.pullers, oracles=0, heartbeat=1.0, chain=False, timeout=90)
            try:
                asyncio.run(bench_nodes(dn, path, small, work, copy, args.repeat, size))
            finally:
                dn.down()


if __name__ == "__main__":
    main()
