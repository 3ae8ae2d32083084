"""Deeploy on a node: the agent (every node that hosts apps), the control plane (oracles), the routes.

A thin shell: placement is `_placement`, the oracle side `_control`, the node side `_agent`, the
routes `_api`, the proxy `_proxy`. This module wires them to the node: CSTORE, the network map (who
is online, what each node offers), the heartbeat and the HTTP router.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError

from r1os.cstore import CStoreService
from r1os.deeploy._agent import Agent
from r1os.deeploy._control import ControlPlane, JobCheck
from r1os.deeploy._models import APP_PREFIX, PLAN_PREFIX, HostNode, Plan, plan_key, replicas_key
from r1os.deeploy._proxy import AmbiguousApp, AppProxy, AppRef, NoReplica, NoSuchApp, Upstream
from r1os.deeploy.runtimes import AppRuntime
from r1os.node import DeeploySettings, Service, ServiceContext

log = logging.getLogger("r1os.deeploy")


def available_runtimes(
    settings: DeeploySettings,
    scope: str = "",
    hidden: list[Path] | None = None,
    spare_dir: Path | None = None,
) -> dict[str, AppRuntime]:
    """The runtimes that work on this machine (and that the settings allow), one instance each.
    `spare_dir`: where warm plugin workers keep their folders (on the app folders' file system, so a
    claimed one is renamed into place); None turns them off."""
    from r1os.deeploy.runtimes.plugin import PluginRuntime
    from r1os.deeploy.runtimes.process import ProcessRuntime

    wanted = settings.runtimes
    out: dict[str, AppRuntime] = {}
    candidates: list[tuple[str, Any]] = [("process", ProcessRuntime), ("plugin", PluginRuntime)]
    try:
        from r1os.deeploy.runtimes.docker import DockerRuntime

        candidates.append(("docker", DockerRuntime))
    except ImportError:  # pragma: no cover - the docker SDK is a dependency; kept for trimmed installs
        pass
    for name, cls in candidates:
        if wanted is not None and name not in wanted:
            continue
        reason = cls.unavailable(settings.docker_url) if name == "docker" else cls.unavailable()
        if reason is not None:
            log.info("deeploy: runtime %s unavailable here: %s", name, reason)
            continue
        # Nodes sharing one engine (a devnet) tell their containers apart by the node's address.
        # Sandboxed processes never see the node's home, even where a bound folder (a venv or a source
        # tree holding the home) contains it.
        if name == "docker":
            out[name] = cls(settings.docker_url, scope=scope)
        elif name == "plugin":
            out[name] = cls(
                hidden=hidden or [],
                spares=settings.plugin_spares if spare_dir is not None else 0,
                preload=settings.plugin_preload,
                spare_dir=spare_dir,
            )
        else:
            out[name] = cls(hidden=hidden or [])
    return out


class DeeployService(Service):
    """Runs apps on this node and, on an oracle, places them over the network."""

    name = "deeploy"

    def __init__(
        self, settings: DeeploySettings | None = None, runtimes: dict[str, AppRuntime] | None = None
    ) -> None:
        self.settings = settings or DeeploySettings()
        self._runtimes = runtimes
        self._ctx: ServiceContext | None = None
        self.agent: Agent | None = None
        self.control: ControlPlane | None = None
        self.cstore: CStoreService | None = None
        self.capacity: dict[str, Any] = {}
        self.proxy: AppProxy | None = None
        self._owners_by_name: dict[str, set[str]] | None = None
        self._turn = 0

    @property
    def ctx(self) -> ServiceContext:
        if self._ctx is None:
            raise RuntimeError("deeploy service not started")
        return self._ctx

    async def start(self, ctx: ServiceContext) -> None:
        from r1os.deeploy._api import install_routes

        self._ctx = ctx
        self.cstore = ctx.require(CStoreService)
        s = self.settings
        vm = psutil.virtual_memory()
        self.capacity = {
            "cpu": float(s.cpu if s.cpu is not None else (os.cpu_count() or 1)),
            "memory_mb": int(s.memory_mb if s.memory_mb is not None else vm.total * 0.8 // 2**20),
            "gpu": int(s.gpu if s.gpu is not None else 0),
        }
        if s.host_apps:
            runtimes = (
                self._runtimes
                if self._runtimes is not None
                else available_runtimes(
                    s, ctx.address, [ctx.data_dir.parents[1]], spare_dir=ctx.data_dir / "spares"
                )
            )
            self.agent = Agent(
                self.cstore,
                ctx.key,
                ctx.data_dir,
                runtimes,
                api_url=lambda: ctx.url,
                http=ctx.http,
                fetch_files=self._fetch_files,
            )
            self.cstore.watch(PLAN_PREFIX, self.agent.on_change)
            ctx.spawn(self.agent.run(), "agent")
            ctx.on_stop(self.agent.aclose)
        if ctx.config.oracle:
            self.control = ControlPlane(
                self.cstore,
                ctx.network,
                ctx.address,
                hosts=self.hosts,
                leader=self.leader,
                job_check=self._job_check_factory(),
            )
            self.cstore.watch("node:", self._on_report)
            ctx.spawn(self.control.run(), "control")
        install_routes(ctx.router, self)
        self.proxy = AppProxy(self.resolve, node_token=lambda: ctx.auth.token)
        self.proxy.mount(ctx.router)
        ctx.allow_body("/apps/", None)  # the proxy streams bodies; apps set their own bounds
        ctx.on_stop(self.proxy.aclose)
        self.cstore.watch(APP_PREFIX, self._on_app)
        log.info(
            "deeploy: %s, runtimes %s%s",
            "hosting apps" if self.agent else "not hosting apps",
            ",".join(sorted(self.agent.runtimes)) if self.agent else "-",
            ", control plane (oracle)" if self.control else "",
        )

    def _on_app(self, key: str, field: str | None, value: Any) -> None:
        self._owners_by_name = None  # an app came or went: the name index is rebuilt on next use
        if self.control is not None:
            self.control.wake()  # the leader places an app at once, whichever oracle took the request

    async def _owners(self, name: str) -> set[str]:
        if self._owners_by_name is None:
            assert self.cstore is not None
            index: dict[str, set[str]] = {}
            for key in await self.cstore.keys(APP_PREFIX):
                owner, _, app_name = key[len(APP_PREFIX) :].partition(":")
                index.setdefault(app_name, set()).add(owner)
            self._owners_by_name = index
        return self._owners_by_name.get(name, set())

    async def resolve(self, ref: AppRef, hop: bool) -> list[Upstream]:
        """The healthy replicas of the app `ref` names, this node's first (only this node's on a hop)."""
        assert self.cstore is not None
        if ref.owner is not None:
            owners = {ref.owner} if await self.cstore.exists(f"{APP_PREFIX}{ref.owner}:{ref.name}") else set()
        else:
            owners = await self._owners(ref.name)
        if not owners:
            raise NoSuchApp(str(ref), hint="`r1os app ls` lists the apps")
        if len(owners) > 1:
            raise AmbiguousApp(ref.name, owners)
        app = f"{next(iter(owners))}/{ref.name}"
        out: list[Upstream] = []
        me = self.ctx.address.lower()
        local = self.agent.local_upstream(app) if self.agent else None
        if local is not None:
            out.append(Upstream(node=me, url=f"http://127.0.0.1:{local.port}", local=True, app=app))
        if hop:
            if not out:
                raise NoReplica(app, detail="no healthy replica on this node")
            return out
        raw = await self.cstore.get(plan_key(app))
        try:
            plan = Plan.model_validate(raw) if raw is not None else None
        except ValidationError:
            plan = None
        for slot in plan.replicas if plan else []:
            if slot.node == me or not self.online(slot.node):
                continue
            report = await self.cstore.hget(replicas_key(slot.node), app)
            if not (
                isinstance(report, dict) and report.get("healthy") and report.get("version") == slot.version
            ):
                continue
            url = self.url_of(slot.node)
            if url:
                out.append(Upstream(node=slot.node, url=url, local=False, app=app))
        if not out:
            raise NoReplica(app, detail="no replica is healthy right now")
        # Spread requests over the remote replicas (a local one, if any, stays first).
        first = 1 if local is not None else 0
        remote = out[first:]
        if len(remote) > 1:
            self._turn += 1
            k = self._turn % len(remote)
            out[first:] = remote[k:] + remote[:k]
        return out

    def _on_report(self, key: str, field: str | None, value: Any) -> None:
        # A replica's report changed: a rolling update may be waiting on it.
        if self.control is not None and key.endswith(":deeploy:replicas"):
            self.control.wake()

    async def _fetch_files(self, cid: str, folder: Path) -> None:
        from r1os.deeploy._files import fetch_into

        await fetch_into(self.ctx, cid, folder)

    def _job_check_factory(self) -> JobCheck | None:
        """How the control plane asks whether a PoAI job can pay: through this oracle's chain client."""
        from r1os.oracle import job_standing
        from r1os.oracle._service import OracleSyncService

        oracle = self.ctx.find(OracleSyncService)
        if oracle is None:
            return None

        async def check(job_id: int) -> str | None:
            chain = oracle.poai.chain()
            if chain is None:
                return "this network has no chain deployment, so no PoAI job can pay here"
            return (await job_standing(chain, job_id)).reason

        return check

    # -- what this node offers, who leads ---------------------------------------------------

    def heartbeat_fields(self) -> dict[str, Any]:
        if self.agent is None:
            return {}
        return {
            "runtimes": sorted(self.agent.runtimes),
            "tags": list(self.settings.tags),
            **self.capacity,
            "replicas": self.agent.heartbeat_replicas(),
        }

    def hosts(self) -> list[HostNode]:
        """Online nodes that host apps, from their latest heartbeats (and this node itself)."""
        out: list[HostNode] = []
        for peer in self.ctx.netmap.online():
            info = peer.heartbeat.services_info.get("deeploy")
            host = _host_from(
                peer.address, info, peer.heartbeat.oracle, peer.heartbeat.url, peer.heartbeat.ai_address
            )
            if host is not None:
                out.append(host)
        me = _host_from(
            self.ctx.address,
            self.heartbeat_fields(),
            self.ctx.config.oracle,
            self.ctx.url,
            self.ctx.key.ai_address,
        )
        if me is not None:
            out.append(me)
        return sorted(out, key=lambda h: h.address)

    def oracles_online(self) -> list[str]:
        configured = {a.lower() for a in self.ctx.config.oracles}
        online = [
            p.address.lower()
            for p in self.ctx.netmap.online()
            if (p.address.lower() in configured if configured else p.heartbeat.oracle)
        ]
        if self.ctx.config.oracle:
            online.append(self.ctx.address.lower())
        return sorted(set(online))

    def leader(self) -> str | None:
        oracles = self.oracles_online()
        return oracles[0] if oracles else None

    def url_of(self, node: str) -> str | None:
        if node == self.ctx.address.lower():
            return self.ctx.url
        for peer in self.ctx.netmap.peers():
            if peer.address.lower() == node:
                return peer.heartbeat.url
        return None

    def online(self, node: str) -> bool:
        if node == self.ctx.address.lower():
            return True
        return any(p.address.lower() == node for p in self.ctx.netmap.online())


def _host_from(address: str, info: Any, oracle: bool, url: str | None, ai: str | None) -> HostNode | None:
    if not isinstance(info, dict) or not info.get("runtimes"):
        return None
    try:
        return HostNode(
            address=address.lower(),
            ai_address=ai,
            oracle=oracle,
            url=url,
            runtimes=[str(r) for r in info.get("runtimes", [])][:8],
            tags=[str(t) for t in info.get("tags", [])][:32],
            cpu=float(info.get("cpu", 0)),
            memory_mb=int(info.get("memory_mb", 0)),
            gpu=int(info.get("gpu", 0)),
        )
    except (TypeError, ValueError):
        log.warning("deeploy: ignoring malformed heartbeat fields of %s", address)
        return None
