"""Uniswap V2 on an r1os chain: the R1/USDC pool that prices Node Deeds and takes the PoAI burn.

Nothing here is an AMM of our own: the factory, pair, router and WETH9 are the compiled contracts
the npm packages `@uniswap/v2-core` (UniswapV2Factory, UniswapV2Pair) and `@uniswap/v2-periphery`
(UniswapV2Router02, WETH9) ship in their `build/` folders, installed at the repository root by
`./dev setup` (`npm install`). This module loads those artifacts, deploys them, creates and seeds
the R1/USDC pair, and points NDLicence and PoAIEscrow at it.

Deployment keys (`Deployment.contracts`): `UniswapV2Factory`, `UniswapV2Router02`, `WETH9` and
`R1USDCPair` (the pair).
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1os.chain.compile import CompiledContract
from r1os.errors import ChainError

if TYPE_CHECKING:
    from r1os.chain._base import Web3Base

log = logging.getLogger(__name__)

ARTIFACTS: dict[str, tuple[str, str]] = {
    "UniswapV2Factory": ("@uniswap/v2-core", "UniswapV2Factory"),
    "UniswapV2Pair": ("@uniswap/v2-core", "UniswapV2Pair"),
    "UniswapV2Router02": ("@uniswap/v2-periphery", "UniswapV2Router02"),
    "WETH9": ("@uniswap/v2-periphery", "WETH9"),
}
"""Artifact name -> (npm package, build file stem)."""

ABI_NAMES = {name: name for name in ARTIFACTS} | {"R1USDCPair": "UniswapV2Pair"}
"""Deployment name -> artifact whose ABI it uses."""

DEX_KEYS = ("UniswapV2Factory", "WETH9", "UniswapV2Router02", "R1USDCPair")
"""What a deployment with a DEX records, in deploy order."""

PAIR_INIT_CODE_HASH = "96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f"
"""keccak of UniswapV2Pair's creation code, which Router02 has built in to find pairs."""

_HINT = (
    "run `npm install` at the repository root (or ./dev setup): package.json pins @uniswap/v2-core"
    " and @uniswap/v2-periphery; or set R1OS_NODE_MODULES to a node_modules folder holding them"
)


def _node_modules() -> list[Path]:
    env = os.environ.get("R1OS_NODE_MODULES")
    if env:
        return [Path(env)]
    here = Path(__file__).resolve()
    cwd = Path.cwd()
    roots = [p for p in (*here.parents, cwd, *cwd.parents) if (p / "package.json").is_file()]
    return [r / "node_modules" for r in roots]


def artifact_path(name: str) -> Path:
    """Where the build JSON of `name` is (ChainError with an install hint if absent)."""
    try:
        package, stem = ARTIFACTS[name]
    except KeyError:
        raise ChainError(
            f"no Uniswap artifact named {name!r}", hint=f"known: {', '.join(ARTIFACTS)}"
        ) from None
    for nm in _node_modules():
        path = nm / package / "build" / f"{stem}.json"
        if path.is_file():
            return path
    raise ChainError(f"the Uniswap V2 artifact {package}/build/{stem}.json is not installed", hint=_HINT)


@cache
def artifact(name: str) -> CompiledContract:
    """ABI and creation bytecode of a Uniswap V2 contract, from its npm build artifact."""
    path = artifact_path(name)
    try:
        data = json.loads(path.read_text())
        code = data["bytecode"]
        if isinstance(code, dict):
            code = code["object"]
        bytecode = bytes.fromhex(str(code).removeprefix("0x"))
        abi = list(data["abi"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChainError(f"cannot read the Uniswap artifact {path}: {exc}", hint=_HINT) from None
    if not bytecode:
        raise ChainError(f"the Uniswap artifact {path} has no bytecode", hint=_HINT)
    return CompiledContract(name=name, abi=abi, bytecode=bytecode)


def abi(name: str) -> list[dict[str, Any]]:
    """ABI of a DEX deployment name (`R1USDCPair` uses the pair's)."""
    return artifact(ABI_NAMES[name]).abi


def available() -> bool:
    """True if the artifacts are installed."""
    try:
        for name in ARTIFACTS:
            artifact_path(name)
    except ChainError:
        return False
    return True


def check_pair_code() -> None:
    """Refuse artifacts whose pair code is not the one Router02 computes pair addresses for."""
    from eth_hash.auto import keccak

    got = keccak(artifact("UniswapV2Pair").bytecode).hex()
    if got != PAIR_INIT_CODE_HASH:
        raise ChainError(
            f"UniswapV2Pair's creation code hash is {got[:10]}…,"
            f" not the {PAIR_INIT_CODE_HASH[:10]}… Router02 expects",
            hint="install the pinned @uniswap/v2-core (package.json)",
        )


# --- the constant-product formulas the pair and router apply (UniswapV2Library) ---------------


def amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """What a swap of `amount_in` pays out after the 0.3% fee."""
    with_fee = amount_in * 997
    return with_fee * reserve_out // (reserve_in * 1000 + with_fee)


def spot_usd_per_r1(r1_reserve: int, usdc_reserve: int) -> int:
    """USD per R1 with 18 decimals, from reserves (USDC has 6 decimals): what NDLicence prices with."""
    return usdc_reserve * 10**30 // r1_reserve


# --- on a chain -------------------------------------------------------------------------------

BASE_UNISWAP_V2_FACTORY = "0x8909Dc15e40173Ff4699343b6eB8132c65e18eC6"
BASE_UNISWAP_V2_ROUTER = "0x4752ba5DBc23f44D87826276BF6Fd6b1C372aD24"
"""Uniswap V2 on Base mainnet (chain 8453), as Uniswap's and Base's documentation list them."""

MAX_UINT = 2**256 - 1


async def deploy_artifact(chain: Web3Base, name: str, *args: Any) -> str:
    """Deploy a Uniswap artifact from `chain`'s account; returns its address."""
    compiled = artifact(name)
    factory = chain.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    ctor: Any = factory.constructor(*args)
    receipt = await chain._run(f"deploy {name}", lambda: chain._send(ctor, 0))
    address = str(receipt["contractAddress"])
    log.info("deployed %s at %s (gas %d)", name, address, receipt["gasUsed"])
    return address


async def deploy_uniswap(chain: Web3Base) -> dict[str, str]:
    """Deploy WETH9, UniswapV2Factory (fee switch held by the deployer, off) and UniswapV2Router02."""
    check_pair_code()
    weth = await deploy_artifact(chain, "WETH9")
    factory = await deploy_artifact(chain, "UniswapV2Factory", chain.sender)
    router = await deploy_artifact(chain, "UniswapV2Router02", factory, weth)
    out = {"UniswapV2Factory": factory, "WETH9": weth, "UniswapV2Router02": router}
    chain.addresses.update(out)
    return out


async def use_router(chain: Web3Base, router: str) -> dict[str, str]:
    """An existing Uniswap V2 router (Base: `BASE_UNISWAP_V2_ROUTER`): its factory and WETH."""
    chain.addresses["UniswapV2Router02"] = router
    code = await chain._run("eth_getCode", lambda: chain.w3.eth.get_code(router))  # type: ignore[arg-type]
    if not code:
        raise ChainError(f"no contract at the Uniswap router address {router}")
    factory = str(await chain.call("UniswapV2Router02", "factory"))
    weth = str(await chain.call("UniswapV2Router02", "WETH"))
    out = {"UniswapV2Factory": factory, "WETH9": weth, "UniswapV2Router02": router}
    chain.addresses.update(out)
    return out


async def create_pair(chain: Web3Base) -> str:
    """The R1/USDC pair of the chain's factory, created if it does not exist yet."""
    r1, usdc = chain.addresses["R1"], chain.addresses["USDC"]
    pair = str(await chain.call("UniswapV2Factory", "getPair", r1, usdc))
    if int(pair, 16) == 0:
        await chain.transact("UniswapV2Factory", "createPair", r1, usdc)
        pair = str(await chain.call("UniswapV2Factory", "getPair", r1, usdc))
    chain.addresses["R1USDCPair"] = pair
    return pair


async def add_liquidity(chain: Web3Base, r1_amount: int, usdc_amount: int) -> int:
    """Add R1 and USDC from the sender's balances to the pool; returns the LP tokens minted."""
    router = chain.addresses["UniswapV2Router02"]
    for token, amount in (("R1", r1_amount), ("USDC", usdc_amount)):
        if int(await chain.call(token, "allowance", chain.sender, router)) < amount:
            await chain.transact(token, "approve", router, amount)
    before = int(await chain.call("R1USDCPair", "balanceOf", chain.sender))
    deadline = 2**63
    await chain.transact(
        "UniswapV2Router02",
        "addLiquidity",
        chain.addresses["R1"],
        chain.addresses["USDC"],
        r1_amount,
        usdc_amount,
        0,
        0,
        chain.sender,
        deadline,
    )
    return int(await chain.call("R1USDCPair", "balanceOf", chain.sender)) - before


async def wire(chain: Web3Base) -> None:
    """Point NDLicence's sale and PoAIEscrow's burn at the pool (owner / deployer of both)."""
    router = chain.addresses["UniswapV2Router02"]
    if str(await chain.call("NDLicence", "router")) != router:
        await chain.transact("NDLicence", "set_dex", router, chain.addresses["USDC"])
    if int(str(await chain.call("PoAIEscrow", "router")), 16) == 0:
        await chain.transact("PoAIEscrow", "set_dex", router, chain.addresses["R1"])


async def reserves(chain: Web3Base) -> tuple[int, int]:
    """(R1, USDC) in the pool."""
    r0, r1, _ = await chain.call("R1USDCPair", "getReserves")
    token0 = str(await chain.call("R1USDCPair", "token0"))
    if token0.lower() == chain.addresses["R1"].lower():
        return int(r0), int(r1)
    return int(r1), int(r0)
