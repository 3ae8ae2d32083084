"""EDIL benchmark: r1os federated training over real nodes, plain and encrypted, side by side with
Flower in the same run, on the same split (examples/edil/digits.yaml: scikit-learn's digits, non-IID
over 3 participants, an MLP with 32 hidden units), the same seed, model, rounds, local epochs, lr and
batch size.

1. r1os (the default rows): a real devnet (`r1os.devnet`, as `r1os devnet up`): an MQTT broker process
   and 5 `python -m r1os.node` processes (HTTP, CSTORE, R1FS, EDIL each; no chain; heartbeat 0.3 s,
   CSTORE sync 0.5 s, no fsync), one process per node as Flower has one per client. The first node
   owns the job (its operator token from `<home>/api-token` submits it over HTTP), the next 3 train,
   the last aggregates. One job per privacy mode (`plain`, `ckks`, `masked`, `ckks+masked`), one
   after the other on the same devnet, which is torn down on exit, Ctrl-C and errors included.
   A passive observer node in this process (CSTORE only, named in no job) gets every record the
   devnet writes from the broker and timestamps it:
   - seconds per round: a round ends when the owner publishes its result (the job record with one
     more history entry: the new global model, measured on the owner's test split). Round 1 starts
     when the job record is first published (the CKKS context and first model are made before).
     Median of the rounds. The owner's own `seconds` per round (history) are kept in --json.
   - bytes up: each participant's update blob per round (the history's `update_bytes`, else the
     `size` in its UpdatePointer): plaintext float64 or CKKS ciphertexts, before sealing to the
     aggregator. Bytes down: the round's global model as stored in R1FS (float64, sealed).
   - accuracy: the owner's test accuracy after the last round (GET /v1/edil/jobs/<id>).
   - where a round goes: the round's record -> the last participant's update pointer -> the
     aggregator's sum pointer -> the next round's record, as the observer gets each one.
   With --in-process, the same jobs also run on 5 nodes inside this process (an embedded broker,
   one event loop, as tests/edil/network.py; rows "(1 process)"), where every node's CSTORE is
   watched for a finer breakdown; there the nodes' training threads contend for one GIL.
2. Flower (`flwr`, plaintext FedAvg): `start_server` and 3 `start_client` processes over gRPC on
   loopback (bench/_edil_flwr.py), with r1os's numpy model, `train_local` (the same per-round seeds),
   `evaluate` and data parts: only the FL framework differs. Flower runs in its own venv (flwr pins
   rich < 15 and typer < 0.21, r1os needs newer), created on first use from bench/requirements-flwr.txt
   under ~/.cache/r1os-bench/ (or give --flwr-python). The server times rounds the same way (round 1
   configured -> each round's model measured) and counts the serialized parameters it sends and gets.
3. References in this process: `simulate` (the same job without network, plain) and `centralized`
   (the same model and budget on all the data pooled).

Targets (issue 14): ckks round time <= 2x r1os plain; ckks bytes <= 20x plain; r1os plain no slower
than Flower; ckks accuracy within 0.5 points of plain and within 2 points of centralized.

Run: `.venv/bin/python bench/edil.py [--quick] [--json] [--rounds N] [--modes plain,ckks] [--in-process]`
(or `./dev bench bench/edil.py`). The Flower venv needs no manual step (see --flwr-python).
Progress goes to stderr; the table (or with --json the results as JSON) to stdout. Nodes and Flower
processes are stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "edil" / "digits.yaml"
FLWR_HELPER = Path(__file__).resolve().parent / "_edil_flwr.py"
FLWR_REQUIREMENTS = Path(__file__).resolve().parent / "requirements-flwr.txt"
FLWR_VENV = Path.home() / ".cache" / "r1os-bench" / "flwr-venv"
MODES = ("plain", "ckks", "masked", "ckks+masked")
N_NODES = 5
HB = 0.3
TARGET_TIME_RATIO = 2.0
TARGET_BYTES_RATIO = 20.0
TARGET_FLOWER_RATIO = 1.0
TARGET_PLAIN_POINTS = 0.5
TARGET_CENTRAL_POINTS = 2.0

_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def latest(ts: list[float]) -> float:
    """The last of some times; NaN if one of them never happened."""
    return float("nan") if any(t != t for t in ts) else max(ts)


def round_times(start: float, ends: list[float]) -> list[float]:
    """Seconds of each round from the start mark and each round's end."""
    marks = [start, *ends]
    return [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]


# -- r1os over real nodes ----------------------------------------------------------------------------


class Network:
    """5 real nodes in this process, as tests/edil/network.py makes them."""

    def __init__(self, root: Path) -> None:
        from r1os.transport import EmbeddedBroker

        self.root = root
        self.broker = EmbeddedBroker(port=0)
        self.nodes: list[Any] = []
        self.http = httpx.AsyncClient(timeout=60)

    async def start(self) -> None:
        from r1os.cstore import CStoreService
        from r1os.edil._service import EdilService
        from r1os.node import EdilSettings, Node, NodeConfig
        from r1os.r1fs._service import R1fsService
        from r1os.transport import MqttTransport

        await self.broker.start()
        url = f"mqtt://127.0.0.1:{self.broker.port}"
        for i in range(N_NODES):
            config = NodeConfig.model_validate(
                {"home": self.root / f"n{i}", "network": "ebench", "http": "127.0.0.1:0", "broker": url,
                 "heartbeat_interval": HB, "key_strength": "light"}
            )  # fmt: skip
            services = [
                CStoreService(sync_interval=0.5, fsync=False),
                R1fsService(),
                EdilService(EdilSettings()),
            ]
            node = Node(config, password="pw", services=services,
                        transport=MqttTransport(url, client_id=f"ebench-{i}", backoff_max=0.5))  # fmt: skip
            await node.start()
            self.nodes.append(node)
        deadline = time.monotonic() + 30
        while not all(len(n.netmap.online()) == N_NODES - 1 for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not all see each other within 30 s")
            await asyncio.sleep(0.05)

    def cstore(self, i: int) -> Any:
        return self.nodes[i].services[0]

    def r1fs(self, i: int) -> Any:
        return self.nodes[i].services[1]

    def index_of(self, address: str) -> int:
        return next(i for i, n in enumerate(self.nodes) if n.address.lower() == address.lower())

    def token(self, i: int) -> str:
        return (self.root / f"n{i}" / "api-token").read_text().strip()

    async def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.stop()
        await self.http.aclose()
        with contextlib.suppress(Exception):
            await self.broker.stop()


async def run_r1os(net: Network, spec: dict[str, Any], mode: str, timeout: float) -> dict[str, Any]:
    """One job in `mode` on the network; its timings, bytes and accuracy."""
    from r1os.edil._state import UpdatePointer, update_key

    owner = net.nodes[0]
    prefix = f"node:{owner.address.lower()}:edil:job:"
    events: list[tuple[float, str, int, str]] = []
    seen: list[tuple[float, int, str, str | None, Any]] = []  # every EDIL record as each node gets it

    def on_change(key: str, field: str | None, value: Any) -> None:
        if key.startswith(prefix) and isinstance(value, dict):
            events.append((time.perf_counter(), value["job_id"], len(value["history"]), value["phase"]))

    def watcher(i: int) -> Any:
        def on_any(key: str, field: str | None, value: Any) -> None:
            if ":edil:" in key:
                brief = value.get("round") if isinstance(value, dict) and ":edil:job:" in key else None
                seen.append((time.perf_counter(), i, key, field, brief))

        return on_any

    watchers = [watcher(i) for i in range(len(net.nodes))]
    net.cstore(0).watch(prefix, on_change)
    for i, w in enumerate(watchers):
        net.cstore(i).watch("node:", w)
    try:
        r = await net.http.post(f"{owner.url}/v1/edil/jobs", json={"spec": {**spec, "privacy": mode}},
                                headers={"authorization": f"Bearer {net.token(0)}"})  # fmt: skip
        if r.status_code != 200:
            raise RuntimeError(f"submit {mode}: HTTP {r.status_code}: {r.text[:500]}")
        job = r.json()
        job_id = job["job_id"]
        deadline = time.monotonic() + timeout
        shown = 0
        while True:
            v = (await net.http.get(f"{owner.url}/v1/edil/jobs/{job_id}")).json()
            done = len(v["history"])
            if done > shown and (done % 5 == 0 or v["phase"] != "training"):
                say(f"  {mode}: round {done}/{spec['rounds']}, accuracy {v['history'][-1]['test_accuracy']}")
                shown = done
            if v["phase"] != "training":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: job {job_id} not done after {timeout:g} s ({done} rounds)")
            await asyncio.sleep(0.1)
    finally:
        net.cstore(0).unwatch(on_change)
        for i, w in enumerate(watchers):
            net.cstore(i).unwatch(w)
    if v["phase"] != "done":
        raise RuntimeError(f"{mode}: job {job_id} ended {v['phase']}: {v.get('error')}")
    mine = [e for e in events if e[1] == job_id]
    start = next(t for t, _, h, _ in mine if h == 0)
    ends: dict[int, float] = {}
    for t, _, h, _ in mine:
        ends.setdefault(h, t)
    rounds = int(spec["rounds"])
    seconds = round_times(start, [ends[k] for k in range(1, rounds + 1)])
    # Bytes: each participant's update pointer (read on its own node), the models stored in R1FS.
    up: dict[str, list[int]] = {}
    for p in job["participants"]:
        fields = await net.cstore(net.index_of(p)).hgetall(update_key(p, job_id))
        sizes = {int(k): UpdatePointer.model_validate(x).size for k, x in fields.items()}
        up[p] = [sizes[k] for k in sorted(sizes)]
    down = []
    for h in v["history"]:
        if h.get("model_cid"):
            down.append(len(await net.r1fs(0).cat(h["model_cid"], max_size=1 << 26)))
    included = [len(h["included"]) for h in v["history"]]
    phases = breakdown(net, job, seen, start, [ends[k] for k in range(1, rounds + 1)])
    return {
        "job_id": job_id,
        "seconds_per_round": seconds,
        "median_round_s": median(seconds),
        "total_s": ends[rounds] - start,
        "history_seconds": [h["seconds"] for h in v["history"]],
        "up_bytes": up,
        "up_per_round": median([float(s) for sizes in up.values() for s in sizes]),
        "down_per_round": median([float(d) for d in down]),
        "accuracy": [h["test_accuracy"] for h in v["history"]],
        "final_accuracy": v["test_accuracy"],
        "included": included,
        "phases": phases,
        "steps": "in-process",
        "phase_median_s": {k: median([x for x in xs if x == x]) for k, xs in phases.items()},
    }


#: The steps of one round, each ending when the slowest of its nodes is done (see `breakdown`).
PHASES = (
    ("job", "owner publishes the round -> every participant has the job record"),
    ("train", "-> every participant has written its update pointer (train, encode, R1FS put)"),
    ("to_agg", "-> the aggregator has every update pointer"),
    ("sum", "-> the aggregator has written the sum's pointer (R1FS gets, checks, sum, R1FS put)"),
    ("to_owner", "-> the owner's node has the sum's pointer"),
    ("owner", "-> the owner has published the new model (R1FS get, decrypt, evaluate, R1FS put)"),
)


def breakdown(
    net: Network, job: dict[str, Any], seen: list[tuple[float, int, str, str | None, Any]],
    start: float, ends: list[float],
) -> dict[str, list[float]]:  # fmt: skip
    """Seconds of each step of each round, from when each node's CSTORE got each record."""
    from r1os.edil._state import aggregate_key, job_key, update_key

    jid, parts, agg = job["job_id"], job["participants"], job["aggregator"]
    jkey, akey = job_key(net.nodes[0].address, jid), aggregate_key(agg, jid)
    ukeys = {update_key(p, jid): net.index_of(p) for p in parts}
    pidx, aidx = [net.index_of(p) for p in parts], net.index_of(agg)

    def first(node: int, key: str, field: str | None = None, round_: int | None = None) -> float:
        """When `node` first had `key` (its `field`; for the job record, at round `round_`); NaN if never."""
        for t, i, k, f, b in seen:
            if i == node and k == key and (field is None or f == field) and (round_ is None or b == round_):
                return t
        return float("nan")

    steps: dict[str, list[float]] = {name: [] for name, _ in PHASES}
    for r in range(1, len(ends) + 1):
        marks = [
            start if r == 1 else ends[r - 2],
            latest([first(n, jkey, round_=r) for n in pidx]),
            latest([first(n, uk, str(r)) for uk, n in ukeys.items()]),
            latest([first(aidx, uk, str(r)) for uk in ukeys]),
            first(aidx, akey, str(r)),
            first(0, akey, str(r)),
            ends[r - 1],
        ]
        for (name, _), t0, t1 in zip(PHASES, marks[:-1], marks[1:], strict=True):
            steps[name].append(t1 - t0)
    return {name: [round(x, 4) for x in xs] for name, xs in steps.items()}


async def r1os_rows(spec: dict[str, Any], modes: list[str], root: Path, timeout: float) -> dict[str, Any]:
    net = Network(root)
    out: dict[str, Any] = {}
    try:
        say(f"starting {N_NODES} in-process nodes (broker, HTTP, CSTORE, R1FS, EDIL)")
        await net.start()
        for mode in modes:
            say(f"r1os {mode} (1 process): job of {spec['rounds']} rounds on node 0")
            try:
                out[mode] = await run_r1os(net, spec, mode, timeout)
            except Exception as exc:
                say(f"  r1os {mode} failed: {type(exc).__name__}: {exc}")
                out[mode] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            m = out[mode]
            say(
                f"  {mode}: {m['median_round_s']:.3f} s/round, {m['up_per_round']:.0f} B up/participant/"
                f"round, accuracy {m['final_accuracy']:.4f}"
            )
    finally:
        say("stopping the nodes")
        logging.getLogger("r1os").setLevel(logging.ERROR)  # peers going away mid-sync is expected here
        await net.stop()
        logging.getLogger("r1os").setLevel(logging.NOTSET)
    return out


# -- r1os over a devnet: one process per node --------------------------------------------------------


#: The steps of one devnet round as the observer sees them (see `devnet_breakdown`).
DEVNET_PHASES = (
    ("updates", "owner publishes round r -> every participant's update pointer is out (the job record "
                "reaching it, R1FS get + unseal of the model, train, encode, seal, R1FS put, signed write)"),
    ("sum", "-> the aggregator's sum pointer is out (pointers reaching it, R1FS gets, unseal, checks, sum, "
            "seal, R1FS put, signed write)"),
    ("owner", "-> the owner has published the new model (pointer reaching it, R1FS get, unseal, decrypt, "
              "evaluate, seal, R1FS put, signed write)"),
)  # fmt: skip


class Devnet:
    """A real devnet (`r1os.devnet`): a broker process and one `python -m r1os.node` process per node,
    plus a passive observer node in this process (CSTORE only, not part of any job) that timestamps
    every EDIL record as the broker delivers it."""

    def __init__(self, root: Path) -> None:
        from r1os.devnet import Devnet as Manager

        self.root = root
        self.manager = Manager(root / "devnet")
        self.state: Any = None
        self.observer: Any = None

    def up(self) -> None:
        """Start the devnet (blocking; call outside any event loop). `down` undoes a partial start too."""
        self.state = self.manager.up(
            nodes=N_NODES, oracles=1, chain=False, heartbeat=HB, sync_interval=0.5, fsync=False, timeout=60,
            progress=lambda m: say(f"  devnet: {m}"),
        )  # fmt: skip

    def down(self) -> None:
        """Stop every process of the devnet; a second Ctrl-C or SIGTERM does not cut this short."""
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if (self.manager.dir / "devnet.json").exists():
                say("stopping the devnet")
                with contextlib.suppress(Exception):
                    self.manager.down()
            # A node spawned just before an interrupt may not be in devnet.json yet: find it by its home.
            mine = f"R1OS_HOME={self.manager.dir}/".encode()
            for env in Path("/proc").glob("[0-9]*/environ"):
                with contextlib.suppress(OSError, ValueError):
                    if mine in env.read_bytes():
                        os.kill(int(env.parent.name), signal.SIGTERM)
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)

    async def start_observer(self) -> None:
        from r1os.cstore import CStoreService
        from r1os.node import Node, NodeConfig
        from r1os.transport import MqttTransport

        config = NodeConfig.model_validate(
            {"home": self.root / "observer", "network": self.state.network, "http": "127.0.0.1:0",
             "broker": self.state.broker_url, "heartbeat_interval": HB, "key_strength": "light"}
        )  # fmt: skip
        self.observer = Node(config, password="pw", services=[CStoreService(sync_interval=0.5, fsync=False)],
                             transport=MqttTransport(self.state.broker_url, client_id="ebench-observer",
                                                     backoff_max=0.5))  # fmt: skip
        await self.observer.start()
        deadline = time.monotonic() + 30
        while len(self.observer.netmap.online()) < N_NODES:
            if time.monotonic() > deadline:
                raise RuntimeError("the observer did not see the devnet's nodes within 30 s")
            await asyncio.sleep(0.05)

    async def stop_observer(self) -> None:
        if self.observer is not None:
            with contextlib.suppress(Exception):
                await self.observer.stop()

    @property
    def cstore(self) -> Any:
        return self.observer.services[0]

    def token(self, node: Any) -> str:
        return (Path(node.home) / "api-token").read_text().strip()


async def run_devnet(dv: Devnet, http: httpx.AsyncClient, spec: dict[str, Any], mode: str,
                     timeout: float) -> dict[str, Any]:  # fmt: skip
    """One job in `mode` submitted to the devnet's first node; its timings, bytes and accuracy."""
    from r1os.edil._state import UpdatePointer, aggregate_key, job_key, update_key

    nodes = dv.state.nodes
    owner, workers, agg = nodes[0], nodes[1 : 1 + len(spec["participants"])], nodes[-1]
    spec = {
        **spec,
        "privacy": mode,
        "participants": [
            {**p, "node": w.address} for p, w in zip(spec["participants"], workers, strict=True)
        ],
        "aggregator": agg.address,
    }
    auth = {"authorization": f"Bearer {dv.token(owner)}"}
    seen: list[tuple[float, str, str | None, int | None]] = []  # every EDIL record as the observer gets it

    def on_any(key: str, field: str | None, value: Any) -> None:
        if ":edil:" in key:
            h = len(value["history"]) if ":edil:job:" in key and isinstance(value, dict) else None
            seen.append((time.perf_counter(), key, field, h))

    dv.cstore.watch("node:", on_any)
    try:
        r = await http.post(f"{owner.url}/v1/edil/jobs", json={"spec": spec}, headers=auth)
        if r.status_code != 200:
            raise RuntimeError(f"submit {mode}: HTTP {r.status_code}: {r.text[:500]}")
        job = r.json()
        job_id = job["job_id"]
        deadline = time.monotonic() + timeout
        shown = 0
        while True:  # polled 4 times a second: the timing comes from the observer, not from here
            v = (await http.get(f"{owner.url}/v1/edil/jobs/{job_id}", headers=auth)).json()
            done = len(v["history"])
            if done > shown and (done % 5 == 0 or v["phase"] != "training"):
                say(f"  {mode}: round {done}/{spec['rounds']}, accuracy {v['history'][-1]['test_accuracy']}")
                shown = done
            if v["phase"] != "training":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: job {job_id} not done after {timeout:g} s ({done} rounds)")
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.3)  # the last records reach the observer
    finally:
        dv.cstore.unwatch(on_any)
    if v["phase"] != "done":
        raise RuntimeError(f"{mode}: job {job_id} ended {v['phase']}: {v.get('error')}")
    rounds = int(spec["rounds"])
    jkey, akey = job_key(owner.address, job_id), aggregate_key(agg.address, job_id)
    ukeys = [update_key(w.address, job_id) for w in workers]

    def first(key: str, field: str | None = None, history: int | None = None) -> float:
        for t, k, f, h in seen:
            if k == key and (field is None or f == field) and (history is None or h == history):
                return t
        return float("nan")

    marks = [first(jkey, history=h) for h in range(rounds + 1)]  # [published, end of round 1, ...]
    seconds = round_times(marks[0], marks[1:])
    phases: dict[str, list[float]] = {name: [] for name, _ in DEVNET_PHASES}
    for r in range(1, rounds + 1):
        steps = [marks[r - 1], latest([first(k, str(r)) for k in ukeys]), first(akey, str(r)), marks[r]]
        for (name, _), t0, t1 in zip(DEVNET_PHASES, steps[:-1], steps[1:], strict=True):
            phases[name].append(round(t1 - t0, 4))
    # Bytes up: what each participant sent per round, as the job's history records it (`update_bytes`)
    # or, where it is empty (notes/edil-bugs.md #2), as each update pointer says (replicated to the
    # observer's CSTORE); down: the models, read from the owner's R1FS.
    up: dict[str, list[int]] = {w.address.lower(): [] for w in workers}
    for h in v["history"]:
        for p, b in h.get("update_bytes", {}).items():
            up.setdefault(p.lower(), []).append(int(b))
    if not any(up.values()):
        for w, uk in zip(workers, ukeys, strict=True):
            fields = await dv.cstore.hgetall(uk)
            sizes = {int(k): UpdatePointer.model_validate(x).size for k, x in fields.items()}
            up[w.address.lower()] = [sizes[k] for k in sorted(sizes)]
    down = []
    for h in v["history"]:
        if h.get("model_cid"):
            g = await http.get(f"{owner.url}/v1/r1fs/get", params={"cid": h["model_cid"]}, headers=auth)
            if g.status_code == 200:
                down.append(len(g.content))
    return {
        "job_id": job_id,
        "seconds_per_round": seconds,
        "median_round_s": median(seconds),
        "total_s": marks[rounds] - marks[0],
        "history_seconds": [h["seconds"] for h in v["history"]],
        "up_bytes": up,
        "up_per_round": median([float(s) for sizes in up.values() for s in sizes]),
        "down_per_round": median([float(d) for d in down]),
        "accuracy": [h["test_accuracy"] for h in v["history"]],
        "final_accuracy": v["test_accuracy"],
        "included": [len(h["included"]) for h in v["history"]],
        "phases": phases,
        "steps": "devnet",
        "phase_median_s": {k: median([x for x in xs if x == x]) for k, xs in phases.items()},
    }


def devnet_rows(spec: dict[str, Any], modes: list[str], root: Path, timeout: float) -> dict[str, Any]:
    dv = Devnet(root)
    out: dict[str, Any] = {}
    try:
        say(f"starting a devnet of {N_NODES} node processes and a broker process")
        dv.up()

        async def jobs() -> None:
            async with httpx.AsyncClient(timeout=60) as http:
                try:
                    await dv.start_observer()
                    for mode in modes:
                        first = dv.state.nodes[0].name
                        say(f"r1os {mode}: job of {spec['rounds']} rounds on the devnet's {first}")
                        try:
                            out[mode] = await run_devnet(dv, http, spec, mode, timeout)
                        except Exception as exc:
                            say(f"  r1os {mode} failed: {type(exc).__name__}: {exc}")
                            out[mode] = {"error": f"{type(exc).__name__}: {exc}"}
                            continue
                        m = out[mode]
                        say(
                            f"  {mode}: {m['median_round_s']:.3f} s/round, {m['up_per_round']:.0f} B up/"
                            f"participant/round, accuracy {m['final_accuracy']:.4f}"
                        )
                finally:
                    logging.getLogger("r1os").setLevel(logging.ERROR)
                    await dv.stop_observer()
                    logging.getLogger("r1os").setLevel(logging.NOTSET)

        asyncio.run(jobs())
    finally:
        dv.down()
    return out


# -- Flower ----------------------------------------------------------------------------------------


def flwr_python(given: str | None) -> tuple[str, str]:
    """The python of a venv with flwr, and flwr's version. Without `given`: FLWR_VENV, created on first
    use (`python -m venv`, then `pip install -r bench/requirements-flwr.txt`) and brought up to date when
    that file changes (a copy of it is kept in the venv), so no manual step is needed."""
    if given:
        py = given
    else:
        py = str(FLWR_VENV / "bin" / "python")
        stamp, want = FLWR_VENV / "r1os-requirements.txt", FLWR_REQUIREMENTS.read_text()
        if not Path(py).exists():
            say(f"creating a venv for Flower in {FLWR_VENV} (flwr cannot share r1os's venv)")
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", "--clear", str(FLWR_VENV)], check=True)
        if not stamp.exists() or stamp.read_text() != want:
            say(f"installing {FLWR_REQUIREMENTS.relative_to(REPO)} into {FLWR_VENV}")
            subprocess.run([py, "-m", "pip", "install", "-q", "-r", str(FLWR_REQUIREMENTS)], check=True)
            stamp.write_text(want)
    version = subprocess.run([py, "-c", "import flwr; print(flwr.__version__)"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
    return py, version


def run_flower(py: str, cfg: dict[str, Any], tmp: Path, timeout: float) -> dict[str, Any]:
    """A Flower server and one client process per participant, over gRPC on loopback."""
    cfg_path, out = tmp / "flwr-config.json", tmp / "flwr-result.json"
    cfg_path.write_text(json.dumps(cfg))
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GRPC_VERBOSITY": "ERROR"}
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def spawn(name: str, *args: str) -> None:
        log = (tmp / f"flwr-{name}.log").open("wb")
        logs.append(log)
        procs.append(subprocess.Popen([py, str(FLWR_HELPER), *args, "--config", str(cfg_path), "--address",
                                       address], stdout=log, stderr=subprocess.STDOUT, env=env))  # fmt: skip

    try:
        spawn("server", "server", "--out", str(out))
        host, port = address.split(":")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.2):
                break
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Flower server did not start: {(tmp / 'flwr-server.log').read_text()[-2000:]}"
                )
            time.sleep(0.05)
        for i in range(len(cfg["parts"])):
            spawn(f"client{i}", "client", "--part", str(i))
        say(f"  Flower server at {address}, {len(cfg['parts'])} clients started")
        try:
            procs[0].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Flower not done after {timeout:g} s") from None
        if procs[0].returncode != 0 or not out.exists():
            raise RuntimeError(f"the Flower server failed: {(tmp / 'flwr-server.log').read_text()[-2000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    marks = json.loads(out.read_text())
    seconds = round_times(marks["start"], marks["end"])
    return {
        "seconds_per_round": seconds,
        "median_round_s": median(seconds),
        "total_s": marks["end"][-1] - marks["start"],
        "up_bytes": marks["up"],
        "up_per_round": median([float(b) for rnd in marks["up"] for b in rnd]),
        "down_per_round": median([float(b) for b in marks["down"]]),
        "accuracy": marks["accuracy"],
        "final_accuracy": marks["accuracy"][-1],
        # a round waits for its slowest client: the slowest train_local of each round
        "train_s": median([max(rnd) for rnd in marks.get("train", []) if rnd]),
    }


def train_reference(job: Any, lay: Any, rounds: int = 5) -> float:
    """Median seconds of one participant's `train_local` for one round, in this process on its own."""
    from r1os.edil._data import load
    from r1os.edil._models import init_params, local_seed, train_local

    w = init_params(lay, job.seed)
    times = []
    for i, p in enumerate(job.participants):
        data = load(str(p.data))
        for r in range(1, rounds + 1):
            t0 = time.perf_counter()
            train_local(lay, w, data.X, data.y, epochs=job.local_epochs, lr=job.lr, batch_size=job.batch_size,
                        seed=local_seed(job.seed, r, i))  # fmt: skip
            times.append(time.perf_counter() - t0)
    return median(times)


# -- the table -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def checks(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = res["rows"]
    plain, ckks, flower = rows.get("r1os plain", {}), rows.get("r1os ckks", {}), rows.get("Flower FedAvg", {})
    central = res["references"]["centralized"]["final_accuracy"]
    out: list[dict[str, Any]] = []

    def ok(*rs: dict[str, Any]) -> bool:
        return all(r and "error" not in r for r in rs)

    if ok(plain, ckks):
        ratio = ckks["median_round_s"] / plain["median_round_s"]
        out.append({"check": "ckks round time <= 2x r1os plain", "ratio": ratio,
                    "detail": f"{ckks['median_round_s']:.3f} / {plain['median_round_s']:.3f} s",
                    "met": ratio <= TARGET_TIME_RATIO})  # fmt: skip
        ratio = ckks["up_per_round"] / plain["up_per_round"]
        out.append({"check": "ckks bytes <= 20x plain", "ratio": ratio,
                    "detail": f"{ckks['up_per_round']:,.0f} / {plain['up_per_round']:,.0f} B",
                    "met": ratio <= TARGET_BYTES_RATIO})  # fmt: skip
        d = 100 * (ckks["final_accuracy"] - plain["final_accuracy"])
        out.append({"check": "ckks accuracy within 0.5 points of plain", "points": d,
                    "detail": f"{100 * ckks['final_accuracy']:.2f}% vs {100 * plain['final_accuracy']:.2f}%",
                    "met": abs(d) <= TARGET_PLAIN_POINTS})  # fmt: skip
    if ok(ckks):
        d = 100 * (ckks["final_accuracy"] - central)
        out.append({"check": "ckks accuracy within 2 points of centralized", "points": d,
                    "detail": f"{100 * ckks['final_accuracy']:.2f}% vs {100 * central:.2f}%",
                    "met": abs(d) <= TARGET_CENTRAL_POINTS})  # fmt: skip
    if ok(plain, flower):
        ratio = plain["median_round_s"] / flower["median_round_s"]
        out.append({"check": "r1os plain no slower than Flower", "ratio": ratio,
                    "detail": f"{plain['median_round_s']:.3f} / {flower['median_round_s']:.3f} s",
                    "met": ratio <= TARGET_FLOWER_RATIO})  # fmt: skip
    return out


def anchor_notes(res: dict[str, Any]) -> list[str]:
    """What r1os plain does per round that Flower does not, with this run's numbers."""
    plain, flower = res["rows"].get("r1os plain", {}), res["rows"].get("Flower FedAvg", {})
    if not plain or not flower or "error" in plain or "error" in flower or "phases" not in plain:
        return []
    ph, train = plain["phase_median_s"], res["setup"].get("train_local_s", float("nan"))
    fl, ft = flower["median_round_s"], flower.get("train_s", float("nan"))
    text = (
        f"r1os plain takes {plain['median_round_s']:.3f} s a round over {N_NODES} node processes, Flower "
        f"{fl:.3f} s over its {1 + res['setup']['participants']}. The training itself is the same code in "
        f"both ({train * 1000:.0f} ms per participant per round in this process alone; "
        f"{ft * 1000:.0f} ms for Flower's slowest client per round), so the rest is what each framework "
        f"does around it. Flower's round is one gRPC round trip per client to one trusted server that "
        f"holds everything in memory ({fl * 1000 - ft * 1000:.0f} ms besides training). An r1os round "
        f"is three hand-offs between independent nodes, none trusting the others, each through "
        f"replicated storage: the owner seals the model to each reader and stores it in R1FS "
        f"(content-addressed) and publishes the round as a signed CSTORE record that the broker fans out "
        f"to every node; each participant fetches and unseals the model, trains, seals its update to "
        f"the aggregator, stores it in R1FS and writes a signed pointer ({ph['updates'] * 1000:.0f} ms "
        f"from the round's record to the last pointer, training included); the aggregator, a separate "
        f"node from the owner so that no single node sees both the updates and the result, fetches, "
        f"unseals and checks each update against its signed header, sums, seals the sum to the owner "
        f"and writes its pointer ({ph['sum'] * 1000:.0f} ms); the owner fetches and unseals the sum, "
        f"evaluates, and seals, stores and publishes the new model ({ph['owner'] * 1000:.0f} ms). Each "
        f"hand-off costs a broker hop, signature checks on every replica, and R1FS puts and gets (with "
        f"their hashes) where Flower passes arrays over one stream. The honest anchor is therefore: "
        f"r1os pays about {plain['median_round_s'] * 1000 - train * 1000:.0f} ms a round for "
        f"authenticated, sealed, replicated and auditable hand-offs between nodes that need not trust "
        f"each other; Flower pays about {fl * 1000 - ft * 1000:.0f} ms for a trusted hub. With "
        f"rounds dominated by training (bigger models or data) the gap shrinks to that fixed cost."
    )
    load, cores = max(res["setup"]["load_start"], res["setup"].get("load_end", 0)), res["setup"]["cores"] or 1
    if load > cores:
        text += (
            f" This run shared {cores} cores at a load average of up to {load:.1f}: r1os's {N_NODES} node "
            f"processes and broker wait for a core at every hand-off, so its numbers here are pessimistic."
        )
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > 100:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return ["", "  why r1os plain is slower than Flower (this run's numbers)", *[f"  {x}" for x in lines]]


def print_table(res: dict[str, Any]) -> None:
    s = res["setup"]
    print(f"EDIL  {s['job']}: {s['model']} ({s['params']:,} parameters), {s['participants']} participants "
          f"(non-IID), {s['rounds']} rounds x {s['local_epochs']} local epochs, lr {s['lr']:g}, batch "
          f"{s['batch_size']}, seed {s['seed']}; {s['cores']} cores shared by everything (load average "
          f"{s['load_start']:.1f} at the start, {s.get('load_end', 0):.1f} at the end)")  # fmt: skip
    print(f"  r1os: {s['r1os']}")
    print(f"  Flower: {s['flower']}")
    wl = max(24, *(len(k) for k in res["rows"]), *(len(k) + 12 for k in res["references"]))
    print(f"\n  {'mode':{wl}} {'s/round':>8} {'total s':>8} {'up B/part/round':>16} {'x plain':>8} "
          f"{'down B/round':>13} {'final acc':>9}")  # fmt: skip
    base = res["rows"].get("r1os plain", {})
    for label, r in res["rows"].items():
        if "error" in r:
            print(f"  {label:{wl}} FAILED: {r['error']}")
            continue
        x = f"{r['up_per_round'] / base['up_per_round']:.1f}x" if base and "error" not in base else "-"
        print(
            f"  {label:{wl}} {r['median_round_s']:8.3f} {r['total_s']:8.2f} {r['up_per_round']:16,.0f} "
            f"{x:>8} {r['down_per_round']:13,.0f} {100 * r['final_accuracy']:8.2f}%"
        )
    for label, r in res["references"].items():
        print(
            f"  {label + ' (1 process)':{wl}} {median(r['seconds_per_round']):8.3f} "
            f"{sum(r['seconds_per_round']):8.2f} "
            f"{'-':>16} {'-':>8} {'-':>13} {100 * r['final_accuracy']:8.2f}%"
        )
    print("\n  s/round: median over the rounds, each from the previous round's end (round 1: from the job's")
    print("  start) to the new global model measured on the test split. up: one participant's update for")
    print("  one round (r1os: the blob named in its UpdatePointer; Flower: its serialized arrays). down: the")
    print("  global model a participant fetches per round (r1os: sealed in R1FS; Flower: serialized arrays).")
    for kind, steps, how in (
        ("devnet", DEVNET_PHASES, "devnet: each record timed as the observer node gets it from the broker"),
        ("in-process", PHASES, "1 process: every node's CSTORE watched; a step ends with its slowest node"),
    ):
        broken = {k: r["phase_median_s"] for k, r in res["rows"].items() if r.get("steps") == kind}
        if not broken:
            continue
        print(f"\n  where an r1os round goes, median seconds per step ({how})")
        print(f"  {'step':10}" + "".join(f"{k.removeprefix('r1os ').removesuffix(' (1 process)'):>13}"
                                       for k in broken))  # fmt: skip
        for name, what in steps:
            print(f"  {name:10}" + "".join(f"{b[name]:13.3f}" for b in broken.values()) + f"   {what}")
    for line in anchor_notes(res):
        print(line)
    print("\n  targets")
    for c in res["checks"]:
        value = f"{c['ratio']:.2f}x" if "ratio" in c else f"{c['points']:+.2f} points"
        print(f"    {c['check']:46} {c['detail']:>26}  {value:>12}  {verdict(c['met'])}")
    for k, err in res.get("errors", {}).items():
        print(f"\n  {k}: FAILED: {err}")


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 rounds, plain and ckks only (a smoke run)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per job (default: the example's)")
    ap.add_argument("--modes", default=None, help=f"r1os privacy modes (default: {','.join(MODES)})")
    ap.add_argument("--in-process", action="store_true",
                    help="also run the r1os jobs on 5 nodes inside this process (one event loop; rows marked "
                         "'(1 process)')")  # fmt: skip
    ap.add_argument("--no-flower", action="store_true", help="skip Flower")
    ap.add_argument(
        "--flwr-python",
        default=None,
        help="a python with flwr (default: ~/.cache/r1os-bench/flwr-venv, made by this bench on its first "
        "run, `./dev bench` included: python -m venv, then pip install -r bench/requirements-flwr.txt; "
        "redone when that file changes)",
    )
    ap.add_argument("--timeout", type=float, default=600, help="seconds each job may take")
    args = ap.parse_args()
    modes = [m.strip() for m in (args.modes or ("plain,ckks" if args.quick else ",".join(MODES))).split(",")]
    if bad := [m for m in modes if m not in MODES]:
        ap.error(f"unknown modes {bad}; choose from {', '.join(MODES)}")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with it ignored
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="  log %(levelname)s %(name)s: %(message)s"
    )

    from r1os.edil import spec_from_data
    from r1os.edil._roles import model_layout
    from r1os.edil.simulate import centralized, simulate

    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["rounds"] = args.rounds or (5 if args.quick else spec["rounds"])
    spec["deadline_s"] = 120
    job = spec_from_data(spec)
    lay = model_layout(job)
    parts = [str(p.data) for p in job.participants]
    results: dict[str, Any] = {"rows": {}, "references": {}, "errors": {}}
    results["setup"] = {
        "job": EXAMPLE.relative_to(REPO).as_posix(),
        "model": f"{job.model.family} {list(job.model.hidden)}",
        "params": lay.size,
        "participants": len(parts),
        "rounds": job.rounds,
        "local_epochs": job.local_epochs,
        "lr": job.lr,
        "batch_size": job.batch_size,
        "seed": job.seed,
        "cores": os.cpu_count(),
        "load_start": os.getloadavg()[0],
        "r1os": f"a devnet: {N_NODES} `python -m r1os.node` processes and a broker process (HTTP, CSTORE, "
        f"R1FS, EDIL): owner, {len(parts)} participants, 1 aggregator; heartbeat {HB:g} s, CSTORE sync "
        "0.5 s, no fsync"
        + (f"; rows '(1 process)': the same {N_NODES} nodes in this process" if args.in_process else ""),
        "flower": "not run",
    }
    tmp = Path(tempfile.mkdtemp(prefix="r1-bench-edil-"))
    try:
        say(f"references in this process: simulate (plain) and centralized, {job.rounds} rounds")
        spec_plain = spec_from_data({**spec, "privacy": "plain"})
        results["references"]["simulate plain"] = simulate(spec_plain).to_dict()
        results["references"]["centralized"] = centralized(spec_plain).to_dict()
        for k, r in results["references"].items():
            say(f"  {k}: accuracy {r['final_accuracy']:.4f}")
        results["setup"]["train_local_s"] = train_reference(job, lay)
        say(f"  train_local alone: {results['setup']['train_local_s'] * 1000:.1f} ms per participant-round")
        r1 = devnet_rows(spec, modes, tmp / "devnet", args.timeout)
        results["rows"].update({f"r1os {m}": r for m, r in r1.items()})
        if args.in_process:
            r1 = asyncio.run(r1os_rows(spec, modes, tmp / "nodes", args.timeout))
            results["rows"].update({f"r1os {m} (1 process)": r for m, r in r1.items()})
        if not args.no_flower:
            try:
                py, version = flwr_python(args.flwr_python)
                results["setup"]["flower"] = (
                    f"flwr {version}: start_server (FedAvg) + {len(parts)} start_client processes, gRPC on "
                    "loopback; r1os's model, train_local, seeds and data parts"
                )
                say(f"Flower {version}: FedAvg, {job.rounds} rounds")
                cfg = {
                    "family": lay.family,
                    "sizes": list(lay.sizes),
                    "parts": parts,
                    "owner_data": str(job.owner_data),
                    "rounds": job.rounds,
                    "local_epochs": job.local_epochs,
                    "lr": job.lr,
                    "batch_size": job.batch_size,
                    "seed": job.seed,
                }
                fl = run_flower(py, cfg, tmp, args.timeout)
                results["rows"]["Flower FedAvg"] = fl
                say(
                    f"  Flower: {fl['median_round_s']:.3f} s/round, {fl['up_per_round']:.0f} B up/client/"
                    f"round, accuracy {fl['final_accuracy']:.4f}"
                )
            except Exception as exc:
                say(f"  Flower failed: {type(exc).__name__}: {exc}")
                results["rows"]["Flower FedAvg"] = {"error": f"{type(exc).__name__}: {exc}"}
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        results["errors"]["run"] = "interrupted"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["setup"]["load_end"] = os.getloadavg()[0]
    results["checks"] = checks(results) if "centralized" in results["references"] else []
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
