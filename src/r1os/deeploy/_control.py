"""The control plane on the oracles: owner requests in, plans out.

Any oracle accepts an owner's signed request (checks the signature, the time, the nonce, the spec and
whether any node could run it) and writes the app's record to CSTORE. Plans are written by one oracle
at a time, the leader (the lowest address among the online oracles), so that two oracles seeing a node
go offline a second apart do not write two plans; placement being pure and deterministic
(`_placement.py`), any oracle that becomes leader computes the same plan from the same state.

The leader's reconcile pass runs every half second and whenever a peer comes or goes:
- a replica on a node that is no longer online is placed elsewhere at once (failover);
- an app whose record has a newer version than some of its replicas is rolled: one replica of the new
  version is added on another node (or, when no other node has room, in place of an old one), and once
  the node reports it healthy an old replica is removed; then the next;
- scaling adds or removes replicas; a deleted app's plan is removed, and the nodes stop its replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from r1os.deeploy._models import (
    APP_PREFIX,
    NONCE_PREFIX,
    PLAN_PREFIX,
    POAI_JOB_PREFIX,
    AppRecord,
    HostNode,
    Plan,
    ReplicaReport,
    Slot,
    app_key,
    plan_key,
    read_all,
    replicas_key,
)
from r1os.deeploy._placement import Usage, fits_anywhere, place, usage_by_node
from r1os.deeploy._requests import MAX_REQUEST_AGE_S, AppRequest, RequestRefused, SignedAppRequest
from r1os.deeploy._spec import AppSpec
from r1os.errors import R1osError, SpecError
from r1os.node import woken

if TYPE_CHECKING:
    from r1os.cstore import CStoreService

log = logging.getLogger("r1os.deeploy")

JobCheck = Callable[[int], Awaitable[str | None]]
"""Given a PoAI job id, None if the job can pay now, else the reason it cannot."""


class AppConflict(R1osError):
    cause = "conflict"
    status = 409


class NoApp(R1osError):
    cause = "no_app"
    status = 404


class NoCapacity(R1osError):
    cause = "no_capacity"
    status = 422


class JobRefused(R1osError):
    cause = "job_unpaid"
    status = 402


#: Seconds between two checks of a paid app's PoAI job on chain (an exhausted job stops its app).
JOB_RECHECK_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class ControlPlane:
    """The oracle side of Deeploy (every oracle runs one; the leader writes plans)."""

    def __init__(
        self,
        cstore: CStoreService,
        network: str,
        me: str,
        hosts: Callable[[], list[HostNode]],
        leader: Callable[[], str | None],
        job_check: JobCheck | None = None,
    ) -> None:
        self.cstore = cstore
        self.network = network
        self.me = me.lower()
        self.hosts = hosts
        self.leader = leader
        self.job_check = job_check
        self._nonces: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.passes = 0
        self.failovers = 0
        self.refused: dict[str, int] = {}
        self._job_reasons: dict[int, tuple[float, str | None]] = {}

    # -- requests ---------------------------------------------------------------------------

    def _refuse(self, exc: R1osError, who: str) -> R1osError:
        self.refused[exc.cause] = self.refused.get(exc.cause, 0) + 1
        log.info("deeploy: refused a request from %s: %s", who, exc)
        return exc

    async def _check_nonce(self, req: AppRequest) -> None:
        now = time.time()
        for n, t in list(self._nonces.items()):
            if t < now - 2 * MAX_REQUEST_AGE_S:
                del self._nonces[n]
        key = f"{NONCE_PREFIX}{req.nonce}"
        if req.nonce in self._nonces or await self.cstore.exists(key):
            raise RequestRefused(
                "this request was already applied (replayed nonce)",
                cause="replayed",
                hint="sign a new request: each carries a fresh nonce",
            )
        self._nonces[req.nonce] = now

    async def handle(self, signed: SignedAppRequest) -> AppRecord | None:
        """Apply an owner's request; the app's record after it (None after a delete). Raises an
        `R1osError` with a cause and a hint for anything refused."""
        who = signed.request.owner
        try:
            req = signed.verify(self.network)
            async with self._lock:
                await self._check_nonce(req)
                record = await self._apply(req)
                await self.cstore.set(
                    f"{NONCE_PREFIX}{req.nonce}", req.owner.lower(), ttl=2 * MAX_REQUEST_AGE_S
                )
        except R1osError as exc:
            raise self._refuse(exc, who) from None
        log.info("deeploy: %s %s by %s", req.action, req.app_id, req.owner)
        self._wake.set()
        return record

    async def record(self, app_id: str) -> AppRecord | None:
        raw = await self.cstore.get(app_key(app_id))
        if raw is None:
            return None
        try:
            return AppRecord.model_validate(raw)
        except ValidationError:
            log.warning("deeploy: unreadable app record %s", app_id)
            return None

    async def _apply(self, req: AppRequest) -> AppRecord | None:
        app_id = req.app_id
        current = await self.record(app_id)
        now = _now_ms()
        if req.action == "delete":
            if current is None:
                raise NoApp(f"no app {app_id}", hint="`r1os app ls` lists the apps")
            await self.cstore.delete(app_key(app_id))
            return None
        if req.action == "scale":
            if current is None:
                raise NoApp(f"no app {app_id} to scale", hint="deploy it first")
            if req.replicas is None:
                raise SpecError("a scale request says how many replicas", path="replicas")
            spec = current.app_spec().model_copy(update={"replicas": req.replicas})
            self._check_fits(spec)
            record = current.model_copy(
                update={"spec": {**current.spec, "replicas": req.replicas}, "updated_ms": now}
            )
            await self.cstore.set(app_key(app_id), record.model_dump(mode="json"))
            return record
        spec = req.app_spec()
        self._check_fits(spec)
        if spec.job is not None and self.job_check is not None:
            reason = await self.job_check(spec.job)
            if reason is not None:
                raise JobRefused(
                    f"PoAI job {spec.job} cannot pay for this app: {reason}",
                    hint="fund the job, or deploy without `job`",
                )
        if req.action == "deploy":
            if current is not None:
                raise AppConflict(
                    f"{app_id} exists (version {current.version})", hint="use `r1os app update` to change it"
                )
            record = AppRecord(
                owner=req.owner.lower(),
                name=req.name,
                version=1,
                spec=req.spec or {},
                sealed=req.sealed,
                created_ms=now,
                updated_ms=now,
            )
        else:
            if current is None:
                raise NoApp(f"no app {app_id} to update", hint="use `r1os app deploy` first")
            record = current.model_copy(
                update={
                    "version": current.version + 1,
                    "spec": req.spec or {},
                    "sealed": req.sealed,
                    "updated_ms": now,
                }
            )
        await self.cstore.set(app_key(app_id), record.model_dump(mode="json"))
        return record

    def _check_fits(self, spec: AppSpec) -> None:
        if spec.replicas == 0:
            return
        reason = fits_anywhere(spec, self.hosts())
        if reason is not None:
            raise NoCapacity(
                f"no node can run {spec.name} ({spec.runtime}, cpu {spec.resources.cpu:g}, "
                f"memory {spec.resources.memory_mb} MiB, gpu {spec.resources.gpu}): {reason}",
                hint="ask for fewer resources, or fewer tags / another runtime",
            )

    # -- plans ------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self, interval: float = 0.5) -> None:
        """Reconcile every `interval` seconds (or sooner when woken) while this oracle leads."""
        while True:
            await woken(self._wake, interval)
            if self.leader() != self.me:
                continue
            try:
                await self.reconcile()
            except Exception:
                log.exception("deeploy: reconcile pass failed")

    async def records(self) -> dict[str, AppRecord]:
        return {rec.app_id: rec for rec in await read_all(self.cstore, APP_PREFIX, AppRecord, "app record")}

    async def plans(self) -> dict[str, Plan]:
        return {plan.app: plan for plan in await read_all(self.cstore, PLAN_PREFIX, Plan, "plan")}

    async def _healthy(self, node: str, app_id: str, version: int) -> bool:
        raw = await self.cstore.hget(replicas_key(node), app_id)
        if raw is None:
            return False
        try:
            report = ReplicaReport.model_validate(raw)
        except ValidationError:
            return False
        return report.version == version and report.healthy

    async def reconcile(self) -> None:
        """One pass: make every plan match its app's record and the nodes online now."""
        self.passes += 1
        records = await self.records()
        plans = await self.plans()
        hosts = self.hosts()
        online = {h.address.lower() for h in hosts}
        for app_id in plans:
            if app_id not in records:
                await self.cstore.delete(plan_key(app_id))
                log.info("deeploy: %s deleted: plan removed", app_id)
        for app_id in await self._poai_apps_gone(records):
            log.info("deeploy: PoAI listing of %s removed", app_id)
        specs = {a: r.app_spec() for a, r in records.items()}
        used = usage_by_node((p.replicas, specs[a].resources) for a, p in plans.items() if a in specs)
        for app_id, record in sorted(records.items()):
            spec = specs[app_id]
            old = plans.get(app_id) or Plan(app=app_id, version=record.version)
            slots, note = await self._next_slots(app_id, record, spec, old, hosts, online, used)
            if [s.model_dump() for s in slots] != [
                s.model_dump() for s in old.replicas
            ] or old.version != record.version:
                _move_usage(used, old.replicas, slots, spec)
                plan = Plan(
                    app=app_id, version=record.version, replicas=slots, updated_ms=_now_ms(), note=note
                )
                await self.cstore.set(plan_key(app_id), plan.model_dump(mode="json"))
                log.info(
                    "deeploy: %s plan: %s (%s)", app_id, [f"{s.node[:10]}@v{s.version}" for s in slots], note
                )
            if spec.job is not None:
                await self._list_poai(spec.job, app_id, slots)

    async def _next_slots(
        self,
        app_id: str,
        record: AppRecord,
        spec: AppSpec,
        plan: Plan,
        hosts: list[HostNode],
        online: set[str],
        used: dict[str, Usage],
    ) -> tuple[list[Slot], str]:
        want = spec.replicas
        # Secrets are sealed per node: an app with secrets runs only where they can be opened.
        if spec.secrets:
            hosts = [h for h in hosts if h.address.lower() in record.sealed]
        if spec.job is not None:
            reason = await self._job_reason(spec.job)
            if reason is not None:
                return [], f"stopped: PoAI job {spec.job} cannot pay: {reason}"
        alive = [s for s in plan.replicas if s.node in online]
        note = plan.note
        if len(alive) < len(plan.replicas):
            lost = sorted({s.node for s in plan.replicas} - {s.node for s in alive})
            self.failovers += 1
            note = f"failover: {', '.join(n[:10] for n in lost)} offline"
            _move_usage(used, plan.replicas, alive, spec)
        new = [s for s in alive if s.version == record.version]
        old = [s for s in alive if s.version != record.version]
        if not old:
            result = place(app_id, spec, record.version, new, hosts, used, want)
            if result.missing:
                note = f"{len(result.slots)} of {want} placed: " + "; ".join(
                    f"{n[:10]} {r}" for n, r in sorted(result.reasons.items())[:3]
                )
            elif len(result.slots) != len(alive):
                note = note if note.startswith("failover") else "placed"
            return result.slots, note
        # Rolling update: wait for the new replicas to be healthy before touching an old one.
        for slot in new:
            if not await self._healthy(slot.node, app_id, slot.version):
                return alive, f"rolling update to v{record.version}: waiting for {slot.node[:10]}"
        if len(new) + len(old) > want or len(new) >= want:
            drop = sorted(old, key=lambda s: s.node)[0]
            return [
                s for s in alive if s is not drop
            ], f"rolling update to v{record.version}: v{drop.version} on {drop.node[:10]} retired"
        surge = place(app_id, spec, record.version, alive, hosts, used, len(alive) + 1)
        added = [s for s in surge.slots if s not in alive]
        if added:
            return alive + added[
                :1
            ], f"rolling update to v{record.version}: new replica on {added[0].node[:10]}"
        # No node free for a surge replica: replace an old one in place.
        drop = sorted(old, key=lambda s: s.node)[0]
        return [s for s in alive if s is not drop] + [Slot(node=drop.node, version=record.version)], (
            f"rolling update to v{record.version}: replaced in place on {drop.node[:10]}"
        )

    async def _job_reason(self, job: int) -> str | None:
        """Why `job` cannot pay now (None if it can), asked of the chain at most every JOB_RECHECK_S."""
        if self.job_check is None:
            return None
        now = time.monotonic()
        cached = self._job_reasons.get(job)
        if cached is not None and now - cached[0] < JOB_RECHECK_S:
            return cached[1]
        try:
            reason = await self.job_check(job)
        except R1osError as exc:  # the chain cannot be read: keep what was known, run meanwhile
            log.warning("deeploy: cannot read PoAI job %d: %s", job, exc)
            return cached[1] if cached else None
        if reason != (cached[1] if cached else None):
            log.info("deeploy: PoAI job %d %s", job, f"cannot pay: {reason}" if reason else "can pay")
        self._job_reasons[job] = (now, reason)
        return reason

    async def _list_poai(self, job: int, app_id: str, slots: list[Slot]) -> None:
        key = f"{POAI_JOB_PREFIX}{job}"
        value = {"nodes": sorted({s.node for s in slots}), "app": app_id}
        if await self.cstore.get(key) != value:
            await self.cstore.set(key, value)

    async def _poai_apps_gone(self, records: dict[str, AppRecord]) -> list[str]:
        gone = []
        for key in await self.cstore.keys(POAI_JOB_PREFIX):
            raw = await self.cstore.get(key)
            app = raw.get("app") if isinstance(raw, dict) else None
            if isinstance(app, str) and app not in records:
                await self.cstore.delete(key)
                gone.append(app)
        return gone


def _move_usage(used: dict[str, Usage], before: list[Slot], after: list[Slot], spec: AppSpec) -> None:
    r = spec.resources
    for s in before:
        u = used.setdefault(s.node, Usage())
        u.cpu, u.memory_mb, u.gpu = u.cpu - r.cpu, u.memory_mb - r.memory_mb, u.gpu - r.gpu
    for s in after:
        used.setdefault(s.node, Usage()).add(r)


__all__ = ["AppConflict", "ControlPlane", "JobRefused", "NoApp", "NoCapacity"]
