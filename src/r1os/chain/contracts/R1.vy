# pragma version ~=0.4.3
"""
@title R1, the Ratio1 utility token
@notice ERC-20 "Ratio1"/"R1" with 18 decimals and a hard supply cap of 161,803,398 R1.
        New R1 only comes from mining: the owner authorises the licence contracts as minters
        (`set_minter`), and `mint` refuses anything past the cap. Anyone may burn their own R1
        (`burn`) or R1 they are allowed to spend (`burn_from`).
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: (
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.transfer,
    erc20.transferFrom,
    erc20.approve,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.burn,
    erc20.burn_from,
    erc20.is_minter,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)

MAX_SUPPLY: public(constant(uint256)) = 161_803_398 * 10**18


@deploy
def __init__():
    ownable.__init__()
    erc20.__init__("Ratio1", "R1", 18, "Ratio1", "1")
    # snekmate makes the deployer a minter; R1 starts with no minter at all.
    erc20.is_minter[msg.sender] = False
    log erc20.RoleMinterChanged(minter=msg.sender, status=False)


@external
def set_minter(minter: address, status: bool):
    """
    @notice Owner: allow or forbid `minter` to mint (the ND and MND contracts in production).
    """
    ownable._check_owner()
    assert minter != empty(address), "R1: zero address"
    erc20.is_minter[minter] = status
    log erc20.RoleMinterChanged(minter=minter, status=status)


@external
def mint(owner: address, amount: uint256):
    """
    @notice Mint `amount` R1 to `owner`; only minters (the licence contracts), never past the cap.
    """
    assert erc20.is_minter[msg.sender], "R1: caller is not a minter"
    assert erc20.totalSupply + amount <= MAX_SUPPLY, "R1: supply cap exceeded"
    erc20._mint(owner, amount)
