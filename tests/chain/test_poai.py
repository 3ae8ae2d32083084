"""PoAI escrow round trip: pay up front, attest an epoch (85% to the operator, 15% burned), refund."""

from __future__ import annotations

import pytest

from r1os.chain import digests
from r1os.errors import ChainError
from r1os.identity import NodeKey

from .conftest import EPOCH, Chain

USDC = 10**6


async def test_job_fund_attest_refund(chain: Chain) -> None:
    admin = chain.admin
    operator = await chain.funded_key(r1=await admin.nd_price())
    node = NodeKey.generate()
    op = chain.client(operator)
    await op.link(await op.buy_nd(), node.address)
    unlicensed = NodeKey.generate().address

    customer = chain.client(await chain.funded_key())
    await customer.usdc_faucet(1000 * USDC)
    supply_before = int(await customer.call("USDC", "totalSupply"))
    job_id = await customer.create_job(nodes=2, epochs=3, price_per_node_epoch=10 * USDC)
    assert await customer.usdc_balance() == 940 * USDC
    job = await customer.job(job_id)
    start = job.start_epoch
    assert (job.owner, job.nodes, job.end_epoch, job.balance) == (customer.sender, 2, start + 3, 60 * USDC)

    with pytest.raises(ChainError, match="escrow: epoch not ended"):
        sigs = [digests.sign_attestation(k, op.addresses["PoAIEscrow"], job_id, start, [node.address])
                for k in chain.oracle_keys[:2]]  # fmt: skip
        await op.attest(job_id, start, [node.address], sigs)
    await chain.advance(EPOCH)

    escrow = chain.deployment.address("PoAIEscrow")
    served = [node.address, unlicensed]
    sigs = [digests.sign_attestation(k, escrow, job_id, start, served) for k in chain.oracle_keys[1:]]
    with pytest.raises(ChainError, match="controller: not enough signatures"):
        await op.attest(job_id, start, served, sigs[:1])
    forged = digests.sign_attestation(NodeKey.generate(), escrow, job_id, start, served)
    with pytest.raises(ChainError, match="controller: signer is not an oracle"):
        await op.attest(job_id, start, served, [sigs[0], forged])

    # Anyone may submit an attestation; only the licensed node's operator is paid.
    assert await admin.attest(job_id, start, served, sigs) == 8_500_000
    assert await op.usdc_balance() == 8_500_000
    assert int(await customer.call("USDC", "totalSupply")) == supply_before - 1_500_000
    with pytest.raises(ChainError, match="escrow: epoch already attested"):
        await admin.attest(job_id, start, served, sigs)

    job = await customer.job(job_id)
    assert (job.paid, job.burned, job.balance) == (8_500_000, 1_500_000, 50 * USDC)
    with pytest.raises(ChainError, match="escrow: not the job owner"):
        await op.end_job(job_id)
    end = await customer.end_job(job_id)
    assert end == (await customer.current_epoch()) + 1
    with pytest.raises(ChainError, match="escrow: settlement window open"):
        await customer.refund(job_id)
    await chain.advance(2 * EPOCH)
    assert await customer.refund(job_id) == 50 * USDC
    assert await customer.usdc_balance() == 990 * USDC
    assert (await customer.job(job_id)).closed
    with pytest.raises(ChainError, match="escrow: job closed"):
        await customer.refund(job_id)
    with pytest.raises(ChainError, match="no PoAI job"):
        await customer.job(10_000)
