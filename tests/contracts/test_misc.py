"""Constructor checks and the before-genesis guards of every epoch-aware contract."""

from __future__ import annotations

import boa
import pytest

from .conftest import EPOCH, DeployReverted, deploy

ZERO = "0x" + "00" * 20


def test_licence_constructor_checks() -> None:
    r1 = deploy("R1")
    ctrl = deploy("Controller", 0, EPOCH, 0, 0)
    one = str(boa.env.generate_address())
    for args in [(ZERO, ctrl.address, one, one), (r1.address, ZERO, one, one)]:
        with pytest.raises(DeployReverted, match="nd: zero address"):
            deploy("NDLicence", *args)
    for args in [(r1.address, ctrl.address, ZERO, one), (r1.address, ctrl.address, one, ZERO)]:
        with pytest.raises(DeployReverted, match="nd: zero address"):
            deploy("NDLicence", *args)
    for args in [(ZERO, ctrl.address), (r1.address, ZERO)]:
        with pytest.raises(DeployReverted, match="mnd: zero address"):
            deploy("MNDLicence", *args)


def test_before_genesis_guards() -> None:
    genesis = boa.env.timestamp + 10 * EPOCH
    r1 = deploy("R1")
    ctrl = deploy("Controller", genesis, EPOCH, 0, 2)
    nd = deploy("NDLicence", r1.address, ctrl.address, r1.address, r1.address)
    mnd = deploy("MNDLicence", r1.address, ctrl.address)
    usdc = deploy("MockUSDC")
    escrow = deploy("PoAIEscrow", usdc.address, ctrl.address, ZERO)
    ctrl.set_licence_contracts(nd.address, mnd.address)
    node = str(boa.env.generate_address())
    with boa.reverts("mnd: before genesis"):
        mnd.link(1, node)
    with boa.reverts("mnd: before genesis"):
        mnd.mint_mnd(node, 1)
    with boa.reverts("escrow: before genesis"):
        escrow.create_job(1, 1, 1)
    r1.set_minter(boa.env.eoa, True)
    r1.mint(boa.env.eoa, 10**21)
    r1.approve(nd.address, 10**21)
    token = nd.buy(10**21)  # buying needs no epoch
    with boa.reverts("nd: before genesis"):
        nd.link(token, node)
    boa.env.time_travel(seconds=10 * EPOCH)
    nd.link(token, node)
    assert ctrl.is_node_active(node)


def test_runtime_code_fits_eip170(s) -> None:  # type: ignore[no-untyped-def]
    """Every deployed contract stays under the 24,576-byte runtime code limit of public chains."""
    for c in (s.r1, s.ctrl, s.nd, s.mnd, s.usdc, s.escrow):
        assert 0 < len(boa.env.get_code(c.address)) <= 24_576
