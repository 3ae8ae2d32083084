"""R1FS benchmark: every figure beside a baseline measured in the same run, on the same bytes, and
run right before each measured run (baseline, row, baseline, row, ...), so a noisy neighbour slows
both sides of a ratio alike. Each row prints its best rate, the range, the paired baseline's best and
the ratio of the two bests.

Add (target >= 0.8x): baseline `hashlib.sha256` in one call over the file's bytes in memory, one
thread. Rows: the CID alone (in memory, reading the file), the file into a block store (read, hash,
pack writes), the same in one thread, and the I/O floor under it (the file read and written to one
new file in 256 KiB pieces, no hashing); on the devnet, an HTTP upload to a node.

Cross-node get (target >= 0.5x): baseline `shutil.copyfile` of the same file to a new file. Rows: a
bare download of the file from another local process (a stdlib server, a thread per connection,
os.sendfile) thrown away, then the
same read into a buffer, hashed per 256 KiB and written to one file (the floor under any fetch that
verifies and stores what it gets); then R1FS on a devnet: node B pins a file only node A holds
(every block verified, then stored on B), node D streams it to a local file through its HTTP API
while it fetches it from A; beside them, A's gateway serving the file to a bare client.

Cross-node pull against the floor (target >= 0.8x): the honest anchor for a verified pull is the
floor row above (download from a sendfile server, hash every 256 KiB, write to one file), so the
pulls are run again, each right after a run of the floor (whose server stays up), and printed with
the floor as their baseline; each puller lets its copy go (unpin, GC) before it pulls again.
`--pulls-only` runs just the floors and that row (on 1 + `--pullers` nodes): quick, for profiling.

Run: `.venv/bin/python bench/r1fs.py [--mib 200] [--repeat 3] [--dir DIR] [--pulls-only]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from r1os.devnet import Devnet
from r1os.devnet._state import DevnetNode
from r1os.r1fs import CHUNK_SIZE, BlockStore, R1fsClient, import_bytes, import_file
from r1os.r1fs._importer import default_workers

#: The pull ratios recorded in docs/r1fs.md, printed beside the pull rows.
RECORDED = (
    "(recorded: 0.57-0.61x before the run listener, 0.68-0.73x after it,"
    " 0.72-0.90x (median 0.77x) with 1 MiB reads and /dag, 0.73-0.82x (median 0.79x) with no walk"
    " after a pin's fetch and (since left out) its provider record after the answer; docs/r1fs.md)"
)

#: Where the runs write (set by `main`): emptied after every run, so the page cache does not fill
#: up with old outputs as the benchmark goes on (that slowed later rows by up to 10x here).
OUT: Path = Path(tempfile.gettempdir())


def tidy() -> None:
    for entry in OUT.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_once(fn: Callable[[], object]) -> float:
    """Seconds of one run, started with no dirty pages left by the one before; its output is
    deleted afterwards, outside the timing."""
    os.sync()
    t = time.perf_counter()
    fn()
    took = time.perf_counter() - t
    tidy()
    return took


def paired(
    fn: Callable[[], object], base: Callable[[], object], repeat: int
) -> tuple[list[float], list[float]]:
    """Times of `repeat` runs of `fn`, each right after a run of the baseline `base`."""
    rows, bases = [], []
    for _ in range(repeat):
        bases.append(run_once(base))
        rows.append(run_once(fn))
    return rows, bases


def line(
    label: str,
    size: int,
    times: list[float],
    bases: list[float] | None = None,
    target: float | None = None,
) -> float:
    """Print the best rate (and the range), with the paired baseline's best and the ratio of the
    two bests; returns the row's best time."""
    best = min(times)
    rate = size / best / 2**20
    spread = f"({size / max(times) / 2**20:5.0f}-{rate:5.0f})" if len(times) > 1 else " " * 13
    text = f"  {label:<60} {rate:6.0f} MiB/s {spread}"
    if bases:
        ratio = min(bases) / best
        text += f"  base {size / min(bases) / 2**20:5.0f}  {ratio:5.2f}x"
        if target is not None:
            text += f" (target {target}x: {'met' if ratio >= target else 'NOT met'})"
    print(text, flush=True)
    return best


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_self() -> float:
    """CPU seconds this process has used so far (every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fresh(work: Path, name: str) -> Path:
    return work / f"{name}-{time.monotonic_ns()}"


def write_pieces(path: Path, out: Path) -> None:
    """The file read and written to a new file in 256 KiB pieces: the I/O of an add, no hashing."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(CHUNK_SIZE):
                os.write(fd, chunk)
    finally:
        os.close(fd)


def into_store(path: Path, workers: int | None) -> None:
    store = BlockStore(fresh(OUT, "store"))
    try:
        import_file(path, store.put, workers=workers)
    finally:
        store.close()


def bench_add(data: bytes, path: Path, repeat: int) -> None:
    size = len(data)
    workers = default_workers()
    print(f"\nADD  (base: hashlib.sha256 in one call over the {size >> 20} MiB in memory, one thread)")

    def sha() -> None:
        hashlib.sha256(data).digest()

    rows: list[tuple[str, Callable[[], object], float | None]] = [
        (f"only-hash: CID of the bytes in memory ({workers} threads)", lambda: import_bytes(data), 0.8),
        (f"only-hash: CID reading the file ({workers} threads)", lambda: import_file(path), 0.8),
        (f"add into a block store: read, hash, write ({workers} threads)",
         lambda: into_store(path, None), 0.8),
        ("add into a block store, all in one thread", lambda: into_store(path, 0), None),
        ("I/O floor: the file read and written in 256 KiB pieces, no hash",
         lambda: write_pieces(path, fresh(OUT, "pieces")), None),
    ]  # fmt: skip
    for label, fn, target in rows:
        line(label, size, *paired(fn, sha, repeat), target=target)


_SERVER = """
import http.server, os, sys

path = sys.argv[1]
size = os.path.getsize(path)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(False)

    def do_GET(self):
        self.answer(True)

    def answer(self, body):
        lo, hi = 0, size - 1
        ranged = self.headers.get("Range")
        if ranged:
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            lo, hi = int(first), int(last) if last else size - 1
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {lo}-{hi}/{size}")
        self.send_header("Content-Length", str(hi - lo + 1))
        self.end_headers()  # written at once: the handler's stream is unbuffered
        if body:
            with open(path, "rb") as f:  # the kernel copies the file to the socket
                offset, left = lo, hi - lo + 1
                while left:
                    n = os.sendfile(self.connection.fileno(), f.fileno(), offset, left)
                    offset, left = offset + n, left - n


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler)
print("ready", flush=True)
server.serve_forever()
"""


def plain_fetch(url: str, out: Path | None, streams: int = 2) -> int:
    """GET `url` in `streams` Range requests side by side (stdlib client, one reused buffer each);
    with `out`, every 256 KiB is hashed and written at its offset in `out`: what a verified fetch
    cannot do without. Without `out` the bytes are thrown away."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port)
    conn.request("HEAD", u.path)
    size = int(conn.getresponse().getheader("Content-Length") or 0)
    conn.close()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) if out is not None else -1
    per = -(-size // streams // CHUNK_SIZE) * CHUNK_SIZE

    def stream(lo: int) -> None:
        hi = min(size, lo + per)
        c = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port)
        c.request("GET", u.path, headers={"Range": f"bytes={lo}-{hi - 1}"})
        r = c.getresponse()
        buf = memoryview(bytearray(CHUNK_SIZE))
        pos = lo
        while pos < hi:
            view = buf[: min(CHUNK_SIZE, hi - pos)]
            got = 0
            while got < len(view):
                n = r.readinto(view[got:])
                if not n:
                    raise EOFError(f"{url} ended at {pos + got}")
                got += n
            if fd >= 0:
                hashlib.sha256(view).digest()
                os.pwrite(fd, view, pos)
            pos += len(view)
        c.close()

    try:
        with ThreadPoolExecutor(streams) as pool:
            list(pool.map(stream, range(0, size, per)))
    finally:
        if fd >= 0:
            os.close(fd)
    return size


@contextlib.contextmanager
def bench_floor(path: Path, repeat: int) -> Iterator[tuple[Callable[[], object], Callable[[], object], int]]:
    """The cross-node floors; yields the baselines of the devnet rows: a local copy, and the floor
    (download from the sendfile server, hash every 256 KiB, write to one file), whose server stays up,
    and the server's process id (its CPU is the floor's sender's)."""
    size = path.stat().st_size
    print(f"\nCROSS-NODE GET  (base: shutil.copyfile of the same {size >> 20} MiB file to a new file)")

    def copy() -> None:
        shutil.copyfile(path, fresh(OUT, "copy"))

    port = 20000 + os.getpid() % 20000
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(path), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and "ready" in server.stdout.readline()
        url = f"http://127.0.0.1:{port}/f"

        def floor() -> None:
            plain_fetch(url, fresh(OUT, "plain"))

        line(
            "floor: download from another process (sendfile) -> discard",
            size, *paired(lambda: plain_fetch(url, None), copy, repeat),
        )  # fmt: skip
        line("floor: the same, each 256 KiB hashed, written to one file", size, *paired(floor, copy, repeat))
        yield copy, floor, server.pid
    finally:
        server.terminate()
        server.wait()


def token(node: DevnetNode) -> str:
    """The node's operator token (adds and pins need a caller; the bench is each node's operator)."""
    return (Path(node.home) / "api-token").read_text().strip()


async def wait_provided(url: str, cid: str) -> None:
    async with httpx.AsyncClient() as h:
        for _ in range(200):
            s = (await h.get(f"{url}/v1/r1fs/stat", params={"cid": cid})).json()
            if s.get("providers"):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never saw a provider of {cid}")


async def pull_again(
    node: DevnetNode, cid: str, cpu: list[tuple[float, float]] | None = None, sender: int | None = None
) -> float:
    """Seconds of one more pull of `cid` into `node`: its pin released and its blocks collected first.
    With `cpu`, the CPU seconds the pulling node and the `sender` process spent meanwhile are added."""
    async with R1fsClient(node.url, token=token(node)) as c:
        await c.unpin(cid)
        await c.gc()
        os.sync()
        c0, s0 = cpu_of(node.pid), cpu_of(sender)
        t = time.perf_counter()
        await c.pin(cid)
        took = time.perf_counter() - t
        if cpu is not None:
            cpu.append((cpu_of(node.pid) - c0, cpu_of(sender) - s0))
        return took


def timed_floor(floor: Callable[[], object], server: int, cpu: list[tuple[float, float]]) -> float:
    """`run_once(floor)`, adding the CPU seconds of its receiver (this process) and its server during
    the timed part only (not the sync before it nor the deletion of its output after it)."""
    spent: list[tuple[float, float]] = []

    def measured() -> None:
        c0, s0 = cpu_self(), cpu_of(server)
        floor()
        spent.append((cpu_self() - c0, cpu_of(server) - s0))

    took = run_once(measured)
    cpu.extend(spent)
    return took


def cpu_line(label: str, cpu: list[tuple[float, float]]) -> None:
    recv = sorted(c for c, _ in cpu)
    send = sorted(s for _, s in cpu)
    print(
        f"  {label} CPU-s per run, receiver median {recv[len(recv) // 2]:.3f} (min {recv[0]:.3f}),"
        f" sender median {send[len(send) // 2]:.3f} (min {send[0]:.3f})"
    )


async def bench_pulls(
    dn: Devnet, path: Path, small: Path, floor: Callable[[], object], server: int, repeat: int
) -> None:
    """Only the pull row, each pull right after a run of the floor (`--pulls-only`): for profiling.
    Beside the times, the CPU seconds of each side: the floor's receiver (this process, which does
    nothing else meanwhile) and server, the pulling node and node A (each process as a whole)."""
    a, *pullers = dn.state().nodes
    size = path.stat().st_size  # noqa: ASYNC240
    print(f"\nPULL  (base: the floor above; {len(pullers)} nodes, {repeat} pulls each)")
    async with R1fsClient(a.url, token=token(a)) as ca:
        warm = (await ca.add_file(small))["cid"]
        cid = (await ca.add_file(path))["cid"]
    for n in pullers:
        await wait_provided(n.url, cid)
        async with R1fsClient(n.url, token=token(n)) as c:
            await c.pin(warm)
    pulls: list[float] = []
    bases: list[float] = []
    floor_cpu: list[tuple[float, float]] = []
    pull_cpu: list[tuple[float, float]] = []
    for _ in range(repeat):
        for n in pullers:
            bases.append(await asyncio.to_thread(timed_floor, floor, server, floor_cpu))
            pulls.append(await pull_again(n, cid, pull_cpu, a.pid))
    line("node pulls the file from A into its store", size, pulls, bases, 0.8)
    print(f"  {RECORDED:<60}")
    print("  pulls, s: " + " ".join(f"{t:.3f}" for t in pulls))
    print("  floors, s: " + " ".join(f"{t:.3f}" for t in bases))
    cpu_line("floor:", floor_cpu)
    cpu_line("pull: ", pull_cpu)


async def bench_nodes(
    dn: Devnet,
    paths: tuple[Path, Path],
    small: Path,
    work: Path,
    baselines: tuple[Callable[[], object], Callable[[], object], int],
    repeat: int,
) -> None:
    a, *pullers, getter = dn.state().nodes
    path, other = paths
    copy, floor, server = baselines
    size = path.stat().st_size
    print("\nDEVNET  (node A holds the files; each other node fetches one once, from A)")

    def sha_disk() -> None:
        hashlib.sha256(path.read_bytes()).digest()

    adds, warm = {}, ""
    for name, local, file in (("over HTTP", False, path), ("handing A the open file", True, other)):
        async with R1fsClient(a.url, token=token(a), local=local) as ca:  # A's operator adds
            warm = (await ca.add_file(small))["cid"]  # loads what a first request loads: not timed
            base = run_once(sha_disk)
            t = time.perf_counter()
            adds[local] = (await ca.add_file(file))["cid"]
            took = time.perf_counter() - t
        line(f"add on A, {name} (base: sha256 of the file from disk)", size, [took], [base], 0.8)
    cid, cid2 = adds[False], adds[True]
    served, bases = [], []
    for _ in range(repeat):
        bases.append(run_once(copy))
        served.append(await asyncio.to_thread(run_once, lambda: plain_fetch(f"{a.url}/ipfs/{cid}", None)))
    line("node A's gateway alone: the file to a bare client -> discard", size, served, bases)
    for n in [*pullers, getter]:
        await wait_provided(n.url, cid)
        await wait_provided(n.url, cid2)
        async with R1fsClient(n.url, token=token(n)) as c:  # a first fetch loads things: not timed
            await c.pin(warm)
    pulls, bases, floors = [], [], []
    for n in pullers:
        bases.append(run_once(copy))
        os.sync()
        async with R1fsClient(n.url, token=token(n)) as c:  # each node's operator pins the file
            t = time.perf_counter()
            await c.pin(cid)
            pulls.append(time.perf_counter() - t)
    for _ in range(repeat - 1):  # more pulls, each by a node that let its copy go
        for n in pullers:
            bases.append(run_once(copy))
            pulls.append(await pull_again(n, cid))
    line(f"node pulls the file from A into its store ({len(pulls)} pulls)", size, pulls, bases, 0.5)
    pulls = []
    floor_cpu: list[tuple[float, float]] = []
    pull_cpu: list[tuple[float, float]] = []
    for _ in range(repeat):  # the honest anchor: the floor, a verified download without R1FS
        for n in pullers:
            floors.append(await asyncio.to_thread(timed_floor, floor, server, floor_cpu))
            pulls.append(await pull_again(n, cid, pull_cpu, a.pid))
    line("the same pulls, base: the floor (download, hash, write)", size, pulls, floors, 0.8)
    print(f"  {RECORDED:<60}")
    cpu_line("floor:", floor_cpu)
    cpu_line("pull: ", pull_cpu)
    for name, local, c_id in (("handed the open file", True, cid), ("over HTTP", False, cid2)):
        async with R1fsClient(getter.url, local=local) as c:
            base = run_once(copy)
            os.sync()
            t = time.perf_counter()
            await c.get_to(c_id, work / f"got-{local}.bin")
            took = time.perf_counter() - t
        line(f"get on a node without it, {name}", size, [took], [base], 0.5)
    for name, local in (("handed the open file", True), ("over HTTP", False)):
        async with R1fsClient(getter.url, local=local) as c:
            again, bases = [], []
            for _ in range(repeat):
                bases.append(run_once(copy))
                os.sync()
                t = time.perf_counter()
                await c.get_to(cid, fresh(OUT, "again"))
                again.append(time.perf_counter() - t)
        line(f"get again, now local to that node, {name}", size, again, bases)
    same = [(work / f"got-{x}.bin").read_bytes() == p.read_bytes() for x, p in ((True, path), (False, other))]  # noqa: ASYNC240
    print(f"  byte-identical: {all(same)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=200, help="file size in MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pullers", type=int, default=2, help="devnet nodes that each pull the file once")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: the system temp folder)")
    ap.add_argument("--no-devnet", action="store_true", help="skip the cross-node part")
    ap.add_argument("--pulls-only", action="store_true", help="only the floors and the pull row")
    args = ap.parse_args()
    size = args.mib * 2**20
    with tempfile.TemporaryDirectory(prefix="r1fs-bench-", dir=args.dir) as tmp:
        global OUT
        work = Path(tmp)
        OUT = work / "out"
        OUT.mkdir()
        data = os.urandom(size)
        path = work / "input.bin"
        path.write_bytes(data)
        other = work / "other.bin"
        other.write_bytes(os.urandom(size))
        small = work / "small.bin"
        small.write_bytes(os.urandom(2**20))
        print(
            f"{args.mib} MiB of random bytes in {work}; best of {args.repeat} (range in brackets); "
            f"{os.cpu_count()} cores; ratios are baseline time / row time"
        )
        if not args.pulls_only:
            bench_add(data, path, args.repeat)
        del data
        with bench_floor(path, args.repeat) as (copy, floor, server):
            if not args.no_devnet:
                dn = Devnet(work / "devnet")
                extra = 1 if args.pulls_only else 2
                dn.up(nodes=extra + args.pullers, oracles=0, heartbeat=1.0, chain=False, timeout=90)
                try:
                    if args.pulls_only:
                        asyncio.run(bench_pulls(dn, path, small, floor, server, args.repeat))
                    else:
                        asyncio.run(
                            bench_nodes(dn, (path, other), small, work, (copy, floor, server), args.repeat)
                        )
                finally:
                    dn.down()


if __name__ == "__main__":
    main()
