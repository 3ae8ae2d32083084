"""PoAI attestations: oracles attest, per epoch, which nodes served each paid job, and the escrow pays.

The service that places a paid job's replicas lists them in CSTORE (`net:poai:job:<id>` =
`{"nodes": [...], "app": "<owner>/<name>"}`), and the nodes holding them report each replica's health
in their heartbeats (`_replica_health`). At each epoch close every oracle puts, with its signed local
table, the listed nodes it saw serving each listed job healthily for most of the epoch (its
*report*); a node is attested for a job when more than half of the voting oracles reported it
(`majority_served`), the agreed table says it was available enough, and the job runs on chain in
that epoch. Every oracle signs that list; the lowest-address oracle holding a quorum of signatures
over the same list submits them to `PoAIEscrow.attest`.

`job_standing` tells a caller (the Deeploy control plane, before placing a paid app) whether a job
can pay, and if not, why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from r1os.chain.digests import attestation_digest, sign_attestation
from r1os.errors import ChainError, R1osError
from r1os.identity import NodeKey, normalize_address, recover_address
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
                if job_id <= 0:
                    raise ValueError("job ids start at 1")
                listed = raw.get("nodes", []) if isinstance(raw, dict) else []
                nodes = [normalize_address(n) for n in listed]
            except (ValueError, TypeError, AttributeError, R1osError):
                log.warning("ignoring malformed PoAI job entry %s", key)
                continue
            out[job_id] = nodes
        return out

    async def sign(
        self, epoch: int, agreed: Table, served: Mapping[str, Sequence[str]]
    ) -> dict[str, SignedAttestation]:
        """Sign, for each job in `served` (job id -> the nodes the oracles' majority saw serving it)
        that runs on chain in `epoch`, those of its nodes the agreed table says were available enough
        (sorted, at most the job's node count)."""
        chain = self.chain()
        if chain is None or self.deployment is None or not served:
            return {}
        escrow = self.deployment.address("PoAIEscrow")
        out: dict[str, SignedAttestation] = {}
        for key, nodes in sorted(served.items(), key=lambda kv: int(kv[0])):
            job_id = int(key)
            try:
                job = await chain.job(job_id)
            except Exception as exc:  # one unreadable job must not cost the others their attestation
                log.warning("PoAI job %d: %s", job_id, exc)
                continue
            if job.closed or not job.start_epoch <= epoch < job.end_epoch:
                log.info("PoAI job %d: not payable in epoch %d (closed or outside its epochs)", job_id, epoch)
                continue
            paid = sorted({n for n in nodes if agreed.get(n, 0) >= self.min_availability})[: job.nodes]
            if not paid:
                continue
            sig = sign_attestation(self.key, escrow, job_id, epoch, paid)
            out[str(job_id)] = SignedAttestation(nodes=paid, sig="0x" + sig.hex())
        return out

    def signed_by(self, oracle: str, job: str, epoch: int, att: SignedAttestation) -> bool:
        """Whether `att.sig` is `oracle`'s signature over `att.nodes` for `job` in `epoch` (False without
        a chain deployment, or for anything malformed)."""
        if self.deployment is None:
            return False
        try:
            digest = attestation_digest(self.deployment.address("PoAIEscrow"), int(job), epoch, att.nodes)
            return recover_address(digest, bytes.fromhex(att.sig.removeprefix("0x"))) == oracle
        except Exception:  # a malformed signature or node address is a bad signature
            return False

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


class JobStanding(BaseModel):
    """Whether a PoAI job can pay for an app in an epoch (`reason` says why not; None: it can)."""

    job_id: int
    epoch: int
    exists: bool
    open: bool = False
    """Not closed on chain, and `epoch` is within its paid epochs."""
    funded: bool = False
    """Its escrow balance still covers at least one node-epoch."""
    remaining_epochs: int = 0
    """Paid epochs left from `epoch` on, `epoch` included."""
    nodes: int = 0
    """Nodes paid per epoch (an app's replicas beyond this are not paid)."""
    price_per_node_epoch: int = 0
    balance: int = 0
    owner: str | None = None
    reason: str | None = None

    @property
    def can_pay(self) -> bool:
        return self.reason is None


async def job_standing(chain: ChainClient, job_id: int, epoch: int | None = None) -> JobStanding:
    """The standing of PoAI job `job_id` in `epoch` (default: the chain's current epoch).

    An unknown, closed, ended, not yet started or exhausted job has a `reason`; a chain that cannot be
    read raises `ChainError`."""
    if epoch is None:
        epoch = await chain.current_epoch()
    try:
        job = await chain.job(job_id)
    except ChainError as exc:
        if "no PoAI job" not in str(exc):
            raise
        return JobStanding(job_id=job_id, epoch=epoch, exists=False, reason=f"no PoAI job {job_id}")
    remaining = max(0, job.end_epoch - max(epoch, job.start_epoch))
    funded = job.balance >= job.price_per_node_epoch
    reason = None
    if job.closed:
        reason = f"PoAI job {job_id} is closed (refunded to its owner)"
    elif epoch >= job.end_epoch:
        reason = f"PoAI job {job_id} ended: its last paid epoch was {job.end_epoch - 1} (now {epoch})"
    elif epoch < job.start_epoch:
        reason = f"PoAI job {job_id} starts at epoch {job.start_epoch} (now {epoch})"
    elif not funded:
        reason = f"PoAI job {job_id} is exhausted: its balance {job.balance} is below one node-epoch"
    return JobStanding(
        job_id=job_id,
        epoch=epoch,
        exists=True,
        open=not job.closed and job.start_epoch <= epoch < job.end_epoch,
        funded=funded,
        remaining_epochs=0 if job.closed else remaining,
        nodes=job.nodes,
        price_per_node_epoch=job.price_per_node_epoch,
        balance=job.balance,
        owner=job.owner,
        reason=reason,
    )
