"""Deeploy benchmark on a real devnet: 5 node processes (3 oracles), 1 s heartbeats, no chain, real
bubblewrap sandboxes and, when a private Docker engine can start, real containers. One run, side by
side with baselines measured in the same run:

1. deploy -> first good answer: from the moment a signed deploy request is sent to the first good
   answer through the proxy of a node that holds no replica (an oracle other than the leader, kept
   out by `placement.exclude`), polled every 20 ms; `process` (examples/apps/echo, 1 and 2
   replicas) and `plugin` (examples/apps/inference, first correct `POST /predict`). Target <= 2 s.
   The nodes keep warm plugin workers with numpy and scikit-learn imported (`plugin_spares`, default
   1, and `R1OS_DEEPLOY__PLUGIN_PRELOAD`, set here); each deploy waits until every node has one
   ready, as on nodes up for a while (and so that no row measures the CPU another row's refill
   takes: a claimed worker is replaced in the background). `--plugin-spares 0`: cold starts.
   Breakdown as that node sees it: request accepted, placed (the plan lists a replica), a replica
   reported healthy, first answer, every replica healthy.
2. docker: the same for examples/apps/docker-echo (1 replica) against a plain `docker run` of the same
   image and command on the same engine (host network, the same folder at /app) to its first HTTP
   answer, polled the same way; runs alternate. Target <= 1.5x.
3. proxy: bench/deeploy_proxy.py's measurement (a replica and a node's HTTP stack with only the proxy,
   in their own processes), then the same load on the devnet itself: the echo app's replica called
   directly at 127.0.0.1:<port> (the port its node reports in CSTORE), through the node that hosts it,
   and through another node (a hop). p50/p99 latency and throughput; target >= 0.7x.
4. SIGKILL failover: echo with 2 replicas, a steady request loop (its own process, 4 workers, bounded)
   through an oracle that holds no replica; an edge node holding a replica is SIGKILLed. Reported:
   kill -> the survivors mark it offline; offline -> the replacement's first good answer (asked on
   the replacement's node with `x-r1os-hop: 1`, so only its own replica answers); target <= 10 s. The
   loop's failed requests: those in flight when the node died, and those later, against the total.
5. rolling update under the same loop: `update` with a changed env; failed requests (target: zero)
   and the rollout time (request sent -> every replica on the new version and healthy).

Run: `.venv/bin/python bench/deeploy.py [--quick] [--json] [--keep] [--runs N] [--rows 1,3]
[--plugin-spares N]`
Progress goes to stderr; the table (or with --json the results as JSON) to stdout. The devnet and
the private dockerd are stopped on exit, Ctrl-C and errors included (--keep leaves both running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "apps"
TARGET_DEPLOY_S = 2.0
TARGET_DOCKER_RATIO = 1.5
TARGET_PROXY_RATIO = 0.7
TARGET_FAILOVER_S = 10.0
POLL_S = 0.02
LOOP_WORKERS = 4
LOOP_PAUSE_S = 0.01
#: What the nodes' warm plugin workers import ahead of any app: what the inference example needs.
PLUGIN_PRELOAD = ["numpy", "sklearn.svm", "sklearn.datasets"]

_T0 = time.monotonic()
now = time.monotonic


def say(msg: str) -> None:
    print(f"[{now() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# -- the request loop (its own process) -----------------------------------------------------------


def loop_process(
    url: str, headers: dict[str, str], workers: int, pause: float, stop: Any, out: Connection
) -> None:
    """`workers` threads, each sending one GET after the other (keep-alive) until `stop` is set;
    sends back [(start, end, outcome)], monotonic clock (system-wide on Linux), outcome "ok" or why."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    records: list[tuple[float, float, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=10, headers=headers) as client:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = client.get(url)
                    if r.status_code == 200 and '"path"' in r.text:
                        outcome = "ok"
                    else:
                        outcome = f"{r.status_code} {r.headers.get('x-r1os-proxy-error', '')}".strip()
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                t1 = time.monotonic()
                with lock:
                    records.append((t0, t1, outcome))
                if pause:
                    time.sleep(pause)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.send(records)


class RequestLoop:
    """A `loop_process` in its own process, started and stopped from here."""

    def __init__(self, url: str, workers: int = LOOP_WORKERS, pause: float = LOOP_PAUSE_S) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        self.mine, theirs = ctx.Pipe()
        self.proc = ctx.Process(
            target=loop_process, args=(url, {}, workers, pause, self.stop_event, theirs), daemon=True
        )
        self.proc.start()
        self.records: list[tuple[float, float, str]] = []

    async def wait_first(self, timeout: float = 30) -> None:
        """Give the loop time to import and send its first requests."""
        await asyncio.sleep(1.5)
        if not self.proc.is_alive():
            raise BenchError("the request loop died at start")

    async def stop(self) -> list[tuple[float, float, str]]:
        self.stop_event.set()
        if await asyncio.to_thread(self.mine.poll, 30):
            self.records = self.mine.recv()
        self.kill()
        return self.records

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(5)


def summarize_loop(records: list[tuple[float, float, str]], mark: float | None = None) -> dict[str, Any]:
    """Totals and failures; with `mark` (the kill), failures split in: in flight at `mark` / after."""
    failed = [r for r in records if r[2] != "ok"]
    causes: dict[str, int] = {}
    for r in failed:
        causes[r[2]] = causes.get(r[2], 0) + 1
    lat = sorted((r[1] - r[0]) * 1e3 for r in records if r[2] == "ok")
    span = (max(r[1] for r in records) - min(r[0] for r in records)) if records else 0.0
    out: dict[str, Any] = {
        "total": len(records),
        "failed": len(failed),
        "causes": causes,
        "rate": len(records) / span if span else 0.0,
        "p50_ms": lat[len(lat) // 2] if lat else None,
        "max_ms": lat[-1] if lat else None,
    }
    if mark is not None:
        in_flight = [r for r in failed if r[0] <= mark <= r[1]]
        out["failed_in_flight"] = len(in_flight)
        out["failed_after"] = len([r for r in failed if r[0] > mark])
        out["failed_before"] = len([r for r in failed if r[1] < mark])
        out["in_flight_at_kill"] = len([r for r in records if r[0] <= mark <= r[1]])
    return out


# -- the bench ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, state: Any, args: argparse.Namespace, engine_url: str | None) -> None:
        from r1os.identity import NodeKey

        self.state = state
        self.args = args
        self.engine_url = engine_url
        self.owner = NodeKey.generate()
        self.owner_addr = self.owner.address.lower()
        self.http = httpx.AsyncClient(timeout=30)
        oracles = sorted((n for n in state.nodes if n.oracle), key=lambda n: n.address.lower())
        self.leader = oracles[0]  # the lowest address among online oracles writes the plans
        self.entry = oracles[-1]  # an oracle that is not the leader: requests and traffic enter here
        self.edges = [n for n in state.nodes if not n.oracle]
        self.by_addr = {n.address.lower(): n for n in state.nodes}
        self.results: dict[str, Any] = {}
        self.live: set[str] = set()  # apps deployed and not deleted yet

    # -- requests and views ---------------------------------------------------------------------

    def spec(self, example: str, **changes: Any) -> Any:
        from r1os.deeploy import load_spec
        from r1os.deeploy._spec import spec_from_data

        base = load_spec(EXAMPLES / example / "app.yaml").model_dump(mode="json", exclude_none=True)
        placement = changes.pop("placement", None) or {"exclude": [self.entry.address]}
        return spec_from_data({**base, "placement": placement, **changes})

    def load_echo(self, **changes: Any) -> Any:
        """The echo example for the load rows, its app.py with TCP_NODELAY when it lacks it: without
        it, Python's http.server sends headers and body in two writes and every answer on a
        keep-alive connection waits ~40 ms for a delayed ACK (Nagle), which is all a load would see."""
        spec = self.spec("echo", **changes)
        code = spec.files["app.py"]
        if "disable_nagle_algorithm" in code:
            return spec
        marker = '    protocol_version = "HTTP/1.1"\n'
        if marker not in code:
            raise BenchError("examples/apps/echo/app.py changed: cannot add TCP_NODELAY to it")
        patched = code.replace(marker, marker + "    disable_nagle_algorithm = True\n")
        self.results["echo_patched"] = True
        return spec.model_copy(update={"files": {**spec.files, "app.py": patched}})

    async def request(self, action: str, spec: Any = None, **kw: Any) -> dict[str, Any]:
        from r1os.deeploy._requests import sign_app_request

        name = spec.name if spec is not None else kw.pop("name")
        signed = sign_app_request(
            self.owner, network=self.state.network, action=action, name=name, spec=spec, **kw
        )
        r = await self.http.post(f"{self.entry.url}/v1/apps/requests", content=signed.model_dump_json())
        if r.status_code != 200:
            raise BenchError(f"{action} {name} refused: {r.status_code} {r.text[:300]}")
        if action == "deploy":
            self.live.add(name)
        elif action == "delete":
            self.live.discard(name)
        return dict(r.json())

    async def view(self, name: str, node: Any = None) -> dict[str, Any] | None:
        node = node or self.entry
        r = await self.http.get(f"{node.url}/v1/apps/{self.owner_addr}/{name}", timeout=5)
        return dict(r.json()) if r.status_code == 200 else None

    async def wait(self, what: str, check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
        deadline = now() + timeout
        while True:
            got = await check()
            if got:
                return got
            if now() > deadline:
                raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(POLL_S)

    async def wait_healthy(self, name: str, n: int, version: int | None = None) -> dict[str, Any]:
        async def ok() -> dict[str, Any] | None:
            v = await self.view(name)
            if v is None or v["healthy"] != n or len(v["replicas"]) != n:
                return None
            if version is not None and any(r["version"] != version for r in v["replicas"]):
                return None
            return v

        return dict(await self.wait(f"{n} healthy replicas of {name}", ok))

    async def report(self, node: Any, app_node: str, name: str) -> dict[str, Any] | None:
        """The replica report `app_node` wrote for app `name`, as `node`'s CSTORE has it."""
        r = await self.http.get(
            f"{node.url}/v1/cstore/hget",
            params={"key": f"node:{app_node}:deeploy:replicas", "field": f"{self.owner_addr}/{name}"},
            timeout=5,
        )
        r.raise_for_status()
        data = r.json()
        return data["value"] if data.get("found") else None

    async def delete(self, name: str) -> None:
        """Delete the app and wait until every node that hosted it has stopped its replica."""
        v = await self.view(name)
        hosts = [x["node"] for x in v["replicas"]] if v else []
        await self.request("delete", name=name)

        async def gone() -> bool:
            if await self.view(name) is not None:
                return False
            for h in hosts:
                node = self.by_addr[h]
                if node.pid and _alive(node.pid) and await self.report(node, h, name) is not None:
                    return False
            return True

        await self.wait(f"{name} deleted everywhere", gone, timeout=30)

    # -- 1 and 2: deploy -> first good answer ---------------------------------------------------

    async def deploy_to_answer(self, spec: Any, probe: Callable[[], Awaitable[bool]]) -> dict[str, float]:
        marks: dict[str, float] = {}
        t0 = now()

        async def send() -> None:
            await self.request("deploy", spec)
            marks["accepted"] = now() - t0

        async def watch() -> None:
            while True:
                v = await self.view(spec.name)
                t = now() - t0
                if v is not None:
                    if v["replicas"]:
                        marks.setdefault("placed", t)
                    if v["healthy"] >= 1:
                        marks.setdefault("healthy", t)
                    if v["healthy"] >= spec.replicas:
                        marks["all_healthy"] = t
                        return
                await asyncio.sleep(POLL_S)

        async def answer() -> None:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if await probe():
                        marks["answer"] = now() - t0
                        return
                await asyncio.sleep(POLL_S)

        try:
            await asyncio.wait_for(asyncio.gather(send(), watch(), answer()), timeout=45)
        except TimeoutError:
            v = await self.view(spec.name)
            raise BenchError(
                f"{spec.name}: no good answer through {self.entry.name} within 45 s "
                f"(so far: {_fmt(marks) or 'nothing'}; app view: {json.dumps(v)[:600] if v else 'none'})"
            ) from None
        return marks

    def echo_probe(self, name: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            r = await self.http.get(f"{self.entry.url}/apps/{name}/hello", timeout=5)
            return r.status_code == 200 and r.json().get("path") == "/hello"

        return probe

    def inference_probe(self, name: str) -> Callable[[], Awaitable[bool]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        inputs, truth = digits.data[-20:].tolist(), digits.target[-20:].tolist()

        async def probe() -> bool:
            r = await self.http.post(
                f"{self.entry.url}/apps/{name}/predict", json={"inputs": inputs}, timeout=30
            )
            if r.status_code != 200:
                return False
            got = r.json().get("predictions", [])
            return len(got) == 20 and sum(p == t for p, t in zip(got, truth, strict=True)) >= 18

        return probe

    def page_probe(self, name: str, page: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            r = await self.http.get(f"{self.entry.url}/apps/{name}/", timeout=5)
            return r.status_code == 200 and r.text == page

        return probe

    async def row_deploy(self) -> None:
        runs = self.args.runs
        configs = [
            ("process, echo, 1 replica", "echo", {"replicas": 1}, self.echo_probe),
            ("process, echo, 2 replicas", "echo", {"replicas": 2}, self.echo_probe),
            ("plugin, inference, 2 replicas", "inference", {"replicas": 2}, self.inference_probe),
        ]
        out: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in configs}
        for i in range(runs):  # round robin, so that a noisy moment hits every config alike
            for label, example, changes, probe in configs:
                name = f"b-{example}-{changes['replicas']}-{i}"
                spec = self.spec(example, name=name, **changes)
                # Every deploy, not only the plugin's: a row must not measure the CPU the previous
                # row's refill of warm workers takes (5 nodes on one machine refill at once).
                await self.wait_spares()
                marks = await self.deploy_to_answer(spec, probe(name))
                say(f"  {label}: run {i + 1}/{runs}: first answer {marks['answer']:.2f} s ({_fmt(marks)})")
                out[label].append(marks)
                await self.delete(name)
        self.results["deploy"] = out
        # What the plugin row cannot go below: a fresh Python importing the model and running its
        # setup() (scikit-learn import, training), no node and no sandbox, on this machine.
        setups = []
        for _ in range(runs):
            setups.append(await asyncio.to_thread(_plugin_setup_alone))
        self.results["plugin_setup_alone"] = setups
        say(f"  inference setup() alone in a fresh python: {', '.join(f'{t:.2f}' for t in setups)} s")

    async def wait_spares(self, timeout: float = 90) -> None:
        """Until every node that may host the app (all but the entry) has a warm plugin worker ready,
        as its log says (`plugin spare X ready`, less those claimed or ended since)."""
        want = self.args.plugin_spares
        if want <= 0:
            return
        hosts = [n for n in self.state.nodes if n is not self.entry]

        def ready_on(node: Any) -> int:
            ready: set[str] = set()
            with contextlib.suppress(OSError), open(node.log_path, errors="replace") as fh:
                for line in fh:
                    m = SPARE_LINE.search(line)
                    if m and m["ready"]:
                        ready.add(m["ready"])
                    elif m:
                        ready.discard(m["gone"] or m["claimed"])
            return len(ready)

        async def all_ready() -> bool:
            counts = await asyncio.gather(*(asyncio.to_thread(ready_on, n) for n in hosts))
            return all(c >= want for c in counts)

        t0 = now()
        try:
            await self.wait("a warm plugin worker ready on every host", all_ready, timeout=timeout)
        except BenchError as exc:
            say(f"  {exc}: deploying anyway")
            return
        if now() - t0 > 0.1:
            say(f"  waited {now() - t0:.1f} s for the nodes' warm plugin workers")

    async def row_docker(self) -> None:
        if self.engine_url is None:
            return
        import docker

        spec0 = self.spec("docker-echo")
        page = spec0.files["index.html"]
        client = docker.DockerClient(base_url=self.engine_url, timeout=60)
        folder = Path(tempfile.mkdtemp(prefix="r1-bench-dk-"))
        (folder / "index.html").write_text(page)
        cli = shutil.which("docker")
        deeploy: list[dict[str, float]] = []
        plain: list[float] = []
        plain_cli: list[float] = []
        try:
            for i in range(self.args.runs):
                name = f"b-docker-{i}"
                marks = await self.deploy_to_answer(
                    self.spec("docker-echo", name=name, replicas=1), self.page_probe(name, page)
                )
                deeploy.append(marks)
                await self.delete(name)
                t = await asyncio.to_thread(_plain_docker_run, client, folder, page)
                plain.append(t)
                line = (
                    f"  docker: run {i + 1}/{self.args.runs}: deeploy {marks['answer']:.2f} s "
                    f"({_fmt(marks)}); docker run (SDK) {t:.2f} s"
                )
                if cli:
                    tc = await asyncio.to_thread(_cli_docker_run, cli, self.engine_url, folder, page)
                    plain_cli.append(tc)
                    line += f", docker run (CLI) {tc:.2f} s"
                say(line)
        finally:
            client.close()
            shutil.rmtree(folder, ignore_errors=True)
        self.results["docker"] = {"deeploy": deeploy, "docker_run_sdk": plain, "docker_run_cli": plain_cli}

    # -- 3: proxy ------------------------------------------------------------------------------

    async def row_proxy(self) -> None:
        import deeploy_proxy as dp  # bench/deeploy_proxy.py (this folder is on sys.path)

        clients, seconds, repeat = self.args.clients, self.args.seconds, self.args.repeat

        async def rows_of(rows: dict[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in rows}
            for _ in range(repeat):  # alternate, as deeploy_proxy.py does
                for name, (url, path) in rows.items():
                    runs[name].append(await asyncio.to_thread(measure, url, path, clients, seconds))
            return {name: max(rs, key=lambda r: r["rate"]) for name, rs in runs.items()}

        # a) deeploy_proxy.py's own setup: the proxy alone, fixed resolver
        say("  proxy alone (bench/deeploy_proxy.py's replica and node processes)")
        procs = []
        try:
            replica, replica_url = await asyncio.to_thread(dp.start, dp.replica_process)
            procs.append(replica)
            node, node_url = await asyncio.to_thread(dp.start, dp.node_process, replica_url, True)
            procs.append(node)
            entry, entry_url = await asyncio.to_thread(dp.start, dp.node_process, node_url, False)
            procs.append(entry)
            alone = await rows_of(
                {
                    "direct": (replica_url, "/hello"),
                    "proxy": (node_url, "/apps/bench/hello"),
                    "proxy, hop": (entry_url, "/apps/bench/hello"),
                }
            )
        finally:
            for p in procs:
                p.terminate()
                p.join(10)
        self.results["proxy_alone"] = alone

        # b) the devnet: the echo app's sandboxed replica on an edge node, called directly, through
        # its node, and through another node. cpu 2 (the node's all): the replica's own cgroup quota
        # should not be what limits either side.
        host = self.edges[0]
        name = "b-load"
        spec = self.load_echo(name=name, replicas=1, placement={"nodes": [host.address]})
        spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"cpu": 2.0})})
        await self.request("deploy", spec)
        await self.wait_healthy(name, 1)
        rep = await self.report(self.entry, host.address.lower(), name)
        if not rep or not rep.get("port"):
            raise BenchError(f"no port in {host.name}'s report for {name}: {rep}")
        say(f"  devnet: echo replica on {host.name} port {rep['port']} (from its CSTORE report)")
        devnet = await rows_of(
            {
                "direct": (f"http://127.0.0.1:{rep['port']}", "/hello"),
                "proxy": (host.url, f"/apps/{name}/hello"),
                "proxy, hop": (self.entry.url, f"/apps/{name}/hello"),
            }
        )
        await self.delete(name)
        self.results["proxy_devnet"] = devnet
        self.results["proxy_setup"] = {"clients": clients, "seconds": seconds, "repeat": repeat}

    # -- 4: SIGKILL failover ---------------------------------------------------------------------

    async def row_failover(self) -> None:
        name = "b-failover"
        await self.request("deploy", self.load_echo(name=name, replicas=2))
        v = await self.wait_healthy(name, 2)
        holders = {x["node"] for x in v["replicas"]}
        # The entry forwards to the replicas in plan order (the view lists them so): the first one
        # takes the traffic, so kill that one when it is on an edge node.
        order = [x["node"] for x in v["replicas"]]
        edge_holders = [n for n in self.edges if n.address.lower() in holders]
        edge_holders.sort(key=lambda n: order.index(n.address.lower()))
        victim = edge_holders[0] if edge_holders else None
        if victim is None or victim.pid is None:
            raise BenchError(f"no edge node holds a replica of {name}: {sorted(holders)}")
        vaddr = victim.address.lower()
        survivors = [n for n in self.state.nodes if n is not victim]
        keeper = next(h for h in holders if h != vaddr)
        candidates = [n for n in survivors if n.address.lower() not in holders and n is not self.entry]
        victim_port = (await self.report(self.entry, vaddr, name) or {}).get("port")

        loop = RequestLoop(f"{self.entry.url}/apps/{name}/hello")
        try:
            await loop.wait_first()
            say(f"  request loop running through {self.entry.name}; SIGKILL {victim.name} (pid {victim.pid})")
            os.kill(victim.pid, signal.SIGKILL)
            killed = now()
            offline: dict[str, float] = {}
            replaced: dict[str, Any] = {}

            async def watch_offline(node: Any) -> None:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await self.http.get(f"{node.url}/v1/peers", timeout=2)
                        peer = next((p for p in r.json()["peers"] if p["address"].lower() == vaddr), None)
                        if peer is None or peer["status"] == "offline":
                            offline[node.name] = now() - killed
                            return
                    await asyncio.sleep(0.05)

            async def watch_replacement(node: Any) -> None:
                # With x-r1os-hop: 1 a node answers from its own replica only: the first 200 is the
                # replacement's own first answer through its node.
                url = f"{node.url}/apps/{self.owner_addr}/{name}/hello"
                while not replaced:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await self.http.get(url, headers={"x-r1os-hop": "1"}, timeout=5)
                        if r.status_code == 200 and not replaced:
                            replaced.update(node=node.name, t=now() - killed)
                            return
                    await asyncio.sleep(POLL_S)

            await asyncio.wait_for(
                asyncio.gather(
                    *(watch_offline(n) for n in survivors), *(watch_replacement(n) for n in candidates)
                ),
                timeout=60,
            )
            await self.wait_healthy(name, 2)
            await asyncio.sleep(1.0)
            records = await loop.stop()
        finally:
            loop.kill()
        orphan = None
        if victim_port:
            try:
                r = await self.http.get(f"http://127.0.0.1:{victim_port}/hello", timeout=1)
                orphan = f"the killed node's replica still answers on port {victim_port} ({r.status_code})"
            except httpx.HTTPError:
                orphan = None
        first_offline = min(offline.values())
        self.results["failover"] = {
            "victim": victim.name,
            "victim_took_traffic": order[0] == vaddr,
            "keeper": self.by_addr[keeper].name,
            "entry": self.entry.name,
            "offline_s": offline,
            "offline_first_s": first_offline,
            "offline_all_s": max(offline.values()),
            "replacement": replaced["node"],
            "replacement_after_kill_s": replaced["t"],
            "replacement_after_offline_s": replaced["t"] - first_offline,
            "loop": summarize_loop(records, killed),
            "orphan": orphan,
        }
        await self.delete(name)

    # -- 5: rolling update -----------------------------------------------------------------------

    async def row_rolling(self) -> None:
        name = "b-roll"
        spec = self.load_echo(name=name, replicas=2)
        await self.request("deploy", spec)
        await self.wait_healthy(name, 2)
        rollouts: list[dict[str, Any]] = []
        loop = RequestLoop(f"{self.entry.url}/apps/{name}/hello")
        try:
            await loop.wait_first()
            for i in range(self.args.updates):
                version = i + 2
                before = {x["node"] for x in (await self.view(name) or {"replicas": []})["replicas"]}
                t0 = now()
                await self.request("update", spec.model_copy(update={"env": {"BENCH_ROLL": str(version)}}))
                v = await self.wait_healthy(name, 2, version=version)
                took = now() - t0
                after = {x["node"] for x in v["replicas"]}
                rollouts.append({"version": version, "s": took, "moved": len(after - before)})
                say(f"  update to v{version}: every replica new and healthy after {took:.2f} s")
                await asyncio.sleep(1.0)
            records = await loop.stop()
        finally:
            loop.kill()
        self.results["rolling"] = {"rollouts": rollouts, "loop": summarize_loop(records)}
        await self.delete(name)


def measure(url: str, path: str, clients: int, seconds: float) -> dict[str, float]:
    """bench/deeploy_proxy.py's load (`load_process`, its own process) against `url` + `path`, as its
    `measure` does, but with a bound: a load process that dies (an answer other than 200) or hangs is
    an error here instead of a wait forever."""
    import deeploy_proxy as dp

    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe(duplex=False)
    p = ctx.Process(target=dp.load_process, args=(url, path, clients, seconds, theirs), daemon=True)
    p.start()
    theirs.close()  # so that recv() ends if the child dies
    try:
        if not mine.poll(seconds + 60):
            raise BenchError(f"load on {url}{path} did not finish")
        got = mine.recv()
        rate, latencies = got[0], got[1]
    except EOFError:
        raise BenchError(f"load on {url}{path} failed (an answer other than 200: see above)") from None
    finally:
        if p.is_alive():
            p.terminate()
        p.join(10)
    latencies.sort()
    return {
        "rate": rate,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A SIGKILLed child not yet reaped is a zombie: not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


SPARE_LINE = re.compile(
    r"plugin spare (?P<ready>\S+) ready|plugin spare (?P<gone>\S+) ended"
    r"|runs on plugin spare (?P<claimed>\S+)"
)


def _plugin_setup_alone() -> float:
    code = "from model import DigitsModel; DigitsModel().setup()"
    t0 = now()
    subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES / "inference", check=True)
    return now() - t0


def _fmt(marks: dict[str, float]) -> str:
    keys = ("accepted", "placed", "healthy", "all_healthy")
    return ", ".join(f"{k} {marks[k]:.2f}" for k in keys if k in marks)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll_page(port: int, page: str, timeout: float = 30) -> None:
    deadline = now() + timeout
    with httpx.Client(timeout=2) as c:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                r = c.get(f"http://127.0.0.1:{port}/")
                if r.status_code == 200 and r.text == page:
                    return
            if now() > deadline:
                raise BenchError(f"plain docker run: no answer on port {port} within {timeout:g} s")
            time.sleep(POLL_S)


def _plain_docker_run(client: Any, folder: Path, page: str) -> float:
    """`docker run -d --network host -v folder:/app -w /app busybox:local httpd ...` through the SDK,
    to its first good answer; the container is removed afterwards (outside the clock)."""
    port = _free_port()
    t0 = now()
    c = client.containers.run(
        "busybox:local",
        ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/app"],
        detach=True,
        network_mode="host",
        volumes={str(folder): {"bind": "/app", "mode": "rw"}},
        working_dir="/app",
    )
    try:
        _poll_page(port, page)
        return now() - t0
    finally:
        with contextlib.suppress(Exception):
            c.remove(force=True)


def _cli_docker_run(cli: str, engine: str, folder: Path, page: str) -> float:
    """The same with the `docker` CLI (one more process to start, as a user would type it)."""
    port = _free_port()
    name = f"r1-bench-{port}"
    t0 = now()
    subprocess.run(
        [cli, "-H", engine, "run", "-d", "--name", name, "--network", "host", "-v", f"{folder}:/app",
         "-w", "/app", "busybox:local", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/app"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _poll_page(port, page)
        return now() - t0
    finally:
        subprocess.run([cli, "-H", engine, "rm", "-f", name], capture_output=True)


# -- the table ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_table(res: dict[str, Any]) -> None:
    s = res["setup"]
    print(
        f"DEEPLOY  {s['nodes']}-node devnet ({s['oracles']} oracles, heartbeat {s['heartbeat']:g} s, "
        f"no chain), {s['cores']} cores shared by every process"
    )
    print(
        f"  traffic and requests enter at {s['entry']} (an oracle, never a host of the app); "
        f"plans by {s['leader']}; docker: {s['docker']}"
    )
    spares = s.get("plugin_spares", 0)
    print(
        f"  plugin apps: {spares} warm worker(s) per node, preloading {s.get('plugin_preload') or 'nothing'}"
        if spares
        else "  plugin apps: no warm workers (cold starts)"
    )
    rows = dict(res.get("deploy", {}))
    dk = res.get("docker")
    if dk:
        rows["docker, docker-echo, 1 replica"] = dk["deeploy"]
    if rows:
        print(
            f"\n1-2. deploy request -> first good answer through {s['entry']}'s proxy, "
            f"median of {s['runs']} (seconds since the request was sent)"
        )
        print(
            f"  {'':31} {'accepted':>8} {'placed':>7} {'healthy':>7} {'ANSWER':>7} {'all ok':>7}"
            f"  {'target':>15}  ratio"
        )
    for label, runs in rows.items():
        keys = ("accepted", "placed", "healthy", "answer", "all_healthy")
        m = {k: median([r[k] for r in runs if k in r]) for k in keys}
        if label.startswith("docker"):
            base = median(dk["docker_run_sdk"])
            tgt, ratio = f"<= {TARGET_DOCKER_RATIO:g}x docker run", m["answer"] / base
            ok = ratio <= TARGET_DOCKER_RATIO
        else:
            tgt, ratio = f"<= {TARGET_DEPLOY_S:g} s", m["answer"] / TARGET_DEPLOY_S
            ok = m["answer"] <= TARGET_DEPLOY_S
        print(
            f"  {label:31} {m['accepted']:8.2f} {m['placed']:7.2f} {m['healthy']:7.2f} {m['answer']:7.2f}"
            f" {m['all_healthy']:7.2f}  {tgt:>15}  {ratio:.2f}x {verdict(ok)}"
            f"  (runs: {', '.join(f'{a:.2f}' for a in (r['answer'] for r in runs))})"
        )
    if res.get("plugin_setup_alone"):
        ts = res["plugin_setup_alone"]
        print(
            f"  {'inference setup() alone':31} {'':8} {'':7} {'':7} {median(ts):7.2f} {'':7}"
            f"  {'cold floor':>15}        (a fresh python, no node, no sandbox; runs: "
            f"{', '.join(f'{t:.2f}' for t in ts)})"
        )
    if dk:
        for key, label in (("docker_run_sdk", "SDK"), ("docker_run_cli", "CLI")):
            ts = dk[key]
            if not ts:
                continue
            vs = median([r["answer"] for r in dk["deeploy"]]) / median(ts)
            print(
                f"  {'plain docker run (' + label + ')':31} {'':8} {'':7} {'':7} {median(ts):7.2f} {'':7}"
                f"  {'baseline' if label == 'SDK' else 'deeploy vs it':>15}"
                f"  {'' if label == 'SDK' else f'{vs:.2f}x'}  (runs: {', '.join(f'{t:.2f}' for t in ts)})"
            )
    if s["docker"] != "yes":
        print(f"  docker row skipped: {s['docker']}")

    titles = {
        "proxy_alone": "the proxy alone (bench/deeploy_proxy.py's replica and node processes)",
        "proxy_devnet": "on the devnet, the echo app's sandboxed replica",
    }
    labels = {
        "direct": "direct to the replica",
        "proxy": "through its node's proxy",
        "proxy, hop": "through another node (hop)",
    }
    for key, title in titles.items():
        if key not in res:
            continue
        p = res["proxy_setup"]
        base = res[key]["direct"]
        print(
            f"\n3. proxy, {title}: GET, {p['clients']} keep-alive clients from another process, "
            f"{p['seconds']:g} s per run, best of {p['repeat']}"
        )
        print(
            f"  {'':31} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'+p50':>7} {'+p99':>7}"
            f"  vs direct (target >= {TARGET_PROXY_RATIO:g}x)"
        )
        for name, r in res[key].items():
            ratio = r["rate"] / base["rate"]
            extra = "" if name == "direct" else f"  {ratio:.2f}x {verdict(ratio >= TARGET_PROXY_RATIO)}"
            print(
                f"  {labels[name]:31} {r['rate']:8.0f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f}"
                f" {r['p50_ms'] - base['p50_ms']:+7.2f} {r['p99_ms'] - base['p99_ms']:+7.2f}{extra}"
            )

    fo = res.get("failover")
    if fo:
        lp = fo["loop"]
        after = fo["replacement_after_offline_s"]
        print(
            f"\n4. SIGKILL {fo['victim']} (an edge node holding one of echo's 2 replicas, "
            f"{'the one' if fo['victim_took_traffic'] else 'NOT the one'} the entry sends to), "
            f"a loop of {LOOP_WORKERS} workers through {fo['entry']}"
        )
        offs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(fo["offline_s"].items()))
        print(
            f"  kill -> marked offline: first {fo['offline_first_s']:.2f} s, "
            f"last {fo['offline_all_s']:.2f} s ({offs})"
        )
        print(
            f"  offline (first node) -> replacement on {fo['replacement']} answers: {after:.2f} s "
            f"(target <= {TARGET_FAILOVER_S:g} s: {after / TARGET_FAILOVER_S:.2f}x "
            f"{verdict(after <= TARGET_FAILOVER_S)}); "
            f"kill -> replacement {fo['replacement_after_kill_s']:.2f} s"
        )
        print(
            f"  requests: {lp['total']} ({lp['rate']:.0f}/s), failed {lp['failed']}: "
            f"{lp['failed_in_flight']} in flight when the node died (of {lp['in_flight_at_kill']} "
            f"in flight then), {lp['failed_after']} sent later, {lp['failed_before']} before"
        )
        print(f"  failures by cause: {lp['causes'] or '-'}; slowest good answer {lp['max_ms']:.0f} ms")
        print(f"  the killed node's replica: {fo['orphan'] or 'gone with its node (its port is closed)'}")

    ro = res.get("rolling")
    if ro:
        lp = ro["loop"]
        times = ", ".join(f"to v{r['version']} {r['s']:.2f} s" for r in ro["rollouts"])
        print(
            f"\n5. rolling update of echo x2 (env changed), a loop of {LOOP_WORKERS} workers "
            f"through {s['entry']}"
        )
        print(f"  rollout, request -> every replica new and healthy: {times}")
        print(
            f"  requests: {lp['total']} ({lp['rate']:.0f}/s), failed {lp['failed']} "
            f"(target 0: {verdict(lp['failed'] == 0)}), by cause {lp['causes'] or '-'}; "
            f"p50 {lp['p50_ms']:.1f} ms, slowest {lp['max_ms']:.0f} ms"
        )
    if res.get("echo_patched"):
        print(
            "\n  rows 3-5 run examples/apps/echo with TCP_NODELAY added to its app.py: as shipped, each"
            "\n  answer on a keep-alive connection waits ~40 ms for a delayed ACK (headers and body go"
            "\n  out in two writes), which would be all the load rows measure"
        )
    for row, err in res.get("errors", {}).items():
        print(f"\n{row}: FAILED: {err}")


# -- setup and teardown ---------------------------------------------------------------------------


def start_engine() -> tuple[Any, str]:
    """A private dockerd with busybox:local (the engine, or None, and why not)."""
    sys.path.insert(0, str(REPO))
    try:
        from tests.deeploy.dockerd import Dockerd, DockerdUnavailable
    except ImportError as exc:
        return None, f"cannot load tests/deeploy/dockerd.py: {exc}"
    engine = Dockerd()
    try:
        engine.start()
    except DockerdUnavailable as exc:
        return None, str(exc)
    try:
        from r1os.deeploy.runtimes.docker import build_busybox_image

        build_busybox_image(engine.url)
    except Exception as exc:
        engine.stop()
        return None, f"cannot build busybox:local: {exc}"
    return engine, "yes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run each, short load runs (a smoke run)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    ap.add_argument("--keep", action="store_true", help="leave the devnet (and dockerd) running")
    ap.add_argument("--runs", type=int, default=None, help="deploy runs per row (default 3; --quick 1)")
    ap.add_argument("--no-docker", action="store_true", help="do not start a private dockerd")
    ap.add_argument("--rows", default="1,2,3,4,5", help="which rows to run (default: all)")
    ap.add_argument(
        "--plugin-spares",
        type=int,
        default=None,
        help="warm plugin workers per node (default: the nodes' default, 1; 0 measures cold starts)",
    )
    args = ap.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    args.clients, args.seconds, args.repeat = (8, 1.0, 1) if args.quick else (16, 2.0, 2)
    args.updates = 1 if args.quick else 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    from r1os.deeploy.runtimes.process import ProcessRuntime
    from r1os.devnet import Devnet
    from r1os.node import DeeploySettings

    # The node processes read R1OS_* from the environment they inherit: warm plugin workers that
    # import what the inference example needs before any app is deployed (an operator offering
    # model apps sets the same), and with --plugin-spares how many of them each node keeps.
    os.environ.setdefault("R1OS_DEEPLOY__PLUGIN_PRELOAD", json.dumps(PLUGIN_PRELOAD))
    if args.plugin_spares is not None:
        os.environ["R1OS_DEEPLOY__PLUGIN_SPARES"] = str(args.plugin_spares)
    else:
        args.plugin_spares = DeeploySettings().plugin_spares

    if (why := ProcessRuntime.unavailable()) is not None:
        raise SystemExit(f"no sandbox for process/plugin apps here: {why}")
    use_docker = not args.no_docker and "2" in {r.strip() for r in args.rows.split(",")}
    engine, docker_why = (None, "yes") if use_docker else (None, "skipped (--no-docker or --rows)")
    tmp = Path(tempfile.mkdtemp(prefix="r1-bench-deeploy-"))
    dn = Devnet(tmp / "devnet")
    results: dict[str, Any] = {"errors": {}}
    up = False
    try:
        if use_docker:
            say("starting a private dockerd and building busybox:local in it")
            engine, docker_why = start_engine()
            if engine is not None:
                os.environ["DOCKER_HOST"] = engine.url  # the nodes offer the docker runtime on it
                say(f"  dockerd ready in {engine.ready_after:.1f} s at {engine.url}")
            else:
                say(f"  no docker engine: {docker_why}")
        say("starting the devnet: 5 nodes, 3 oracles, heartbeat 1 s, no chain")
        up = True
        state = dn.up(
            nodes=5, oracles=3, heartbeat=1.0, chain=False, timeout=90, progress=lambda m: say("  " + m)
        )
        results.update(asyncio.run(run_rows(state, args, engine.url if engine else None, docker_why)))
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        results["errors"]["run"] = "interrupted"
    finally:
        if args.keep and up:
            say(f"--keep: devnet left running in {dn.dir} (stop: .venv/bin/r1os devnet down --dir {dn.dir})")
            if engine is not None:
                say(f"--keep: dockerd left running at {engine.url} (pid file {engine.root}/dockerd.pid)")
        else:
            if up:
                say("stopping the devnet")
                with contextlib.suppress(Exception):
                    dn.down()
            if engine is not None:
                say("stopping dockerd")
                engine.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    if "setup" not in results:
        raise SystemExit(1)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print_table(results)


async def run_rows(
    state: Any, args: argparse.Namespace, engine_url: str | None, docker_why: str
) -> dict[str, Any]:
    bench = Bench(state, args, engine_url)
    res = bench.results
    res["errors"] = {}
    res["setup"] = {
        "nodes": len(state.nodes),
        "oracles": sum(n.oracle for n in state.nodes),
        "heartbeat": state.heartbeat_interval,
        "cores": os.cpu_count(),
        "entry": bench.entry.name,
        "leader": bench.leader.name,
        "docker": docker_why,
        "runs": args.runs,
        "plugin_spares": args.plugin_spares,
        "plugin_preload": os.environ.get("R1OS_DEEPLOY__PLUGIN_PRELOAD", ""),
    }
    if engine_url is not None:
        runtimes = await _runtimes(bench)
        if "docker" not in runtimes:
            res["setup"]["docker"] = f"the nodes do not offer it (they offer {sorted(runtimes)})"
            bench.engine_url = None
    rows = [
        ("1. deploy -> first answer", bench.row_deploy),
        ("2. docker", bench.row_docker),
        ("3. proxy", bench.row_proxy),
        ("4. SIGKILL failover", bench.row_failover),
        ("5. rolling update", bench.row_rolling),
    ]
    wanted = {r.strip() for r in args.rows.split(",")}
    try:
        for label, row in rows:
            if label.split(".")[0] not in wanted:
                continue
            say(label)
            try:
                await row()
            except Exception as exc:  # one row failing must not hide the others
                say(f"  {label} failed: {type(exc).__name__}: {exc}")
                res["errors"][label] = f"{type(exc).__name__}: {exc}"
                for name in sorted(bench.live):  # free the nodes for the next rows
                    with contextlib.suppress(Exception):
                        await bench.delete(name)
    finally:
        await bench.http.aclose()
    return res


async def _runtimes(bench: Bench) -> set[str]:
    r = await bench.http.get(f"{bench.entry.url}/v1/apps/nodes")
    return {rt for n in r.json().get("nodes", []) for rt in n.get("runtimes", [])}


if __name__ == "__main__":
    main()
