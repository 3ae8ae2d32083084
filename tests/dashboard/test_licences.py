"""Licences and rewards per node (`GET /v1/dashboard/licences`): read from a real anvil with the r1os
contracts (the chain tests' fixtures), the claimable amount computed by the licence contract over the
availability the relay holds; on a node without a chain, that there is none; a chain that does not
answer or a broken deployment file refused in one line and not asked again at once; concurrent callers
share one read."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.dashboard import DashboardService
from r1os.dashboard._errors import NoOracle
from r1os.dashboard._licences import ChainUnreachable, LicenceReader
from r1os.identity import NodeKey
from r1os.node import ServiceContext
from r1os.transport import MemoryHub
from tests.chain.conftest import EPOCH, Chain
from tests.chain.conftest import anvil as anvil  # the fixtures
from tests.chain.conftest import chain as chain
from tests.conftest import lone_context
from tests.dashboard.test_routes import _node, running


class Relay:
    """The availability relay's answer, as the oracles agreed it (or no oracle at all)."""

    def __init__(self, rows: list[dict[str, Any]] | None) -> None:
        self.rows = rows

    async def availability(self, epochs: int) -> dict[str, Any]:
        if self.rows is None:
            raise NoOracle("no oracle is known to this node yet")
        return {"epochs": self.rows}


def reader(
    tmp_path: Path, deployment: Path | None, relay: Relay, key: NodeKey | None = None
) -> LicenceReader:
    ctx: ServiceContext = lone_context("dashboard", tmp_path / "node", key)
    ctx.config = ctx.config.model_copy(update={"chain_deployment": deployment})
    return LicenceReader(ctx, relay)  # type: ignore[arg-type]


async def test_a_node_without_a_chain_says_so(tmp_path: Path) -> None:
    node = _node(tmp_path / "n1", MemoryHub(), [DashboardService()])
    async with running(node), httpx.AsyncClient(base_url=node.url) as http:
        r = await http.get("/v1/dashboard/licences")
        assert r.status_code == 200
        assert r.json() == {"chain": False, "reason": "no chain configured on this node", "nodes": []}


async def test_licences_and_rewards_per_node_from_the_chain(tmp_path: Path, chain: Chain) -> None:
    deployment = chain.deployment.save(tmp_path / "deployment.json")
    node = NodeKey.generate()
    operator = await chain.funded_key(r1=await chain.admin.nd_price())
    op = chain.client(operator)
    token = await op.buy_nd()
    await op.link(token, node.address)
    await chain.advance(2 * EPOCH)
    lic = await op.licence(token)
    waiting = list(range(lic.next_claim_epoch, lic.next_claim_epoch + lic.claimable_epochs))
    assert len(waiting) == 2
    rows = [{"epoch": e, "values": {node.address: v}} for e, v in zip(waiting, [255, 100], strict=True)]
    # the node itself (licensed), and a peer without a licence
    r = reader(tmp_path, deployment, Relay(rows), key=node)
    stranger = NodeKey.generate().address
    r.nodes = lambda: [node.address, stranger]  # type: ignore[method-assign]
    answers = await asyncio.gather(*(r.licences() for _ in range(10)))
    assert r.refreshes == 1 and all(a is answers[0] for a in answers)  # one read of the chain for all
    answer = answers[0]
    assert answer["chain"] is True and answer["availability"] == "ok"
    assert answer["current_epoch"] == await op.current_epoch()
    mine, other = answer["nodes"]
    expected = await op.compute_reward(token, [255, 100])
    assert mine["licence"] == {"type": "ND", "token_id": token, "owner": operator.address}
    assert (mine["claimed"], mine["claimable"], mine["earned"]) == ("0", str(expected), str(expected))
    assert mine["claimable_epochs"] == mine["agreed_epochs"] == 2 and mine["waiting_availability"] == [
        255,
        100,
    ]
    assert other == {"node": stranger, "licence": None}
    assert await r.licences() is answer and r.refreshes == 1  # cached

    # the newest epoch not closed by the oracles yet: what the agreed one pays
    r1 = reader(tmp_path, deployment, Relay(rows[:1]), key=node)
    r1.nodes = lambda: [node.address]  # type: ignore[method-assign]
    first = (await r1.licences())["nodes"][0]
    assert first["claimable"] == str(await op.compute_reward(token, [255])) and first["agreed_epochs"] == 1

    # the first waiting epoch no longer in the relay (or no oracle): unknown, not guessed
    for relay in (Relay(rows[1:]), Relay(None)):
        r2 = reader(tmp_path, deployment, relay, key=node)
        r2.nodes = lambda: [node.address]  # type: ignore[method-assign]
        got = await r2.licences()
        assert got["nodes"][0]["claimable"] is None and got["nodes"][0]["claimed"] == "0"
    assert "no oracle" in got["availability"]


async def test_an_unreachable_chain_or_a_broken_deployment_is_one_clear_error(
    tmp_path: Path, chain: Chain
) -> None:
    # a deployment whose RPC endpoint is a port nobody listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = chain.deployment.model_copy(update={"rpc": f"http://127.0.0.1:{port}"})
    r = reader(tmp_path, dead.save(tmp_path / "dead.json"), Relay([]))
    for _ in range(3):
        with pytest.raises(ChainUnreachable, match="the chain did not answer") as exc:
            await r.licences()
        assert exc.value.status == 502
    assert r.refreshes == 1  # not asked again before the TTL
    for text in ("{not json", '{"rpc": 5}', "x" * 100_000):
        broken = tmp_path / "broken.json"
        broken.write_text(text)
        with pytest.raises(ChainUnreachable, match="cannot read the chain deployment"):
            await reader(tmp_path, broken, Relay([])).licences()
    with pytest.raises(ChainUnreachable, match="cannot read"):
        await reader(tmp_path, tmp_path / "missing.json", Relay([])).licences()
