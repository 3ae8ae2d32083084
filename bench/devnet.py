"""Devnet scale benchmark: how long N nodes take to see each other, and their idle memory.

Baselines from the same run: the RSS of a bare Python interpreter, and the time that interpreter
takes to start N times on this machine (the floor for starting N node processes).

Run: `.venv/bin/python bench/devnet.py [--nodes 20]`
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from r1os.devnet import Devnet


def bare_python_rss() -> float:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        return psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.kill()
        proc.wait()


def bare_python_starts(n: int) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", "import fastapi, uvicorn, aiomqtt"]) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--idle", type=float, default=15.0, help="seconds to idle before measuring RSS")
    parser.add_argument(
        "--chain", action="store_true", help="also start anvil, licences and dAuth (the default `devnet up`)"
    )
    args = parser.parse_args()
    floor = bare_python_starts(args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        dn = Devnet(Path(tmp))
        t0 = time.perf_counter()
        state = dn.up(nodes=args.nodes, oracles=3, chain=args.chain, timeout=120)
        mesh = time.perf_counter() - t0
        try:
            time.sleep(args.idle)
            rss = [psutil.Process(n.pid).memory_info().rss / 2**20 for n in state.nodes if n.pid]
            broker = psutil.Process(state.broker_pid).memory_info().rss / 2**20 if state.broker_pid else 0
        finally:
            dn.down()
    base = bare_python_rss()
    what = "with chain, licences and dAuth" if args.chain else "no chain"
    print(f"{args.nodes} nodes ({what}): devnet up to full mesh in {mesh:.1f} s (target <= 30 s)")
    print(
        f"  floor: starting {args.nodes} Pythons that import the web/MQTT stack took {floor:.1f} s "
        f"(mesh/floor {mesh / floor:.2f}x)"
    )
    mean = sum(rss) / len(rss)
    print(f"idle RSS per node: mean {mean:.1f} MiB, max {max(rss):.1f} MiB; broker {broker:.1f} MiB")
    print(f"  baseline bare python: {base:.1f} MiB (node/bare {mean / base:.2f}x)")


if __name__ == "__main__":
    main()
