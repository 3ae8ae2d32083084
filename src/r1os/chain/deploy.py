"""Deploy and wire the r1os contracts on any EVM chain (a devnet anvil or a public RPC).

Order and wiring follow docs/chain-interface.md: R1, Controller, NDLicence, MNDLicence, the
stablecoin (MockUSDC unless a real one is given), PoAIEscrow; then R1 minters, the licence contracts
in the controller, the oracles and the signature threshold. Then, optionally, the DEX (`r1os.chain.dex`):
Uniswap V2 deployed from its npm artifacts or an existing router, the R1/USDC pair, its first
liquidity and the sale/escrow wired to it. The result is a `Deployment`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from eth_account.signers.local import LocalAccount

from r1os.chain import dex
from r1os.chain._base import Web3Base
from r1os.chain.deployment import Deployment
from r1os.errors import ChainError
from r1os.identity import NodeKey, normalize_address

log = logging.getLogger(__name__)

RATIO1_GENESIS = 1748016000
"""Ratio1 mainnet epoch 0: 2025-05-23 16:00 UTC."""
RATIO1_MND_CLIFF_EPOCHS = 223
ZERO = "0x0000000000000000000000000000000000000000"


async def _deploy_dex(
    chain: Web3Base, uniswap: str, seed: tuple[int, int] | None, mint_seed: bool, mock_usdc: bool
) -> None:
    if uniswap == "deploy":
        await dex.deploy_uniswap(chain)
    else:
        await dex.use_router(chain, normalize_address(uniswap))
    await dex.create_pair(chain)
    if seed is None:
        return
    r1_amount, usdc_amount = seed
    if r1_amount <= 0 or usdc_amount <= 0:
        raise ChainError("the pool seed needs both R1 and USDC amounts above zero")
    me = chain.sender
    if mint_seed:
        await chain.transact("R1", "set_minter", me, True)
        await chain.transact("R1", "mint", me, r1_amount)
        await chain.transact("R1", "set_minter", me, False)
        if mock_usdc:
            await chain.transact("USDC", "mint", me, usdc_amount)
    minted = await dex.add_liquidity(chain, r1_amount, usdc_amount)
    log.info(
        "seeded the R1/USDC pool with %d R1 wei and %d USDC units (%d LP)", r1_amount, usdc_amount, minted
    )
    await dex.wire(chain)


def majority(n: int) -> int:
    """Signatures needed out of `n` oracles: a strict majority (2 of 3), at least 1."""
    return max(1, n // 2 + 1)


async def deploy(
    rpc_url: str,
    key: LocalAccount | NodeKey | str | bytes,
    *,
    epoch_seconds: int = 86400,
    genesis_time: int | None = None,
    link_cooldown: int | None = None,
    mnd_cliff_epochs: int = RATIO1_MND_CLIFF_EPOCHS,
    oracles: Sequence[str] = (),
    min_signatures: int | None = None,
    lp_wallet: str | None = None,
    company_wallet: str | None = None,
    stablecoin: str | None = None,
    burn_receiver: str | None = None,
    uniswap: str | None = None,
    seed_pool: tuple[int, int] | None = None,
    mint_seed: bool = False,
    out: Path | None = None,
) -> Deployment:
    """Deploy every contract from `key`'s account, wire them, and return (and optionally save) the result.

    `genesis_time` defaults to the latest block time (epoch 0 starts now); `link_cooldown` to one epoch;
    `min_signatures` to a majority of `oracles`; the sale wallets to the deployer; `stablecoin` to a fresh
    MockUSDC (whose `burn` the escrow then calls, so `burn_receiver` stays 0x0).

    `uniswap`: None (no DEX: the ND price is the owner-set one), `"deploy"` (Uniswap V2 from the npm
    artifacts) or an existing Router02 address (on Base: `dex.BASE_UNISWAP_V2_ROUTER`); either way the
    R1/USDC pair is created. `seed_pool=(r1, usdc)` adds that first liquidity from the deployer and
    points the ND sale and the escrow's burn at the pool; R1 can only be minted, so the seed needs
    `mint_seed=True` (test networks: the deployer is made an R1 minter for the seed and the minter
    right is revoked after; a MockUSDC is minted too) or R1 the deployer already holds.
    """
    if epoch_seconds <= 0:
        raise ChainError("epoch_seconds must be positive")
    oracle_addrs = [normalize_address(o) for o in oracles]
    if len(set(oracle_addrs)) != len(oracle_addrs):
        raise ChainError("the oracle list has duplicates")
    threshold = majority(len(oracle_addrs)) if min_signatures is None else min_signatures
    if oracle_addrs and not 1 <= threshold <= len(oracle_addrs):
        raise ChainError(f"min_signatures {threshold} must be 1..{len(oracle_addrs)}")

    chain = Web3Base(rpc_url, {}, key, timeout=120.0)
    me = chain.sender
    chain_id = int(await chain._run("eth_chainId", lambda: chain.w3.eth.chain_id))
    latest = await chain._run("eth_getBlockByNumber", lambda: chain.w3.eth.get_block("latest"))
    genesis = int(latest["timestamp"]) if genesis_time is None else genesis_time
    cooldown = epoch_seconds if link_cooldown is None else link_cooldown
    log.info("deploying r1os contracts to chain %d from %s", chain_id, me)

    addresses: dict[str, str] = {}

    async def _deploy(name: str, *args: object, as_name: str | None = None) -> str:
        receipt = await chain.deploy_contract(name, *args)
        address = str(receipt["contractAddress"])
        addresses[as_name or name] = address
        log.info("deployed %s at %s (gas %d)", name, address, receipt["gasUsed"])
        return address

    r1 = await _deploy("R1")
    first_block = int(await chain._run("eth_blockNumber", lambda: chain.w3.eth.block_number))
    controller = await _deploy("Controller", genesis, epoch_seconds, cooldown, mnd_cliff_epochs)
    nd = await _deploy(
        "NDLicence",
        r1,
        controller,
        normalize_address(lp_wallet) if lp_wallet else me,
        normalize_address(company_wallet) if company_wallet else me,
    )
    mnd = await _deploy("MNDLicence", r1, controller)
    if stablecoin is None:
        usdc = await _deploy("MockUSDC", as_name="USDC")
    else:
        usdc = addresses["USDC"] = normalize_address(stablecoin)
    receiver = normalize_address(burn_receiver) if burn_receiver else ZERO
    await _deploy("PoAIEscrow", usdc, controller, receiver)

    chain.addresses.update(addresses)
    await chain.transact("R1", "set_minter", nd, True)
    await chain.transact("R1", "set_minter", mnd, True)
    await chain.transact("Controller", "set_licence_contracts", nd, mnd)
    await chain.transact("MNDLicence", "set_adoption_sources", nd, addresses["PoAIEscrow"])
    for oracle in oracle_addrs:
        await chain.transact("Controller", "add_oracle", oracle)
    if oracle_addrs or min_signatures is not None:
        await chain.transact("Controller", "set_min_signatures", threshold)
    if uniswap is not None:
        await _deploy_dex(chain, uniswap, seed_pool, mint_seed, stablecoin is None)
        addresses.update({k: chain.addresses[k] for k in dex.DEX_KEYS})
    elif seed_pool is not None:
        raise ChainError("seeding a pool needs a DEX", hint="pass uniswap='deploy' or a router address")

    deployment = Deployment(
        rpc=rpc_url,
        chain_id=chain_id,
        contracts=addresses,
        genesis_time=genesis,
        epoch_seconds=epoch_seconds,
        deployer=me,
        block=first_block,
    )
    if out is not None:
        deployment.save(out)
    return deployment
