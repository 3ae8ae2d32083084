"""Wire benchmark.

1. Envelope seal+verify per second against raw coincurve sign+recover of a 32-byte digest, in the
   same run (the ratio is what matters on a noisy machine).
2. Broadcast delivery latency (p50/p99) of signed envelopes across 10 nodes on loopback: each node
   has its own MQTT connection, signer and verifier; one node at a time broadcasts and all others
   verify. Run once over the embedded amqtt broker and once over a real mosquitto.

Run: `.venv/bin/python bench/wire.py [--messages N]`
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time

import coincurve

from r1os.identity import NodeKey
from r1os.transport import EmbeddedBroker, MosquittoBroker, MqttTransport, broadcast_topic, find_mosquitto
from r1os.wire import EnvelopeSigner, EnvelopeVerifier

NET = "bench"


def bench_sign_verify(seconds: float = 2.0) -> tuple[float, float]:
    key = NodeKey.generate()
    signer = EnvelopeSigner(key, NET)
    verifier = EnvelopeVerifier(NET, replay_window=1 << 16)
    payload = {"version": "0.1.0", "uptime": 12.5, "services": ["cstore", "r1fs"], "cpu": 0.25}

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        verifier.verify(signer.seal("hb", payload))
        n += 1
    envelope_rate = n / (time.perf_counter() - t0)

    sk = coincurve.PrivateKey()
    digest = hashlib.sha256(b"x" * 200).digest()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sig = sk.sign_recoverable(digest, hasher=None)
        coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None)
        n += 1
    raw_rate = n / (time.perf_counter() - t0)
    return envelope_rate, raw_rate


async def broadcast_latency(url: str, nodes: int = 10, messages: int = 300) -> tuple[float, float]:
    keys = [NodeKey.generate() for _ in range(nodes)]
    transports = [MqttTransport(url, client_id=f"bench-{i}") for i in range(nodes)]
    latencies: list[float] = []
    pending: dict[int, int] = {}
    done = asyncio.Event()
    topic = broadcast_topic(NET, "bench")

    def make_handler(verifier: EnvelopeVerifier, me: str):  # type: ignore[no-untyped-def]
        async def handler(_topic: str, raw: bytes) -> None:
            env = verifier.accept(raw)
            if env is None or env.sender == me:
                return
            latencies.append((time.perf_counter_ns() - env.payload["t"]) / 1e6)
            pending[env.payload["i"]] -= 1
            if all(v == 0 for v in pending.values()) and len(pending) == messages:
                done.set()

        return handler

    for key, t in zip(keys, transports, strict=True):
        sub = t.subscribe(topic, make_handler(EnvelopeVerifier(NET), key.address))
        await t.start()
        await sub.ready()
    signers = [EnvelopeSigner(k, NET) for k in keys]
    for i in range(messages):
        pending[i] = nodes - 1
        src = i % nodes
        raw = signers[src].seal("bench", {"i": i, "t": time.perf_counter_ns()})
        await transports[src].publish(topic, raw)
        await asyncio.sleep(0.002)  # a steady stream, not one burst
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        for t in transports:
            await t.stop()
    qs = statistics.quantiles(latencies, n=100)
    return qs[49], qs[98]


async def latency_all(messages: int) -> None:
    async with EmbeddedBroker(port=0) as broker:
        p50, p99 = await broadcast_latency(broker.url, messages=messages)
    print(f"broadcast latency, 10 nodes, embedded amqtt: p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    if find_mosquitto() is None:
        print("mosquitto not installed: skipped (apt-get install mosquitto)")
        return
    async with MosquittoBroker() as broker:
        p50m, p99m = await broadcast_latency(broker.url, messages=messages)
    print(f"broadcast latency, 10 nodes, mosquitto:      p50 {p50m:.2f} ms  p99 {p99m:.2f} ms")
    print(f"embedded/mosquitto p50 ratio: {p50 / p50m:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    env_rate, raw_rate = bench_sign_verify(args.seconds)
    print(f"envelope seal+verify: {env_rate:,.0f}/s")
    print(f"raw coincurve sign+recover: {raw_rate:,.0f}/s")
    print(f"ratio envelope/raw: {env_rate / raw_rate:.2f}")
    asyncio.run(latency_all(args.messages))


if __name__ == "__main__":
    main()
