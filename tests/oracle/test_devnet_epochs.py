"""End-to-end on a real devnet (anvil, contracts, broker, 3 oracle processes, 2 edge nodes), with
10 s epochs and 1 s heartbeats:

- node-05 is stopped (SIGSTOP/SIGCONT) for half of an epoch: every honest oracle measures about 128 and the
  agreed value is the same everywhere;
- oracle node-03 is replaced by a lying one (a real node in this process whose local table says 255
  for the stopped node and 0 for the online one): the agreed table does not move, and the liar is
  recorded as misbehaving;
- then the liar goes silent: the next epoch closes with 2 of 3;
- `r1os rewards claim --node` fetches the signatures from an oracle and the licence owner's R1 grows
  by exactly sum(release x a // 255);
- a PoAI job listed in CSTORE whose nodes report no healthy replica of it is not paid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median_low
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from r1os.chain.anvil import dev_private_key
from r1os.chain.devnet import devnet_client
from r1os.cli.main import app
from r1os.devnet import Devnet
from r1os.node import Node, NodeConfig, build_services
from r1os.oracle import EpochClock, OracleSyncService, Table, settings_from
from tests.chain.conftest import _anvil_or_skip
from tests.conftest import wait_for

EPOCH = 10
HB = 1.0
runner = CliRunner()


class LyingOracle(OracleSyncService):
    """An eligible oracle whose local table lies about two nodes."""

    def __init__(self, settings: Any, says_online: str, says_offline: str) -> None:
        super().__init__(settings)
        self.says_online, self.says_offline = says_online, says_offline

    def local_table(self, epoch: int) -> Table:
        table = super().local_table(epoch)
        table[self.says_online], table[self.says_offline] = 255, 0
        return table


class ThreadNode:
    """A real node running in this process (its own event loop in a thread)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    async def _main(self) -> None:
        self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
        await self.node.start()
        try:
            await self.stop_event.wait()
        finally:
            await self.node.stop()

    def stop(self) -> None:
        assert self.loop is not None and self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)


def get(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{url}{path}", params=params, timeout=10)
    r.raise_for_status()
    return r.json()


def record(url: str, epoch: int) -> dict[str, Any] | None:
    r = httpx.get(f"{url}/v1/oracle/epochs/{epoch}", timeout=5)
    return r.json() if r.status_code == 200 else None


def sleep_until(t: float) -> None:
    # waiting for a point on the epoch clock is the scenario itself, not a guess about readiness
    time.sleep(max(0.0, t - time.time()))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _anvil_or_skip()
    dir = tmp_path_factory.mktemp("oracle-devnet")
    dn = Devnet(dir)
    state = dn.up(nodes=5, oracles=3, heartbeat=HB, epoch_seconds=EPOCH, timeout=90)
    liar: ThreadNode | None = None
    try:
        o1, o2, o3, n4, n5 = state.nodes
        dep_file = Path(state.chain["deployment_file"])  # type: ignore[index]
        admin = devnet_client(dir, dev_private_key(0))
        dep = admin.deployment
        clock = EpochClock(dep.genesis_time, dep.epoch_seconds)

        async def new_job() -> int:
            await admin.usdc_faucet(100 * 10**6)
            return await admin.create_job(2, 30, 10**6)

        job_id = asyncio.run(new_job())
        # the oracle's operator lists the job's nodes (the node signs this write: its token only)
        token = (Path(o1.home) / "api-token").read_text().strip()
        r = httpx.post(
            f"{o1.url}/v1/cstore/write",
            json={"ops": [{"op": "set", "key": f"net:poai:job:{job_id}",
                           "value": {"nodes": [n4.address, n5.address]}}]},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )  # fmt: skip
        assert r.status_code == 200, r.text

        # node-03 becomes a liar: same key, home and port, running here.
        dn.stop_node(o3.name)
        config = NodeConfig(
            home=Path(o3.home),
            network=state.network,
            broker=state.broker_url,
            http=f"127.0.0.1:{o3.http_port}",
            oracle=True,
            heartbeat_interval=HB,
            oracles=[o.address for o in (o1, o2, o3)],
            chain_deployment=dep_file,
            key_strength="light",
        )
        services = [s for s in build_services(config) if s.name != "oracle"]
        services.append(LyingOracle(settings_from(config), says_online=n5.address, says_offline=n4.address))
        password = (dir / "password").read_text().strip()
        liar = ThreadNode(Node(config, password=password, services=services))
        wait_for(lambda: get(o3.url, "/v1/oracle/epochs"), 20, "the lying oracle's API")

        # node-05 stopped (SIGSTOP: it sends nothing, as if cut off) for half of epoch k. Its last
        # heartbeat before the stop is on average half an interval earlier, hence the offset.
        k = clock.epoch_at(time.time()) + 1
        start = clock.start(k)
        sleep_until(start + EPOCH * 0.25 + HB / 2)
        os.kill(n5.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            sleep_until(start + EPOCH * 0.75)
        finally:
            os.kill(n5.pid, signal.SIGCONT)  # type: ignore[arg-type]

        honest = [o1, o2]
        recs = {
            o.name: wait_for(lambda o=o: record(o.url, k), EPOCH + 20, f"epoch {k} on {o.name}")
            for o in honest
        }

        # then the liar goes silent for a whole epoch.
        liar.stop()
        liar = None
        silent = clock.epoch_at(time.time()) + 1
        silent_recs = {
            o.name: wait_for(lambda o=o: record(o.url, silent), 2 * EPOCH + 20, f"epoch {silent} on {o.name}")
            for o in honest
        }  # fmt: skip
        yield {
            "dir": dir, "state": state, "clock": clock, "k": k, "silent": silent, "recs": recs,
            "silent_recs": silent_recs, "admin": admin, "job_id": job_id,
        }  # fmt: skip
    finally:
        if liar is not None:
            liar.stop()
        dn.down()


def test_half_stopped_node_is_near_128_on_every_honest_oracle(scenario: dict[str, Any]) -> None:
    state, recs = scenario["state"], scenario["recs"]
    o1, o2, o3, n4, n5 = state.nodes
    for rec in recs.values():
        for oracle in (o1.address, o2.address):
            local = rec["tables"][oracle]["values"][n5.address]
            assert abs(local - 128) <= 32, (oracle, local)
        assert abs(rec["values"][n5.address] - 128) <= 32
        assert rec["values"][n4.address] >= 230  # the liar said 0
    a, b = recs.values()
    assert a["values"] == b["values"] and a["table_hash"] == b["table_hash"]
    assert sorted(a["signatures"]) == sorted(o.address for o in (o1, o2, o3))


def test_lying_oracle_does_not_change_the_agreed_table(scenario: dict[str, Any]) -> None:
    state, rec = scenario["state"], scenario["recs"]["node-01"]
    o1, o2, o3, n4, n5 = state.nodes
    lie = rec["tables"][o3.address]["values"]
    assert lie[n5.address] == 255 and lie[n4.address] == 0
    assert o3.address in rec["voters"]  # it was eligible: its vote counted and was outvoted
    honest = [rec["tables"][o]["values"][n5.address] for o in (o1.address, o2.address)]
    # the (lower) median of the three voters: the liar's 255 is above both honest values, so the
    # larger honest one wins (the two honest oracles may differ by a heartbeat's rounding)
    assert rec["values"][n5.address] == median_low([*honest, lie[n5.address]]) == max(honest)
    entries = get(o1.url, "/v1/oracle/misbehaviour")["entries"]
    flagged = {e["oracle"] for e in entries.values() if e["epoch"] == scenario["k"]}
    assert flagged == {o3.address}
    r = runner.invoke(app, ["oracle", "misbehaviour", "--dir", str(scenario["dir"]), "--json"])
    assert r.exit_code == 0, r.output
    assert any(e["oracle"] == o3.address and "disagrees" in e["reason"] for e in json.loads(r.stdout))


def test_silent_oracle_still_closes_the_epoch_with_two_of_three(scenario: dict[str, Any]) -> None:
    state = scenario["state"]
    o1, o2, o3, *_ = state.nodes
    a, b = scenario["silent_recs"].values()
    for rec in (a, b):
        assert rec["voters"] == sorted([o1.address, o2.address])
        assert sorted(rec["signatures"]) == sorted([o1.address, o2.address]) and rec["quorum"] == 2
        assert o3.address not in rec["tables"]
    assert a["values"] == b["values"]


def test_cstore_and_r1fs_keep_the_audit_trail(scenario: dict[str, Any]) -> None:
    state, k = scenario["state"], scenario["k"]
    edge = state.nodes[3]  # an edge node's CSTORE replica has the oracles' records too
    entry = wait_for(
        lambda: get(edge.url, "/v1/cstore/hget", key="net:oracle:epochs", field=str(k)).get("value"),
        15,
        "the epoch index on an edge node",
    )
    assert entry["table_hash"] == scenario["recs"]["node-01"]["table_hash"]
    # each oracle keeps its own record (field = its address), pointing at its R1FS document
    records = get(edge.url, "/v1/cstore/hgetall", key=f"net:oracle:epoch:{k}")["fields"]
    for oracle in state.nodes[:2]:
        rec = records[oracle.address]
        assert rec["table_hash"] == entry["table_hash"] and rec["cid"]
        doc = httpx.get(f"{oracle.url}/ipfs/{rec['cid']}", timeout=10)
        assert doc.status_code == 200 and json.loads(doc.content)["values"] == rec["values"]


def test_claim_through_the_cli_pays_by_the_formula(scenario: dict[str, Any]) -> None:
    dir, state, admin = scenario["dir"], scenario["state"], scenario["admin"]
    n5 = state.nodes[4]
    before = asyncio.run(admin.balance(n5.address))
    result = runner.invoke(
        app,
        ["rewards", "claim", "--dir", str(dir), "--node", "node-05", "--json"],
        env={"R1OS_PRIVATE_KEY": dev_private_key(0)},
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["owner"] == n5.address and out["last_epoch"] >= scenario["k"]
    per = get(
        state.nodes[1].url, f"/v1/oracle/availability/{n5.address}",
        epochs=f"{out['first_epoch']}:{out['last_epoch']}", claim="false",
    )["epochs"]  # fmt: skip
    release = asyncio.run(admin.call("NDLicence", "epoch_release", out["token_id"]))
    expected = sum(release * e["value"] // 255 for e in per)
    assert out["amount"] == expected > 0
    assert asyncio.run(admin.balance(n5.address)) - before == expected
    half = next(e for e in per if e["epoch"] == scenario["k"])
    assert abs(half["value"] - 128) <= 32


def test_poai_job_listed_but_never_served_is_not_paid(scenario: dict[str, Any]) -> None:
    # The job lists node-04 and node-05, which run no replica of it (no app reports it healthy in
    # their heartbeats): available as they were, being listed pays nothing
    # (tests/chain/test_poai_health.py has a node that serves the job and is paid).
    admin, job_id, n4 = scenario["admin"], scenario["job_id"], scenario["state"].nodes[3]
    rec = scenario["recs"]["node-01"]
    assert rec["values"][n4.address] >= 230
    assert str(job_id) not in rec["attestations"]
    job = asyncio.run(admin.job(job_id))
    assert job.paid == job.burned == 0
    assert asyncio.run(admin.usdc_balance(n4.address)) == 0


def test_oracle_cli(scenario: dict[str, Any]) -> None:
    dir, k, n5 = str(scenario["dir"]), scenario["k"], scenario["state"].nodes[4]
    r = runner.invoke(app, ["oracle", "epochs", "--dir", dir, "--json"])
    assert r.exit_code == 0, r.output
    assert k in [e["epoch"] for e in json.loads(r.stdout)["epochs"]]
    r = runner.invoke(
        app, ["oracle", "availability", "node-05", "--dir", dir, "--epochs", f"{k}:{k}", "--json"]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (
        data["node"] == n5.address
        and data["epochs"][0]["value"] == scenario["recs"]["node-01"]["values"][n5.address]
    )
    assert len(data["epochs"][0]["signatures"]) == 3
    r = runner.invoke(app, ["oracle", "availability", "node-05", "--dir", dir])
    assert r.exit_code == 0 and "availability of" in r.output


def test_oracle_cli_bad_input_is_one_line(scenario: dict[str, Any]) -> None:
    dir = str(scenario["dir"])
    cases = [
        (["oracle", "availability", "node-05", "--dir", dir, "--epochs", "5:2"], "bad epoch range"),
        (["oracle", "availability", "node-05", "--dir", dir, "--epochs", "99999:99999"], "has not ended"),
        (["oracle", "availability", "nobody", "--dir", dir], "no devnet node"),
        (["oracle", "availability", "0x12", "--oracle", "http://127.0.0.1:9"], "not a node address"),
        (["oracle", "epochs", "--oracle", "http://127.0.0.1:9"], "cannot reach the oracle"),
        (["rewards", "claim", "--dir", dir], "nothing to claim with"),
    ]
    for args, text in cases:
        r = runner.invoke(app, args, env={"R1OS_PRIVATE_KEY": dev_private_key(0)})
        out = r.output + (r.stderr or "")
        assert r.exit_code == 1, (args, out)
        assert text in out and "Traceback" not in out, (args, out)


def test_malformed_and_equivocating_oracle_messages_are_refused_and_logged(scenario: dict[str, Any]) -> None:
    from r1os.dauth import broker_client_id, broker_password
    from r1os.identity import load_keystore
    from r1os.oracle import sign_table
    from r1os.transport import MqttTransport, inbox_topic
    from r1os.wire import EnvelopeSigner

    dir, state, clock = scenario["dir"], scenario["state"], scenario["clock"]
    o1, o3, n4 = state.nodes[0], state.nodes[2], state.nodes[3]
    key = load_keystore(Path(o3.home) / "keys" / "node.json", (dir / "password").read_text().strip())
    signer = EnvelopeSigner(key, state.network)
    now = clock.epoch_at(time.time())
    good = {n4.address: 200}
    other = {n4.address: 10}
    messages = [
        {"epoch": now, "values": {n4.address: 300}, "sig": "0x00"},  # out of range
        {
            "epoch": now,
            "values": good,
            "sig": sign_table(key, "table", state.network, now + 1, good),
        },  # bad sig
        {"epoch": now + 50, "values": good, "sig": "0x00"},  # epoch out of range
        {"epoch": now, "values": "nope", "sig": "0x00"},  # not a table
        {"epoch": now, "values": good, "sig": sign_table(key, "table", state.network, now, good)},
        {
            "epoch": now,
            "values": other,
            "sig": sign_table(key, "table", state.network, now, other),
        },  # 2nd table
    ]
    last = get(o1.url, "/v1/oracle/epochs")["last_closed"]

    async def send() -> None:
        # the broker lets in admitted nodes only: log in as node-03 (stopped by now)
        login = {"username": key.address, "password": broker_password(key, state.network)}
        async with MqttTransport(state.broker_url, client_id=broker_client_id(key.address), **login) as t:
            await t.wait_connected()
            for payload in messages:
                raw = signer.seal("oracle.table", payload)
                await t.publish(inbox_topic(state.network, o1.address), raw, qos=1)

    asyncio.run(send())
    log = Path(o1.home) / "node.log"
    for text in (
        "must be 0..255",
        "bad table signature",
        "out of range",
        "a table is an object",
        "equivocation",
    ):
        wait_for(lambda text=text: text in log.read_text(), 10, f"log line {text!r}")
    entries = wait_for(
        lambda: [
            e
            for e in get(o1.url, "/v1/oracle/misbehaviour")["entries"].values()
            if "equivocation" in e["reason"]
        ],
        10,
        "the equivocation entry",
    )
    assert entries[0]["oracle"] == o3.address and entries[0]["epoch"] == now
    # and the oracle carries on closing epochs
    wait_for(
        lambda: get(o1.url, "/v1/oracle/epochs")["last_closed"] > last, 2 * EPOCH + 15, "another closed epoch"
    )


def test_auto_claim_every_epoch(scenario: dict[str, Any]) -> None:
    """node-04 restarted with `auto_claim_epochs=1` claims on its own; its owner's R1 grows."""
    dir, state, admin = scenario["dir"], scenario["state"], scenario["admin"]
    n4 = state.nodes[3]
    dn = Devnet(dir)
    dn.stop_node(n4.name)
    config = NodeConfig(
        home=Path(n4.home),
        network=state.network,
        broker=state.broker_url,
        http=f"127.0.0.1:{n4.http_port}",
        heartbeat_interval=HB,
        oracles=[o.address for o in state.nodes[:3]],
        chain_deployment=Path(state.chain["deployment_file"]),  # type: ignore[index]
        key_strength="light",
        auto_claim_epochs=1,
    )
    before = asyncio.run(admin.balance(n4.address))
    node = ThreadNode(
        Node(config, password=(dir / "password").read_text().strip(), services=build_services(config))
    )
    try:
        svc = wait_for(
            lambda: next((s for s in node.node.services if s.name == "autoclaim"), None), 10, "service"
        )
        claims = wait_for(lambda: list(svc.claims), 3 * EPOCH + 20, "an automatic claim")  # type: ignore[attr-defined]
        assert claims[0]["amount"] > 0
        assert asyncio.run(admin.balance(n4.address)) - before == sum(c["amount"] for c in svc.claims)  # type: ignore[attr-defined]
    finally:
        node.stop()
