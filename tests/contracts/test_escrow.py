"""PoAI escrow: prepaid jobs, oracle-attested per-epoch payouts with the 15% burn, early end, refund."""

from __future__ import annotations

import boa
import pytest

from . import model
from .conftest import THRESHOLD, USDC, System, deploy, events
from .uniswap import Market, Uniswap, deploy_uniswap, seed_pool, swap

ZERO = "0x" + "00" * 20
PRICE = 3 * USDC + 7  # per node per epoch; odd on purpose, to exercise rounding


def _job(s: System, nodes: int = 2, epochs: int = 3, price: int = PRICE) -> tuple[str, int]:
    owner = s.user(usdc=nodes * epochs * price)
    with boa.env.prank(owner):
        s.usdc.approve(s.escrow.address, nodes * epochs * price)
        job_id = s.escrow.create_job(nodes, epochs, price)
    return owner, int(job_id)


def _attest(s: System, job_id: int, epoch: int, nodes: list[str], signers: list | None = None) -> int:
    sigs = s.sign_attestation(job_id, epoch, nodes, signers)
    return int(s.escrow.attest(job_id, epoch, nodes, sigs))


def test_create_job(s: System) -> None:
    assert s.escrow.stablecoin() == s.usdc.address
    assert s.escrow.controller() == s.ctrl.address
    assert s.escrow.burn_receiver() == ZERO
    assert s.escrow.BURN_PERCENT() == model.POAI_BURN_PERCENT
    s.advance_epochs(2)
    owner, job_id = _job(s, nodes=2, epochs=3)
    (ev,) = events(s.escrow, "JobCreated")
    assert (ev.job_id, ev.owner, ev.nodes, ev.epochs, ev.start_epoch) == (1, owner, 2, 3, 2)
    assert job_id == 1 and s.escrow.job_count() == 1
    job = s.escrow.get_job(job_id)
    assert job.owner == owner and job.nodes == 2
    assert (job.start_epoch, job.end_epoch) == (2, 5)
    assert job.price_per_node_epoch == PRICE
    assert job.balance == 2 * 3 * PRICE == s.usdc.balanceOf(s.escrow.address)
    assert (job.paid, job.burned, job.closed) == (0, 0, False)
    assert s.usdc.balanceOf(owner) == 0


def test_create_job_reverts(s: System) -> None:
    owner = s.user(usdc=10 * USDC)
    with boa.env.prank(owner):
        with boa.reverts("escrow: zero nodes"):
            s.escrow.create_job(0, 1, 1)
        with boa.reverts("escrow: too many nodes"):
            s.escrow.create_job(33, 1, 1)
        with boa.reverts("escrow: zero epochs"):
            s.escrow.create_job(1, 0, 1)
        with boa.reverts("escrow: zero price"):
            s.escrow.create_job(1, 1, 0)
        with boa.reverts("erc20: insufficient allowance"):
            s.escrow.create_job(1, 1, USDC)
        s.usdc.approve(s.escrow.address, 100 * USDC)
        with boa.reverts("erc20: transfer amount exceeds balance"):
            s.escrow.create_job(1, 11, USDC)


def test_attest_pays_operators_and_burns(s: System) -> None:
    op1, _, node1 = s.linked_nd()
    op2, _, node2 = s.linked_nd()
    _, job_id = _job(s, nodes=2, epochs=3)
    s.advance_epochs(1)
    supply = s.usdc.totalSupply()
    paid = _attest(s, job_id, 0, [node1, node2])
    net, burn = model.poai_split(PRICE)
    assert paid == 2 * net
    assert s.usdc.balanceOf(op1) == net and s.usdc.balanceOf(op2) == net
    assert s.usdc.totalSupply() == supply - 2 * burn
    job = s.escrow.get_job(job_id)
    assert (job.paid, job.burned) == (2 * net, 2 * burn)
    assert job.balance == 6 * PRICE - 2 * PRICE
    assert s.escrow.is_attested(job_id, 0)
    assert not s.escrow.is_attested(job_id, 1)


def test_attest_events(s: System) -> None:
    op, _, node = s.linked_nd()
    _, job_id = _job(s, nodes=1, epochs=1)
    s.advance_epochs(1)
    _attest(s, job_id, 0, [node])
    (paid_ev,) = events(s.escrow, "NodePaid")
    (att_ev,) = events(s.escrow, "EpochAttested")
    net, burn = model.poai_split(PRICE)
    assert (paid_ev.node, paid_ev.operator, paid_ev.amount, paid_ev.epoch) == (node, op, net, 0)
    assert (att_ev.nodes_paid, att_ev.paid, att_ev.burned) == (1, net, burn)


def test_unlicensed_nodes_are_skipped(s: System) -> None:
    op, _, node = s.linked_nd()
    stranger_node = s.node()
    _, job_id = _job(s, nodes=2, epochs=1)
    s.advance_epochs(1)
    net, _ = model.poai_split(PRICE)
    assert _attest(s, job_id, 0, [stranger_node, node]) == net
    assert s.usdc.balanceOf(stranger_node) == 0
    assert s.escrow.get_job(job_id).balance == PRICE


def test_attest_refusals(s: System) -> None:
    _, _, node1 = s.linked_nd()
    _, _, node2 = s.linked_nd()
    _, job_id = _job(s, nodes=1, epochs=2)
    with boa.reverts("escrow: unknown job"):
        _attest(s, 99, 0, [node1])
    with boa.reverts("escrow: epoch not ended"):
        _attest(s, job_id, 0, [node1])
    s.advance_epochs(3)
    with boa.reverts("escrow: epoch outside job"):
        _attest(s, job_id, 2, [node1])
    with boa.reverts("escrow: no nodes"):
        s.escrow.attest(job_id, 0, [], s.sign_attestation(job_id, 0, []))
    with boa.reverts("escrow: too many nodes"):
        _attest(s, job_id, 0, [node1, node2])
    few = s.sign_attestation(job_id, 0, [node1], s.oracles[: THRESHOLD - 1])
    with boa.reverts("controller: not enough signatures"):
        s.escrow.attest(job_id, 0, [node1], few)
    with boa.reverts("controller: duplicate signer"):
        s.escrow.attest(job_id, 0, [node1], few + few[:1])
    # signed for another epoch, job or node list
    with boa.reverts("controller: signer is not an oracle"):
        s.escrow.attest(job_id, 0, [node1], s.sign_attestation(job_id, 1, [node1]))
    with boa.reverts("controller: signer is not an oracle"):
        s.escrow.attest(job_id, 0, [node1], s.sign_attestation(job_id, 0, [node2]))
    _attest(s, job_id, 0, [node1])
    with boa.reverts("escrow: epoch already attested"):
        _attest(s, job_id, 0, [node1])


def test_duplicate_nodes_refused(s: System) -> None:
    _, _, node1 = s.linked_nd()
    _, _, node2 = s.linked_nd()
    _, job_id = _job(s, nodes=3, epochs=1)
    s.advance_epochs(1)
    with boa.reverts("escrow: duplicate node"):
        _attest(s, job_id, 0, [node1, node2, node1])


def test_end_job_and_refund(s: System) -> None:
    owner, job_id = _job(s, nodes=2, epochs=10)
    _, _, node = s.linked_nd()
    s.advance_epochs(2)  # epochs 0, 1 ended; now in 2
    _attest(s, job_id, 1, [node])
    stranger = s.user()
    with boa.env.prank(stranger), boa.reverts("escrow: not the job owner"):
        s.escrow.end_job(job_id)
    with boa.env.prank(owner), boa.reverts("escrow: settlement window open"):
        s.escrow.refund(job_id)
    with boa.env.prank(owner):
        s.escrow.end_job(job_id)
    (ev,) = events(s.escrow, "JobEnded")
    assert ev.end_epoch == 3
    assert s.escrow.get_job(job_id).end_epoch == 3
    with boa.env.prank(owner), boa.reverts("escrow: job already over"):
        s.escrow.end_job(job_id)
    s.advance_epochs(1)  # in 3: epoch 2 is ended and still payable; refund must wait one epoch
    _attest(s, job_id, 2, [node])
    with boa.reverts("escrow: epoch outside job"):
        _attest(s, job_id, 3, [node])
    with boa.env.prank(owner), boa.reverts("escrow: settlement window open"):
        s.escrow.refund(job_id)
    s.advance_epochs(1)
    with boa.env.prank(stranger), boa.reverts("escrow: not the job owner"):
        s.escrow.refund(job_id)
    with boa.env.prank(owner):
        refunded = s.escrow.refund(job_id)
    # deposit 2 nodes x 10 epochs; paid one node for two epochs; everything else comes back
    assert refunded == 20 * PRICE - 2 * PRICE
    assert s.usdc.balanceOf(owner) == refunded
    job = s.escrow.get_job(job_id)
    assert job.closed and job.balance == 0
    with boa.env.prank(owner), boa.reverts("escrow: job closed"):
        s.escrow.refund(job_id)
    with boa.env.prank(owner), boa.reverts("escrow: job closed"):
        s.escrow.end_job(job_id)
    with boa.reverts("escrow: job closed"):
        _attest(s, job_id, 0, [node])
    with boa.reverts("escrow: unknown job"):
        s.escrow.end_job(77)
    with boa.reverts("escrow: unknown job"):
        s.escrow.refund(77)


def test_refund_after_natural_end(s: System) -> None:
    owner, job_id = _job(s, nodes=1, epochs=2)
    _, _, node = s.linked_nd()
    s.advance_epochs(2)
    _attest(s, job_id, 0, [node])
    _attest(s, job_id, 1, [node])
    with boa.env.prank(owner), boa.reverts("escrow: job already over"):
        s.escrow.end_job(job_id)
    s.advance_epochs(1)
    with boa.env.prank(owner):
        assert s.escrow.refund(job_id) == 0
    assert s.escrow.get_job(job_id).closed


def test_burn_receiver(s: System) -> None:
    receiver = s.user()
    escrow = deploy("PoAIEscrow", s.usdc.address, s.ctrl.address, receiver)
    _, _, node = s.linked_nd()
    owner = s.user(usdc=PRICE)
    with boa.env.prank(owner):
        s.usdc.approve(escrow.address, PRICE)
        job_id = escrow.create_job(1, 1, PRICE)
    s.advance_epochs(1)
    from . import conftest

    sigs = conftest.sign(model.attestation_inner(escrow.address, job_id, 0, [node]), s.oracles[:3])
    supply = s.usdc.totalSupply()
    escrow.attest(job_id, 0, [node], sigs)
    net, burn = model.poai_split(PRICE)
    assert s.usdc.balanceOf(receiver) == burn
    assert s.usdc.totalSupply() == supply


def test_escrow_constructor_checks() -> None:
    import pytest

    from .conftest import DeployReverted

    with pytest.raises(DeployReverted, match="escrow: zero address"):
        deploy("PoAIEscrow", ZERO, ZERO, ZERO)


def test_extend_job_tops_up_a_running_job(s: System) -> None:
    owner, job_id = _job(s, nodes=2, epochs=2)
    _, _, node = s.linked_nd()
    s.advance_epochs(1)  # in epoch 1 of 0..1
    more = 2 * 3 * PRICE
    s.usdc.mint(owner, more)
    with boa.env.prank(owner):
        with boa.reverts("erc20: insufficient allowance"):
            s.escrow.extend_job(job_id, 3)
        s.usdc.approve(s.escrow.address, more)
        with boa.reverts("escrow: zero epochs"):
            s.escrow.extend_job(job_id, 0)
    stranger = s.user(usdc=more)
    with boa.env.prank(stranger):
        s.usdc.approve(s.escrow.address, more)
        with boa.reverts("escrow: not the job owner"):
            s.escrow.extend_job(job_id, 3)
    with boa.env.prank(owner):
        assert s.escrow.extend_job(job_id, 3) == 5
    (ev,) = events(s.escrow, "JobExtended")
    assert (ev.job_id, ev.epochs, ev.end_epoch, ev.amount) == (job_id, 3, 5, more)
    job = s.escrow.get_job(job_id)
    assert job.end_epoch == 5 and job.balance == 2 * 2 * PRICE + more
    assert s.usdc.balanceOf(s.escrow.address) == job.balance
    s.advance_epochs(3)  # in epoch 4: epochs 2 and 3, paid by the top-up, are payable
    _attest(s, job_id, 3, [node])
    s.advance_epochs(2)  # in 6: the job is over, the window for epoch 4 is closed
    with boa.env.prank(owner), boa.reverts("escrow: job already over"):
        s.escrow.extend_job(job_id, 1)
    with boa.env.prank(owner):
        refunded = s.escrow.refund(job_id)
    net = PRICE - PRICE * model.POAI_BURN_PERCENT // 100
    assert refunded == 2 * 5 * PRICE - PRICE  # one node-epoch paid (net + burn), the rest back
    assert s.usdc.balanceOf(s.escrow.address) == 0 and net > 0
    with boa.env.prank(owner), boa.reverts("escrow: job closed"):
        s.escrow.extend_job(job_id, 1)


def test_total_volume_counts_creates_and_top_ups(s: System) -> None:
    assert s.escrow.total_volume() == 0
    owner, job_id = _job(s, nodes=2, epochs=3)
    assert s.escrow.total_volume() == 2 * 3 * PRICE
    s.usdc.mint(owner, 2 * 4 * PRICE)
    with boa.env.prank(owner):
        s.usdc.approve(s.escrow.address, 2 * 4 * PRICE)
        s.escrow.extend_job(job_id, 4)
    assert s.escrow.total_volume() == 2 * 7 * PRICE
    _job(s, nodes=1, epochs=1)
    assert s.escrow.total_volume() == 2 * 7 * PRICE + PRICE


# --- the burn share buys R1 on the pool, and that R1 is burned ---------------------------------

R1 = 10**18


@pytest.fixture(scope="module")
def uni() -> Uniswap:
    return deploy_uniswap()


def test_attest_buys_r1_on_the_pool_and_burns_it(s: System, uni: Uniswap) -> None:
    market: Market = seed_pool(s, uni, 2_000_000 * R1, 500_000 * USDC)
    assert s.escrow.router() == uni.router.address and s.escrow.r1() == s.r1.address
    op1, _, node1 = s.linked_nd()
    op2, _, node2 = s.linked_nd()
    _, job_id = _job(s, nodes=2, epochs=2)
    s.advance_epochs(1)
    pool = market.pool()
    r1_supply, usdc_supply = s.r1.totalSupply(), s.usdc.totalSupply()
    paid = _attest(s, job_id, 0, [node1, node2])
    net, burn = model.poai_split(PRICE)
    after, bought = pool.buy_r1(2 * burn)
    (ev,) = events(s.escrow, "R1BoughtAndBurned")
    assert paid == 2 * net and s.usdc.balanceOf(op1) == net
    assert bought > 0 and (ev.job_id, ev.epoch, ev.stablecoin_in, ev.r1_burned) == (
        job_id,
        0,
        2 * burn,
        bought,
    )
    assert s.r1.totalSupply() == r1_supply - bought
    assert s.usdc.totalSupply() == usdc_supply  # the stablecoin went into the pool, not burned
    assert market.pool() == after
    assert s.escrow.total_r1_burned() == bought
    assert s.r1.balanceOf(s.escrow.address) == 0
    job = s.escrow.get_job(job_id)
    assert (job.paid, job.burned, job.balance) == (2 * net, 2 * burn, 4 * PRICE - 2 * PRICE)
    # a second epoch buys at the moved price
    s.advance_epochs(1)
    _attest(s, job_id, 1, [node2])
    after2, bought2 = after.buy_r1(burn)
    assert market.pool() == after2 and s.escrow.total_r1_burned() == bought + bought2


def test_set_dex_once_by_the_deployer(s: System, uni: Uniswap) -> None:
    with boa.reverts("escrow: no R1 pool"):
        s.escrow.set_dex(uni.router.address, s.r1.address)
    seed_pool(s, uni, 1_000 * R1, 1_000 * USDC, wire=False)
    with boa.env.prank(s.user()), boa.reverts("escrow: not the deployer"):
        s.escrow.set_dex(uni.router.address, s.r1.address)
    with boa.reverts("escrow: zero address"):
        s.escrow.set_dex(uni.router.address, ZERO)
    s.escrow.set_dex(uni.router.address, s.r1.address)
    with boa.reverts("escrow: dex already set"):
        s.escrow.set_dex(uni.router.address, s.r1.address)


def test_burn_waits_while_the_pool_price_is_off(s: System, uni: Uniswap) -> None:
    market: Market = seed_pool(s, uni, 2_000_000 * R1, 500_000 * USDC)
    _, _, node = s.linked_nd()
    _, job_id = _job(s, nodes=1, epochs=3)
    s.advance_epochs(1)
    with boa.reverts("escrow: nothing to burn"):
        s.escrow.burn_pending()
    # someone pumps R1 in the attestation's block: the 15% would buy few R1, so it waits
    swap(s, uni, usdc_in=150_000 * USDC)
    assert not s.nd.price_check()[2]
    r1_supply = s.r1.totalSupply()
    net, burn = model.poai_split(PRICE)
    assert _attest(s, job_id, 0, [node]) == net
    (ev,) = events(s.escrow, "BurnDeferred")
    assert (ev.job_id, ev.epoch, ev.pending) == (job_id, 0, burn)
    assert s.escrow.pending_burn() == burn and s.r1.totalSupply() == r1_supply
    assert s.escrow.get_job(job_id).burned == burn  # the job's books are the same either way
    with boa.reverts("escrow: pool price moved"):
        s.escrow.burn_pending()
    # arbitrage brings the price back: anyone may burn what waited (or the next attestation does)
    swap(s, uni, r1_in=2_000_000 * R1 - market.pool().r1)
    assert s.nd.price_check()[2]
    pool, r1_supply = market.pool(), s.r1.totalSupply()
    s.escrow.burn_pending()
    after, bought = pool.buy_r1(burn)
    assert s.r1.totalSupply() == r1_supply - bought and market.pool() == after
    assert s.escrow.pending_burn() == 0 and s.escrow.total_r1_burned() == bought
