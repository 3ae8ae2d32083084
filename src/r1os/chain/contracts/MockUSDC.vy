# pragma version ~=0.4.3
"""
@title MockUSDC, a devnet stablecoin
@notice ERC-20 with 6 decimals whose `mint` is open to anyone: a faucet for local networks only.
        Production deployments point the PoAI escrow at a real stablecoin instead.
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
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
)


@deploy
def __init__():
    ownable.__init__()
    erc20.__init__("Mock USD Coin", "USDC", 6, "Mock USD Coin", "1")


@external
def mint(owner: address, amount: uint256):
    """
    @notice Faucet: anyone may mint test dollars to anyone.
    """
    erc20._mint(owner, amount)
