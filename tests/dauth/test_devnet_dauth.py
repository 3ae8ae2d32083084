"""dAuth end to end: a devnet with real anvil, contracts, broker and node processes (3 oracles, 4 edges)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from r1os.chain.anvil import dev_private_key
from r1os.chain.devnet import devnet_client
from r1os.dauth import broker_client_id, broker_password, make_request
from r1os.dauth._models import sign_obj
from r1os.dauth.broker import BrokerGate
from r1os.devnet import Devnet, DevnetNode, DevnetState
from r1os.errors import TransportError
from r1os.identity import NodeKey, load_keystore
from r1os.transport import MqttTransport, broadcast_topic
from r1os.wire import EnvelopeSigner
from tests.conftest import wait_for

HB = 1.0
EPOCH = 30  # seconds: oracles re-check every 7.5 s, so a revocation must land well within one epoch

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    dn = Devnet(tmp_path_factory.mktemp("dauth"))
    state = dn.up(nodes=7, oracles=3, heartbeat=HB, epoch_seconds=EPOCH, timeout=90)
    yield dn, state
    dn.down()


def get(url: str, path: str) -> Any:
    return httpx.get(f"{url}{path}", timeout=3).json()


def peer_addresses(url: str) -> set[str]:
    return {p["address"] for p in get(url, "/v1/peers")["peers"]}


def rejected(url: str, cause: str) -> float:
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=3).text):
        if fam.name == "r1os_wire_rejected":
            for s in fam.samples:
                if s.labels.get("cause") == cause:
                    return s.value
    return 0.0


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "r1os", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def node_key(dn: Devnet, node: DevnetNode) -> NodeKey:
    return load_keystore(Path(node.home) / "keys" / "node.json", (dn.dir / "password").read_text().strip())


def buy_licence(dn: Devnet, key: NodeKey) -> int:
    async def go() -> int:
        admin = devnet_client(dn.dir, dev_private_key(0))
        me = admin.with_key(key)
        price = await me.nd_price()
        await admin.send_eth(key.address, 10**19)
        await admin.mint_r1(key.address, price)
        token = await me.buy_nd(price)
        await me.link(token, key.address)
        return token

    return asyncio.run(go())


def oracles_and_edges(state: DevnetState) -> tuple[list[DevnetNode], list[DevnetNode]]:
    return [n for n in state.nodes if n.oracle], [n for n in state.nodes if not n.oracle]


def test_devnet_up_admits_every_licensed_edge_node(devnet: Any) -> None:
    dn, state = devnet
    oracles, edges = oracles_and_edges(state)
    for n in oracles:
        assert get(n.url, "/v1/dauth/status")["state"] == "oracle"
    for n in edges:
        s = get(n.url, "/v1/dauth/status")
        assert s["state"] == "admitted", s
        assert s["record"]["record"]["licence"]["type"] == "ND"
        assert s["network_config"]["epoch_seconds"] == EPOCH
        assert {o.lower() for o in s["network_config"]["oracles"]} == {o.address.lower() for o in oracles}
    want = {n.address.lower() for n in edges}
    for n in state.nodes:
        # The admitted set is replicated state: a node connected before the last edge was admitted
        # had the record broadcast to it; one admitted later gets it by anti-entropy (every 5 s).
        wait_for(
            lambda n=n: set(get(n.url, "/v1/dauth/admitted")["admitted"]) == want, 30,
            f"{n.name} to hold every admission record",
        )  # fmt: skip
        data = get(n.url, "/v1/dauth/admitted")
        assert set(data["admitted"]) == want and data["count"] == 4
        assert set(data["oracles"]) == {o.address.lower() for o in oracles}
    out = json.loads(cli("node", "admission", "--dir", str(dn.dir), "--json"))
    assert [r["state"] for r in out] == ["oracle"] * 3 + ["admitted"] * 4
    text = cli("node", "admission", "--node", edges[0].url)
    assert "admitted: ND #" in text


def test_unlicensed_node_is_refused_then_admitted_without_restart_then_revoked(devnet: Any) -> None:
    dn, state = devnet
    node = dn.add_node(licence=False)
    others = list(state.nodes)

    def status() -> dict[str, Any]:
        data: dict[str, Any] = get(node.url, "/v1/dauth/status")
        return data

    def refused() -> dict[str, Any] | None:
        s = status()
        return s if (s.get("last_refusal") or {}).get("cause") == "not_licensed" else None

    refusal = wait_for(refused, 30, "the unlicensed node to be refused")
    assert refusal is not None
    assert refusal["state"] == "waiting"
    assert "r1os licence buy --link" in refusal["last_refusal"]["hint"]
    # It keeps trying (backoff) and keeps sending heartbeats; nobody lists it.
    wait_for(lambda: status()["attempts"] >= 3, 30, "three admission attempts")
    for n in others:
        assert node.address not in peer_addresses(n.url)
        assert node.address.lower() not in get(n.url, "/v1/dauth/admitted")["admitted"]
    assert "not admitted (not_licensed)" in Path(node.log_path).read_text()
    out = cli("node", "admission", "--dir", str(dn.dir), node.name)
    assert "waiting" in out and "not_licensed" in out and "hint: buy a licence" in out
    pid = node.pid

    # Buy and link a licence the way a user would: faucet, then buy --link with the node's key.
    cli("token", "faucet", node.address, "--dir", str(dn.dir))
    # The licence contract refuses to unlink once an epoch has ended unclaimed, so link at the start
    # of an epoch and unlink within it.
    cfg = get(state.nodes[0].url, "/v1/dauth/status")["network_config"]

    def left_in_epoch() -> float:
        return float(EPOCH - (time.time() - cfg["genesis_time"]) % EPOCH)

    wait_for(lambda: left_in_epoch() > EPOCH - 2, EPOCH + 5, "the start of an epoch", interval=0.1)
    env = {"R1OS_PASSWORD": (dn.dir / "password").read_text().strip()}
    keyfile = str(Path(node.home) / "keys" / "node.json")
    bought = json.loads(cli("licence", "buy", "--link", node.address, "-k", keyfile, "--dir", str(dn.dir),
                            "--json", env=env))  # fmt: skip
    linked_at = time.monotonic()
    # Without a nudge it is admitted at its next backoff step (up to 10 s); --retry asks right away.
    out = cli("node", "admission", "--node", node.url, "--retry")
    assert "admitted: ND #" in out, out
    assert status()["state"] == "admitted"
    admitted_s = time.monotonic() - linked_at
    for n in others:
        wait_for(lambda n=n: node.address in peer_addresses(n.url), 30, f"{n.name} to list the new node")
    seen_s = time.monotonic() - linked_at
    assert dn.state().node(node.name).pid == pid  # no restart
    print(f"\nadmitted {admitted_s:.1f} s after the link, in every peer list after {seen_s:.1f} s")

    assert left_in_epoch() > 1, "the link and the checks above took most of an epoch"
    # Unlinking revokes within one epoch: gone from the admitted sets and the peer lists.
    cli("licence", "unlink", str(bought["token_id"]), "-k", keyfile, "--dir", str(dn.dir), env=env)
    unlinked_at = time.monotonic()

    def gone(url: str) -> bool:
        admitted = get(url, "/v1/dauth/admitted")["admitted"]
        return node.address.lower() not in admitted and node.address not in peer_addresses(url)

    for n in others:
        wait_for(lambda n=n: gone(n.url), EPOCH, f"{n.name} to drop the node")
    revoked_s = time.monotonic() - unlinked_at
    assert revoked_s < EPOCH
    wait_for(lambda: status()["state"] == "waiting", 10, "the node to see its revocation")
    print(f"revoked everywhere {revoked_s:.1f} s after the unlink (epoch {EPOCH} s)")
    # It still runs and stays connected, but the broker neither delivers its messages nor sends it
    # anyone's: its own peers go offline, and nobody lists it.
    wait_for(lambda: get(node.url, "/v1/peers")["online"] == 0, 20, "the revoked node to be cut off")
    for n in others:
        assert node.address not in peer_addresses(n.url)
    assert f"stopped traffic of {node.address}" in (dn.dir / "broker.log").read_text()
    assert dn.state().node(node.name).pid == pid
    dn.stop_node(node.name)


def test_nodes_drop_messages_signed_by_unadmitted_keys(devnet: Any) -> None:
    """The message-level check, for external brokers: an admitted connection relays a stranger's heartbeat."""
    dn, state = devnet
    _, edges = oracles_and_edges(state)
    relay = NodeKey.generate()
    buy_licence(dn, relay)
    r = httpx.post(
        f"{state.nodes[0].url}/v1/dauth/admit", json=make_request(relay, state.network, "t"), timeout=10
    )
    assert r.status_code == 200, r.text
    stranger = NodeKey.generate()
    signer = EnvelopeSigner(stranger, state.network)

    async def go() -> None:
        t = MqttTransport(state.broker_url, broker_client_id(relay.address), username=relay.address,
                          password=broker_password(relay, state.network))  # fmt: skip
        async with t:
            await t.wait_connected(15)
            before = [rejected(n.url, "not_admitted") for n in edges]
            payload = {"version": "0.1.0", "uptime": 1.0, "interval": HB}
            for _ in range(3):
                await t.publish(broadcast_topic(state.network, "hb"), signer.seal("hb", payload))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                after = [rejected(n.url, "not_admitted") for n in edges]
                if all(a >= b + 3 for a, b in zip(after, before, strict=True)):
                    break
                await asyncio.sleep(0.1)
            assert all(a >= b + 3 for a, b in zip(after, before, strict=True)), (before, after)

    asyncio.run(go())
    for n in edges:
        assert stranger.address not in peer_addresses(n.url)


def test_forged_replayed_and_unlicensed_admission_requests_are_refused(devnet: Any) -> None:
    dn, state = devnet
    oracles, edges = oracles_and_edges(state)
    url = f"{oracles[1].url}/v1/dauth/admit"
    edge_key = node_key(dn, edges[0])

    def post(body: Any) -> tuple[int, dict[str, Any]]:
        r = httpx.post(url, json=body, timeout=10)
        return r.status_code, r.json()

    good = make_request(edge_key, state.network, "t")
    code, data = post(good)
    assert code == 200 and data["record"]["address"] == edge_key.address
    code, data = post(good)  # the same signed request again
    assert (code, data["cause"]) == (409, "replayed") and "nonce" in data["error"]

    forged = make_request(NodeKey.generate(), state.network, "t")
    forged["request"]["address"] = edge_key.address
    code, data = post(forged)
    assert (code, data["cause"]) == (401, "bad_signature") and "signed by" in data["error"]

    stale = make_request(edge_key, state.network, "t")
    stale["request"]["ts"] -= 600
    stale["sig"] = sign_obj(edge_key, stale["request"])
    code, data = post(stale)
    assert (code, data["cause"]) == (401, "stale")

    code, data = post(make_request(edge_key, "othernet", "t"))
    assert (code, data["cause"]) == (400, "wrong_network")
    r = httpx.post(url, content=b"\x00not json", timeout=10)
    assert r.status_code == 400 and r.json()["cause"] == "malformed"

    code, data = post(make_request(NodeKey.generate(), state.network, "t"))
    assert (code, data["cause"]) == (403, "not_licensed") and "licence buy" in data["hint"]

    r = httpx.post(f"{edges[0].url}/v1/dauth/admit", json=make_request(edge_key, state.network, "t"))
    assert r.status_code == 404 and r.json()["cause"] == "not_oracle"
    log = Path(oracles[1].log_path).read_text()
    assert "refused an admission request (replayed)" in log
    assert "refused an admission request (bad_signature)" in log


def test_the_broker_refuses_unadmitted_clients(devnet: Any) -> None:
    dn, state = devnet
    oracles, edges = oracles_and_edges(state)
    stranger = NodeKey.generate()
    edge_key = node_key(dn, edges[1])

    async def refused(client_id: str, username: str | None, password: str | None) -> None:
        t = MqttTransport(state.broker_url, client_id, username=username, password=password)
        async with t:
            with pytest.raises(TransportError, match="not connected"):
                await t.wait_connected(1.5)

    async def go() -> None:
        # A valid login of an unlicensed key; a stolen username with a wrong password; no login at all.
        await refused(broker_client_id(stranger.address), stranger.address,
                      broker_password(stranger, state.network))  # fmt: skip
        await refused(broker_client_id(edge_key.address), edge_key.address,
                      broker_password(stranger, state.network))  # fmt: skip
        await refused("anonymous", None, None)
        # The same gate admits an admitted node's login (checked here without taking over its session).
        gate = BrokerGate(state.network, [o.address for o in oracles], [o.url for o in oracles])
        ok = await gate.authorize(broker_client_id(edge_key.address), edge_key.address,
                                  broker_password(edge_key, state.network))  # fmt: skip
        await gate.close()
        assert ok

    asyncio.run(go())
    log = (dn.dir / "broker.log").read_text()
    assert f"refused MQTT client {stranger.address.lower()}: not admitted by dAuth" in log
    assert "password is not signed by the username's key" in log


def test_a_restarted_node_is_admitted_again_from_its_stored_record(devnet: Any) -> None:
    dn, state = devnet
    _, edges = oracles_and_edges(state)
    edge = edges[2]
    dn.stop_node(edge.name)
    node = dn.start_node(edge.name)
    wait_for(lambda: get(node.url, "/v1/dauth/status")["state"] == "admitted", 20, "admission after restart")
    status = get(node.url, "/v1/dauth/status")
    assert status["record"]["record"]["address"] == edge.address
    for n in state.nodes:
        if n.name != edge.name:
            wait_for(lambda n=n: edge.address in peer_addresses(n.url), 30, f"{n.name} to see it again")
