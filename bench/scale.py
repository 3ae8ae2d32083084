"""Traffic model benchmark: bytes through the broker, and per node, as the network grows.

Measures (changes nothing) what a devnet of N real node processes sends through one mosquitto:

- per node: the bytes the broker delivers to it and the bytes it sends, counted per client by an
  `MqttGate` in front of mosquitto (a counting proxy; it admits everyone);
- at the broker: mosquitto's own `$SYS/broker/bytes/received` and `.../sent` counters (which also
  count the gate's connections and this script's observer), as a cross-check;
- by kind: an observer subscribed to `r1/#` sums the payload bytes of heartbeats, other broadcasts
  and inbox messages (each message once, as published).

Time is shortened by `--speedup` K (default 10): heartbeats every 10/K s instead of the production
10 s, CSTORE anti-entropy every 5/K s instead of 5 s, so one measured second stands for K
production seconds, and bytes per production hour = bytes per measured second x 3600 / K.
No chain (dAuth off), 3 oracles, the rest edge nodes.

`--mode oracle` runs the network with `heartbeat_mode = "oracle"` (heartbeats to the oracles only, edges
learn the network from the map the lowest online oracle publishes: what a devnet's nodes run by
default, `auto`); `--mode broadcast` is the original design (every node hears every heartbeat).

`--sim 100,300,1000` adds that many lightweight simulated nodes beside the real ones (`--nodes`,
e.g. 8: 3 oracles and 5 edges): each has a real key and publishes a signed heartbeat like a real
node's every interval, spread over the interval, through a few shared MQTT connections straight to
the broker (no node stack: they listen to nothing). The real nodes' received bytes are measured as
above, and the oracles' CPU (user + system, from /proc) per heartbeat interval.

With `--brokers K` (K > 1) the devnet runs K bridged mosquitto brokers itself (`devnet up
--brokers K`, nodes spread over them) and the script reads each broker's `$SYS` counters: what every
broker receives and sends when the network is bridged (per-node counts need the proxy, so they are
not measured then).

Run: `.venv/bin/python bench/scale.py [--nodes 10,20] [--seconds 30] [--speedup 10] [--brokers 1]
[--mode broadcast|oracle] [--sim 100,300,1000]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from r1os import __version__
from r1os.devnet import Devnet
from r1os.identity import NodeKey
from r1os.node._compact import CompactSender
from r1os.transport import MosquittoBroker, MqttGate, MqttTransport
from r1os.transport.topics import broadcast_topic, oracle_topic
from r1os.wire import EnvelopeSigner

PROD_HB = 10.0
PROD_SYNC = 5.0


@dataclass
class Result:
    n: int
    seconds: float
    recv_per_node: float  # bytes delivered to a node per measured second (mean)
    recv_edge: float
    recv_oracle: float
    sent_per_node: float
    sys_received: float  # mosquitto's counters, bytes per measured second
    sys_sent: float
    kinds: dict[str, float]  # payload bytes per measured second by kind
    msgs: dict[str, float]  # messages per measured second by kind
    per_broker: list[tuple[float, float]] | None = None  # (received, sent) per broker, bridged runs
    sims: int = 0
    oracle_cpu: float = 0.0  # CPU seconds per measured second, mean over the oracles


class SysCounters:
    """Latest values of mosquitto's `$SYS` byte counters."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def __call__(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(ValueError):
            self.values[topic.rsplit("/", 1)[-1]] = int(payload)


class KindCounter:
    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}
        self.count: dict[str, int] = {}

    def __call__(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        kind = "inbox" if parts[2] == "n" else ("heartbeat" if parts[3] == "hb" else f"{parts[2]}/{parts[3]}")
        self.bytes[kind] = self.bytes.get(kind, 0) + len(payload)
        self.count[kind] = self.count.get(kind, 0) + 1


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimulatedNodes:
    """`count` nodes that only publish signed heartbeats (real keys), over a few shared connections."""

    PER_CONNECTION = 100

    def __init__(self, count: int, broker_url: str, network: str, interval: float, mode: str) -> None:
        self.keys = [NodeKey.generate() for _ in range(count)]
        self.signers = [EnvelopeSigner(k, network) for k in self.keys]
        self.interval = interval
        self.topic = oracle_topic(network, "hb") if mode == "oracle" else broadcast_topic(network, "hb")
        # oracle mode: whole heartbeats on change (and every 30 intervals), compact ones in between, as
        # real nodes send them (they do not answer an oracle's request for a whole one: they listen to
        # nothing; they start after the oracles, which hear their first, whole, heartbeats)
        self.compact = [CompactSender() for _ in self.keys] if mode == "oracle" else None
        conns = max(1, -(-count // self.PER_CONNECTION))
        self.transports = [MqttTransport(broker_url, f"scale-sim-{i}") for i in range(conns)]
        self.started = time.time()
        self.task: asyncio.Task[None] | None = None

    def payload(self, i: int) -> dict[str, object]:
        key = self.keys[i]
        return {
            "version": __version__, "uptime": round(time.time() - self.started, 3), "interval": PROD_HB,
            "url": f"http://127.0.0.1:{40000 + i}", "oracle": False, "ai_address": key.ai_address,
            "services": [],  # no service: real nodes must not try to sync with them
            "resources": {
                "cpu_cores": 8, "cpu_load": 0.25, "memory_total_mb": 32000,
                "memory_available_mb": 20000 + i % 97, "disk_total_gb": 500.0, "disk_free_gb": 300.5,
                "gpus": [],
            },
        }  # fmt: skip

    async def start(self) -> None:
        for t in self.transports:
            await t.start()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        n = len(self.keys)
        ttl = max(int(self.interval * 3), 10)
        while True:
            t0 = time.monotonic()
            for i in range(n):
                kind, body = (
                    ("hb", self.payload(i)) if self.compact is None else self.compact[i].next(self.payload(i))
                )
                raw = self.signers[i].seal(kind, body, ttl=ttl)
                await self.transports[i // self.PER_CONNECTION].publish(self.topic, raw)
                # spread over the interval, as independent nodes would be
                target = t0 + self.interval * (i + 1) / n
                if (delay := target - time.monotonic()) > 0:
                    await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for t in self.transports:
            await t.stop()


async def measure(n: int, seconds: float, speedup: float, tmp: Path, sims: int = 0, mode: str = "") -> Result:
    async with MosquittoBroker(sys_interval=1) as broker:
        gate = MqttGate(("127.0.0.1", broker.port), lambda *_: True)
        await gate.start()
        sys_counters, kinds = SysCounters(), KindCounter()
        observer = MqttTransport(broker.url, "scale-observer")
        observer.subscribe("$SYS/broker/bytes/+", sys_counters)
        observer.subscribe("r1/#", kinds)
        await observer.start()
        dn = Devnet(tmp / f"devnet-{n}-{sims}")
        sim: SimulatedNodes | None = None
        try:
            state = await asyncio.to_thread(
                dn.up, nodes=n, oracles=min(3, n), broker=gate.url, heartbeat=PROD_HB / speedup,
                sync_interval=PROD_SYNC / speedup, fsync=False, chain=False, timeout=180,
            )  # fmt: skip
            if sims:
                sim = SimulatedNodes(sims, broker.url, state.network, PROD_HB / speedup, mode)
                await sim.start()
                await asyncio.sleep(2 * PROD_HB / speedup)  # every simulated node heard once
            await asyncio.sleep(3 * PROD_HB / speedup)  # past the start-up burst
            oracle_pids = [x.pid for x in state.nodes if x.oracle]
            cpu0 = [cpu_seconds(p) for p in oracle_pids]
            t0 = time.monotonic()
            before_to, before_from = dict(gate.stats.bytes_to_clients), dict(gate.stats.bytes_from_clients)
            before_sys = dict(sys_counters.values)
            before_kb, before_kc = dict(kinds.bytes), dict(kinds.count)
            await asyncio.sleep(seconds)
            dt = time.monotonic() - t0
            cpu = [cpu_seconds(p) - c for p, c in zip(oracle_pids, cpu0, strict=True)]
            after_sys = dict(sys_counters.values)
            oracles = {x.address.lower() for x in state.nodes if x.oracle}
            recv = {a.lower(): v - before_to.get(a, 0) for a, v in gate.stats.bytes_to_clients.items()}
            sent = {a.lower(): v - before_from.get(a, 0) for a, v in gate.stats.bytes_from_clients.items()}
            nodes = {x.address.lower() for x in state.nodes}
            recv = {a: v for a, v in recv.items() if a in nodes}
            sent = {a: v for a, v in sent.items() if a in nodes}
            edges = [v for a, v in recv.items() if a not in oracles] or [0]
            orcs = [v for a, v in recv.items() if a in oracles] or [0]

            def rate(key: str) -> float:
                return (after_sys.get(key, 0) - before_sys.get(key, 0)) / dt

            return Result(
                n=n, seconds=dt,
                recv_per_node=sum(recv.values()) / max(1, len(recv)) / dt,
                recv_edge=sum(edges) / len(edges) / dt, recv_oracle=sum(orcs) / len(orcs) / dt,
                sent_per_node=sum(sent.values()) / max(1, len(sent)) / dt,
                sys_received=rate("received"), sys_sent=rate("sent"),
                kinds={k: (v - before_kb.get(k, 0)) / dt for k, v in kinds.bytes.items()},
                msgs={k: (v - before_kc.get(k, 0)) / dt for k, v in kinds.count.items()},
                sims=sims, oracle_cpu=sum(cpu) / max(1, len(cpu)) / dt,
            )  # fmt: skip
        finally:
            if sim is not None:
                await sim.stop()
            await asyncio.to_thread(dn.down)
            await observer.stop()
            await gate.stop()


async def measure_bridged(n: int, brokers: int, seconds: float, speedup: float, tmp: Path) -> Result:
    """N nodes over `brokers` bridged brokers started by the devnet: each broker's `$SYS` counters."""
    dn = Devnet(tmp / f"devnet-{n}-{brokers}")
    counters = [SysCounters() for _ in range(brokers)]
    kinds = KindCounter()
    observers: list[MqttTransport] = []
    try:
        state = await asyncio.to_thread(
            dn.up, nodes=n, oracles=min(3, n), heartbeat=PROD_HB / speedup, sync_interval=PROD_SYNC / speedup,
            fsync=False, chain=False, timeout=120, brokers=brokers,
        )  # fmt: skip
        for i, (b, c) in enumerate(zip(state.brokers, counters, strict=True)):
            o = MqttTransport(b.url, f"scale-observer-{i}")
            o.subscribe("$SYS/broker/bytes/+", c)
            if i == 0:
                o.subscribe("r1/#", kinds)
            await o.start()
            observers.append(o)
        await asyncio.sleep(3 * PROD_HB / speedup)
        t0 = time.monotonic()
        before = [dict(c.values) for c in counters]
        before_kb, before_kc = dict(kinds.bytes), dict(kinds.count)
        await asyncio.sleep(seconds)
        dt = time.monotonic() - t0
        per = [
            tuple((c.values.get(k, 0) - b.get(k, 0)) / dt for k in ("received", "sent"))
            for c, b in zip(counters, before, strict=True)
        ]
        return Result(
            n=n, seconds=dt, recv_per_node=0.0, recv_edge=0.0, recv_oracle=0.0, sent_per_node=0.0,
            sys_received=sum(r for r, _ in per), sys_sent=sum(s for _, s in per),
            kinds={k: (v - before_kb.get(k, 0)) / dt for k, v in kinds.bytes.items()},
            msgs={k: (v - before_kc.get(k, 0)) / dt for k, v in kinds.count.items()},
            per_broker=[(r, s) for r, s in per],
        )  # fmt: skip
    finally:
        for o in observers:
            await o.stop()
        await asyncio.to_thread(dn.down)


def mb_per_hour(per_measured_second: float, speedup: float) -> float:
    return per_measured_second * 3600 / speedup / 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="10,20", help="comma-separated network sizes")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per size")
    ap.add_argument("--speedup", type=float, default=10.0, help="production time / measured time")
    ap.add_argument("--brokers", type=int, default=1, help="bridged brokers (the devnet starts them)")
    ap.add_argument(
        "--mode",
        choices=["broadcast", "oracle"],
        default="oracle",
        help="heartbeat_mode of the nodes (a devnet's default, auto, is oracle)",
    )
    ap.add_argument("--sim", default="", help="comma-separated counts of simulated nodes (beside --nodes)")
    args = ap.parse_args()
    os.environ["R1OS_HEARTBEAT_MODE"] = args.mode  # the devnet's nodes inherit the environment
    mode = args.mode
    sizes = [int(x) for x in args.nodes.split(",")]
    sims = [int(x) for x in args.sim.split(",") if x]
    k = args.speedup
    results = []
    with tempfile.TemporaryDirectory(prefix="r1os-scale-") as tmp:
        for n in sizes:
            for s in sims or [0]:
                print(f"{n} nodes + {s} simulated, heartbeat_mode {mode}: heartbeat {PROD_HB / k:g} s, "
                      f"measuring {args.seconds:g} s ...", flush=True)  # fmt: skip
                if args.brokers > 1:
                    results.append(await measure_bridged(n, args.brokers, args.seconds, k, Path(tmp)))
                else:
                    results.append(await measure(n, args.seconds, k, Path(tmp), s, mode))
                r = results[-1]
                edge, orc = mb_per_hour(r.recv_edge, k), mb_per_hour(r.recv_oracle, k)
                cpu_ms = r.oracle_cpu * PROD_HB / k * 1000
                print(
                    f"  edge {edge:.2f} MB/h, oracle {orc:.2f} MB/h, oracle CPU {cpu_ms:.0f} ms/interval",
                    flush=True,
                )
    print(f"\nheartbeat_mode {mode}; per production hour (10 s heartbeats; measured at {k:g}x speed), MB:")
    print(f"{'N':>5} {'recv/node':>10} {'edge':>8} {'oracle':>8} {'sent/node':>10} {'broker in':>10}"
          f" {'broker out':>10} {'oracle CPU/interval':>19}  payload by kind (MB/h; msgs/h)")  # fmt: skip
    for r in results:
        kinds = ", ".join(
            f"{kind} {mb_per_hour(v, k):.2f} ({r.msgs.get(kind, 0) * 3600 / k:,.0f})"
            for kind, v in sorted(r.kinds.items(), key=lambda kv: -kv[1])
        )
        cols = (r.recv_per_node, r.recv_edge, r.recv_oracle, r.sent_per_node, r.sys_received, r.sys_sent)
        widths = (10, 8, 8, 10, 10, 10)
        row = " ".join(
            f"{mb_per_hour(v, k):>{w}.2f}" if v or i >= 4 else f"{'-':>{w}}"  # bridged: no per-node counts
            for i, (v, w) in enumerate(zip(cols, widths, strict=True))
        )
        cpu = f"{r.oracle_cpu * PROD_HB / k * 1000:>16.0f} ms" if r.oracle_cpu else f"{'-':>19}"
        print(f"{r.n + r.sims:>5} {row} {cpu}  {kinds}")
    for r in results:
        if r.per_broker:
            each = ", ".join(
                f"broker-{i + 1} in {mb_per_hour(rx, k):.2f} out {mb_per_hour(tx, k):.2f}"
                for i, (rx, tx) in enumerate(r.per_broker)
            )
            print(f"{r.n:>4} nodes over {len(r.per_broker)} bridged brokers (MB/h): {each}")
    if len(results) > 1 and results[0].recv_per_node:
        a, b = results[0], results[-1]
        f = (b.n + b.sims) / (a.n + a.sims)
        per_node = b.recv_per_node / a.recv_per_node
        edge = b.recv_edge / a.recv_edge if a.recv_edge else 0.0
        print(f"\nfrom {a.n + a.sims} to {b.n + b.sims} nodes ({f:g}x): per node received x{per_node:.2f},"
              f" per edge node x{edge:.2f}"
              f" (O(N) would be x{f:g}), broker out x{b.sys_sent / a.sys_sent:.2f}"
              f" (O(N^2) would be x{f * f:g})")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
