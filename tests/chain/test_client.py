"""ChainClient against real compiled contracts on a real anvil: licences, rewards, tokens, errors."""

from __future__ import annotations

import os

import pytest

from r1os.chain import digests
from r1os.chain.provider import RpcProvider
from r1os.chain.units import format_units, parse_units
from r1os.errors import ChainError
from r1os.identity import NodeKey

from .conftest import EPOCH, R1, Chain

MAX_SUPPLY = 161_803_398 * R1
RELEASE_PER_EPOCH = MAX_SUPPLY * 4500 // 10000 // 46224 // 1080
"""The ND per-epoch release, computed here from Ratio1's numbers (not read from the contract)."""


def _sign(chain: Chain, oracles: list[int], node: str, first: int, avail: list[int]) -> list[bytes]:
    return [digests.sign_availability(chain.oracle_keys[i], node, first, avail) for i in oracles]


async def _licensed(chain: Chain) -> tuple[NodeKey, NodeKey, int]:
    """A fresh operator with one ND linked to a fresh node address: (operator, node, token id)."""
    admin = chain.admin
    price = await admin.nd_price()
    operator = await chain.funded_key(r1=price)
    node = NodeKey.generate()
    client = chain.client(operator)
    token = await client.buy_nd()
    await client.link(token, node.address)
    return operator, node, token


async def test_digests_match_the_controller(chain: Chain) -> None:
    client = chain.client()
    for n in (1, 3, 250):
        node = NodeKey.generate().address
        avail = list(os.urandom(n))
        first = int.from_bytes(os.urandom(2), "big")
        assert await client.chain_availability_digest(node, first, avail) == (
            digests.availability_digest(node, first, avail)
        )
    nodes = [NodeKey.generate().address for _ in range(3)]
    assert await client.chain_attestation_digest(7, 42, nodes) == digests.attestation_digest(
        chain.deployment.address("PoAIEscrow"), 7, 42, nodes
    )


async def test_deployment_is_wired(chain: Chain) -> None:
    client = chain.client()
    assert sorted(await client.oracles()) == sorted(k.address for k in chain.oracle_keys)
    assert await client.min_signatures() == 2
    assert await client.chain_id() == 31337
    assert await client.nd_tier() == 1
    assert chain.deployment.epoch_seconds == EPOCH


async def test_buy_link_claim_pays_exactly(chain: Chain) -> None:
    operator, node, token = await _licensed(chain)
    client = chain.client(operator)
    assert await client.balance() == 0  # the whole balance paid for the licence
    assert await client.is_node_active(node.address)
    assert not await client.is_node_active(NodeKey.generate().address)
    [lic] = await client.licences()
    assert (lic.type, lic.token_id, lic.node, lic.owner) == ("ND", token, node.address, operator.address)
    assert (await client.licence_of(node.address)) == lic

    await chain.advance(2 * EPOCH)
    lic = await client.licence(token)
    assert lic.claimable_epochs == 2
    avail = [255, 128]
    sigs = _sign(chain, [0, 2], node.address, lic.next_claim_epoch, avail)
    expected = RELEASE_PER_EPOCH * 255 // 255 + RELEASE_PER_EPOCH * 128 // 255
    assert await client.compute_reward(token, avail) == expected
    # Anyone may submit; the R1 goes to the licence owner.
    paid = await chain.admin.claim_rewards(token, lic.next_claim_epoch, avail, sigs)
    assert paid == expected
    assert await client.balance() == expected

    with pytest.raises(ChainError, match="nd: epochs already claimed"):
        await client.claim_rewards(token, lic.next_claim_epoch, avail, sigs)


async def test_bad_signature_sets_are_refused(chain: Chain) -> None:
    operator, node, token = await _licensed(chain)
    client = chain.client(operator)
    await chain.advance(EPOCH)
    first = (await client.licence(token)).next_claim_epoch
    avail = [200]
    good = _sign(chain, [0, 1], node.address, first, avail)

    with pytest.raises(ChainError, match="controller: not enough signatures"):
        await client.claim_rewards(token, first, avail, good[:1])
    with pytest.raises(ChainError, match="controller: duplicate signer"):
        await client.claim_rewards(token, first, avail, [good[0], good[0]])
    forged = digests.sign_availability(NodeKey.generate(), node.address, first, avail)
    with pytest.raises(ChainError, match="controller: signer is not an oracle"):
        await client.claim_rewards(token, first, avail, [good[0], forged])
    # Signed for 200, claimed as 255: the signatures recover to other addresses.
    with pytest.raises(ChainError, match="controller: (signer is not an oracle|invalid signature)"):
        await client.claim_rewards(token, first, [255], good)
    with pytest.raises(ChainError, match="65 bytes"):
        await client.claim_rewards(token, first, avail, [good[0][:64], good[1]])
    with pytest.raises(ChainError, match="0..255"):
        await client.claim_rewards(token, first, [256], good)
    with pytest.raises(ChainError, match="nd: epoch not ended"):
        current = await client.current_epoch()
        await client.claim_rewards(token, first, [1] * (current - first + 1), good)
    assert await client.claim_rewards(token, first, avail, good) == RELEASE_PER_EPOCH * 200 // 255


async def test_unlink_and_relink_rules(chain: Chain) -> None:
    operator, node, token = await _licensed(chain)
    client = chain.client(operator)
    other = chain.client(await chain.funded_key())
    with pytest.raises(ChainError, match="nd: not the licence owner"):
        await other.unlink(token)
    await client.unlink(token)
    assert not await client.is_node_active(node.address)
    assert await client.licence_of(node.address) is None
    with pytest.raises(ChainError, match="nd: link cooldown"):
        await client.link(token, node.address)


async def test_token_transfer_and_errors(chain: Chain) -> None:
    alice = await chain.funded_key(r1=5 * R1)
    bob = NodeKey.generate()
    client = chain.client(alice)
    await client.transfer(bob.address, parse_units("1.5", 18))
    assert format_units(await client.balance(bob.address), 18) == "1.5"
    assert await client.balance() == parse_units("3.5", 18)
    with pytest.raises(ChainError, match="R1.transfer reverted: erc20: transfer amount exceeds balance"):
        await client.transfer(bob.address, 10 * R1)
    with pytest.raises(ChainError, match="R1.mint reverted: R1: caller is not a minter"):
        await client.mint_r1(alice.address, 1)
    with pytest.raises(ChainError, match="needs a private key"):
        await chain.client().transfer(bob.address, 1)
    with pytest.raises(ChainError, match="Ethereum address"):
        await client.balance("0x1234")
    poor = chain.client(NodeKey.generate())
    with pytest.raises(ChainError, match="(?i)insufficient funds|lack of funds") as err:
        await poor.send_eth(bob.address, 1)
    assert err.value.hint == f"{poor.sender} needs ETH on this chain to pay for gas"
    with pytest.raises(ChainError) as err:
        await poor.transfer(bob.address, 0)
    assert err.value.hint == f"{poor.sender} needs ETH on this chain to pay for gas"


async def test_buy_without_r1_is_readable(chain: Chain) -> None:
    client = chain.client(await chain.funded_key())
    with pytest.raises(ChainError, match="NDLicence.buy reverted: erc20: transfer amount exceeds balance"):
        await client.buy_nd()


def test_units_round_trip() -> None:
    assert parse_units("12.5", 18) == 12_500_000_000_000_000_000
    assert format_units(1, 6) == "0.000001" and format_units(10**6, 6) == "1"
    for bad in ("-1", "abc", "0.0000001"):
        with pytest.raises(ChainError):
            parse_units(bad, 6)


async def test_unreachable_rpc_is_a_clear_error(chain: Chain) -> None:
    from r1os.chain import ChainClient

    dead = ChainClient(chain.deployment.model_copy(update={"rpc": "http://127.0.0.1:9"}))
    with pytest.raises(ChainError, match="cannot reach the chain"):
        await dead.current_epoch()


async def test_idle_chain_epochs_follow_the_clock(chain: Chain) -> None:
    """On an idle devnet the latest block is old; views and claims must use the time of now."""
    operator, node, token = await _licensed(chain)
    client = chain.client(operator)
    before = await client.current_epoch()
    # Move the clock without mining: only the pending block sees the new time.
    await RpcProvider(chain.anvil.rpc_url, devnet=True)._rpc("evm_increaseTime", [EPOCH])
    assert await client.current_epoch() == before + 1
    lic = await client.licence(token)
    assert lic.claimable_epochs == 1
    sigs = _sign(chain, [0, 1], node.address, lic.next_claim_epoch, [255])
    assert await client.claim_rewards(token, lic.next_claim_epoch, [255], sigs) == RELEASE_PER_EPOCH


async def test_mnd_and_gnd_link_and_claim(chain: Chain) -> None:
    admin = chain.admin
    operator = await chain.funded_key()
    amount = 90_000 * R1
    token = await admin.mint_mnd(operator.address, amount)
    client = chain.client(operator)
    node = NodeKey.generate().address
    await client.link(token, node, "MND")
    [lic] = await client.licences()
    assert (lic.type, lic.token_id, lic.node) == ("MND", token, node)
    assert await client.licence_of(node) == lic and await client.is_node_active(node)
    with pytest.raises(ChainError, match="mnd: licences are soulbound"):
        await client.transact("MNDLicence", "transferFrom", operator.address, admin.sender, token)

    # Vesting starts after the cliff (epoch 2) or at assignment, whichever is later.
    start = int(await client.call("MNDLicence", "mining_start_epoch", token))
    now = await client.current_epoch()
    await chain.advance(EPOCH * (max(start, now) - now + 1))
    lic = await client.licence(token, "MND")
    assert lic.next_claim_epoch == start and lic.claimable_epochs >= 1
    avail = [255] + [100] * (lic.claimable_epochs - 1)
    sigs = _sign(chain, [0, 1], node, start, avail)
    # what the contract says the claim pays (the curve and adoption: tests/chain/test_mnd_release.py)
    expected = int(await client.call("MNDLicence", "compute_reward", token, bytes(avail)))
    paid = await client.claim_rewards(token, start, avail, sigs, "MND")
    assert paid == expected
    assert await client.balance() == paid

    # The GND (token 1) belongs to the deployer; it shows as GND.
    gnd = await admin.licence(1, "GND")
    assert (gnd.type, gnd.owner) == ("GND", admin.sender)
    with pytest.raises(ChainError, match="there is no ND licence #999999"):
        await client.licence(999_999)
