"""The node agent: runs the replicas the plans give this node, watches their health, reports.

For each plan slot naming this node the agent prepares the app's folder (its files, checked to stay
inside it), picks a port, opens the secrets sealed to this node, and starts the replica through the
app's runtime. Then, every `health.interval_s`, it asks the runtime whether the replica still runs and
GETs its health path: `health.failures` misses in a row (after the start-up grace) or an exit restart
it, with a back-off that doubles from 1 s to 60 s and resets once the replica has been healthy for a
minute. What it sees goes to CSTORE (`node:<me>:deeploy:replicas`) when it changes, and into every
heartbeat. A slot that leaves the plan is stopped and its folder removed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from r1os.deeploy._models import (
    PLAN_PREFIX,
    AppRecord,
    Plan,
    ReplicaPhase,
    ReplicaReport,
    app_key,
    read_all,
    replicas_key,
)
from r1os.deeploy._requests import open_secrets
from r1os.deeploy._spec import AppSpec, check_relative_path
from r1os.deeploy.runtimes import AppRuntime, ReplicaLaunch, RuntimeFailure
from r1os.errors import R1osError
from r1os.identity import NodeKey
from r1os.node import woken

if TYPE_CHECKING:
    from r1os.cstore import CStoreService

log = logging.getLogger("r1os.deeploy")

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 60.0
#: Seconds a replica leaving the plan keeps serving the requests it already has.
DRAIN_S = 0.5


def _now_ms() -> int:
    return int(time.time() * 1000)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One replica this node runs (at most one per app)."""

    app: str
    version: int
    spec: AppSpec
    replica_id: str
    folder: Path
    run_dir: Path
    port: int
    runtime: AppRuntime
    launch: ReplicaLaunch
    state: ReplicaPhase = "starting"
    healthy: bool = False
    restarts: int = 0
    misses: int = 0
    started_at: float = 0.0
    healthy_since: float | None = None
    backoff: float = BACKOFF_START_S
    detail: str = ""
    task: asyncio.Task[None] | None = None
    reported: dict[str, Any] = field(default_factory=dict)

    def report(self) -> ReplicaReport:
        return ReplicaReport(
            app=self.app,
            version=self.version,
            state=self.state,
            healthy=self.healthy,
            port=self.port,
            restarts=self.restarts,
            since_ms=int(self.started_at * 1000),
            detail=self.detail[:300],
        )


class Agent:
    """Runs this node's share of every plan."""

    def __init__(
        self,
        cstore: CStoreService,
        key: NodeKey,
        data_dir: Path,
        runtimes: dict[str, AppRuntime],
        api_url: Callable[[], str],
        http: httpx.AsyncClient | None = None,
        fetch_files: Callable[[str, Path], Any] | None = None,
    ) -> None:
        self.cstore = cstore
        self.key = key
        self.me = key.address.lower()
        self.apps_dir = data_dir / "apps"
        self.run_root = data_dir / "run"
        self.runtimes = runtimes
        self.api_url = api_url
        self.http = http or httpx.AsyncClient()
        self.fetch_files = fetch_files
        self.replicas: dict[str, Replica] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.starts = 0

    # -- plans -> replicas ------------------------------------------------------------------

    def on_change(self, key: str, field_: str | None, value: Any) -> None:
        if key.startswith(PLAN_PREFIX):
            self._wake.set()

    async def run(self, interval: float = 1.0) -> None:
        for rt in {id(r): r for r in self.runtimes.values()}.values():
            try:
                left = await rt.cleanup()
                if left:
                    log.info("deeploy agent: removed %d replicas left by an earlier run: %s", len(left), left)
            except Exception:
                log.exception("deeploy agent: cleaning up runtime %s failed", rt.name)
        while True:
            await woken(self._wake, interval)
            try:
                await self.sync()
            except Exception:
                log.exception("deeploy agent: sync failed")

    async def desired(self) -> dict[str, int]:
        """App id -> version this node should run now."""
        out: dict[str, int] = {}
        for plan in await read_all(self.cstore, PLAN_PREFIX, Plan):
            for slot in plan.replicas:
                if slot.node == self.me:
                    out[plan.app] = max(slot.version, out.get(plan.app, 0))
        return out

    async def sync(self) -> None:
        async with self._lock:
            want = await self.desired()
            for app, rep in list(self.replicas.items()):
                if want.get(app) != rep.version:
                    await self._remove(rep, keep_folder=app in want)
            for app, version in sorted(want.items()):
                if app not in self.replicas:
                    await self._add(app, version)
            await asyncio.to_thread(self._sweep)

    def _sweep(self) -> None:
        """Remove app and run folders that no replica of this node uses (left by a start that failed,
        or by a replica removed while its successor could not be added yet)."""
        keep = {r.folder.name for r in self.replicas.values()}
        keep_run = {r.run_dir.name for r in self.replicas.values()}
        for root, kept in ((self.apps_dir, keep), (self.run_root, keep_run)):
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                if entry.name not in kept:
                    shutil.rmtree(entry, ignore_errors=True)

    async def _add(self, app: str, version: int) -> None:
        raw = await self.cstore.get(app_key(app))
        try:
            record = AppRecord.model_validate(raw)
            spec = record.app_spec()
        except ValidationError:
            log.warning("deeploy agent: no readable record for %s yet", app)
            return
        if record.version != version:
            return  # the record moved on; the plan will follow
        runtime = self.runtimes.get(spec.runtime)
        if runtime is None:
            log.warning("deeploy agent: %s needs runtime %s, which this node lacks", app, spec.runtime)
            await self._report_raw(app, version, "failed", f"this node has no {spec.runtime} runtime")
            return
        owner, name = app.split("/", 1)
        folder = self.apps_dir / f"{owner}-{name}"
        replica_id = f"{owner[2:12]}-{name}-v{version}"
        run_dir = self.run_root / replica_id
        try:
            secrets = open_secrets(self.key, name, record.sealed.get(self.me, {})) if spec.secrets else {}
            await asyncio.to_thread(_prepare_folder, folder, spec)
            if isinstance(spec.files, str):
                if self.fetch_files is None:
                    raise RuntimeFailure("this node runs no R1FS to fetch the app's files", cause="no_r1fs")
                await self.fetch_files(spec.files, folder)
        except (R1osError, OSError, ValueError) as exc:
            log.warning("deeploy agent: cannot prepare %s: %s", app, exc)
            await self._report_raw(app, version, "failed", f"cannot prepare: {exc}")
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        app_key_hex = self.key.derive(f"app/{app}").private_key.hex()
        env = {
            **spec.env,
            **secrets,
            "PORT": str(port),
            "R1OS_API_URL": self.api_url(),
            "R1OS_PRIVATE_KEY": app_key_hex,
            "R1OS_APP": app,
            "R1OS_OWNER": owner,
            "R1OS_NODE": self.key.address,
            "R1OS_HEALTH_PATH": spec.health.http or "/",
        }
        launch = ReplicaLaunch(
            replica_id=replica_id,
            app=app,
            runtime=spec.runtime,
            command=[a.replace("{port}", str(port)) for a in spec.command],
            image=spec.image,
            plugin=spec.plugin,
            folder=folder,
            run_dir=run_dir,
            port=port,
            env=env,
            cpu=spec.resources.cpu,
            memory_mb=spec.resources.memory_mb,
            gpu=spec.resources.gpu,
        )
        rep = Replica(
            app=app,
            version=version,
            spec=spec,
            replica_id=replica_id,
            folder=folder,
            run_dir=run_dir,
            port=port,
            runtime=runtime,
            launch=launch,
        )
        self.replicas[app] = rep
        rep.task = asyncio.create_task(self._supervise(rep), name=f"deeploy:{replica_id}")

    async def _remove(self, rep: Replica, keep_folder: bool = False) -> None:
        self.replicas.pop(rep.app, None)  # the proxy stops sending new requests to it now
        if rep.task is not None:
            rep.task.cancel()
            await asyncio.gather(rep.task, return_exceptions=True)
        if rep.healthy:
            # Let requests already inside the replica finish before it is stopped (a rolling update
            # or scale-down must not cut answers off half-way).
            rep.healthy, rep.state = False, "stopped"
            await self._report(rep)
            await asyncio.sleep(DRAIN_S)
        try:
            await rep.runtime.stop(rep.replica_id)
        except Exception:
            log.exception("deeploy agent: stopping %s failed", rep.replica_id)
        await asyncio.to_thread(shutil.rmtree, rep.run_dir, True)
        if not keep_folder:
            await asyncio.to_thread(shutil.rmtree, rep.folder, True)
        try:
            await self.cstore.hdel(replicas_key(self.me), rep.app)
        except R1osError as exc:
            log.warning("deeploy agent: cannot clear the report of %s: %s", rep.app, exc)
        log.info("deeploy agent: %s v%d stopped and removed", rep.app, rep.version)

    # -- one replica's life -----------------------------------------------------------------

    async def _start(self, rep: Replica) -> bool:
        rep.state, rep.healthy, rep.misses = "starting", False, 0
        rep.started_at = time.time()
        rep.healthy_since = None
        try:
            await rep.runtime.start(rep.launch)
            self.starts += 1
            rep.detail = ""
            return True
        except R1osError as exc:
            rep.state, rep.detail = "failed", str(exc)
            log.warning("deeploy agent: %s failed to start: %s", rep.replica_id, exc)
            return False
        finally:
            await self._report(rep)

    async def _probe(self, rep: Replica) -> bool:
        health = rep.spec.health
        if health.http is None:
            return True
        try:
            r = await self.http.get(f"http://127.0.0.1:{rep.port}{health.http}", timeout=health.timeout_s)
            return r.status_code < 400
        except httpx.HTTPError:
            return False

    async def _supervise(self, rep: Replica) -> None:
        started = await self._start(rep)
        while True:
            interval = rep.spec.health.interval_s
            if not started:
                await self._restart_later(rep)
                started = await self._start(rep)
                continue
            status = await rep.runtime.status(rep.replica_id)
            if status.state in ("exited", "failed", "stopped"):
                rep.healthy = False
                rep.detail = (
                    f"exited with code {status.exit_code}" if status.exit_code is not None else status.detail
                )
                log.warning("deeploy agent: %s %s", rep.replica_id, rep.detail)
                await self._restart_later(rep)
                started = await self._start(rep)
                continue
            ok = await self._probe(rep)
            now = time.time()
            if ok:
                rep.misses = 0
                if not rep.healthy:
                    rep.healthy, rep.state, rep.healthy_since = True, "running", now
                    rep.detail = ""
                    log.info("deeploy agent: %s healthy on port %d", rep.replica_id, rep.port)
                elif rep.healthy_since and now - rep.healthy_since > STABLE_AFTER_S:
                    rep.backoff = BACKOFF_START_S
            elif rep.healthy or now - rep.started_at > rep.spec.health.grace_s:
                rep.misses += 1
                if rep.misses >= rep.spec.health.failures:
                    rep.healthy, rep.state = False, "unhealthy"
                    rep.detail = f"{rep.misses} health checks failed in a row"
                    log.warning("deeploy agent: %s unhealthy: restarting", rep.replica_id)
                    await self._report(rep)
                    await rep.runtime.stop(rep.replica_id)
                    await self._restart_later(rep)
                    started = await self._start(rep)
                    continue
            await self._report(rep)
            # Poll fast until the first good answer (start-up time is what users wait on).
            await asyncio.sleep(interval if rep.healthy else min(interval, 0.1))

    async def _restart_later(self, rep: Replica) -> None:
        rep.state, rep.healthy = "restarting", False
        rep.restarts += 1
        await self._report(rep)
        await asyncio.sleep(rep.backoff)
        rep.backoff = min(rep.backoff * 2, BACKOFF_MAX_S)

    async def _report(self, rep: Replica) -> None:
        report = rep.report().model_dump(mode="json")
        changed = {k: v for k, v in report.items() if k != "since_ms"}
        if changed == rep.reported:
            return
        rep.reported = changed
        await self._publish(rep.app, report)

    async def _report_raw(self, app: str, version: int, state: ReplicaPhase, detail: str) -> None:
        report = ReplicaReport(app=app, version=version, state=state, detail=detail[:300], since_ms=_now_ms())
        await self._publish(app, report.model_dump(mode="json"))

    async def _publish(self, app: str, report: dict[str, Any]) -> None:
        try:
            await self.cstore.hset(replicas_key(self.me), app, report)
        except R1osError as exc:
            log.warning("deeploy agent: cannot report %s: %s", app, exc)

    # -- views ------------------------------------------------------------------------------

    def heartbeat_replicas(self) -> dict[str, dict[str, Any]]:
        return {
            app: {"v": r.version, "ok": r.healthy, "job": r.spec.job}
            for app, r in sorted(self.replicas.items())
        }

    def local_upstream(self, app: str) -> Replica | None:
        rep = self.replicas.get(app)
        return rep if rep is not None and rep.healthy else None

    async def aclose(self) -> None:
        for rep in list(self.replicas.values()):
            if rep.task is not None:
                rep.task.cancel()
                await asyncio.gather(rep.task, return_exceptions=True)
        for rt in {id(r): r for r in self.runtimes.values()}.values():
            try:
                await rt.aclose()
            except Exception:
                log.exception("deeploy agent: closing runtime %s failed", rt.name)


def _prepare_folder(folder: Path, spec: AppSpec) -> None:
    """Write the spec's inline files into a fresh app folder; every path is checked to stay inside."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    root = folder.resolve()
    if isinstance(spec.files, dict):
        for name, content in spec.files.items():
            rel = check_relative_path(name)
            target = (folder / rel).resolve()
            if root not in target.parents:
                raise ValueError(f"{name!r} escapes the app folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
