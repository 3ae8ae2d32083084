"""PoAI pays for serving, not for being listed: a fresh anvil with 4 s epochs, three oracle nodes and
two edge nodes (real nodes over the embedded broker, 0.5 s heartbeats). Both edge nodes are listed
for a funded job and online all along; one reports its replica of the job healthy in its heartbeats,
the other reports it down. The escrow pays the first node's operator and never the second's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1os.chain.anvil import Anvil
from r1os.cstore import CStoreService
from r1os.node import Service, ServiceContext
from r1os.oracle import OracleSettings, OracleSyncService, job_standing
from tests.conftest import async_wait_for

from .conftest import USDC, NodeRack, paid_job

EPOCH = 4
HB = 0.5
NET = "poaihealth"
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


async def test_escrow_pays_the_node_that_served_not_the_one_whose_replica_was_down(
    own_anvil: Anvil, tmp_path: Path
) -> None:
    chain = await paid_job(own_anvil, ("healthy", "down"), epoch_seconds=EPOCH, price=PRICE)
    dep, oracles, nodes, operators = chain.deployment, chain.oracles, chain.edges, chain.operators
    customer, job_id = chain.customer, chain.job_id
    standing = await job_standing(customer, job_id)
    assert standing.can_pay and standing.nodes == 2 and standing.remaining_epochs == 30

    async with NodeRack(tmp_path, NET, oracles, HB) as rack:
        svcs: list[OracleSyncService] = []
        allowed = frozenset(o.lower() for o in oracles)
        for k in chain.oracle_keys:
            settings = OracleSettings(genesis_time=dep.genesis_time, epoch_seconds=EPOCH, heartbeat=HB,
                                      oracles=oracles, deployment=dep)  # fmt: skip
            svcs.append(OracleSyncService(settings))
            cstore = CStoreService(sync_interval=0.3, fsync=False, oracles=allowed)
            await rack.start(k, [cstore, svcs[-1]], oracle=True)
        await rack.start(nodes["healthy"], [FakeDeeploy(job_id, ok=True)], oracle=False)
        await rack.start(nodes["down"], [FakeDeeploy(job_id, ok=False)], oracle=False)

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
