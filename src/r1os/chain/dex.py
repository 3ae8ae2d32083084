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
import os
from functools import cache
from pathlib import Path
from typing import Any

from r1os.chain.compile import CompiledContract
from r1os.errors import ChainError

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
    from eth_utils import keccak

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
