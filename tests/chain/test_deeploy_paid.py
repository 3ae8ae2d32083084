"""A paid Deeploy app end to end: real Deeploy services (the oracles' control plane, the edge nodes'
agents), a funded PoAI job on a fresh anvil with 4 s epochs. The owner deploys an app with `job`; the
control plane checks the job on chain, places two replicas and lists their nodes for the job; one
replica keeps serving, the other fails and cannot restart. The escrow pays the node that served, not
the one whose replica was down. An app naming a job that cannot pay is refused with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.chain.anvil import Anvil
from r1os.cstore import CStoreService
from r1os.deeploy import parse_spec
from r1os.deeploy._requests import sign_app_request
from r1os.deeploy._service import DeeployService
from r1os.deeploy.runtimes import MemoryRuntime
from r1os.identity import NodeKey
from r1os.node import DeeploySettings
from r1os.oracle import OracleSettings, OracleSyncService
from tests.conftest import async_wait_for

from .conftest import USDC, NodeRack, paid_job

pytestmark = pytest.mark.timeout(180)

EPOCH = 4
HB = 0.5
NET = "deeploypaid"
PRICE = USDC


async def test_the_escrow_pays_the_replica_that_served(own_anvil: Anvil, tmp_path: Path) -> None:
    chain = await paid_job(own_anvil, ("serves", "fails"), epoch_seconds=EPOCH, price=PRICE)
    dep, oracles, edges, operators = chain.deployment, chain.oracles, chain.edges, chain.operators
    job_id = chain.job_id
    allowed = frozenset(o.lower() for o in oracles)
    runtimes = {role: MemoryRuntime() for role in edges}

    async with NodeRack(tmp_path, NET, oracles, HB) as rack:
        running = rack.running
        for k in chain.oracle_keys:
            settings = OracleSettings(genesis_time=dep.genesis_time, epoch_seconds=EPOCH, heartbeat=HB,
                                      oracles=oracles, deployment=dep)  # fmt: skip
            await rack.start(k, [
                CStoreService(sync_interval=0.3, fsync=False, oracles=allowed),
                OracleSyncService(settings),
                DeeployService(DeeploySettings(host_apps=False)),
            ], oracle=True)  # fmt: skip
        edge_nodes = {}
        for role, k in edges.items():
            edge_nodes[role] = await rack.start(k, [
                CStoreService(sync_interval=0.3, fsync=False, oracles=allowed),
                DeeployService(DeeploySettings(cpu=2, memory_mb=2048), runtimes={"process": runtimes[role]}),
            ], oracle=False)  # fmt: skip
        entry = edge_nodes["serves"].url

        async def meshed() -> bool:
            return all(len(n.netmap.online()) == len(running) - 1 for n in running)

        await async_wait_for(meshed, 20, "every node to see every other")
        owner = NodeKey.generate()

        def spec(name: str, job: int) -> Any:
            return parse_spec(
                f"name: {name}\ncommand: [serve, '{{port}}']\nreplicas: 2\njob: {job}\n"
                "health: {http: /, interval_s: 0.2, failures: 2, grace_s: 5}\n"
            )

        async def send(name: str, job: int) -> httpx.Response:
            signed = sign_app_request(owner, network=NET, action="deploy", name=name, spec=spec(name, job))
            async with httpx.AsyncClient(timeout=30) as http:
                return await http.post(f"{entry}/v1/apps/requests", content=signed.model_dump_json())

        # A job that does not exist cannot pay: refused, saying so.
        r = await send("unpaid", 999)
        assert r.status_code == 402 and r.json()["cause"] == "job_unpaid", r.text
        assert "no PoAI job 999" in r.json()["error"]

        r = await send("paid", job_id)
        assert r.status_code == 200, r.text
        app = f"{owner.address.lower()}/paid"

        async def both_healthy() -> bool:
            async with httpx.AsyncClient(timeout=5) as http:
                v = (await http.get(f"{entry}/v1/apps/{owner.address.lower()}/paid")).json()
            return v["healthy"] == 2

        await async_wait_for(both_healthy, 30, "both replicas healthy")
        cstore = running[0].services[0]
        assert isinstance(cstore, CStoreService)
        listing = await cstore.get(f"net:poai:job:{job_id}")
        assert listing == {"nodes": sorted(k.address.lower() for k in edges.values()), "app": app}

        # One replica fails for good: it crashes and every restart fails.
        failing = runtimes["fails"]
        failing.fail_starts = "the disk is on fire"
        for replica in list(failing.running()):
            await failing.crash(replica, 3)

        healthy_op, down_op = operators["serves"], operators["fails"]

        async def paid() -> int:
            return await healthy_op.usdc_balance()

        await async_wait_for(paid, 8 * EPOCH + 30, "the escrow paying the serving node's operator")
        assert await down_op.usdc_balance() == 0

        # Every oracle's record of an attested epoch names the serving node only; the one that submitted
        # to the escrow also records what was paid.
        def attested() -> list[Any]:
            out = []
            for node in running[:3]:
                svc = node.services[1]
                assert isinstance(svc, OracleSyncService)
                out += [r for r in svc.records.values() if str(job_id) in r.attestations]
            return out

        async def recorded_paid() -> bool:  # the submitter writes `paid` once its transaction returns
            return any(r.attestations[str(job_id)].paid for r in attested())

        await async_wait_for(recorded_paid, 30, "an oracle's record of the paid attestation")
        assert all(r.attestations[str(job_id)].nodes == [edges["serves"].address] for r in attested())
