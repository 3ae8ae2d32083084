"""Uniswap V2 in titanoboa: the factory, WETH9 and router deployed from the npm packages' compiled
artifacts (the same bytes `r1os.chain.dex` deploys on anvil), and an R1/USDC pool seeded for tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boa
from eth_abi import encode

from r1os.chain import dex

from . import model
from .conftest import System


def deploy_artifact(name: str, *args: Any) -> Any:
    art = dex.artifact(name)
    ctor = next((e for e in art.abi if e["type"] == "constructor"), {"inputs": []})
    types = [i["type"] for i in ctor["inputs"]]
    address, computation = boa.env.deploy(
        bytecode=art.bytecode + (encode(types, list(args)) if types else b"")
    )
    assert not computation.is_error, f"deploying {name} failed"
    return boa.loads_abi(json.dumps(art.abi), name=name).at(address)


def at(name: str, address: str) -> Any:
    return boa.loads_abi(json.dumps(dex.abi(name)), name=name).at(address)


@dataclass
class Uniswap:
    factory: Any
    weth: Any
    router: Any


def deploy_uniswap() -> Uniswap:
    dex.check_pair_code()
    factory = deploy_artifact("UniswapV2Factory", str(boa.env.eoa))
    weth = deploy_artifact("WETH9")
    router = deploy_artifact("UniswapV2Router02", factory.address, weth.address)
    return Uniswap(factory, weth, router)


@dataclass
class Market:
    uni: Uniswap
    pair: Any
    r1_is_token0: bool

    def pool(self) -> model.Pool:
        r0, r1, _ = self.pair.getReserves()
        r1_res, usdc_res = (r0, r1) if self.r1_is_token0 else (r1, r0)
        return model.Pool(r1_res, usdc_res, self.pair.totalSupply())


def seed_pool(s: System, uni: Uniswap, r1_amount: int, usdc_amount: int, *, wire: bool = True) -> Market:
    """Create the R1/USDC pair, add the first liquidity from a fresh account, and (if `wire`) point
    the ND sale and the escrow at it."""
    seeder = s.user(r1=r1_amount, usdc=usdc_amount)
    with boa.env.prank(seeder):
        s.r1.approve(uni.router.address, r1_amount)
        s.usdc.approve(uni.router.address, usdc_amount)
        uni.router.addLiquidity(
            s.r1.address, s.usdc.address, r1_amount, usdc_amount, 0, 0, seeder, boa.env.timestamp
        )
    pair = at("UniswapV2Pair", uni.factory.getPair(s.r1.address, s.usdc.address))
    if wire:
        s.nd.set_dex(uni.router.address, s.usdc.address)
        s.escrow.set_dex(uni.router.address, s.r1.address)
    return Market(uni, pair, pair.token0() == s.r1.address)


def swap(s: System, uni: Uniswap, *, r1_in: int = 0, usdc_in: int = 0) -> str:
    """A trader's swap on the pool (R1 -> USDC or USDC -> R1); returns the trader."""
    trader = s.user(r1=r1_in, usdc=usdc_in)
    token, path = (
        (s.r1, [s.r1.address, s.usdc.address]) if r1_in else (s.usdc, [s.usdc.address, s.r1.address])
    )
    amount = r1_in or usdc_in
    with boa.env.prank(trader):
        token.approve(uni.router.address, amount)
        uni.router.swapExactTokensForTokens(amount, 0, path, trader, boa.env.timestamp)
    return trader
