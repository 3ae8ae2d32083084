"""Broadcast latency and burst throughput of the MQTT transport, per broker.

`measure_broadcast_latency(url)` is importable (the wire benchmark reuses it). Run as a script it
measures the embedded amqtt broker (in this process, and as its own process) and mosquitto in the
same run, and prints each next to mosquitto as the baseline:

    .venv/bin/python bench/transport_latency.py [--nodes 10] [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from r1os.transport import EmbeddedBroker, MosquittoBroker, MqttTransport, find_mosquitto

CHANNEL = "r1/bench/b/lat"


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@asynccontextmanager
async def _nodes(broker_url: str, count: int, prefix: str) -> AsyncIterator[list[MqttTransport]]:
    nodes = [MqttTransport(broker_url, f"{prefix}-{i}") for i in range(count)]
    try:
        for n in nodes:
            await n.start()
        for n in nodes:
            await n.wait_connected(10)
        yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


async def measure_broadcast_latency(
    broker_url: str,
    nodes: int = 10,
    messages: int = 200,
    *,
    payload_size: int = 256,
    timeout: float = 10.0,
) -> dict[str, float]:
    """Publish `messages` broadcasts one at a time (round-robin over `nodes` publishers).

    Each message is timed from `publish()` to its arrival in every node's handler (all nodes run in
    this process, so one clock serves). Returns p50/p99/mean/max in ms over nodes x messages
    samples, and `lost` (deliveries that did not arrive within `timeout`).
    """
    samples: list[float] = []
    expected = 0
    got = 0
    done = asyncio.Event()
    sent_at: dict[int, float] = {}

    def handler_for() -> Callable[[str, bytes], Any]:
        async def handler(topic: str, payload: bytes) -> None:
            nonlocal got
            now = time.perf_counter()
            seq = int.from_bytes(payload[:8], "big")
            samples.append((now - sent_at[seq]) * 1000)
            got += 1
            if got >= expected:
                done.set()

        return handler

    lost = 0
    async with _nodes(broker_url, nodes, "lat") as ts:
        subs = [t.subscribe(CHANNEL, handler_for()) for t in ts]
        for s in subs:
            await s.ready(10)
        padding = b"\0" * max(0, payload_size - 8)
        for seq in range(messages):
            expected += nodes
            done.clear()
            sent_at[seq] = time.perf_counter()
            await ts[seq % nodes].publish(CHANNEL, seq.to_bytes(8, "big") + padding)
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                lost += expected - got
                got = expected
    return {
        "p50_ms": _percentile(samples, 0.50),
        "p99_ms": _percentile(samples, 0.99),
        "mean_ms": statistics.fmean(samples) if samples else float("nan"),
        "max_ms": max(samples) if samples else float("nan"),
        "samples": float(len(samples)),
        "lost": float(lost),
    }


async def measure_burst(
    broker_url: str,
    subscribers: int = 20,
    messages: int = 1000,
    *,
    rate: float = 1000.0,
    payload_size: int = 256,
    timeout: float = 30.0,
) -> dict[str, float]:
    """One publisher sends `messages` at `rate` per second (as fast as it can if it falls behind)
    to `subscribers` listeners.

    Returns the publish rate reached, the delivered rate (copies per second until the last one),
    end-to-end latency percentiles under that load, and copies lost within `timeout`.
    """
    expected = subscribers * messages
    samples: list[float] = []
    done = asyncio.Event()

    async def handler(topic: str, payload: bytes) -> None:
        samples.append((time.perf_counter() - struct.unpack_from("d", payload)[0]) * 1000)
        if len(samples) >= expected:
            done.set()

    async with _nodes(broker_url, subscribers + 1, "burst") as ts:
        pub, subs = ts[0], ts[1:]
        for t in subs:
            await t.subscribe(CHANNEL, handler).ready(10)
        padding = b"\1" * max(0, payload_size - 8)
        start = time.perf_counter()
        for i in range(messages):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing to the target rate, not waiting for luck
            await pub.publish(CHANNEL, struct.pack("d", time.perf_counter()) + padding)
        published = time.perf_counter() - start
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - start
    return {
        "publish_per_s": messages / published,
        "delivered_per_s": len(samples) / elapsed,
        "p50_ms": _percentile(samples, 0.50) if samples else float("nan"),
        "p99_ms": _percentile(samples, 0.99) if samples else float("nan"),
        "lost": float(expected - len(samples)),
    }


@asynccontextmanager
async def _broker(kind: str) -> AsyncIterator[str]:
    if kind == "amqtt (in process)":
        async with EmbeddedBroker(port=0) as broker:
            yield broker.url
    elif kind == "amqtt (own process)":
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "r1os.transport.broker",
            "--port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            yield line.decode().strip()
        finally:
            proc.terminate()
            await proc.wait()
    else:
        async with MosquittoBroker() as broker:
            yield broker.url


async def _main(nodes: int, messages: int, fanouts: list[int], burst_messages: int, rate: float) -> None:
    kinds = ["amqtt (in process)", "amqtt (own process)"]
    if find_mosquitto():
        kinds.append("mosquitto")
    else:
        print("mosquitto not installed: no baseline")
    lat: dict[str, dict[str, float]] = {}
    burst: dict[tuple[str, int], dict[str, float]] = {}
    for kind in kinds:
        async with _broker(kind) as url:
            lat[kind] = await measure_broadcast_latency(url, nodes, messages)
        for fanout in fanouts:
            async with _broker(kind) as url:
                burst[kind, fanout] = await measure_burst(url, fanout, burst_messages, rate=rate)

    base = "mosquitto" if "mosquitto" in lat else None
    print(f"\nbroadcast latency, idle: {nodes} nodes x {messages} messages, one at a time")
    print(f"{'broker':<22}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lost':>6}{'p50 vs mosquitto':>18}")
    for kind, r in lat.items():
        ratio = f"{r['p50_ms'] / lat[base]['p50_ms']:.1f}x" if base else "-"
        print(
            f"{kind:<22}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}{r['lost']:>6.0f}{ratio:>18}"
        )
    print(
        f"\nburst: 1 publisher at {rate:g} msg/s x {burst_messages} messages -> N subscribers "
        "(all clients in this one process)"
    )
    print(
        f"{'broker':<22}{'N':>4}{'pub/s':>8}{'deliv/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}"
        f"{'deliv vs mosquitto':>20}"
    )
    for (kind, fanout), r in burst.items():
        ratio = f"{r['delivered_per_s'] / burst[base, fanout]['delivered_per_s']:.2f}x" if base else "-"
        print(
            f"{kind:<22}{fanout:>4}{r['publish_per_s']:>8.0f}{r['delivered_per_s']:>9.0f}"
            f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['lost']:>6.0f}{ratio:>20}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--fanout", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--burst-messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    asyncio.run(_main(args.nodes, args.messages, args.fanout, args.burst_messages, args.rate))


if __name__ == "__main__":
    main()
