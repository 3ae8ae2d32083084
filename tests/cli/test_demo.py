"""`r1os devnet demo` runs the whole story on a real devnet (nodes, oracles, anvil with the contracts,
bubblewrap sandboxes) started with short epochs, and its `--json` summary says every step worked: the
inference app answered through a node without a replica, R1FS and CSTORE crossed nodes, a CKKS EDIL job
finished, an edge node's rewards were claimed and a PoAI job paid the operators whose nodes served it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.deeploy.runtimes.process import ProcessRuntime
from r1os.devnet import Devnet, DevnetState
from r1os.errors import ChainError

EPOCH = 10
HB = 2.0

pytestmark = [
    pytest.mark.timeout(420),
    pytest.mark.skipif(
        ProcessRuntime.unavailable() is not None, reason=f"no sandbox: {ProcessRuntime.unavailable()}"
    ),
]


def _needs() -> None:
    from r1os.chain.anvil import find_anvil

    pytest.importorskip("sklearn", reason="the inference example and EDIL need scikit-learn")
    pytest.importorskip("tenseal", reason="the EDIL step uses CKKS")
    try:
        find_anvil()
    except ChainError as exc:
        pytest.skip(f"anvil is not installed ({exc})")


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[tuple[Devnet, DevnetState]]:
    _needs()
    dn = Devnet(tmp_path / "devnet")
    try:
        yield dn, dn.up(nodes=5, oracles=3, heartbeat=HB, epoch_seconds=EPOCH, timeout=90)
    finally:
        dn.down()


def test_the_whole_story_runs_and_every_step_is_ok(devnet: tuple[Devnet, DevnetState]) -> None:
    dn, state = devnet
    env = {k: v for k, v in os.environ.items() if not k.startswith("R1OS_")}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "r1os", "devnet", "demo", "--dir", str(dn.dir), "--quick", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=360,
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-6000:]
    data: dict[str, Any] = json.loads(run.stdout)
    steps = {s["name"]: s for s in data["steps"]}
    assert list(steps) == ["devnet", "inference", "r1fs", "cstore", "edil", "rewards", "poai"]
    assert data["ok"] and all(s["ok"] for s in data["steps"]), run.stderr[-6000:]
    assert data["kept"] and data["dir"] == str(dn.dir)

    # the steps printed as they happened went to stderr, the summary's JSON alone to stdout
    assert "[1/7]" in run.stderr and "[7/7]" in run.stderr
    assert "first result" in run.stderr

    assert steps["devnet"]["details"]["nodes"] == 5 and steps["devnet"]["details"]["chain"]
    inference = steps["inference"]["details"]
    hosts = set(inference["replicas"])
    assert len(hosts) == 2 and inference["asked"] not in hosts
    assert inference["correct"] >= 8 and len(inference["truth"]) == 10
    assert data["first_result_seconds"] is not None and data["first_result_seconds"] <= took
    r1fs = steps["r1fs"]["details"]
    assert r1fs["same"] and r1fs["written_on"] != r1fs["read_on"] and r1fs["cid"].startswith("baf")
    cstore = steps["cstore"]["details"]
    assert (
        cstore["key"].startswith(f"app:{data['user'].lower()}:") and cstore["written_on"] != cstore["read_on"]
    )
    edil = steps["edil"]["details"]
    assert edil["privacy"] == "ckks" and edil["rounds"] == 2 and len(edil["accuracy"]) == 2
    assert edil["final_accuracy"] > 0.5
    rewards = steps["rewards"]["details"]
    assert int(rewards["amount"]) > 0 and int(rewards["balance"]) - int(rewards["balance_before"]) == int(
        rewards["amount"]
    )
    poai = steps["poai"]["details"]
    assert poai["paid"] > 0 and poai["operators"] and all(v > 0 for v in poai["operators"].values())
    assert poai["paid_epochs"], poai

    # the dashboard it names is served, and the devnet was left running (--keep is the default)
    assert data["dashboard"] == state.nodes[0].url + "/"
    assert httpx.get(data["dashboard"], timeout=10).status_code == 200
    assert all(n["status"] == "online" for n in dn.status()["nodes"])
    # the user's keystore is kept in the devnet folder, to go on with after the demo
    assert Path(data["user_keystore"]).parent == dn.dir / "demo"
