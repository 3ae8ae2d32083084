"""Master Node Deeds and the Genesis Node Deed: assignment caps, cliff vesting, soulbound tokens."""

from __future__ import annotations

import boa
import pytest

from . import model
from .conftest import CLIFF, COOLDOWN, THRESHOLD, System, deploy, events

ZERO = "0x" + "00" * 20
R1 = 10**18


def _mnd(s: System, amount: int = 1_000_000 * R1) -> tuple[str, int, str]:
    """A fresh holder with an MND linked to a fresh node: (holder, token_id, node)."""
    holder = s.user()
    token = s.mnd.mint_mnd(holder, amount)
    node = s.node()
    with boa.env.prank(holder):
        s.mnd.link(token, node)
    return holder, token, node


def _claim(s: System, token: int, first: int, avails: list[int]) -> int:
    node = s.mnd.node_of(token)
    return int(s.mnd.claim(token, first, bytes(avails), s.sign_availability(node, first, avails)))


def test_metadata_and_gnd(s: System) -> None:
    assert s.mnd.name() == "Ratio1 Master Node Deed"
    assert s.mnd.symbol() == "MND"
    assert s.mnd.ownerOf(1) == s.deployer
    assert s.mnd.GND_TOKEN_ID() == 1
    assert s.mnd.GND_TOTAL() == model.GND_TOTAL
    assert s.mnd.assigned_amount(1) == model.GND_TOTAL
    assert s.mnd.epoch_release(1) == model.gnd_release()
    assert s.mnd.mining_start_epoch(1) == model.GND_FIRST_EPOCH
    assert s.mnd.max_reward(1) == model.GND_TOTAL
    assert s.mnd.MND_MINING_EPOCHS() == model.MND_MINING_EPOCHS
    assert s.mnd.MAX_MND() == model.MND_MAX
    assert s.mnd.MAX_ASSIGNED_PER_LICENCE() == model.MND_MAX_PER_HOLDER
    assert s.mnd.MAX_TOTAL_ASSIGNED() == model.MND_MAX_TOTAL
    assert s.mnd.R1() == s.r1.address and s.mnd.CONTROLLER() == s.ctrl.address
    assert s.mnd.mnd_count() == 0 and s.mnd.total_assigned() == 0
    # the three emission pools add up to the whole supply (to within rounding)
    pools = model.ND_MAX_MINING * model.ND_MAX_LICENCES + model.MND_MAX_TOTAL + model.GND_TOTAL
    assert model.MAX_SUPPLY - model.ND_MAX_LICENCES <= pools <= model.MAX_SUPPLY


def test_mint_mnd(s: System) -> None:
    holder = s.user()
    amount = 123_456 * R1
    token = s.mnd.mint_mnd(holder, amount)
    (ev,) = events(s.mnd, "MndAssigned")
    start = model.mnd_first_mining_epoch(s.epoch(), CLIFF)
    assert token == 2
    assert (ev.to, ev.token_id, ev.assigned_amount, ev.first_mining_epoch) == (
        holder,
        2,
        amount,
        start,
    )
    assert s.mnd.ownerOf(token) == holder
    assert s.mnd.assigned_amount(token) == amount
    assert s.mnd.epoch_release(token) == model.mnd_release(amount)
    assert s.mnd.mining_start_epoch(token) == start == CLIFF
    assert s.mnd.mnd_count() == 1
    assert s.mnd.total_assigned() == amount
    assert s.mnd.holder_assigned(holder) == amount


def test_mint_after_cliff_starts_now(s: System) -> None:
    s.advance_epochs(CLIFF + 4)
    token = s.mnd.mint_mnd(s.user(), R1)
    assert s.mnd.mining_start_epoch(token) == s.epoch() == CLIFF + 4


def test_production_cliff() -> None:
    ctrl = deploy("Controller", boa.env.timestamp, 86400, 86400, model.MND_PRODUCTION_CLIFF)
    r1 = deploy("R1")
    mnd = deploy("MNDLicence", r1.address, ctrl.address)
    token = mnd.mint_mnd(boa.env.generate_address(), R1)
    assert mnd.mining_start_epoch(token) == 223


def test_mint_mnd_reverts(s: System) -> None:
    holder = s.user()
    with boa.env.prank(holder), boa.reverts("ownable: caller is not the owner"):
        s.mnd.mint_mnd(holder, R1)
    with boa.reverts("mnd: zero address"):
        s.mnd.mint_mnd(ZERO, R1)
    with boa.reverts("mnd: invalid amount"):
        s.mnd.mint_mnd(holder, 0)
    with boa.reverts("mnd: invalid amount"):
        s.mnd.mint_mnd(holder, model.MND_MAX_PER_HOLDER + 1)
    s.mnd.mint_mnd(holder, model.MND_MAX_PER_HOLDER - 5)
    with boa.reverts("mnd: holder cap exceeded"):
        s.mnd.mint_mnd(holder, 6)
    s.mnd.mint_mnd(holder, 5)


def test_total_assigned_cap(s: System) -> None:
    full = model.MND_MAX_PER_HOLDER
    n_full = model.MND_MAX_TOTAL // full  # 13 holders at 2%, then the remainder
    for _ in range(n_full):
        s.mnd.mint_mnd(s.user(), full)
    rest = model.MND_MAX_TOTAL - n_full * full
    with boa.reverts("mnd: total assigned cap exceeded"):
        s.mnd.mint_mnd(s.user(), rest + 1)
    s.mnd.mint_mnd(s.user(), rest)
    assert s.mnd.total_assigned() == model.MND_MAX_TOTAL


def test_mnd_count_cap(s: System) -> None:
    holder = s.user()
    for _ in range(model.MND_MAX):
        s.mnd.mint_mnd(holder, 1)
    assert s.mnd.mnd_count() == model.MND_MAX
    with boa.reverts("mnd: all licences assigned"):
        s.mnd.mint_mnd(holder, 1)


def test_soulbound(s: System) -> None:
    holder, token, _ = _mnd(s)
    other = s.user()
    with boa.env.prank(holder), boa.reverts("mnd: licences are soulbound"):
        s.mnd.transferFrom(holder, other, token)
    with boa.env.prank(holder), boa.reverts("mnd: licences are soulbound"):
        s.mnd.safeTransferFrom(holder, other, token)
    with boa.reverts("mnd: licences are soulbound"):
        s.mnd.transferFrom(s.deployer, other, 1)


def test_cliff_vesting(s: System) -> None:
    amount = 900_000 * R1
    holder, token, node = _mnd(s, amount)
    assert s.mnd.claimable_epochs(token) == (CLIFF, 0)
    # before the cliff nothing is claimable, and epochs before it are refused
    s.advance_epochs(CLIFF)
    assert s.mnd.claimable_epochs(token) == (CLIFF, 0)
    with boa.reverts("mnd: epoch before mining start"):
        _claim(s, token, 0, [255])
    with boa.reverts("mnd: epoch not ended"):
        _claim(s, token, CLIFF, [255])
    s.advance_epochs(4)
    assert s.mnd.claimable_epochs(token) == (CLIFF, 4)
    avails = [255, 128, 0, 77]
    release = model.mnd_release(amount)
    expected = model.reward(avails, release, 0, amount)
    assert s.mnd.compute_reward(token, bytes(avails)) == expected
    assert _claim(s, token, CLIFF, avails) == expected
    assert s.r1.balanceOf(holder) == expected
    assert s.mnd.claimed_amount(token) == expected
    assert s.mnd.next_claim_epoch(token) == CLIFF + 4
    with boa.reverts("mnd: epochs already claimed"):
        _claim(s, token, CLIFF, avails)
    with boa.reverts("mnd: epochs skipped"):
        _claim(s, token, CLIFF + 5, [1])


def test_full_vesting_then_cap(s: System) -> None:
    amount = 900 * 1000 * R1 + 899  # not a multiple of 900: the cap, not the release, ends it
    holder, token, _ = _mnd(s, amount)
    s.advance_epochs(CLIFF + 1080 + 1)
    release = model.mnd_release(amount)
    first_part = _claim(s, token, CLIFF, [255] * 900)
    assert first_part == release * 900 == model.vested(amount, release, CLIFF, CLIFF + 900)
    rest = _claim(s, token, CLIFF + 900, [255] * 10)
    assert rest == amount - release * 900 == 899
    assert s.mnd.claimed_amount(token) == amount
    assert _claim(s, token, CLIFF + 910, [255]) == 0
    assert s.r1.balanceOf(holder) == amount
    # fully vested: unlinking no longer needs claims
    with boa.env.prank(holder):
        s.mnd.unlink(token)


def test_gnd_mines_from_epoch_one(s: System) -> None:
    node = s.node()
    s.mnd.link(1, node)
    assert s.mnd.claimable_epochs(1) == (1, 0)
    s.advance_epochs(3)
    assert s.mnd.claimable_epochs(1) == (1, 2)
    with boa.reverts("mnd: epoch before mining start"):
        _claim(s, 1, 0, [255, 255, 255])
    before = s.r1.balanceOf(s.deployer)
    paid = _claim(s, 1, 1, [255, 200])
    assert paid == model.reward([255, 200], model.gnd_release(), 0, model.GND_TOTAL)
    assert s.r1.balanceOf(s.deployer) - before == paid


def test_mnd_link_rules(s: System) -> None:
    holder, token, node = _mnd(s)
    stranger = s.user()
    with boa.env.prank(stranger), boa.reverts("mnd: not the licence owner"):
        s.mnd.link(token, s.node())
    with boa.env.prank(holder), boa.reverts("mnd: zero node address"):
        s.mnd.link(token, ZERO)
    with boa.env.prank(holder), boa.reverts("mnd: node already linked"):
        s.mnd.link(token, node)
    with boa.env.prank(holder), boa.reverts("mnd: link cooldown"):
        s.mnd.link(token, s.node())
    with boa.env.prank(stranger), boa.reverts("mnd: not the licence owner"):
        s.mnd.unlink(token)
    # before the cliff there is nothing to claim: relinking after the cooldown is free
    s.advance(COOLDOWN + 1)
    new_node = s.node()
    with boa.env.prank(holder):
        s.mnd.link(token, new_node)
    assert s.mnd.node_of(token) == new_node and s.mnd.licence_of(new_node) == token
    assert s.mnd.licence_of(node) == 0 and not s.ctrl.is_node_active(node)
    assert s.mnd.last_link_time(token) == boa.env.timestamp
    # after the cliff, ended epochs must be claimed first
    s.advance_epochs(CLIFF + 2)
    with boa.env.prank(holder), boa.reverts("mnd: claim rewards before unlinking"):
        s.mnd.unlink(token)
    first, count = s.mnd.claimable_epochs(token)
    _claim(s, token, first, [255] * count)
    with boa.env.prank(holder):
        s.mnd.unlink(token)
    with boa.env.prank(holder), boa.reverts("mnd: licence not linked"):
        s.mnd.unlink(token)
    assert s.mnd.claimable_epochs(token) == (0, 0)
    with boa.reverts("mnd: licence not linked"):
        _claim(s, token, first, [255])


def test_mnd_claim_needs_threshold(s: System) -> None:
    _, token, node = _mnd(s)
    s.advance_epochs(CLIFF + 2)
    sigs = s.sign_availability(node, CLIFF, [255, 255], s.oracles[: THRESHOLD - 1])
    with boa.reverts("controller: not enough signatures"):
        s.mnd.claim(token, CLIFF, bytes([255, 255]), sigs)
    with boa.reverts("controller: duplicate signer"):
        s.mnd.claim(token, CLIFF, bytes([255, 255]), sigs + sigs[:1])
    with boa.reverts("mnd: no epochs"):
        s.mnd.claim(token, CLIFF, b"", sigs)


def test_mnd_node_cannot_hold_nd_link(s: System) -> None:
    _, _, node = _mnd(s)
    owner = s.user(r1=s.nd.current_price())
    token = s.buy_nd(owner)
    with boa.env.prank(owner), boa.reverts("controller: node already linked"):
        s.nd.link(token, node)
    assert s.ctrl.node_licence(node)[0] == s.mnd.address


@pytest.mark.parametrize("epoch_seconds", [60, 86400])
def test_epoch_length_parameter(epoch_seconds: int) -> None:
    ctrl = deploy("Controller", boa.env.timestamp, epoch_seconds, 0, 0)
    mnd = deploy("MNDLicence", deploy("R1").address, ctrl.address)
    boa.env.time_travel(seconds=epoch_seconds * 3 - 1)
    assert ctrl.current_epoch() == 2
    token = mnd.mint_mnd(boa.env.generate_address(), R1)
    assert mnd.mining_start_epoch(token) == 2
