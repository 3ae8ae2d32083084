"""CSTORE benchmark, side by side with Redis in the same run.

Both systems get the same client pattern: one client writes pipelined batches of SETs to a primary
(Redis: a MULTI-less pipeline; r1os: one signed batch per request) and the data must reach two
more replicas. Both acknowledge a write only once it is durable on the primary's disk (Redis:
appendonly + appendfsync always; r1os: fsync'd log).

- throughput: ops/s from the first batch until the last key is on all 3 replicas;
- convergence: per batch, time from the client sending it until it is readable on both other
  replicas, p50/p99 (Redis: the client times its pipeline plus `WAIT 2`; r1os: each replica records
  the time from the client stamping the batch to applying it, and the slower replica counts).
Also a 5-node devnet: a write on node A, time until it is readable on all 5 nodes (p50/p99).

Run: `.venv/bin/python bench/cstore.py [--batches 200 --batch-size 100]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
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


def bench_redis(tmp: Path, batches: int, size: int, value: str, fsync: bool) -> tuple[float, list[float]]:
    procs, ports = start_redis(tmp, fsync)
    try:
        primary = redis.Redis(port=ports[0])
        replicas = [redis.Redis(port=p) for p in ports[1:]]
        t0 = time.perf_counter()
        for b in range(batches):
            pipe = primary.pipeline(transaction=False)
            for i in range(size):
                pipe.set(f"bench:{b}:{i}", value)
            pipe.execute()
        last = f"bench:{batches - 1}:{size - 1}"
        while not all(r.exists(last) for r in replicas):
            time.sleep(0.0005)
        throughput = batches * size / (time.perf_counter() - t0)
        latencies = []
        for b in range(min(batches, 200)):
            t = time.perf_counter()
            pipe = primary.pipeline(transaction=False)
            for i in range(size):
                pipe.set(f"lat:{b}:{i}", value)
            pipe.execute()
            primary.wait(2, 5000)
            latencies.append((time.perf_counter() - t) * 1000)
        return throughput, latencies
    finally:
        for p in procs:
            p.terminate()
            p.wait()


# -- r1os -----------------------------------------------------------------------------------------


async def bench_r1os(
    tmp: Path, batches: int, size: int, value: str, fsync: bool, broker: str | None
) -> tuple[float, list[float]]:
    dn = Devnet(tmp / f"r1os-{fsync}")
    state = await asyncio.to_thread(
        dn.up, nodes=3, oracles=0, chain=False, heartbeat=2.0, timeout=60, fsync=fsync, broker=broker
    )
    try:
        key = NodeKey.generate()
        ns = f"app:{key.address.lower()}:"
        clock = HybridClock()
        primary, replicas = state.nodes[0].url, [n.url for n in state.nodes[1:]]
        async with httpx.AsyncClient(timeout=30) as http:

            def batch(prefix: str, b: int) -> bytes:
                ops = [Op("set", f"{ns}{prefix}:{b}:{i}", value=value) for i in range(size)]
                ts = clock.reserve(len(ops))
                return sign_batch(key, ops, ts.wall_ms, ts.counter)

            async def post(body: bytes) -> None:
                r = await http.post(f"{primary}/v1/cstore/batch", content=body)
                r.raise_for_status()

            t0 = time.perf_counter()
            for b in range(batches):
                await post(batch("bench", b))
            last = f"{ns}bench:{batches - 1}:{size - 1}"
            await asyncio.gather(*(http.get(f"{u}/v1/cstore/wait", params={"key": last}) for u in replicas))
            throughput = batches * size / (time.perf_counter() - t0)
            # Convergence as the replicas see it: each replica records, per batch, the time from the
            # client stamping it to applying it (same machine, same clock); a batch has converged when
            # the slower replica has it.
            since = time.time_ns() // 1_000_000
            sent = []
            for b in range(min(batches, 200)):
                body = batch("lat", b)
                sent.append(hashlib.sha256(body).hexdigest())
                await post(body)
            last = f"{ns}lat:{min(batches, 200) - 1}:{size - 1}"
            await asyncio.gather(*(http.get(f"{u}/v1/cstore/wait", params={"key": last}) for u in replicas))
            per_batch: dict[str, float] = {}
            for u in replicas:
                data = (await http.get(f"{u}/v1/cstore/lag", params={"since_ms": since})).json()
                for lag, bid in zip(data["lag_ms"], data["batch"], strict=True):
                    per_batch[bid] = max(per_batch.get(bid, 0.0), float(lag))
            latencies = [per_batch[bid] for bid in sent if bid in per_batch]
        return throughput, latencies
    finally:
        dn.down()


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
              f"{args.value_bytes}-byte values")  # fmt: skip
        for fsync, label in ((True, "durable (fsync before ack)"), (False, "in memory (no fsync)")):
            r_tp, r_lat = bench_redis(tmp, args.batches, args.batch_size, value, fsync)
            o_tp, o_lat = asyncio.run(bench_r1os(tmp, args.batches, args.batch_size, value, fsync, broker))
            print(f" {label}:")
            print(
                f"  redis  throughput {r_tp:>10,.0f} ops/s   convergence p50 {pct(r_lat, 50):6.2f} ms  "
                f"p99 {pct(r_lat, 99):6.2f} ms"
            )
            print(
                f"  r1os   throughput {o_tp:>10,.0f} ops/s   convergence p50 {pct(o_lat, 50):6.2f} ms  "
                f"p99 {pct(o_lat, 99):6.2f} ms"
            )
            print(
                f"  ratio r1os/redis throughput: {o_tp / r_tp:.2f}x (target >= 0.5x); "
                "r1os convergence p99 target <= 50 ms"
            )
        five = asyncio.run(devnet_convergence(tmp, 200, broker))
    print(f"5-node devnet, single write on A readable on all: p50 {pct(five, 50):.2f} ms  "
          f"p99 {pct(five, 99):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
