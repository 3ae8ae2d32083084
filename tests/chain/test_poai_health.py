"""PoAI pays for serving, not for being listed: a fresh anvil with 4 s epochs, three oracle nodes and
two edge nodes (real nodes over the embedded broker, 0.5 s heartbeats). Both edge nodes are listed
for a funded job and online all along; one reports its replica of the job healthy in its heartbeats,
the other reports it down. The escrow pays the first node's operator and never the second's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from r1os.chain import ChainClient
from r1os.chain.anvil import Anvil, dev_private_key
from r1os.chain.deploy import deploy
from r1os.chain.provider import RpcProvider
from r1os.cstore import CStoreService
from r1os.identity import NodeKey, save_keystore
from r1os.node import Node, NodeConfig, Service, ServiceContext
from r1os.oracle import OracleSettings, OracleSyncService, job_standing
from r1os.transport import EmbeddedBroker
from tests.conftest import async_wait_for

from .conftest import ETH, _anvil_or_skip

EPOCH = 4
HB = 0.5
NET = "poaihealth"
USDC = 10**6
PRICE = USDC
APP = "0x" + "1" * 40 + "/echo"


class FakeDeeploy(Service):
    """Reports one replica of the job in the node's heartbeats, healthy or not, as Deeploy does."""

    name = "deeploy"

    def __init__(self, job: int, ok: bool) -> None:
        self.job, self.ok = job, ok

    async def start(self, ctx: ServiceContext) -> None:
        pass

    def heartbeat_fields(self) -> dict[str, Any]:
        return {"runtimes": ["process"], "replicas": {APP: {"v": 1, "ok": self.ok, "job": self.job}}}


@pytest.fixture
async def anvil() -> AsyncIterator[Anvil]:
    _anvil_or_skip()
    async with Anvil() as node:  # its own chain: its clock is the wall clock the oracles go by
        yield node


async def test_escrow_pays_the_node_that_served_not_the_one_whose_replica_was_down(
    anvil: Anvil, tmp_path: Path
) -> None:
    deployer = dev_private_key(0)
    oracle_keys = [NodeKey.generate() for _ in range(3)]
    oracles = sorted(k.address for k in oracle_keys)
    dep = await deploy(anvil.rpc_url, deployer, epoch_seconds=EPOCH, oracles=oracles)

    def client(key: object) -> ChainClient:
        return ChainClient(dep, key, provider=RpcProvider(anvil.rpc_url, devnet=True))  # type: ignore[arg-type]

    admin = client(deployer)
    await admin.transact("R1", "set_minter", dep.deployer, True)
    for k in oracle_keys:  # the submitting oracle pays gas
        await admin.send_eth(k.address, 10 * ETH)

    # two licensed nodes, each with its own operator (who is paid)
    nodes = {"healthy": NodeKey.generate(), "down": NodeKey.generate()}
    operators: dict[str, ChainClient] = {}
    for role, node in nodes.items():
        op_key = NodeKey.generate()
        await admin.send_eth(op_key.address, 10 * ETH)
        await admin.mint_r1(op_key.address, await admin.nd_price())
        op = operators[role] = client(op_key)
        await op.link(await op.buy_nd(), node.address)

    customer_key = NodeKey.generate()
    await admin.send_eth(customer_key.address, 10 * ETH)
    customer = client(customer_key)
    await customer.usdc_faucet(100 * USDC)
    job_id = await customer.create_job(nodes=2, epochs=30, price_per_node_epoch=PRICE)
    standing = await job_standing(customer, job_id)
    assert standing.can_pay and standing.nodes == 2 and standing.remaining_epochs == 30

    broker = EmbeddedBroker(port=0)
    await broker.start()
    running: list[Node] = []

    async def start(key: NodeKey, i: int, services: list[Any], oracle: bool) -> None:
        home = tmp_path / f"n{i}"
        save_keystore(key, home / "keys" / "node.json", "pw", strength="light")
        cfg = NodeConfig(home=home, network=NET, broker=broker.url, http="127.0.0.1:0", oracle=oracle,
                         heartbeat_interval=HB, oracles=oracles, key_strength="light")  # fmt: skip
        node = Node(cfg, password="pw", services=services)
        await node.start()
        running.append(node)

    try:
        svcs: list[OracleSyncService] = []
        allowed = frozenset(o.lower() for o in oracles)
        for i, k in enumerate(oracle_keys):
            settings = OracleSettings(genesis_time=dep.genesis_time, epoch_seconds=EPOCH, heartbeat=HB,
                                      oracles=oracles, deployment=dep)  # fmt: skip
            svcs.append(OracleSyncService(settings))
            cstore = CStoreService(sync_interval=0.3, fsync=False, oracles=allowed)
            await start(k, i, [cstore, svcs[-1]], oracle=True)
        await start(nodes["healthy"], 3, [FakeDeeploy(job_id, ok=True)], oracle=False)
        await start(nodes["down"], 4, [FakeDeeploy(job_id, ok=False)], oracle=False)

        # the control plane lists the job's nodes (an oracle writes it; CSTORE carries it to the others)
        listed = sorted(n.address for n in nodes.values())
        cstore0 = svcs[0].archive.cstore
        assert cstore0 is not None
        await cstore0.set(f"net:poai:job:{job_id}", {"nodes": listed, "app": APP})

        async def listed_everywhere() -> bool:
            seen = [(await s.poai.jobs()).get(job_id) for s in svcs]
            return seen == [listed] * len(svcs)

        await async_wait_for(listed_everywhere, 20, "the job listing on every oracle")

        healthy_op, down_op = operators["healthy"], operators["down"]

        async def paid() -> int:
            return await healthy_op.usdc_balance()

        await async_wait_for(paid, 8 * EPOCH + 30, "the escrow paying the healthy node's operator")

        # the attested epochs: each names the healthy node only, though the other was available
        attested = [r for r in svcs[0].records.values() if str(job_id) in r.attestations]
        assert attested
        for rec in attested:
            att = rec.attestations[str(job_id)]
            assert att.nodes == [nodes["healthy"].address]
            if att.paid is not None:
                assert rec.value(nodes["down"].address) >= 128  # available, but its replica was down
        job = await customer.job(job_id)
        paid_to_healthy = await healthy_op.usdc_balance()
        assert await down_op.usdc_balance() == 0
        assert job.paid == paid_to_healthy > 0
        assert paid_to_healthy % (PRICE - PRICE * 15 // 100) == 0
    finally:
        for node in reversed(running):
            await node.stop()
        await broker.stop()
