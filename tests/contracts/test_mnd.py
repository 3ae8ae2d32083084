"""Master Node Deeds and the Genesis Node Deed: assignment caps, the cliff, the adoption-scaled
logistic release (against tests/contracts/model.py to the wei), soulbound tokens."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import model
from .conftest import CLIFF, COOLDOWN, THRESHOLD, System, deploy, events

ZERO = "0x" + "00" * 20
R1 = 10**18
ONE = model.ADOPTION_ONE
FULL_ND = model.ADOPTION_ND_TARGET  # Node Deeds sold for an ND score of 1

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# The adoption counters, settable: stands in for NDLicence.total_minted and PoAIEscrow.total_volume.
_COUNTERS = """
# pragma version ~=0.4.3
total_minted: public(uint256)
total_volume: public(uint256)

@external
def set(sold: uint256, volume: uint256):
    self.total_minted = sold
    self.total_volume = volume
"""
_counters_cache: list[Any] = []


def counters(s: System, sold: int = FULL_ND, volume: int = model.ADOPTION_VOLUME_TARGET) -> Any:
    """Wire settable adoption counters into the MND contract (inside the test's snapshot)."""
    if not _counters_cache:
        _counters_cache.append(boa.loads_partial(_COUNTERS, name="AdoptionCounters"))
    c = _counters_cache[0].deploy()
    c.set(sold, volume)
    s.mnd.set_adoption_sources(c.address, c.address)
    return c


def _chunks(values: list[int], cuts: list[int]) -> list[list[int]]:
    points = sorted({c % len(values) for c in cuts} - {0})
    out, prev = [], 0
    for p in [*points, len(values)]:
        out.append(values[prev:p])
        prev = p
    return out


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
    assert s.mnd.MND_CURVE_SUM() == model.MND_CURVE_SUM
    assert s.mnd.ADOPTION_ONE() == ONE
    assert s.mnd.ADOPTION_ND_TARGET() == model.ADOPTION_ND_TARGET
    assert s.mnd.ADOPTION_VOLUME_TARGET() == model.ADOPTION_VOLUME_TARGET
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
    assert s.mnd.epoch_release(token) == model.mnd_curve_release(amount, 0)
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


def test_curve_table_matches_model(s: System) -> None:
    weights = [s.mnd.curve_weight(x) for x in range(model.MND_MINING_EPOCHS + 2)]
    assert weights[: model.MND_MINING_EPOCHS] == list(model.MND_CURVE)
    assert weights[-2:] == [model.MND_CURVE[-1]] * 2  # after 900 epochs: the last rate
    # S-shaped: rising, steepest at 70% of the 900 epochs, from ~3% to ~82% of the plateau
    steps = [b - a for a, b in zip(model.MND_CURVE, model.MND_CURVE[1:], strict=False)]
    assert all(d > 0 for d in steps)
    assert max(range(len(steps)), key=steps.__getitem__) in (629, 630)
    assert 0.028 < model.MND_CURVE[0] / 2**32 < 0.03 and 0.81 < model.MND_CURVE[-1] / 2**32 < 0.82


def test_adoption(s: System) -> None:
    assert s.mnd.adoption() == 0 and s.mnd.adoption_inputs() == (0, 0)  # no sources: nothing adopted
    c = counters(s, 0, 0)
    (ev,) = events(s.mnd, "AdoptionSourcesSet")
    assert (ev.nd, ev.escrow) == (c.address, c.address)
    assert s.mnd.adoption_nd() == s.mnd.adoption_escrow() == c.address
    for sold, volume in [
        (1, 0),
        (0, 1),
        (3_750, 0),
        (0, 2_500_000 * 10**6),
        (7_499, 4_999_999_999_999),
        (7_500, 0),
        (15_000, 0),
        (46_224, 10**15),
        (123, 456_789_012),
    ]:
        c.set(sold, volume)
        assert s.mnd.adoption_inputs() == (sold, volume)
        assert s.mnd.adoption() == model.adoption(sold, volume)
    assert (
        model.adoption(7_500, 5 * 10**12)
        == ONE
        == model.adoption(15_000, 0)
        == model.adoption(46_224, 10**15)
    )
    assert model.adoption(3_750, 0) == ONE // 4
    with boa.env.prank(s.user()), boa.reverts("ownable: caller is not the owner"):
        s.mnd.set_adoption_sources(c.address, c.address)


def test_adoption_reads_nd_sales(s: System) -> None:
    s.mnd.set_adoption_sources(s.nd.address, ZERO)
    for _ in range(3):
        s.buy_nd(s.user(r1=s.nd.current_price()))
    assert s.mnd.adoption_inputs() == (3, 0)
    assert s.mnd.adoption() == model.adoption(3, 0) == 3 * ONE // 7_500 // 2


def test_cliff_vesting(s: System) -> None:
    amount = 900_000 * R1
    c = counters(s, 3_000, 10**12)  # adoption 0.3
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
    account = model.MndAccount(amount)
    ad = model.adoption(3_000, 10**12)
    assert s.mnd.adoption() == ad == 3 * ONE // 10
    expected = model.MndAccount(amount).claim(avails, ad)
    assert s.mnd.compute_reward(token, bytes(avails)) == expected
    assert _claim(s, token, CLIFF, avails) == account.claim(avails, ad) == expected > 0
    assert s.r1.balanceOf(holder) == expected
    assert s.mnd.claimed_amount(token) == expected
    assert s.mnd.earned_amount(token) == account.earned == model.mnd_earned(amount, 0, avails)
    assert s.mnd.withheld_amount(token) == account.withheld > 0
    assert s.mnd.next_claim_epoch(token) == CLIFF + 4
    assert s.mnd.epoch_release(token) == model.mnd_curve_release(amount, 4)
    with boa.reverts("mnd: epochs already claimed"):
        _claim(s, token, CLIFF, avails)
    with boa.reverts("mnd: epochs skipped"):
        _claim(s, token, CLIFF + 5, [1])
    # adoption rises: the withheld part follows without new epochs, paid to the holder by anyone
    c.set(6_000, 3 * 10**12)
    with boa.env.prank(s.user()):
        released = s.mnd.release_withheld(token)
    assert released == account.release(model.adoption(6_000, 3 * 10**12)) > 0
    (ev,) = events(s.mnd, "WithheldReleased")
    assert (ev.token_id, ev.owner, ev.amount) == (token, holder, released)
    assert s.mnd.release_withheld(token) == 0  # nothing new until adoption rises again
    assert s.r1.balanceOf(holder) == account.paid


def test_no_adoption_pays_nothing_until_it_comes(s: System) -> None:
    amount = 50_000 * R1
    c = counters(s, 0, 0)
    holder, token, _ = _mnd(s, amount)
    s.advance_epochs(CLIFF + 10)
    assert _claim(s, token, CLIFF, [255] * 10) == 0
    earned = model.mnd_earned(amount, 0, [255] * 10)
    assert s.mnd.withheld_amount(token) == s.mnd.earned_amount(token) == earned
    # never lost: full adoption later pays all of it, even after unlinking
    with boa.env.prank(holder):
        s.mnd.unlink(token)
    c.set(2 * FULL_ND, 0)  # ND score 2, volume 0: the mean is 1
    assert s.mnd.release_withheld(token) == earned == s.r1.balanceOf(holder)
    assert s.mnd.withheld_amount(token) == 0
    with boa.reverts("mnd: no such licence"):
        s.mnd.release_withheld(999)


def test_full_vesting_then_cap(s: System) -> None:
    amount = 900 * 1000 * R1 + 899
    counters(s)
    holder, token, _ = _mnd(s, amount)
    s.advance_epochs(CLIFF + 1080 + 1)
    curve = [model.mnd_curve_release(amount, x) for x in range(900)]
    first_part = _claim(s, token, CLIFF, [255] * 900)
    assert first_part == sum(curve) == model.mnd_earned(amount, 0, [255] * 900)
    assert amount - 900 < first_part < amount  # the curve adds up to the assignment, less rounding
    # a node that missed epochs keeps earning at the last rate until the assignment is reached
    rest = _claim(s, token, CLIFF + 900, [255] * 10)
    assert rest == amount - first_part
    assert s.mnd.claimed_amount(token) == s.mnd.earned_amount(token) == amount
    assert _claim(s, token, CLIFF + 910, [255]) == 0
    assert s.r1.balanceOf(holder) == amount
    # fully earned: unlinking no longer needs claims
    with boa.env.prank(holder):
        s.mnd.unlink(token)


def test_gnd_is_linear_and_not_scaled(s: System) -> None:
    counters(s, 1, 0)  # adoption ~0 does not hold the GND back
    s.mnd.link(1, s.node())
    s.advance_epochs(4)
    avails = [255, 10, 255]
    paid = _claim(s, 1, 1, avails)
    assert paid == model.reward(avails, model.gnd_release(), 0, model.GND_TOTAL)
    assert s.mnd.earned_amount(1) == paid and s.mnd.withheld_amount(1) == 0
    assert s.mnd.release_withheld(1) == 0
    assert s.mnd.epoch_release(1) == model.gnd_release()


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
    counters(s)
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


# --- properties ---------------------------------------------------------------------------------

adoption_pair = st.tuples(st.integers(0, 2 * FULL_ND), st.integers(0, 2 * model.ADOPTION_VOLUME_TARGET))


@SETTINGS
@given(
    amount=st.integers(1, model.MND_MAX_PER_HOLDER),
    assign_at=st.integers(0, 2 * CLIFF),
    avails=st.lists(st.integers(0, 255), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 10_000), max_size=3),
    adoptions=st.lists(adoption_pair, min_size=4, max_size=4),
)
def test_mnd_claims_match_model(
    s: System,
    amount: int,
    assign_at: int,
    avails: list[int],
    cuts: list[int],
    adoptions: list[tuple[int, int]],
) -> None:
    """Claims in pieces, with adoption moving (up) between them, pay what the model pays."""
    with boa.env.anchor():
        c = counters(s, 0, 0)
        s.advance_epochs(assign_at)
        holder = s.user()
        token = s.mnd.mint_mnd(holder, amount)
        start = model.mnd_first_mining_epoch(assign_at, CLIFF)
        assert s.mnd.mining_start_epoch(token) == start
        node = s.node()
        with boa.env.prank(holder):
            s.mnd.link(token, node)
        s.advance_epochs(start - s.epoch() + len(avails))
        account = model.MndAccount(amount)
        levels = sorted(adoptions, key=lambda p: model.adoption(*p))  # the counters only grow
        epoch = start
        for i, chunk in enumerate(_chunks(avails, cuts)):
            c.set(*levels[min(i, 3)])
            ad = model.adoption(*levels[min(i, 3)])
            sigs = s.sign_availability(node, epoch, chunk)
            assert s.mnd.claim(token, epoch, bytes(chunk), sigs) == account.claim(chunk, ad)
            epoch += len(chunk)
        assert s.r1.balanceOf(holder) == account.paid == s.mnd.claimed_amount(token)
        assert s.mnd.earned_amount(token) == account.earned
        # what was paid depends only on the epochs and the last adoption: split claims pay as one
        last = model.adoption(*levels[min(len(_chunks(avails, cuts)) - 1, 3)])
        assert account.paid == model.MndAccount(amount).claim(avails, last)
        # withheld amounts come out once adoption is full
        c.set(FULL_ND, model.ADOPTION_VOLUME_TARGET)
        assert s.mnd.release_withheld(token) == account.release(ONE)
        assert s.r1.balanceOf(holder) == account.earned == model.mnd_earned(amount, 0, avails)


@SETTINGS
@given(amount=st.integers(1, 10**9), extra=st.integers(0, 180), adoption=adoption_pair)
def test_mnd_never_pays_past_assignment(
    s: System, amount: int, extra: int, adoption: tuple[int, int]
) -> None:
    """Small assignments (a few wei per epoch) and claims past the 900 epochs stop at the assignment."""
    with boa.env.anchor():
        c = counters(s, *adoption)
        holder, token, node = _mnd(s, amount)
        n = 900 + extra
        s.advance_epochs(CLIFF + n)
        paid = _claim(s, token, CLIFF, [255] * n)
        account = model.MndAccount(amount)
        assert paid == account.claim([255] * n, model.adoption(*adoption)) <= amount
        c.set(2 * FULL_ND, 0)  # ND score 2, volume 0: the mean is 1
        paid += s.mnd.release_withheld(token)
        assert paid == account.earned == min(amount, model.mnd_earned(amount, 0, [255] * n)) <= amount
        assert s.r1.balanceOf(holder) == paid


@SETTINGS
@given(
    avails=st.lists(st.integers(0, 255), min_size=1, max_size=60),
    sold=st.lists(st.integers(0, 2 * FULL_ND), min_size=2, max_size=2),
    volume=st.lists(st.integers(0, 2 * model.ADOPTION_VOLUME_TARGET), min_size=2, max_size=2),
)
def test_mnd_pay_is_monotone_in_adoption(
    s: System, avails: list[int], sold: list[int], volume: list[int]
) -> None:
    with boa.env.anchor():
        c = counters(s, 0, 0)
        _, token, _ = _mnd(s, 2_000_000 * R1)
        s.advance_epochs(CLIFF + len(avails))
        pays = []
        for lo_hi in ((min(sold), min(volume)), (max(sold), max(volume))):
            c.set(*lo_hi)
            pays.append(s.mnd.compute_reward(token, bytes(avails)))
        assert pays[0] <= pays[1] <= model.mnd_earned(2_000_000 * R1, 0, avails)
