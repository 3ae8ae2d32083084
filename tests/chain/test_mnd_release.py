"""On anvil: an MND's claim over a range of epochs pays what the independent model of the paper's
formulas (tests/contracts/model.py) pays at the adoption the chain reports, and what adoption
withheld comes out when ND sales and PoAI volume raise it."""

from __future__ import annotations

from r1os.chain import digests
from r1os.identity import NodeKey

from ..contracts import model
from .conftest import EPOCH, R1, USDC, Chain


async def _adoption(chain: Chain) -> int:
    """The adoption the chain reports, checked against the model of its inputs."""
    admin = chain.admin
    sold, volume = (int(v) for v in await admin.call("MNDLicence", "adoption_inputs"))
    adoption = int(await admin.call("MNDLicence", "adoption"))
    assert sold == int(await admin.call("NDLicence", "total_minted"))
    assert volume == int(await admin.call("PoAIEscrow", "total_volume"))
    assert adoption == model.adoption(sold, volume)
    return adoption


async def test_mnd_claim_matches_model_at_chain_adoption(chain: Chain) -> None:
    admin = chain.admin
    dep = chain.deployment.contracts
    nd_source = str(await admin.call("MNDLicence", "adoption_nd"))
    if int(nd_source, 16) == 0:  # deployments wire it; an older deployment may not have
        await admin.transact("MNDLicence", "set_adoption_sources", dep["NDLicence"], dep["PoAIEscrow"])
    # some adoption: a PoAI job's budget ($60k) and a Node Deed sale
    buyer = await chain.funded_key(r1=await admin.nd_price())
    await chain.client(buyer).buy_nd()
    await admin.usdc_faucet(60_000 * USDC)
    await admin.create_job(1, 3, 20_000 * USDC)

    amount = 250_000 * R1
    holder = await chain.funded_key()
    token = await admin.mint_mnd(holder.address, amount)
    node = NodeKey.generate().address
    client = chain.client(holder)
    await client.link(token, node, "MND")
    start = int(await admin.call("MNDLicence", "mining_start_epoch", token))
    now = await admin.current_epoch()
    await chain.advance(EPOCH * (max(start, now) - now + 6))
    lic = await client.licence(token, "MND")
    first, n = lic.next_claim_epoch, lic.claimable_epochs
    assert n >= 6
    avails = [255, 200, 0, 255, 128, 77] + [255] * (n - 6)
    sigs = [digests.sign_availability(k, node, first, avails) for k in chain.oracle_keys[:2]]

    account = model.MndAccount(amount, offset=first - start)
    adoption = await _adoption(chain)
    assert 0 < adoption < model.ADOPTION_ONE
    expected = account.claim(avails, adoption)
    assert int(await admin.call("MNDLicence", "compute_reward", token, bytes(avails))) == expected
    paid = await client.claim_rewards(token, first, avails, sigs, "MND")
    assert paid == expected > 0
    assert await client.balance() == paid
    assert int(await admin.call("MNDLicence", "earned_amount", token)) == account.earned
    assert int(await admin.call("MNDLicence", "withheld_amount", token)) == account.withheld > 0

    # more PoAI volume raises the adoption: the withheld part follows, as the model says
    await admin.usdc_faucet(500_000 * USDC)
    await admin.create_job(1, 1, 500_000 * USDC)
    higher = await _adoption(chain)
    assert higher > adoption
    await admin.transact("MNDLicence", "release_withheld", token)
    assert account.release(higher) > 0
    assert await client.balance() == account.paid > paid
    assert int(await admin.call("MNDLicence", "withheld_amount", token)) == account.withheld
