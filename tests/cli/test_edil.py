"""`r1os edil` against a real in-process EDIL network (tests/edil/network.py: five nodes, node 0 the owner's
node). The CLI runs in a worker thread (typer's CliRunner) while the nodes serve in the test's event loop.
On node 0's machine (this one) the CLI acts as its operator without a flag; with a key it acts as the key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from r1os.identity import NodeKey
from tests.cli.runner import Group, isolate
from tests.edil.network import EXAMPLE, EdilNet, example, model_accuracy

pytestmark = pytest.mark.timeout(240)

cli = Group("edil")


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[EdilNet]:
    async with EdilNet(tmp_path / "net", 5) as n:
        yield n


def spec_file(tmp_path: Path, name: str = "job.yaml", **changes: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(example(**changes)))
    return path


async def test_train_status_ls_model_as_the_operator(net: EdilNet, tmp_path: Path) -> None:
    spec = spec_file(tmp_path, rounds=2, privacy="plain", deadline_s=60)
    url0, url1 = net.nodes[0].url, net.nodes[1].url
    node0 = net.nodes[0].address.lower()

    def script() -> None:
        out = cli.ok(["train", str(spec), "--node", url0])
        assert "submitted: digits (job " in out and f"to {node0}: 3 participant(s)" in out
        assert "round 1/2: 3 included, 0 dropped, 0 refused; test accuracy 0." in out
        assert "round 2/2: 3 included, 0 dropped, 0 refused; test accuracy 0." in out
        assert "done: test accuracy 0." in out and "after 2/2 round(s)" in out

        [listed] = cli.json(["ls", "--node", url0])
        job_id = listed["job_id"]
        assert listed["owner"] == node0  # the operator's job is the node's
        view = cli.json(["status", job_id, "--node", url0])
        assert view["phase"] == "done" and view["rounds_done"] == 2
        assert isinstance(view["test_accuracy"], float) and view["model_cid"]
        assert (
            f"done: test accuracy {view['test_accuracy']:.4f}" in out and f"model: {view['model_cid']}" in out
        )
        assert [h["round"] for h in view["history"]] == [1, 2]
        table = cli.ok(["status", job_id, "--node", url0])
        assert "rounds:       2/2" in table and view["model_cid"] in table and view["aggregator"] in table
        assert all(p in table for p in view["participants"])
        assert job_id in cli.ok(["ls", "--node", url0])

        # The model: saved where asked, its params scoring the accuracy the owner reported.
        out = cli.ok(["model", job_id, "-o", str(tmp_path / "digits.npz"), "--node", url0])
        assert f"saved {tmp_path / 'digits.npz'} (" in out and "KiB)" in out
        assert model_accuracy(tmp_path / "digits.npz") == pytest.approx(view["test_accuracy"], abs=5e-7)

        # Asked of another node (as that node's operator): the model is kept on the owner's node only.
        elsewhere = cli.error(["model", job_id, "-o", str(tmp_path / "x.npz"), "--node", url1])
        assert (
            f"was submitted to node {node0}" in elsewhere
            and f"hint: ask the owner's node: --node {url0}" in elsewhere
        )
        assert not (tmp_path / "x.npz").exists()
        missing = cli.error(["status", "0123456789abcdef", "--node", url0])
        assert "no job 0123456789abcdef (no_job)" in missing and "r1os edil ls" in missing
        assert "no_job" in cli.error(["model", "0123456789abcdef", "--node", url0])

    await asyncio.to_thread(script)


async def test_train_json_as_a_key_and_who_may_stop(net: EdilNet, tmp_path: Path) -> None:
    owner, stranger = NodeKey.generate(), NodeKey.generate()
    spec = spec_file(tmp_path, rounds=2, privacy="ckks", deadline_s=60)
    url0 = net.nodes[0].url

    def script() -> None:
        result = cli.run(["train", str(spec), "--node", url0, "--json"], owner)
        assert result.exit_code == 0, result.output
        job = json.loads(result.stdout)  # the final JobView, and nothing else on stdout
        assert job["phase"] == "done" and job["rounds_done"] == job["rounds"] == 2
        assert job["owner"] == owner.address.lower() and job["privacy"] == "ckks"
        assert isinstance(job["test_accuracy"], float) and job["model_cid"]
        assert "round 2/2: 3 included" in result.stderr  # progress goes to stderr under --json

        # The model and a stop are the owner's: another key is refused.
        assert "forbidden" in cli.error(
            ["model", job["job_id"], "-o", str(tmp_path / "m.npz"), "--node", url0], stranger
        )
        refused = cli.error(["stop", job["job_id"], "--node", url0], stranger)
        assert "forbidden" in refused and "owner" in refused
        cli.ok(["model", job["job_id"], "-o", str(tmp_path / "m.npz"), "--node", url0], owner)
        assert model_accuracy(tmp_path / "m.npz") == pytest.approx(job["test_accuracy"], abs=5e-7)

        # A long job: waiting runs out (the job goes on), then its owner stops it.
        long = spec_file(tmp_path, "long.yaml", rounds=200, privacy="plain", deadline_s=60)
        late = cli.error(["train", str(long), "--timeout", "0", "--node", url0], owner)
        assert "rounds after 0 s, still training" in late and "hint: it goes on" in late
        running = [j for j in cli.json(["ls", "--node", url0]) if j["phase"] == "training"]
        assert len(running) == 1 and running[0]["owner"] == owner.address.lower()
        assert "forbidden" in cli.error(["stop", running[0]["job_id"], "--node", url0], stranger)
        out = cli.ok(["stop", running[0]["job_id"], "--node", url0], owner)
        assert f"{running[0]['job_id']} (digits): stopped after" in out
        assert cli.json(["status", running[0]["job_id"], "--node", url0])["phase"] == "stopped"
        again = cli.ok(["stop", job["job_id"], "--node", url0], owner)
        assert f"{job['job_id']} (digits): had already ended: done after 2/2" in again

        out = cli.ok(["train", str(long), "--no-wait", "--node", url0], owner)
        assert "submitted: digits" in out and "follow it: r1os edil status " in out

    await asyncio.to_thread(script)


async def test_a_bad_spec_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    nowhere = ["--node", "http://127.0.0.1:9"]  # nothing answers there: an error from it would say so
    zero = spec_file(tmp_path, rounds=0)
    err = cli.error(["train", str(zero), *nowhere])
    assert err.startswith("error: rounds: ") and "hint: see docs/edil.md" in err
    bad = yaml.safe_load(EXAMPLE.read_text())
    bad["participants"][1]["data"] = "example:digits?split=test"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert cli.error(["train", str(tmp_path / "bad.yaml"), *nowhere]).startswith(
        "error: participants.1.data: "
    )
    (tmp_path / "typo.yaml").write_text(EXAMPLE.read_text().replace("rounds:", "round:"))
    assert "error: round: unknown field" in cli.error(["train", str(tmp_path / "typo.yaml"), *nowhere])
    assert "cannot reach the node" in cli.error(["ls", *nowhere])
