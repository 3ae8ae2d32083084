"""The SDK's chain groups (`session.chain`, `.licences`, `.rewards`, `.jobs`, `.token`) against a real anvil
with the r1os contracts deployed (the chain tests' fixtures: one anvil and one deployment for the module).
Blocking `r1os.Session`s, as a script would use them; the async groups run the same coroutines."""

from __future__ import annotations

import asyncio

import pytest

import r1os
from r1os.chain.units import parse_units
from r1os.errors import ChainError
from r1os.identity import NodeKey
from tests.chain.conftest import EPOCH, Chain
from tests.chain.conftest import anvil as anvil  # the fixtures
from tests.chain.conftest import chain as chain

NOWHERE = "http://127.0.0.1:9"  # no node: the chain groups talk to the chain only
R1 = 10**18


def session(chain: Chain, key: NodeKey | None = None) -> r1os.Session:
    return r1os.Session(NOWHERE, key=key, deployment=chain.deployment)


def funded(chain: Chain, r1: int | None = None) -> NodeKey:
    """A fresh key given ETH and R1 (default: one ND's price + 100 R1) by the devnet faucet."""
    key = NodeKey.generate()
    session(chain).token.faucet(key.address, r1)
    return key


def test_chain_info_token_balances_and_transfer(chain: Chain) -> None:
    s = session(chain)
    info = s.chain.info()
    assert info.deployment.epoch_seconds == EPOCH and s.chain.current_epoch() == info.current_epoch
    assert sorted(info.oracles) == sorted(k.address for k in chain.oracle_keys) and info.min_signatures == 2
    assert info.nd_price == s.licences.price().price > 0
    alice, bob = funded(chain, r1=5 * R1), NodeKey.generate()
    with session(chain, alice) as a:
        mine = a.token.balances()
        assert (mine.address, mine.r1, mine.usdc) == (alice.address, 5 * R1, 0) and mine.eth > 0
        tx = a.token.transfer(bob.address, parse_units("1.5", 18))
        assert tx.startswith("0x") and len(tx) == 66
        assert a.token.balances().r1 == 5 * R1 - 15 * R1 // 10
    assert s.token.balances(bob.address).r1 == 15 * R1 // 10  # a read needs no key
    with pytest.raises(ChainError, match="needs a key"):
        s.token.transfer(bob.address, 1)
    with session(chain, bob) as b, pytest.raises(ChainError):
        b.token.transfer(alice.address, 10 * R1)  # more than bob has


def test_buy_and_link_a_licence_then_claim_its_rewards(chain: Chain) -> None:
    operator, node = funded(chain), NodeKey.generate()
    with session(chain, operator) as s:
        price = s.licences.price()
        assert price.price > 0
        bought = s.licences.buy(link=node.address)
        assert (bought.price, bought.node) == (price.price, node.address)
        [lic] = s.licences.list()
        assert (lic.type, lic.token_id, lic.owner, lic.node) == (
            "ND",
            bought.token_id,
            operator.address,
            node.address,
        )
        assert s.licences.of_node(node.address) == lic == s.licences.get(bought.token_id)
        assert s.licences.of_node(NodeKey.generate().address) is None

        asyncio.run(chain.advance(2 * EPOCH))  # two epochs end
        shown = s.rewards.show(bought.token_id)
        assert shown.licence.claimable_epochs == 2 and shown.epoch_release > 0
        first = shown.licence.next_claim_epoch
        # two of the three oracles sign the node's availability (threshold 2), as `rewards sign` does
        signed = None
        for oracle_key in chain.oracle_keys[:2]:
            with session(chain, oracle_key) as o:
                signed = o.rewards.sign(node.address, first, [255, 128], into=signed)
        assert signed is not None and len(signed.signatures) == 2
        before = s.token.balances().r1
        claim = s.rewards.claim(signed, token_id=bought.token_id, type="ND")
        want = shown.epoch_release + shown.epoch_release * 128 // 255
        assert (claim.owner, claim.amount, claim.first_epoch) == (operator.address, want, first)
        assert claim.balance == before + want == s.token.balances().r1
        assert s.licences.get(bought.token_id).claimed == want
        with pytest.raises(ChainError, match="already claimed"):
            s.rewards.claim(signed, token_id=bought.token_id, type="ND")
        # a claim signed by one oracle only is refused
        with session(chain, chain.oracle_keys[2]) as o:
            alone = o.rewards.sign(node.address, first, [255, 128])
        with pytest.raises(ChainError):
            s.rewards.claim(alone, token_id=bought.token_id, type="ND")
        # the node may move to another licence only after this one is unlinked
        s.licences.unlink(bought.token_id)
        assert s.licences.of_node(node.address) is None


def test_a_poai_job_created_extended_ended_and_refunded(chain: Chain) -> None:
    customer = funded(chain, r1=0)
    with session(chain, customer) as s:
        assert s.jobs.fund(1_000_000) == customer.address
        assert s.token.balances().usdc == 1_000_000
        job_id = s.jobs.create(nodes=2, epochs=3, price=1_000)
        status = s.jobs.status(job_id)
        assert status.job.nodes == 2 and status.job.balance == 6_000
        assert s.token.balances().usdc == 1_000_000 - 6_000
        end = s.jobs.extend(job_id, 2)
        assert s.jobs.status(job_id).job.balance == 10_000 and end == status.job.end_epoch + 2
        stop = s.jobs.end(job_id)
        assert stop <= end
        asyncio.run(chain.advance(EPOCH * (stop - s.chain.current_epoch() + 1)))
        back = s.jobs.refund(job_id)
        assert back > 0 and s.token.balances().usdc == 1_000_000 - 10_000 + back
        with pytest.raises(ChainError):
            s.jobs.create(nodes=1, epochs=1, price=10**12)  # more than the customer holds
