"""What the dAuth gate costs the embedded broker: fan-out throughput with and without it, same run.

N admitted clients (logged in with dAuth credentials) subscribe to one topic; one of them publishes M
messages; we time until every subscriber has all of them. Baseline: the plain `EmbeddedBroker` (no
authorize, no topic plugin); then `DauthBroker` (signature check at CONNECT, admitted-set check on
every PUBLISH and every delivery). Prints messages delivered per second and the ratio.

Run: `.venv/bin/python bench/dauth_broker.py [--clients 8 --messages 2000]`
"""

from __future__ import annotations

import argparse
import asyncio
import time

from r1os.dauth import broker_client_id, broker_password
from r1os.dauth.broker import BrokerGate, DauthBroker
from r1os.identity import NodeKey
from r1os.transport import EmbeddedBroker, MqttTransport

NET = "bench"


async def run(broker: EmbeddedBroker, keys: list[NodeKey], messages: int) -> float:
    got = [0] * len(keys)
    done = asyncio.Event()

    def handler(i: int):  # type: ignore[no-untyped-def]
        async def on(_topic: str, _raw: bytes) -> None:
            got[i] += 1
            if all(g >= messages for g in got):
                done.set()

        return on

    clients = []
    for i, k in enumerate(keys):
        t = MqttTransport(broker.url, broker_client_id(k.address), username=k.address,
                          password=broker_password(k, NET), handler_queue_limit=messages + 10)  # fmt: skip
        t.subscribe("r1/bench/b/x", handler(i))
        await t.start()
        clients.append(t)
    for t in clients:
        await t.wait_connected(10)
    await asyncio.sleep(0.2)  # let SUBACKs settle before timing (not part of the measurement)
    start = time.perf_counter()
    for n in range(messages):
        await clients[0].publish("r1/bench/b/x", b"m%d" % n)
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    for t in clients:
        await t.stop()
    return messages * len(keys) / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--messages", type=int, default=2000)
    args = ap.parse_args()
    keys = [NodeKey.generate() for _ in range(args.clients)]

    async with EmbeddedBroker(port=0) as plain:
        base = await run(plain, keys, args.messages)
    gate = BrokerGate(NET, [k.address for k in keys], [])
    async with DauthBroker(gate, port=0) as gated:
        with_gate = await run(gated, keys, args.messages)
    print(f"{args.clients} subscribers, {args.messages} messages")
    print(f"plain broker : {base:10.0f} deliveries/s")
    print(f"dAuth broker : {with_gate:10.0f} deliveries/s  (ratio {with_gate / base:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
