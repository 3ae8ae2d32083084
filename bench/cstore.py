"""CSTORE benchmark, side by side with Redis in the same run.

Both systems get the same client pattern: one client on one connection writes batches of SETs to a
primary, `--window` batches per round trip (Redis: one MULTI-less pipeline of window x batch-size
SETs; r1os: one `POST /v1/cstore/batches` carrying window signed batches, each checked on its own),
and the data must reach two more replicas. The r1os client signs every batch inside the timed
loop. Both acknowledge a write only once it is durable on the primary's disk (Redis: appendonly +
appendfsync always; r1os: fsync'd log), or both in memory.

- throughput: ops/s from the first batch until the last key is on all 3 replicas; `--runs` runs
  per system, alternating between the two so that load from elsewhere on the machine hits both;
- convergence: per batch, time from the client sending it until it is readable on both other
  replicas, p50/p99 (Redis: the client times its pipeline plus `WAIT 2`; r1os: each replica records
  the time from the client stamping the batch to applying it, and the slower replica counts).
Also a 5-node devnet: a write on node A, time until it is readable on all 5 nodes (p50/p99).

Run: `.venv/bin/python bench/cstore.py [--batches 200 --batch-size 100 --window 4 --runs 3]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

from r1os.cstore import Op, sign_batch
from r1os.cstore._hlc import HybridClock
from r1os.devnet import Devnet
from r1os.identity import NodeKey


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else xs[0]


# -- Redis ----------------------------------------------------------------------------------------


def start_redis(tmp: Path, fsync: bool) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    ports = [free_port() for _ in range(3)]
    procs = []
    for i, port in enumerate(ports):
        d = tmp / f"redis{i}-{fsync}"
        d.mkdir()
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
                "--appendonly", "yes" if i == 0 and fsync else "no", "--appendfsync", "always"]  # fmt: skip
        if i:
            args += ["--replicaof", "127.0.0.1", str(ports[0])]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for port in ports:
        for _ in range(200):
            try:
                if redis.Redis(port=port).ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
    # Wait for the initial full resync to finish (state=online), not just for the replicas to connect.
    primary = redis.Redis(port=ports[0])
    for _ in range(400):
        info = primary.info("replication")
        states = [v.get("state") for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        if states == ["online", "online"]:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"redis replicas did not come online: {info}")
    return procs, ports


def redis_throughput(ports: list[int], run: int, batches: int, size: int, value: str, window: int) -> float:
    """Ops/s from the first SET until the last key is on both replicas."""
    primary = redis.Redis(port=ports[0])
    replicas = [redis.Redis(port=p) for p in ports[1:]]
    t0 = time.perf_counter()
    for first in range(0, batches, window):
        pipe = primary.pipeline(transaction=False)
        for b in range(first, min(first + window, batches)):
            for i in range(size):
                pipe.set(f"bench{run}:{b}:{i}", value)
        pipe.execute()
    last = f"bench{run}:{batches - 1}:{size - 1}"
    while not all(r.exists(last) for r in replicas):
        time.sleep(0.0005)
    elapsed = time.perf_counter() - t0
    sizes = [int(r.dbsize()) for r in (primary, *replicas)]
    if len(set(sizes)) != 1:
        print(f"  warning: redis replicas differ from the primary after run {run}: {sizes} keys")
    return batches * size / elapsed


def redis_convergence(ports: list[int], batches: int, size: int, value: str) -> list[float]:
    """Per batch: the pipeline plus `WAIT 2` (both replicas have it), one batch at a time."""
    primary = redis.Redis(port=ports[0])
    latencies = []
    for b in range(batches):
        t = time.perf_counter()
        pipe = primary.pipeline(transaction=False)
        for i in range(size):
            pipe.set(f"lat:{b}:{i}", value)
        pipe.execute()
        primary.wait(2, 5000)
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies


# -- r1os -----------------------------------------------------------------------------------------


def post_rounds(url: str, bodies: Iterator[bytes], batches: int, window: int) -> None:
    """Send `batches` signed batches to `url` (`/v1/cstore/batches`), `window` per request on one
    keep-alive connection (the HTTP counterpart of a Redis pipeline)."""
    parsed = httpx.URL(url)
    conn = http.client.HTTPConnection(parsed.host, parsed.port)
    headers = {"content-type": "application/x-ndjson"}
    try:
        for first in range(0, batches, window):
            body = b"\n".join(next(bodies) for _ in range(min(window, batches - first)))
            conn.request("POST", parsed.path, body=body, headers=headers)
            r = conn.getresponse()
            answer = r.read()
            if r.status != 200 or b'"cause"' in answer:
                raise RuntimeError(f"batches refused: {r.status} {answer[:500]!r}")
    finally:
        conn.close()


class R1osClient:
    """A client with its own key (its own `app:` namespace) writing signed batches to a devnet."""

    def __init__(self, urls: list[str], value: str, size: int) -> None:
        self.primary, self.replicas = urls[0], urls[1:]
        self.value, self.size = value, size
        self.key = NodeKey.generate()
        self.ns = f"app:{self.key.address.lower()}:"
        self.clock = HybridClock()

    def batch(self, prefix: str, b: int) -> bytes:
        ops = [Op("set", f"{self.ns}{prefix}:{b}:{i}", value=self.value) for i in range(self.size)]
        ts = self.clock.reserve(len(ops))
        return sign_batch(self.key, ops, ts.wall_ms, ts.counter)

    async def wait_replicas(self, http: httpx.AsyncClient, key: str) -> None:
        answers = await asyncio.gather(
            *(http.get(f"{u}/v1/cstore/wait", params={"key": key, "timeout": 30}) for u in self.replicas)
        )
        for r in answers:
            r.raise_for_status()

    async def throughput(self, http: httpx.AsyncClient, batches: int, window: int) -> float:
        """Ops/s from the first batch (signing included) until the last key is on both replicas."""
        t0 = time.perf_counter()
        # Blocking on purpose: nothing else runs on this loop while the clock runs.
        bodies = (self.batch("bench", b) for b in range(batches))
        post_rounds(f"{self.primary}/v1/cstore/batches", bodies, batches, window)
        await self.wait_replicas(http, f"{self.ns}bench:{batches - 1}:{self.size - 1}")
        elapsed = time.perf_counter() - t0
        # Outside the clock: the last key arriving must mean that every key did.
        stats = [(await http.get(f"{u}/v1/cstore/stats")).json() for u in (self.primary, *self.replicas)]
        entries = [s["entries"] for s in stats]
        if len(set(entries)) != 1:
            print(f"  warning: r1os replicas differ from the primary: {entries} entries")
        return batches * self.size / elapsed

    async def convergence(self, http: httpx.AsyncClient, batches: int) -> list[float]:
        """Convergence as the replicas see it: each replica records, per batch, the time from the
        client stamping it to applying it (same machine, same clock); a batch has converged when the
        slower replica has it. One batch at a time."""
        since = time.time_ns() // 1_000_000
        sent = []
        for b in range(batches):
            body = self.batch("lat", b)
            sent.append(hashlib.sha256(body).hexdigest())
            r = await http.post(f"{self.primary}/v1/cstore/batch", content=body)
            r.raise_for_status()
        await self.wait_replicas(http, f"{self.ns}lat:{batches - 1}:{self.size - 1}")
        per_batch: dict[str, float] = {}
        for u in self.replicas:
            data = (await http.get(f"{u}/v1/cstore/lag", params={"since_ms": since})).json()
            for lag, bid in zip(data["lag_ms"], data["batch"], strict=True):
                per_batch[bid] = max(per_batch.get(bid, 0.0), float(lag))
        return [per_batch[bid] for bid in sent if bid in per_batch]


async def compare(
    tmp: Path, fsync: bool, broker: str | None, args: argparse.Namespace, value: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Both clusters up side by side; throughput runs alternate between them (so a burst of load
    from elsewhere on the machine hits both alike), then convergence is measured on each."""
    procs, ports = start_redis(tmp, fsync)
    dn = Devnet(tmp / f"r1os-{fsync}")
    try:
        state = await asyncio.to_thread(
            dn.up, nodes=3, oracles=0, chain=False, heartbeat=2.0, timeout=60, fsync=fsync, broker=broker
        )
        urls = [n.url for n in state.nodes]
        r_tp, o_tp = [], []
        async with httpx.AsyncClient(timeout=60) as http:
            for run in range(args.runs):
                r_tp.append(redis_throughput(ports, run, args.batches, args.batch_size, value, args.window))
                client = R1osClient(urls, value, args.batch_size)  # a fresh namespace per run
                o_tp.append(await client.throughput(http, args.batches, args.window))
            n_lat = min(args.batches, 200)
            r_lat = redis_convergence(ports, n_lat, args.batch_size, value)
            o_lat = await R1osClient(urls, value, args.batch_size).convergence(http, n_lat)
        return r_tp, o_tp, r_lat, o_lat
    finally:
        dn.down()
        for p in procs:
            p.terminate()
            p.wait()


async def devnet_convergence(tmp: Path, writes: int, broker: str | None) -> list[float]:
    """5-node devnet: a write on node A, time until it is readable on all five."""
    dn = Devnet(tmp / "five")
    state = await asyncio.to_thread(
        dn.up, nodes=5, oracles=0, chain=False, heartbeat=2.0, timeout=60, broker=broker
    )
    try:
        key = NodeKey.generate()
        clock = HybridClock()
        async with httpx.AsyncClient(timeout=30) as http:
            since = time.time_ns() // 1_000_000
            sent = []
            for i in range(writes):
                k = f"app:{key.address.lower()}:w{i}"
                ts = clock.reserve()
                body = sign_batch(key, [Op("set", k, value=i)], ts.wall_ms, ts.counter)
                sent.append(hashlib.sha256(body).hexdigest())
                (await http.post(f"{state.nodes[0].url}/v1/cstore/batch", content=body)).raise_for_status()
            last = f"app:{key.address.lower()}:w{writes - 1}"
            others = state.nodes[1:]
            await asyncio.gather(*(http.get(f"{n.url}/v1/cstore/wait", params={"key": last}) for n in others))
            per_write: dict[str, float] = {}
            for n in others:
                data = (await http.get(f"{n.url}/v1/cstore/lag", params={"since_ms": since})).json()
                for lag, bid in zip(data["lag_ms"], data["batch"], strict=True):
                    per_write[bid] = max(per_write.get(bid, 0.0), float(lag))
        out = [per_write[bid] for bid in sent if bid in per_write]
        return out
    finally:
        dn.down()


@contextlib.contextmanager
def _mosquitto(tmp: Path) -> Iterator[str]:
    """A real mosquitto for the nodes, as production runs an external broker."""
    from r1os.transport import find_mosquitto

    exe = find_mosquitto()
    if exe is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto), or use --broker embedded")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
        "max_queued_messages 100000\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--value-bytes", type=int, default=64)
    parser.add_argument("--window", type=int, default=4, help="batches per round trip (both systems)")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per system, alternating")
    parser.add_argument(
        "--broker", choices=["mosquitto", "embedded"], default="mosquitto",
        help="MQTT broker between the r1os nodes (production runs an external broker)",
    )  # fmt: skip
    args = parser.parse_args()
    value = "v" * args.value_bytes
    with tempfile.TemporaryDirectory() as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        broker = None
        if args.broker == "mosquitto":
            broker = stack.enter_context(_mosquitto(tmp))
        n = args.batches * args.batch_size
        print(f"r1os nodes talk through the {args.broker} broker")
        print(f"replicated writes, 3 replicas, {n} ops in batches of {args.batch_size}, "
              f"{args.value_bytes}-byte values, {args.window} batches per round trip")  # fmt: skip
        for fsync, label in ((True, "durable (fsync before ack)"), (False, "in memory (no fsync)")):
            r_tp, o_tp, r_lat, o_lat = asyncio.run(compare(tmp, fsync, broker, args, value))
            ratios = [o / r for o, r in zip(o_tp, r_tp, strict=True)]
            print(f" {label}, {args.runs} runs each (median, range):")
            for name, tp, lat in (("redis", r_tp, r_lat), ("r1os ", o_tp, o_lat)):
                spread = f"({min(tp):,.0f}-{max(tp):,.0f})"
                print(
                    f"  {name} throughput {statistics.median(tp):>8,.0f} ops/s {spread:<17}"
                    f" convergence p50 {pct(lat, 50):6.2f} ms  p99 {pct(lat, 99):6.2f} ms"
                )
            print(
                f"  ratio r1os/redis throughput: {statistics.median(o_tp) / statistics.median(r_tp):.2f}x "
                f"(run by run {min(ratios):.2f}x-{max(ratios):.2f}x; target >= 0.5x); "
                "r1os convergence p99 target <= 50 ms"
            )
        five = asyncio.run(devnet_convergence(tmp, 200, broker))
    print(f"5-node devnet, single write on A readable on all: p50 {pct(five, 50):.2f} ms  "
          f"p99 {pct(five, 99):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
