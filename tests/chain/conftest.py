"""One anvil and one deployment for the whole chain test session (started once: deploys take seconds)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from r1os.chain import ChainClient, Deployment
from r1os.chain.anvil import Anvil, dev_private_key, find_anvil
from r1os.chain.deploy import deploy
from r1os.chain.provider import RpcProvider
from r1os.errors import ChainError
from r1os.identity import NodeKey

EPOCH = 60
ETH = 10**18
R1 = 10**18


def _anvil_or_skip() -> str:
    try:
        return find_anvil()
    except ChainError as exc:
        pytest.skip(f"anvil is not installed ({exc}; {exc.hint})")


@dataclass
class Chain:
    anvil: Anvil
    deployment: Deployment
    deployer_key: str
    oracle_keys: list[NodeKey]

    def client(self, key: object = None) -> ChainClient:
        return ChainClient(
            self.deployment,
            key,
            provider=RpcProvider(self.anvil.rpc_url, devnet=True),  # type: ignore[arg-type]
        )

    @property
    def admin(self) -> ChainClient:
        return self.client(self.deployer_key)

    async def advance(self, seconds: int) -> None:
        await RpcProvider(self.anvil.rpc_url, devnet=True).advance_time(seconds)

    async def funded_key(self, r1: int = 0, eth: int = 10 * ETH) -> NodeKey:
        """A fresh key with gas money and `r1` R1 wei."""
        key = NodeKey.generate()
        admin = self.admin
        await admin.send_eth(key.address, eth)
        if r1:
            await admin.mint_r1(key.address, r1)
        return key


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    _anvil_or_skip()
    node = Anvil()
    asyncio.run(node.start())
    yield node
    asyncio.run(node.stop())


@pytest.fixture(scope="session")
def chain(anvil: Anvil) -> Chain:
    """Contracts deployed with 3 oracles (threshold 2), 60 s epochs; the deployer may mint R1."""
    oracle_keys = [NodeKey.generate() for _ in range(3)]
    deployer = dev_private_key(0)

    async def setup() -> Deployment:
        dep = await deploy(
            anvil.rpc_url,
            deployer,
            epoch_seconds=EPOCH,
            mnd_cliff_epochs=2,
            oracles=[k.address for k in oracle_keys],
        )
        await ChainClient(dep, deployer).transact("R1", "set_minter", dep.deployer, True)
        return dep

    dep = asyncio.run(setup())
    return Chain(anvil=anvil, deployment=dep, deployer_key=deployer, oracle_keys=oracle_keys)
