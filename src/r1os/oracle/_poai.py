"""PoAI attestations: oracles attest, per epoch, which nodes served each paid job, and the escrow pays.

The service that places a paid job's replicas lists them in CSTORE (`net:poai:job:<id>` =
`{"nodes": [...]}`). At each epoch close every oracle signs, for each listed job running on chain in
that epoch, the listed nodes that were available enough; the lowest-address oracle holding a quorum of
matching signatures submits them to `PoAIEscrow.attest`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel

from r1os.chain.digests import sign_attestation
from r1os.errors import R1osError
from r1os.identity import NodeKey, normalize_address
from r1os.oracle._consensus import EpochRecord, Table

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient
    from r1os.chain.deployment import Deployment
    from r1os.cstore import CStoreService

log = logging.getLogger("r1os.oracle")

POAI_JOB_PREFIX = "net:poai:job:"


class SignedAttestation(BaseModel):
    """One oracle's attestation of one job in one epoch, as sent with its table signatures."""

    nodes: list[str]
    sig: str


class PoaiAttester:
    """Signs and submits the attestations of one oracle (does nothing without a chain deployment)."""

    def __init__(
        self, key: NodeKey, deployment: Deployment | None, cstore: CStoreService | None, min_availability: int
    ) -> None:
        self.key = key
        self.deployment = deployment
        self.cstore = cstore
        self.min_availability = min_availability
        self._chain: ChainClient | None = None

    def chain(self) -> ChainClient | None:
        """The chain client, made on first use (web3 is loaded only by oracles that attest)."""
        if self._chain is None and self.deployment is not None:
            from r1os.chain.client import ChainClient

            self._chain = ChainClient(self.deployment, self.key)
        return self._chain

    async def jobs(self) -> dict[int, list[str]]:
        """Job id -> the nodes listed for it in CSTORE (malformed entries are skipped with a log line)."""
        if self.cstore is None:
            return {}
        out: dict[int, list[str]] = {}
        for key in await self.cstore.keys(POAI_JOB_PREFIX):
            raw = await self.cstore.get(key)
            try:
                job_id = int(key[len(POAI_JOB_PREFIX) :])
                listed = raw.get("nodes", []) if isinstance(raw, dict) else []
                nodes = [normalize_address(n) for n in listed]
            except (ValueError, TypeError, AttributeError, R1osError):
                log.warning("ignoring malformed PoAI job entry %s", key)
                continue
            out[job_id] = nodes
        return out

    async def sign(self, epoch: int, agreed: Table) -> dict[str, SignedAttestation]:
        """Sign, for each PoAI job in CSTORE running in `epoch`, the listed nodes that were available."""
        chain = self.chain()
        if chain is None or self.deployment is None:
            return {}
        jobs = await self.jobs()
        if not jobs:
            return {}
        escrow = self.deployment.address("PoAIEscrow")
        out: dict[str, SignedAttestation] = {}
        for job_id, listed in sorted(jobs.items()):
            try:
                job = await chain.job(job_id)
            except Exception as exc:  # one unreadable job must not cost the others their attestation
                log.warning("PoAI job %d: %s", job_id, exc)
                continue
            if job.closed or not job.start_epoch <= epoch < job.end_epoch:
                continue
            served = sorted({n for n in listed if agreed.get(n, 0) >= self.min_availability})[: job.nodes]
            if not served:
                continue
            sig = sign_attestation(self.key, escrow, job_id, epoch, served)
            out[str(job_id)] = SignedAttestation(nodes=served, sig="0x" + sig.hex())
        return out

    async def submit(self, record: EpochRecord, me: str) -> None:
        """The lowest-address signer submits each attestation that has enough signatures; the amount
        paid (or the error) is written into the record."""
        chain = self.chain()
        if chain is None or not record.attestations:
            return
        for job, att in record.attestations.items():
            sigs = att.signatures
            if len(sigs) < record.quorum or min(sigs) != me:
                continue
            try:
                att.paid = await chain.attest(int(job), record.epoch, att.nodes, list(sigs.values()))
                log.info("PoAI job %s epoch %d attested: paid %d", job, record.epoch, att.paid)
            except Exception as exc:  # recorded in the epoch record: the audit trail says why
                att.error = str(exc)
                log.warning("PoAI job %s epoch %d: attest failed: %s", job, record.epoch, exc)
