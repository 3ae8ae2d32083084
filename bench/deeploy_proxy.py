"""Deeploy proxy benchmark: GET of a small answer from a replica directly, and through `/apps/<name>/`
on a node, in one run (target: throughput through the proxy >= 0.7x direct).

Rows:
- `direct`: the replica, uvicorn (httptools, uvloop) serving a tiny Starlette app in its own process,
  as a `process` app would run.
- `proxy`: through a node's HTTP stack in its own process (uvicorn with the node's bounded protocol,
  the body-limit middleware, a FastAPI app with the node's error handlers) with the proxy's routes
  on a service's router (`AppProxy.mount`), resolving to the local replica (a resolver returning a
  fixed list: what the Deeploy service adds to find replicas is not measured here).
- `proxy, wrap`: the same node with the proxy in front of the FastAPI app (`AppProxy.wrap`).
- `node route`: the first node answering a plain FastAPI route itself: the floor of any node route.
- `direct, app` / `proxy, app`: a second replica that spends `--work-ms` of CPU per answer (a small
  model's predict), directly and through a node (`mount`).
- `proxy, hop`: an entry node forwarding to the `wrap` node (`x-r1os-hop: 1`) that holds the
  replica, as when a request enters the network on a node without a replica.

Load: a separate process with `--clients` keep-alive connections, each sending one GET after the
other for `--seconds` (after a short warm-up), on a plain asyncio HTTP/1.1 client (so the load
generator costs little next to what it measures). Latency is per request, from write to the last
byte of the answer. Each row also gives the CPU time per request of every process that worked
(from /proc), which is steadier than rates on a shared machine.

Runs alternate (row after row, `--repeat` times) so that a noisy neighbour slows each side alike;
each row prints its best run, and the ratio of bests. All processes share the machine's cores
(printed): the proxy's CPU is taken from the same cores the replica and the load use.

Run: `.venv/bin/python bench/deeploy_proxy.py [--clients 16] [--seconds 3] [--repeat 3] [--work-ms 0.5]`
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

BODY = b'{"ok": true, "answer": 42}'


# -- servers (each in its own process) -----------------------------------------------------------------


def _listen() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _run(app: Any, sock: socket.socket, **config: Any) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", **config))
    server.run(sockets=[sock])


def replica_process(ready: Connection, work_ms: float = 0.0) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def answer(request: Request) -> Response:
        if work_ms:  # an app's own work (a small model's predict), on the CPU as such work is
            until = time.perf_counter() + work_ms / 1e3
            while time.perf_counter() < until:
                pass
        return Response(BODY, media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", answer)])
    sock = _listen()
    ready.send(f"http://127.0.0.1:{sock.getsockname()[1]}")
    _run(app, sock, http="httptools", loop="uvloop")


def node_process(ready: Connection, upstream: str, local: bool, wrap: bool = False) -> None:
    """A node's HTTP stack with only the proxy, on a service's router or (`wrap`) in front of the
    node's app, and one plain route (`/v1/floor`); the resolver returns one fixed upstream."""
    from fastapi import APIRouter, FastAPI, Response

    from r1os.deeploy._proxy import AppProxy, AppRef, Upstream
    from r1os.node import install_error_handlers
    from r1os.node._http import HttpLimits, bounded
    from r1os.node._limits import BodyLimit

    upstreams = [Upstream(node="0xbench", url=upstream, local=local, app="0x" + "ab" * 20 + "/bench")]

    def resolve(ref: AppRef, hop: bool) -> list[Upstream]:
        return upstreams

    proxy = AppProxy(resolve)
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter()
    if not wrap:
        proxy.mount(router)

    @router.get("/v1/floor")
    async def floor() -> Response:
        return Response(BODY, media_type="application/json")

    app.include_router(router)
    sock = _listen()
    ready.send(f"http://127.0.0.1:{sock.getsockname()[1]}")
    served = BodyLimit(proxy.wrap(app) if wrap else app, {"/apps/": None})
    _run(served, sock, http=bounded(HttpLimits()), loop="uvloop")


# -- load --------------------------------------------------------------------------------------------


async def _client(host: str, port: int, request: bytes, until: float, warm: float, out: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    perf = time.perf_counter
    try:
        while True:
            t0 = perf()
            if t0 >= until:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:200]!r}")
            if t0 >= warm:
                out.append(perf() - t0)
    finally:
        writer.close()


def load_process(url: str, path: str, clients: int, seconds: float, result: Connection) -> None:
    import uvloop

    host, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode()

    async def main() -> tuple[float, list[float]]:
        latencies: list[float] = []
        start = time.perf_counter()
        warm = start + min(0.5, seconds / 4)
        until = warm + seconds
        await asyncio.gather(
            *(_client(host, int(port), request, until, warm, latencies) for _ in range(clients))
        )
        return time.perf_counter() - warm, latencies

    cpu0 = time.process_time()
    elapsed, latencies = uvloop.run(main())
    result.send((len(latencies) / elapsed, latencies, time.process_time() - cpu0))


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: dict[str, float]
    """CPU time per request of each process (the load generator's includes its warm-up)."""


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, path: str, clients: int, seconds: float, servers: dict[str, int]) -> Run:
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=load_process, args=(url, path, clients, seconds, theirs))
    before = {name: _cpu_seconds(pid) for name, pid in servers.items()}
    p.start()
    rate, latencies, load_cpu = mine.recv()
    after = {name: _cpu_seconds(pid) for name, pid in servers.items()}
    p.join()
    n = len(latencies)
    latencies.sort()
    cpu = {name: (after[name] - before[name]) / n * 1e6 for name in servers}
    cpu["load"] = load_cpu / n * 1e6
    return Run(
        rate=rate,
        p50_ms=statistics.median(latencies) * 1e3,
        p99_ms=latencies[int(n * 0.99) - 1] * 1e3,
        cpu_us=cpu,
    )


def start(target: Any, *args: Any) -> tuple[Any, str]:
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=target, args=(theirs, *args), daemon=True)
    p.start()
    if not mine.poll(30):
        raise RuntimeError(f"{target.__name__} did not start")
    url: str = mine.recv()
    _wait_listening(url)
    return p, url


def _wait_listening(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/", timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-hop", action="store_true", help="leave out the two-node row")
    ap.add_argument(
        "--work-ms",
        type=float,
        default=0.5,
        help="CPU per answer of the second replica (0: leave out its rows)",
    )
    args = ap.parse_args()

    procs = []
    replica, replica_url = start(replica_process)
    procs.append(replica)
    node, node_url = start(node_process, replica_url, True)
    procs.append(node)
    wrapped, wrapped_url = start(node_process, replica_url, True, True)
    procs.append(wrapped)
    servers = {"replica": replica.pid, "node": node.pid, "node'": wrapped.pid}
    rows: dict[str, tuple[str, str]] = {
        "direct": (replica_url, "/hello"),
        "proxy": (node_url, "/apps/bench/hello"),
        "proxy, wrap": (wrapped_url, "/apps/bench/hello"),
        "node route": (node_url, "/v1/floor"),
    }
    if args.work_ms:
        busy, busy_url = start(replica_process, args.work_ms)
        busy_node, busy_node_url = start(node_process, busy_url, True)
        procs += [busy, busy_node]
        servers |= {"app": busy.pid, "app node": busy_node.pid}
        rows["direct, app"] = (busy_url, "/hello")
        rows["proxy, app"] = (busy_node_url, "/apps/bench/hello")
    if not args.no_hop:
        entry, entry_url = start(node_process, wrapped_url, False, True)
        procs.append(entry)
        servers["entry"] = entry.pid
        rows["proxy, hop"] = (entry_url, "/apps/bench/hello")
    print(
        f"DEEPLOY PROXY  GET of {len(BODY)} bytes, {args.clients} keep-alive clients, {args.seconds:g} s per "
        f"run, best of {args.repeat}; {os.cpu_count()} cores shared by every process"
    )
    try:
        runs: dict[str, list[Run]] = {name: [] for name in rows}
        for _ in range(args.repeat):
            for name, (url, path) in rows.items():
                runs[name].append(measure(url, path, args.clients, args.seconds, servers))
        best = {name: max(rs, key=lambda r: r.rate) for name, rs in runs.items()}
        print(
            f"  {'':18} {'req/s':>7} {'range':>15} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>7}   CPU us/request"
        )
        for name, run in best.items():
            rates = [r.rate for r in runs[name]]
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in run.cpu_us.items() if v >= 1)
            base = best["direct, app" if "app" in name else "direct"]
            spread = f"{min(rates):7.0f}-{max(rates):<7.0f}"
            print(
                f"  {name:18} {run.rate:7.0f} {spread} {run.p50_ms:7.2f} {run.p99_ms:7.2f}"
                f" {run.rate / base.rate:6.2f}x   {cpu}"
            )
        for name in best:
            if not name.startswith("proxy") or "hop" in name:
                continue
            base, proxy = best["direct, app" if "app" in name else "direct"], best[name]
            ratio = proxy.rate / base.rate
            print(
                f"  {name}: added latency p50 {proxy.p50_ms - base.p50_ms:+.2f} ms, "
                f"p99 {proxy.p99_ms - base.p99_ms:+.2f} ms; throughput {ratio:.2f}x direct "
                f"(target >= 0.7x: {'met' if ratio >= 0.7 else 'NOT met'})"
            )
    finally:
        for p in procs:
            p.terminate()
            p.join(10)


if __name__ == "__main__":
    main()
