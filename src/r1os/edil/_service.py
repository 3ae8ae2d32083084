"""EDIL on a node: every node can take part in jobs and aggregate them; the node a job is submitted to
is its owner's. A thin shell: the roles are `_roles`, the maths `strategy`/`aggregate`/`_models`, the
crypto `_ckks`/`_masks`/`_updates`/`_seal`; this module wires them to CSTORE (job records, update and
aggregate pointers), R1FS (blobs), the network map (who is online, their public keys) and HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Any

from pydantic import ValidationError

from r1os.cstore import CStoreService
from r1os.edil._errors import EdilError
from r1os.edil._roles import ENCRYPTED, Aggregator, Io, Owner, Participant, model_layout, pack_params
from r1os.edil._spec import JobSpec, resolve_participants
from r1os.edil._state import JobState
from r1os.errors import R1osError
from r1os.identity import public_key_from_ai_address
from r1os.node import EdilSettings, Service, ServiceContext, woken
from r1os.r1fs._service import R1fsService

log = logging.getLogger("r1os.edil")

#: Seconds between two passes over the active jobs (deadlines, missed events).
TICK_S = 0.5


class EdilService(Service):
    """Federated learning: this node's participant and aggregator roles, and the jobs it owns."""

    name = "edil"

    def __init__(self, settings: EdilSettings | None = None) -> None:
        self.settings = settings or EdilSettings()
        self._ctx: ServiceContext | None = None
        self.io: Io | None = None
        self.participant: Participant | None = None
        self.aggregator: Aggregator | None = None
        self.owned: dict[str, Owner] = {}
        self.jobs: dict[str, JobState] = {}
        self._wake = asyncio.Event()

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            raise RuntimeError("edil service not started")
        return self._ctx

    async def start(self, ctx: ServiceContext) -> None:
        from r1os.edil._api import install_routes

        self._ctx = ctx
        cstore = ctx.require(CStoreService)
        self.io = Io(
            network=ctx.network,
            key=ctx.key,
            cstore=cstore,
            r1fs=ctx.require(R1fsService),
            public_key_of=self.public_key_of,
            datasets=dict(self.settings.datasets),
            data_folders=list(self.settings.data_folders),
        )
        self.participant = Participant(self.io)
        self.aggregator = Aggregator(self.io)
        for key in await cstore.keys("node:"):
            if ":edil:job:" in key:
                self._remember(await cstore.get(key))
        for job in list(self.jobs.values()):
            if job.owner_node == self.io.me and job.phase == "training":
                job.phase, job.error = "failed", "the owner's node restarted (its secret context is not kept)"
                job.updated_ms = int(time.time() * 1000)
                await cstore.set(f"node:{self.io.me}:edil:job:{job.job_id}", job.model_dump(mode="json"))
        cstore.watch("node:", self._on_change)
        ctx.spawn(self._loop(), "rounds")
        install_routes(ctx.router, self)

    # -- events ---------------------------------------------------------------------------------

    def _remember(self, raw: Any) -> JobState | None:
        try:
            job = JobState.model_validate(raw)
        except ValidationError:
            return None
        self.jobs[job.job_id] = job
        return job

    def _on_change(self, key: str, field: str | None, value: Any) -> None:
        if ":edil:" not in key:
            return
        if ":edil:job:" in key and value is not None:
            self._remember(value)
        if ":edil:agg:" in key or ":edil:drop:" in key or ":edil:enc:" in key:
            for owner in self.owned.values():
                owner.wake.set()
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await woken(self._wake, TICK_S)
            assert self.participant is not None and self.aggregator is not None
            for job in list(self.jobs.values()):
                if job.phase != "training":
                    continue
                if job.aggregator == self.io_me:
                    self.ctx.spawn(self.aggregator.on_job(job), f"aggregate:{job.job_id}")
                if self.io_me in job.participants:
                    self.ctx.spawn(self.participant.on_job(job), f"train:{job.job_id}")

    @property
    def io_me(self) -> str:
        return self.ctx.address.lower()

    def public_key_of(self, node: str) -> bytes | None:
        for peer in self.ctx.netmap.peers():
            if peer.address.lower() == node.lower() and peer.heartbeat.ai_address:
                try:
                    return public_key_from_ai_address(peer.heartbeat.ai_address)
                except R1osError:
                    return None
        return None

    def online_nodes(self) -> list[str]:
        return sorted(p.address.lower() for p in self.ctx.netmap.online())

    # -- the owner's side ---------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, owner: str) -> JobState:
        """Start a job owned by `owner` with this node as the owner's node."""
        from r1os.edil._data import load
        from r1os.edil._models import init_params

        assert self.io is not None
        me = self.io_me
        if sum(1 for o in self.owned.values() if o.state.phase == "training") >= self.settings.max_jobs:
            raise EdilError(f"this node runs {self.settings.max_jobs} jobs already", cause="busy", status=429)
        online = self.online_nodes()
        spec = resolve_participants(spec, online, owner=me)
        participants = [p.node.lower() for p in spec.participants]
        for p in participants:
            if p == me:
                raise EdilError(
                    "the owner's node cannot be a participant (it would see its own update in the sum)",
                    cause="bad_spec",
                    status=422,
                )
            if p not in online:
                raise EdilError(f"participant {p} is not online", cause="not_online", status=409)
        aggregator = (spec.aggregator or "").lower() or next(
            (n for n in online if n != me and n not in participants), ""
        )
        if not aggregator:
            raise EdilError(
                "no node to aggregate: it must be online and neither the owner's node nor a participant",
                cause="no_aggregator",
                status=409,
                hint="add a node to the network, or name fewer participants",
            )
        if aggregator == me or aggregator in participants:
            raise EdilError(
                "the aggregator must be neither the owner's node nor a participant",
                cause="bad_spec",
                status=422,
            )
        if aggregator not in online:
            raise EdilError(f"aggregator {aggregator} is not online", cause="not_online", status=409)
        if spec.owner_data is None:
            raise EdilError(
                "the job has no owner_data (the owner's test split)", cause="bad_spec", status=422
            )
        test = await asyncio.to_thread(
            load, spec.owner_data, datasets=self.io.datasets, data_folders=self.io.data_folders
        )
        lay = model_layout(spec)
        now = int(time.time() * 1000)
        job_id = hashlib.sha256(f"{owner}|{spec.name}|{now}|{secrets.token_hex(8)}".encode()).hexdigest()[:16]
        ctx_owner = None
        context_cid = fingerprint = None
        if spec.privacy in ENCRYPTED:
            from r1os.edil._ckks import OwnerContext

            ctx_owner = await asyncio.to_thread(OwnerContext.create)
            context_cid = await self.io.r1fs.add_bytes(ctx_owner.public_bytes())
            fingerprint = ctx_owner.fingerprint
        params = init_params(lay, spec.seed)
        readers = sorted({*participants, me})
        model_cid = await self.io.put_sealed(pack_params(params), readers)
        state = JobState(
            job_id=job_id,
            name=spec.name,
            owner=owner.lower(),
            owner_node=me,
            aggregator=aggregator,
            participants=participants,
            spec=spec.model_dump(mode="json"),
            privacy=spec.privacy,
            context_cid=context_cid,
            context_fingerprint=fingerprint,
            round=1,
            model_cid=model_cid,
            round_started_ms=now,
            deadline_ms=now + int(spec.deadline_s * 1000),
            created_ms=now,
            updated_ms=now,
        )
        owner_role = Owner(self.io, state, spec, ctx_owner, test)
        owner_role.params = params
        self.owned[job_id] = owner_role
        self.jobs[job_id] = state
        await owner_role.publish()
        self.ctx.spawn(self._own(owner_role), f"own:{job_id}")
        log.info(
            "edil: job %s (%s) started: %d participants, aggregator %s, %s, %d rounds",
            job_id,
            spec.name,
            len(participants),
            aggregator,
            spec.privacy,
            spec.rounds,
        )
        return state

    async def _own(self, owner: Owner) -> None:
        try:
            await owner.run()
        except R1osError as exc:
            owner.state.phase, owner.state.error = "failed", str(exc)
            log.warning("edil: job %s failed: %s", owner.state.job_id, exc)
            await owner.publish()

    async def stop_job(self, job_id: str) -> JobState:
        owner = self.owned.get(job_id)
        if owner is None:
            raise EdilError(f"this node does not own job {job_id}", cause="not_owner", status=404)
        if owner.state.phase == "training":
            owner.state.phase = "stopped"
            await owner.publish()
        return owner.state

    def job(self, job_id: str) -> JobState:
        job = self.jobs.get(job_id)
        if job is None:
            raise EdilError(
                f"no job {job_id}", cause="no_job", status=404, hint="`r1os edil ls` lists the jobs"
            )
        return job

    def model_of(self, job_id: str) -> tuple[JobState, Any]:
        """The owner's current global model of a job (this node must own it)."""
        owner = self.owned.get(job_id)
        if owner is None or owner.params is None:
            raise EdilError(
                f"this node does not own job {job_id}",
                cause="not_owner",
                status=404,
                hint="ask the node the job was submitted to",
            )
        return owner.state, owner.params
