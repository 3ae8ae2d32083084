"""The token-economy simulation's speed: `r1os economy simulate` for both shipped scenarios.

Runs each scenario over its 1,080 epochs on a private anvil (the real contracts, one block per
epoch), prints the wall time, the transactions sent and their rate, and the final figures (minted by
ND / MND / GND, burned, circulating), which the simulation has already checked against the contracts'
state. The baseline, measured in the same run, is a 30-epoch run of the paper scenario: the ratio
shows how the cost grows with the licences that claim (a 1,080-epoch run holds many more of them).
Writes the CSV and plots under bench/out/economy/<scenario>/ (or --out).

    .venv/bin/python bench/economy.py [--out DIR] [--scenario paper --scenario low-adoption]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from r1os.chain.economy import load_scenario, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "economy")
    ap.add_argument("--scenario", action="append", default=None)
    args = ap.parse_args()
    names = args.scenario or ["paper", "low-adoption"]
    base = asyncio.run(simulate(load_scenario("paper"), None, epochs=30))
    base_rate = base.transactions / base.seconds
    print(f"baseline: paper, 30 epochs: {base.seconds:.1f} s, {base.transactions} tx, {base_rate:.0f} tx/s")
    for name in names:
        res = asyncio.run(simulate(load_scenario(name), args.out / name))
        s = res.summary()
        rate = res.transactions / res.seconds
        print(
            f"{name}: {res.epochs} epochs in {res.seconds:.1f} s"
            f" ({res.seconds / base.seconds:.1f}x the baseline),"
            f" {res.transactions} tx, {rate:.0f} tx/s ({rate / base_rate:.2f}x the baseline rate)"
        )
        print(json.dumps({k: v for k, v in s.items() if k != "files"}, indent=1))
        print("wrote", ", ".join(s["files"]))


if __name__ == "__main__":
    main()
