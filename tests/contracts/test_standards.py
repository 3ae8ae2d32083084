"""Standard surfaces: EIP-2612 permits on both ERC-20s, ERC-721/165 views on both licence contracts."""

from __future__ import annotations

import boa
import pytest
from eth_account import Account

from .conftest import CLIFF, R1, System

ZERO = "0x" + "00" * 20


@pytest.mark.parametrize("token", ["r1", "usdc"])
def test_permit(s: System, token: str) -> None:
    erc20 = getattr(s, token)
    owner = Account.from_key(b"\x42" * 32)
    if token == "r1":
        s.r1.mint(owner.address, 5 * R1)
    else:
        s.usdc.mint(owner.address, 5 * R1)
    spender = s.user()
    fields, name, version, chain_id, verifying, _, _ = erc20.eip712Domain()
    assert fields == b"\x0f" and verifying == erc20.address
    deadline = boa.env.timestamp + 3600
    nonce = erc20.nonces(owner.address)
    signed = Account.sign_typed_data(
        owner.key,
        {"name": name, "version": version, "chainId": chain_id, "verifyingContract": verifying},
        {
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ]
        },
        {"owner": owner.address, "spender": spender, "value": 2 * R1, "nonce": nonce, "deadline": deadline},
    )
    assert len(erc20.DOMAIN_SEPARATOR()) == 32
    erc20.permit(
        owner.address,
        spender,
        2 * R1,
        deadline,
        signed.v,
        signed.r.to_bytes(32, "big"),
        signed.s.to_bytes(32, "big"),
    )
    assert erc20.allowance(owner.address, spender) == 2 * R1
    assert erc20.nonces(owner.address) == nonce + 1
    with boa.env.prank(spender):
        erc20.transferFrom(owner.address, spender, 2 * R1)
    assert erc20.balanceOf(spender) == 2 * R1
    # a replayed permit is refused
    with boa.reverts():
        erc20.permit(
            owner.address,
            spender,
            2 * R1,
            deadline,
            signed.v,
            signed.r.to_bytes(32, "big"),
            signed.s.to_bytes(32, "big"),
        )


def _licence(s: System, which: str) -> tuple[object, str, int]:
    if which == "nd":
        owner = s.user(r1=s.nd.current_price())
        return s.nd, owner, s.buy_nd(owner)
    owner = s.user()
    return s.mnd, owner, int(s.mnd.mint_mnd(owner, R1))


@pytest.mark.parametrize("which", ["nd", "mnd"])
def test_erc721_views(s: System, which: str) -> None:
    c, owner, token = _licence(s, which)
    assert c.supportsInterface(bytes.fromhex("80ac58cd"))  # ERC-721
    assert c.supportsInterface(bytes.fromhex("780e9d63"))  # enumerable
    assert c.supportsInterface(bytes.fromhex("01ffc9a7"))  # ERC-165
    assert not c.supportsInterface(bytes.fromhex("ffffffff"))
    assert c.tokenByIndex(c.totalSupply() - 1) == token
    assert c.tokenURI(token) == ""
    with boa.reverts("erc721: invalid token ID"):
        c.tokenURI(10**9)
    operator = s.user()
    assert c.getApproved(token) == ZERO
    with boa.env.prank(owner):
        c.approve(operator, token)
        c.setApprovalForAll(operator, True)
    assert c.getApproved(token) == operator
    assert c.isApprovedForAll(owner, operator)


def test_constants(s: System) -> None:
    assert s.ctrl.MAX_ORACLES() == 32
    assert s.ctrl.MAX_CLAIM_EPOCHS() == 1080
    assert s.escrow.MAX_NODES() == 32
    assert s.mnd.GND_MINING_EPOCHS() == 365
    assert s.mnd.GND_FIRST_EPOCH() == 1
    assert s.nd.r1_usd_price() == 10**18
    assert s.ctrl.mnd_cliff_epochs() == CLIFF
