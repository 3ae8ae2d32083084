"""The R1/USDC pool on anvil: Uniswap V2 from its npm artifacts, a Node Deed sale that moves the pool,
a PoAI attestation that burns R1 bought on it, and the price guard refusing a purchase in the block of a
large swap. Amounts are checked against the constant-product model of tests/contracts/model.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from r1os.chain import ChainClient, Deployment, digests
from r1os.chain.anvil import Anvil, dev_private_key
from r1os.chain.deploy import deploy
from r1os.chain.provider import RpcProvider
from r1os.errors import ChainError
from r1os.identity import NodeKey
from tests.contracts import model

from .conftest import EPOCH, ETH, R1, USDC

POOL_R1, POOL_USDC = 1_000_000 * R1, 250_000 * USDC  # $0.25 per R1


@dataclass
class Dex:
    anvil: Anvil
    deployment: Deployment
    oracle_keys: list[NodeKey]
    lp_wallet: str
    company: str

    def client(self, key: Any = None) -> ChainClient:
        return ChainClient(self.deployment, key, provider=RpcProvider(self.anvil.rpc_url, devnet=True))

    @property
    def admin(self) -> ChainClient:
        return self.client(dev_private_key(0))

    async def funded(self, r1: int = 0, usdc: int = 0) -> ChainClient:
        key = NodeKey.generate()
        await self.admin.send_eth(key.address, 10 * ETH)
        if r1:
            await self.admin.mint_r1(key.address, r1)
        client = self.client(key)
        if usdc:
            await client.usdc_faucet(usdc)
        return client

    async def pool(self, c: ChainClient) -> model.Pool:
        r1, usdc = await c.pool_reserves()
        return model.Pool(r1, usdc, int(await c.call("R1USDCPair", "totalSupply")))


@pytest.fixture(scope="module")
def dex(anvil: Anvil) -> Dex:
    """A deployment of its own on the session's anvil, with Uniswap V2 and a seeded pool."""
    oracle_keys = [NodeKey.generate() for _ in range(3)]
    lp_wallet, company = NodeKey.generate().address, NodeKey.generate().address

    async def setup() -> Deployment:
        dep = await deploy(
            anvil.rpc_url,
            dev_private_key(0),
            epoch_seconds=EPOCH,
            oracles=[k.address for k in oracle_keys],
            lp_wallet=lp_wallet,
            company_wallet=company,
            uniswap="deploy",
            seed_pool=(POOL_R1, POOL_USDC),
            mint_seed=True,
        )
        admin = ChainClient(dep, dev_private_key(0), provider=RpcProvider(anvil.rpc_url, devnet=True))
        assert not await admin.call("R1", "is_minter", dep.deployer)  # the seed's minter right was revoked
        await admin.transact("R1", "set_minter", dep.deployer, True)  # to fund the test accounts
        return dep

    return Dex(anvil, asyncio.run(setup()), oracle_keys, lp_wallet, company)


async def test_buying_an_nd_moves_the_pool(dex: Dex) -> None:
    buyer = await dex.funded(r1=3_000 * R1)
    assert await buyer.has_pool()
    pool = await dex.pool(buyer)
    price = await buyer.nd_price()
    assert price == model.nd_price_on_pool(1, pool) == 2_000 * R1  # $500 at $0.25
    supply = await buyer.r1_supply()
    await buyer.buy_nd(price)
    sale = model.nd_sale_on_pool(price, pool)
    after = await dex.pool(buyer)
    assert after == sale.pool
    assert after.r1 == pool.r1 + model.nd_split(price).lp // 2 + sale.r1_to_pool + sale.company_r1
    assert after.lp_supply == pool.lp_supply + sale.liquidity
    assert int(await buyer.call("R1USDCPair", "balanceOf", dex.lp_wallet)) == sale.liquidity > 0
    assert await buyer.usdc_balance(dex.company) == sale.company_usdc > 0
    assert await buyer.balance(dex.company) == 0
    assert await buyer.r1_supply() == supply - sale.burned
    assert await buyer.balance() == 1_000 * R1


async def test_poai_attest_burns_r1_bought_on_the_pool(dex: Dex) -> None:
    op = await dex.funded(r1=3_000 * R1)
    node = NodeKey.generate()
    await op.link(await op.buy_nd(await op.nd_price()), node.address)
    customer = await dex.funded(usdc=100 * USDC)
    job_id = await customer.create_job(nodes=1, epochs=2, price_per_node_epoch=20 * USDC)
    assert await customer.total_volume() >= 40 * USDC
    epoch = (await customer.job(job_id)).start_epoch
    await RpcProvider(dex.anvil.rpc_url, devnet=True).advance_time(EPOCH)
    escrow = dex.deployment.address("PoAIEscrow")
    sigs = [digests.sign_attestation(k, escrow, job_id, epoch, [node.address]) for k in dex.oracle_keys[:2]]
    pool = await dex.pool(op)
    supply, usdc_supply = await op.r1_supply(), int(await op.call("USDC", "totalSupply"))
    burned_before = await op.total_r1_burned_by_poai()
    assert await op.attest(job_id, epoch, [node.address], sigs) == 17 * USDC
    after, bought = pool.buy_r1(3 * USDC)
    assert bought > 0
    assert await op.r1_supply() == supply - bought
    assert await op.total_r1_burned_by_poai() == burned_before + bought
    assert int(await op.call("USDC", "totalSupply")) == usdc_supply  # into the pool, not burned
    assert await dex.pool(op) == after
    assert await op.usdc_balance() == 17 * USDC


async def test_guard_refuses_a_purchase_in_the_block_of_a_large_swap(dex: Dex) -> None:
    trader = await dex.funded(usdc=200_000 * USDC)
    buyer = await dex.funded(r1=10_000 * R1)
    await buyer._ensure_allowance("R1", "NDLicence", 10_000 * R1)
    await trader._ensure_allowance("USDC", "UniswapV2Router02", 200_000 * USDC)
    await RpcProvider(dex.anvil.rpc_url, devnet=True).advance_time(600)
    assert (await buyer.price_check())[2]
    w3 = buyer.w3

    def signed(c: ChainClient, fn: Any) -> bytes:
        assert c.account is not None
        tx = fn.build_transaction(
            {
                "from": c.sender,
                "gas": 900_000,
                "gasPrice": w3.eth.gas_price,
                "chainId": w3.eth.chain_id,
                "nonce": w3.eth.get_transaction_count(c.sender),
            }  # fmt: skip
        )
        return bytes(c.account.sign_transaction(tx).raw_transaction)

    usdc, r1 = dex.deployment.address("USDC"), dex.deployment.address("R1")
    pump = trader.contract("UniswapV2Router02").functions.swapExactTokensForTokens(
        100_000 * USDC, 0, [usdc, r1], trader.sender, 2**63
    )
    buy = buyer.contract("NDLicence").functions.buy(10_000 * R1)
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        hashes = [
            w3.eth.send_raw_transaction(signed(trader, pump)),
            w3.eth.send_raw_transaction(signed(buyer, buy)),
        ]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    swap_rx, buy_rx = (w3.eth.get_transaction_receipt(h) for h in hashes)
    assert swap_rx["blockNumber"] == buy_rx["blockNumber"]
    assert (swap_rx["status"], buy_rx["status"]) == (1, 0)
    spot, reference, ok = await buyer.price_check()
    assert not ok and spot > reference * 13 // 10  # R1 up ~40% against the average: deeds look cheap
    with pytest.raises(ChainError, match="nd: pool price moved"):
        await buyer.buy_nd(10_000 * R1)
    # an arbitrageur brings the price back: the sale goes through again
    await trader.swap("R1", await trader.balance())
    assert (await buyer.price_check())[2]
    await buyer.buy_nd(10_000 * R1)
    assert Web3.is_address(dex.deployment.address("R1USDCPair"))


def test_chain_deploy_cli_with_a_pool_and_with_an_existing_router(dex: Dex, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from r1os.cli.main import app

    runner, env = CliRunner(), {"R1OS_PRIVATE_KEY": dev_private_key(2)}
    base = ["chain", "deploy", "--rpc", dex.anvil.rpc_url, "--epoch-seconds", "120"]
    seeded = tmp_path / "seeded.json"
    args = [*base, "--uniswap", "deploy", "--pool-r1", "1000", "--pool-usdc", "2000", "--mint-seed"]
    r = runner.invoke(app, [*args, "--out", str(seeded)], env=env)
    assert r.exit_code == 0, r.output
    dep = Deployment.load(seeded)
    assert set(dep.contracts) >= {"UniswapV2Factory", "WETH9", "UniswapV2Router02", "R1USDCPair"}
    assert (
        dep.has_dex and not dex.deployment.model_copy(update={"contracts": {"R1": "0x" + "00" * 20}}).has_dex
    )
    c = ChainClient(dep, provider=RpcProvider(dex.anvil.rpc_url, devnet=True))
    assert asyncio.run(c.pool_reserves()) == (1000 * R1, 2000 * USDC)
    assert asyncio.run(c.nd_price()) == 250 * R1  # $500 at $2
    # another deployment on the same Uniswap: its router is taken as is, the pair created, no pool seeded
    router = dep.address("UniswapV2Router02")
    plain = tmp_path / "plain.json"
    r = runner.invoke(app, [*base, "--uniswap", router, "--out", str(plain)], env=env)
    assert r.exit_code == 0, r.output
    dep2 = Deployment.load(plain)
    assert dep2.contracts["UniswapV2Factory"] == dep.address("UniswapV2Factory")
    assert dep2.contracts["R1USDCPair"] != dep.address("R1USDCPair")
    c2 = ChainClient(dep2, provider=RpcProvider(dex.anvil.rpc_url, devnet=True))
    assert not asyncio.run(c2.has_pool())  # no liquidity yet: the owner-set price applies
    assert asyncio.run(c2.nd_price()) == 500 * R1
    r = runner.invoke(app, [*base, "--uniswap", "0x" + "11" * 20, "--out", str(plain)], env=env)
    assert r.exit_code == 1 and "no contract at the Uniswap router address" in r.stderr


def test_missing_artifacts_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from r1os.chain import dex as dexmod

    monkeypatch.setenv("R1OS_NODE_MODULES", str(tmp_path))
    assert not dexmod.available()
    with pytest.raises(
        ChainError, match="@uniswap/v2-periphery/build/UniswapV2Router02.json is not installed"
    ) as e:
        dexmod.artifact_path("UniswapV2Router02")
    assert e.value.hint is not None and "npm install" in e.value.hint
    with pytest.raises(ChainError, match="no Uniswap artifact named"):
        dexmod.artifact_path("UniswapV3Pool")
    broken = tmp_path / "@uniswap" / "v2-core" / "build"
    broken.mkdir(parents=True)
    (broken / "UniswapV2Factory.json").write_text("{not json")
    dexmod.artifact.cache_clear()
    try:
        with pytest.raises(ChainError, match="cannot read the Uniswap artifact"):
            dexmod.artifact("UniswapV2Factory")
    finally:
        dexmod.artifact.cache_clear()


async def test_devnet_chain_has_a_dollar_pool_and_sells_deeds_on_it(tmp_path: Path) -> None:
    from r1os.chain.devnet import (
        POOL_R1,
        POOL_USDC,
        devnet_client,
        setup_devnet_chain_async,
        stop_devnet_chain,
    )

    edges = [NodeKey.generate() for _ in range(2)]
    try:
        info = await setup_devnet_chain_async(tmp_path, [k.private_key_hex for k in edges], [])
        client = devnet_client(tmp_path)
        assert client.deployment.has_dex and set(info.contracts) >= {"UniswapV2Router02", "R1USDCPair"}
        assert await client.has_pool()
        r1, usdc = await client.pool_reserves()
        # two $500 deeds sold on a $1 pool: R1 went in (liquidity and the company's sale), little USDC moved
        assert POOL_R1 < r1 < POOL_R1 + 1_000 * R1 and abs(usdc - POOL_USDC) < 1_000 * USDC
        assert abs(await client.r1_price() - 10**18) < 10**16  # within 1% of $1
        assert int(await client.call("R1USDCPair", "balanceOf", info.deployer)) > 0
        assert all(info.licences[k.address].type == "ND" for k in edges)
    finally:
        stop_devnet_chain(tmp_path)
