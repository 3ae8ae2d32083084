"""Devnet scale benchmark: how long N nodes take to see each other, and their idle memory.

Baselines from the same run: the memory of a bare Python interpreter, and the time that interpreter
takes to start N times on this machine (the floor for starting N node processes).

Memory is read from /proc/<pid>/smaps_rollup: RSS (every resident page, shared ones counted in
full), PSS (shared pages divided among the processes sharing them: the sum over processes is what
they really occupy) and USS (private pages only: what stopping the process would free).

Run: `.venv/bin/python bench/devnet.py [--nodes 20]`
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from r1os.devnet import Devnet

MiB = 2**20


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) of `pid` in MiB, from smaps_rollup, and the RSS split into
    anonymous pages (the process's own heap: Python objects, C allocations) and file pages (mapped
    libraries and files, shared with every process that maps them)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    anon = fields.get("Anonymous", 0)
    return {
        "rss": fields["Rss"] / 1024,
        "pss": fields["Pss"] / 1024,
        "uss": uss / 1024,
        "anon": anon / 1024,
        "file": (fields["Rss"] - anon) / 1024,
    }


def _cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children (a node's warm plugin worker)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def children_pss(pid: int) -> float:
    """PSS (MiB) of the processes a node started (its warm plugin worker and sandbox)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0.0
    for k in kids:
        try:
            total += memory(k.pid)["pss"]
        except OSError:
            continue
    return total


def bare_python() -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        return memory(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def bare_python_starts(n: int) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", "import fastapi, uvicorn, aiomqtt"]) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def summary(role: str, mems: list[dict[str, float]]) -> str:
    if not mems:
        return f"  {role}: none"
    parts = []
    for k in ("rss", "pss", "uss"):
        vals = [m[k] for m in mems]
        parts.append(f"{k.upper()} mean {statistics.fmean(vals):.1f} (max {max(vals):.1f})")
    split = (
        f"RSS = {statistics.fmean(m['anon'] for m in mems):.1f} anonymous (own heap) + "
        f"{statistics.fmean(m['file'] for m in mems):.1f} file pages (libraries, shared)"
    )
    return f"  {role} ({len(mems)}): " + ", ".join(parts) + f" MiB\n    {split}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--oracles", type=int, default=3)
    parser.add_argument("--idle", type=float, default=15.0, help="seconds to idle before measuring memory")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the full mesh")
    parser.add_argument(
        "--chain", action="store_true", help="also start anvil, licences and dAuth (the default `devnet up`)"
    )
    args = parser.parse_args()
    floor = bare_python_starts(args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        dn = Devnet(Path(tmp))
        t0 = time.perf_counter()
        marks: dict[str, float] = {}

        def progress(msg: str) -> None:
            if msg.startswith("waiting") or (msg.startswith("starting") and " nodes (" in msg):
                marks.setdefault(msg.split()[0], time.perf_counter() - t0)

        try:
            state = dn.up(
                nodes=args.nodes,
                oracles=args.oracles,
                chain=args.chain,
                timeout=args.timeout,
                progress=progress,
            )
            mesh = time.perf_counter() - t0
            # CPU the node processes (and their children) used from their start to the mesh
            cpu = sum(_cpu(n.pid) for n in state.nodes if n.pid)
            time.sleep(args.idle)
            edge = [memory(n.pid) for n in state.nodes if n.pid and not n.oracle]
            oracle = [memory(n.pid) for n in state.nodes if n.pid and n.oracle]
            kids = [children_pss(n.pid) for n in state.nodes if n.pid]
            broker = memory(state.broker_pid)["rss"] if state.broker_pid else 0.0
            load = psutil.getloadavg()[0]
        finally:
            dn.down()
    base = bare_python()
    what = "with chain, licences and dAuth" if args.chain else "no chain"
    print(f"{args.nodes} nodes ({what}): devnet up to full mesh in {mesh:.1f} s (target <= 60 s)")
    nodes_at, listening_at = marks.get("starting", 0.0), marks.get("waiting", mesh)
    cores = psutil.cpu_count() or 1
    print(
        f"  keys and broker {nodes_at:.1f} s, node processes started until all listen "
        f"{listening_at - nodes_at:.1f} s, then until the full mesh {mesh - listening_at:.1f} s"
    )
    print(
        f"  the nodes used {cpu:.0f} CPU-seconds until the mesh ({cpu / args.nodes:.2f} s each): "
        f"{cpu / cores:.1f} s of this machine's {cores} cores"
    )
    print(
        f"  floor: starting {args.nodes} Pythons that import the web/MQTT stack took {floor:.1f} s "
        f"(mesh/floor {mesh / floor:.2f}x); load average after the idle: {load:.1f}"
    )
    print(f"idle memory per node after {args.idle:g} s (target RSS <= 60 MiB):")
    print(summary("edge", edge))
    print(summary("oracle", oracle))
    every = edge + oracle
    rss = statistics.fmean(m["rss"] for m in every)
    print(
        f"  beside each node, the processes it started (warm plugin worker): "
        f"PSS mean {statistics.fmean(kids):.1f} MiB"
    )
    print(f"  all nodes: PSS total {sum(m['pss'] for m in every):.0f} MiB; broker RSS {broker:.1f} MiB")
    print(
        f"  baseline bare python: RSS {base['rss']:.1f}, PSS {base['pss']:.1f}, USS {base['uss']:.1f} MiB "
        f"(node RSS/bare {rss / base['rss']:.2f}x)"
    )


if __name__ == "__main__":
    main()
