"""R1 (capped, minter-gated, burnable) and the devnet MockUSDC faucet."""

from __future__ import annotations

import boa

from . import model
from .conftest import R1, USDC, System, deploy


def test_r1_metadata_and_cap(s: System) -> None:
    assert s.r1.name() == "Ratio1"
    assert s.r1.symbol() == "R1"
    assert s.r1.decimals() == 18
    assert s.r1.MAX_SUPPLY() == model.MAX_SUPPLY
    assert s.r1.owner() == s.deployer


def test_r1_has_no_minter_after_deploy() -> None:
    r1 = deploy("R1")
    assert not r1.is_minter(boa.env.eoa)
    assert r1.totalSupply() == 0
    with boa.reverts("R1: caller is not a minter"):
        r1.mint(boa.env.eoa, 1)


def test_r1_mint_only_by_minters(s: System) -> None:
    stranger = s.user()
    with boa.env.prank(stranger), boa.reverts("R1: caller is not a minter"):
        s.r1.mint(stranger, 1)
    assert s.r1.is_minter(s.nd.address) and s.r1.is_minter(s.mnd.address)


def test_r1_cap_is_enforced(s: System) -> None:
    room = model.MAX_SUPPLY - s.r1.totalSupply()
    holder = s.user()
    with boa.reverts("R1: supply cap exceeded"):
        s.r1.mint(holder, room + 1)
    s.r1.mint(holder, room)
    assert s.r1.totalSupply() == model.MAX_SUPPLY
    with boa.reverts("R1: supply cap exceeded"):
        s.r1.mint(holder, 1)
    # burning frees room under the cap again
    with boa.env.prank(holder):
        s.r1.burn(10)
    s.r1.mint(holder, 10)
    assert s.r1.totalSupply() == model.MAX_SUPPLY


def test_r1_set_minter_owner_only(s: System) -> None:
    stranger = s.user()
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        s.r1.set_minter(stranger, True)
    with boa.reverts("R1: zero address"):
        s.r1.set_minter("0x" + "00" * 20, True)
    s.r1.set_minter(stranger, True)
    assert s.r1.is_minter(stranger)
    s.r1.set_minter(stranger, False)
    with boa.env.prank(stranger), boa.reverts("R1: caller is not a minter"):
        s.r1.mint(stranger, 1)


def test_r1_burn_and_burn_from(s: System) -> None:
    a, b = s.user(r1=10 * R1), s.user()
    supply = s.r1.totalSupply()
    with boa.env.prank(a):
        s.r1.burn(3 * R1)
    assert s.r1.balanceOf(a) == 7 * R1
    assert s.r1.totalSupply() == supply - 3 * R1
    with boa.env.prank(b), boa.reverts("erc20: insufficient allowance"):
        s.r1.burn_from(a, R1)
    with boa.env.prank(a):
        s.r1.approve(b, 2 * R1)
    with boa.env.prank(b):
        s.r1.burn_from(a, 2 * R1)
    assert s.r1.balanceOf(a) == 5 * R1
    with boa.env.prank(a), boa.reverts("erc20: burn amount exceeds balance"):
        s.r1.burn(6 * R1)


def test_r1_transfer_and_ownership(s: System) -> None:
    a, b = s.user(r1=5 * R1), s.user()
    with boa.env.prank(a):
        s.r1.transfer(b, 2 * R1)
    assert s.r1.balanceOf(b) == 2 * R1
    s.r1.transfer_ownership(b)
    assert s.r1.owner() == b
    # ownership does not carry minting rights
    assert not s.r1.is_minter(b)
    with boa.reverts("ownable: caller is not the owner"):
        s.r1.set_minter(a, True)


def test_mock_usdc_faucet(s: System) -> None:
    assert s.usdc.decimals() == 6
    assert s.usdc.symbol() == "USDC"
    anyone = s.user()
    with boa.env.prank(anyone):
        s.usdc.mint(anyone, 5 * USDC)
        s.usdc.burn(USDC)
    assert s.usdc.balanceOf(anyone) == 4 * USDC
    assert s.usdc.totalSupply() == 4 * USDC
