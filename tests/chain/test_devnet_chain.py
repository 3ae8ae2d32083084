"""The devnet chain as the devnet manager uses it, and the issue's demo end to end:
licence buy + link for a fresh key, an epoch later a claim with oracle signatures, R1 grows exactly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from r1os.chain import digests
from r1os.chain.devnet import (
    ChainInfo,
    chain_status,
    devnet_client,
    licence_of,
    licence_of_async,
    setup_devnet_chain,
    setup_devnet_chain_async,
    stop_devnet_chain,
)
from r1os.chain.provider import RpcProvider
from r1os.errors import DevnetError
from r1os.identity import NodeKey

from .conftest import _anvil_or_skip

RELEASE_PER_EPOCH = 161_803_398 * 10**18 * 4500 // 10000 // 46224 // 1080


@pytest.fixture
async def devnet(tmp_path: Path) -> AsyncIterator[tuple[Path, ChainInfo, list[NodeKey], list[NodeKey]]]:
    _anvil_or_skip()
    edges = [NodeKey.generate() for _ in range(2)]
    oracles = [NodeKey.generate() for _ in range(3)]
    try:
        info = await setup_devnet_chain_async(
            tmp_path, [k.private_key_hex for k in edges], [o.address for o in oracles]
        )
        yield tmp_path, info, edges, oracles
    finally:
        stop_devnet_chain(tmp_path)


async def test_setup_status_and_restart(devnet: tuple[Path, ChainInfo, list[NodeKey], list[NodeKey]]) -> None:
    dir, info, edges, oracles = devnet
    status = chain_status(dir)
    assert status == {"rpc": info.rpc, "chain_id": 31337, "contracts": info.contracts}
    assert json.loads((dir / "chain" / "deployment.json").read_text())["epoch_seconds"] == 60
    for edge in edges:
        assert await licence_of_async(dir, edge.address) == info.licences[edge.address].model_dump()
        assert info.licences[edge.address].type == "ND"
    kinds = [info.licences[o.address].type for o in oracles]
    assert kinds == ["GND", "MND", "MND"]
    client = devnet_client(dir)
    assert await client.min_signatures() == 2
    assert all([await client.is_node_active(k.address) for k in edges + oracles])
    assert await licence_of_async(dir, NodeKey.generate().address) is None

    # Down and up again: the chain state comes back, nothing is bought twice.
    assert stop_devnet_chain(dir) is True
    assert stop_devnet_chain(dir) is False
    again = await setup_devnet_chain_async(
        dir, [k.private_key_hex for k in edges], [o.address for o in oracles]
    )
    assert again.contracts == info.contracts and again.licences == info.licences
    assert await devnet_client(dir).call("NDLicence", "total_minted") == 2
    with pytest.raises(DevnetError, match="setup_devnet_chain_async"):
        setup_devnet_chain(dir, [], [])


def test_blocking_forms_for_the_devnet_manager(tmp_path: Path) -> None:
    """The manager calls these from plain (threaded) code, as `r1os devnet status` does."""
    _anvil_or_skip()
    edge, oracle = NodeKey.generate(), NodeKey.generate()
    try:
        info = setup_devnet_chain(tmp_path, [edge.private_key_hex], [oracle.address], epoch_seconds=30)
        assert info.epoch_seconds == 30 and info.model_dump(mode="json")["licences"][edge.address] == {
            "type": "ND",
            "token_id": 1,
        }
        assert licence_of(tmp_path, edge.address) == {"type": "ND", "token_id": 1}
        assert licence_of(tmp_path, oracle.address) == {"type": "GND", "token_id": 1}
    finally:
        assert stop_devnet_chain(tmp_path) is True
    assert chain_status(tmp_path) is not None  # the deployment record stays for the next start


async def test_demo_fresh_key_buys_links_and_claims(
    devnet: tuple[Path, ChainInfo, list[NodeKey], list[NodeKey]],
) -> None:
    dir, info, _, oracles = devnet
    # A fresh key gets ETH and R1 from the devnet's deployer (anvil dev account 0).
    from r1os.chain.anvil import dev_private_key

    admin = devnet_client(dir, dev_private_key(0))
    fresh = NodeKey.generate()
    price = await admin.nd_price()
    await admin.send_eth(fresh.address, 10**18)
    await admin.mint_r1(fresh.address, price)

    me = admin.with_key(fresh)
    token = await me.buy_nd()
    await me.link(token, fresh.address)
    assert await me.balance() == 0
    await RpcProvider(info.rpc, devnet=True).advance_time(info.epoch_seconds)

    lic = await me.licence(token)
    assert lic.claimable_epochs == 1
    avail = [230]
    sigs = [digests.sign_availability(o, fresh.address, lic.next_claim_epoch, avail) for o in oracles[:2]]
    await me.claim_rewards(token, lic.next_claim_epoch, avail, sigs)
    assert await me.balance() == RELEASE_PER_EPOCH * 230 // 255


def test_missing_anvil_is_a_devnet_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1OS_ANVIL", str(tmp_path / "no-anvil"))
    with pytest.raises(DevnetError, match="cannot start the devnet chain") as err:
        setup_devnet_chain(tmp_path, [NodeKey.generate().private_key_hex], [])
    assert err.value.hint and "npm install" in err.value.hint
    assert chain_status(tmp_path) is None
    assert stop_devnet_chain(tmp_path) is False
