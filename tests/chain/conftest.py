"""One anvil and one deployment for the whole chain test session (started once: deploys take seconds); and,
for the PoAI payment tests, a fresh anvil with a funded job and real nodes to serve it (`paid_job`,
`NodeRack`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from r1os.chain import ChainClient, Deployment
from r1os.chain.anvil import Anvil, dev_private_key, find_anvil
from r1os.chain.deploy import deploy
from r1os.chain.provider import RpcProvider
from r1os.errors import ChainError
from r1os.identity import NodeKey, save_keystore
from r1os.node import Node, NodeConfig
from r1os.transport import EmbeddedBroker

EPOCH = 60
ETH = 10**18
R1 = 10**18
USDC = 10**6


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


# -- a funded PoAI job on a fresh chain, and the nodes that serve it ---------------------------------------


@pytest.fixture
async def own_anvil() -> AsyncIterator[Anvil]:
    """An anvil of the test's own: its clock is the wall clock the oracles go by."""
    _anvil_or_skip()
    async with Anvil() as node:
        yield node


@dataclass
class PaidJob:
    """A fresh deployment with 3 oracles (with gas money), licensed edge nodes each linked by an operator of
    its own (who is paid), and a customer's funded job for all of them."""

    deployment: Deployment
    oracle_keys: list[NodeKey]
    edges: dict[str, NodeKey]
    operators: dict[str, ChainClient]
    customer: ChainClient
    job_id: int

    @property
    def oracles(self) -> list[str]:
        return sorted(k.address for k in self.oracle_keys)


async def paid_job(anvil: Anvil, roles: Iterable[str], *, epoch_seconds: int, price: int) -> PaidJob:
    """Deploy on `anvil` with `epoch_seconds` epochs; one licensed edge node per role; a job of 30 epochs at
    `price` USDC wei per node-epoch for as many nodes, funded from a 100 USDC faucet."""
    deployer = dev_private_key(0)
    oracle_keys = [NodeKey.generate() for _ in range(3)]
    dep = await deploy(
        anvil.rpc_url, deployer, epoch_seconds=epoch_seconds, oracles=sorted(k.address for k in oracle_keys)
    )

    def client(key: object) -> ChainClient:
        return ChainClient(dep, key, provider=RpcProvider(anvil.rpc_url, devnet=True))  # type: ignore[arg-type]

    admin = client(deployer)
    await admin.transact("R1", "set_minter", dep.deployer, True)
    for k in oracle_keys:  # the submitting oracle pays gas
        await admin.send_eth(k.address, 10 * ETH)
    edges = {role: NodeKey.generate() for role in roles}
    operators: dict[str, ChainClient] = {}
    for role, node in edges.items():
        op_key = NodeKey.generate()
        await admin.send_eth(op_key.address, 10 * ETH)
        await admin.mint_r1(op_key.address, await admin.nd_price())
        op = operators[role] = client(op_key)
        await op.link(await op.buy_nd(), node.address)
    customer_key = NodeKey.generate()
    await admin.send_eth(customer_key.address, 10 * ETH)
    customer = client(customer_key)
    await customer.usdc_faucet(100 * USDC)
    job_id = await customer.create_job(nodes=len(edges), epochs=30, price_per_node_epoch=price)
    return PaidJob(dep, oracle_keys, edges, operators, customer, job_id)


class NodeRack:
    """Real nodes over one embedded broker, each with the key it is given (saved in its home `n<i>`);
    all stopped, newest first, on leaving `async with`."""

    def __init__(self, root: Path, network: str, oracles: list[str], heartbeat: float) -> None:
        self.root, self.network, self.oracles, self.heartbeat = root, network, oracles, heartbeat
        self.broker = EmbeddedBroker(port=0)
        self.running: list[Node] = []

    async def __aenter__(self) -> Self:
        await self.broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node in reversed(self.running):
            await node.stop()
        await self.broker.stop()

    async def start(self, key: NodeKey, services: list[Any], *, oracle: bool) -> Node:
        home = self.root / f"n{len(self.running)}"
        save_keystore(key, home / "keys" / "node.json", "pw", strength="light")
        cfg = NodeConfig(home=home, network=self.network, broker=self.broker.url, http="127.0.0.1:0",
                         oracle=oracle, heartbeat_interval=self.heartbeat, oracles=self.oracles,
                         key_strength="light")  # fmt: skip
        node = Node(cfg, password="pw", services=services)
        await node.start()
        self.running.append(node)
        return node
