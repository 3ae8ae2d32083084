"""Deeploy's HTTP routes on every node (see docs/deeploy.md)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from r1os.deeploy._models import (
    AppList,
    AppRecord,
    AppView,
    HostList,
    Plan,
    ReplicaReport,
    ReplicaView,
    app_key,
    plan_key,
    replicas_key,
)
from r1os.deeploy._placement import Usage, usage_by_node
from r1os.deeploy._requests import MAX_REQUEST_BYTES, parse_signed_request
from r1os.errors import R1osError, error_from_body
from r1os.identity import normalize_address
from r1os.node import ERROR_RESPONSES, Forbidden

if TYPE_CHECKING:
    from r1os.deeploy._service import DeeployService

log = logging.getLogger("r1os.deeploy")

FORWARDED = "x-r1os-forwarded"


class NotHere(R1osError):
    cause = "no_replica"
    status = 404


class NoOracle(R1osError):
    cause = "no_oracle"
    status = 503


def _owner(owner: str) -> str:
    try:
        return normalize_address(owner).lower()
    except R1osError:
        raise R1osError(f"{owner[:50]!r} is not an owner address", cause="bad_request", status=400) from None


async def app_view(svc: DeeployService, record: AppRecord) -> AppView:
    assert svc.cstore is not None
    raw_plan = await svc.cstore.get(plan_key(record.app_id))
    try:
        plan = Plan.model_validate(raw_plan) if raw_plan is not None else None
    except ValidationError:
        plan = None
    replicas: list[ReplicaView] = []
    for slot in plan.replicas if plan else []:
        raw = await svc.cstore.hget(replicas_key(slot.node), record.app_id)
        try:
            report = ReplicaReport.model_validate(raw) if raw is not None else None
        except ValidationError:
            report = None
        fresh = report is not None and report.version == slot.version
        online = svc.online(slot.node)
        replicas.append(
            ReplicaView(
                node=slot.node,
                version=slot.version,
                state=(report.state if fresh and report else "pending") if online else "node offline",
                healthy=bool(fresh and report and report.healthy and online),
                restarts=report.restarts if fresh and report else 0,
                detail=report.detail if fresh and report else "",
                url=svc.url_of(slot.node),
            )
        )
    spec = record.app_spec()
    return AppView(
        app=record.app_id,
        owner=record.owner,
        name=record.name,
        version=record.version,
        runtime=spec.runtime,
        replicas_wanted=spec.replicas,
        replicas=replicas,
        healthy=sum(r.healthy for r in replicas),
        job=spec.job,
        spec={k: v for k, v in record.spec.items()},
        note=plan.note if plan else "waiting for placement",
        updated_ms=max(record.updated_ms, plan.updated_ms if plan else 0),
    )


async def read_record(svc: DeeployService, app_id: str) -> AppRecord | None:
    assert svc.cstore is not None
    raw = await svc.cstore.get(app_key(app_id))
    if raw is None:
        return None
    try:
        return AppRecord.model_validate(raw)
    except ValidationError:
        return None


def install_routes(router: APIRouter, svc: DeeployService) -> None:
    ctx = svc.ctx
    ctx.allow_body("/v1/apps/requests", MAX_REQUEST_BYTES)

    @router.post(
        "/v1/apps/requests", response_model=AppView | dict, responses=ERROR_RESPONSES, tags=["deeploy"]
    )
    async def submit(request: Request) -> JSONResponse:
        """An owner's signed request (deploy, update, scale, delete). Oracles apply it; other nodes pass it
        on to an oracle and return its answer."""
        body = await request.body()
        signed = parse_signed_request(body)
        if svc.control is not None:
            record = await svc.control.handle(signed)
            if record is None:
                return JSONResponse({"deleted": signed.request.app_id})
            return JSONResponse((await app_view(svc, record)).model_dump(mode="json"))
        if request.headers.get(FORWARDED):
            raise NoOracle("a forwarded request reached a node that is not an oracle", hint="retry")
        return await _forward(svc, body)

    @router.get("/v1/apps", response_model=AppList, responses=ERROR_RESPONSES, tags=["deeploy"])
    async def list_apps(owner: str | None = None) -> AppList:
        """Every app of the network (or of one owner), with its replicas."""
        assert svc.cstore is not None
        from r1os.deeploy._models import APP_PREFIX

        prefix = APP_PREFIX + (_owner(owner) + ":" if owner else "")
        views = []
        for key in await svc.cstore.keys(prefix):
            raw = await svc.cstore.get(key)
            try:
                views.append(await app_view(svc, AppRecord.model_validate(raw)))
            except (ValidationError, R1osError):
                log.warning("deeploy: skipping unreadable app record %s", key)
        return AppList(apps=views)

    @router.get("/v1/apps/nodes", response_model=HostList, responses=ERROR_RESPONSES, tags=["deeploy"])
    async def hosts() -> HostList:
        """Nodes that run apps: runtimes, tags, capacity and what is free (declared by planned replicas)."""
        assert svc.cstore is not None
        from r1os.deeploy._models import APP_PREFIX, PLAN_PREFIX, read_all

        nodes = svc.hosts()
        records = {r.app_id: r for r in await read_all(svc.cstore, APP_PREFIX, AppRecord)}
        plans = await read_all(svc.cstore, PLAN_PREFIX, Plan)
        used = usage_by_node(
            (p.replicas, records[p.app].app_spec().resources) for p in plans if p.app in records
        )
        for h in nodes:
            u = used.get(h.address, Usage())
            h.free_cpu = round(h.cpu - u.cpu, 3)
            h.free_memory_mb = h.memory_mb - u.memory_mb
            h.free_gpu = h.gpu - u.gpu
        return HostList(nodes=nodes)

    @router.get(
        "/v1/apps/{owner}/{name}", response_model=AppView, responses=ERROR_RESPONSES, tags=["deeploy"]
    )
    async def get_app(owner: str, name: str) -> AppView:
        """One app: spec (secrets shown by name only), version, and each replica's node, state and health."""
        app_id = f"{_owner(owner)}/{name}"
        record = await read_record(svc, app_id)
        if record is None:
            from r1os.deeploy._control import NoApp

            raise NoApp(f"no app {app_id}", hint="`r1os app ls` lists the apps")
        return await app_view(svc, record)

    @router.get("/v1/apps/{owner}/{name}/logs", responses=ERROR_RESPONSES, tags=["deeploy"])
    async def logs(
        request: Request, owner: str, name: str, tail: int = Query(100, ge=0, le=10_000), follow: bool = False
    ) -> StreamingResponse:
        """The output of this node's replica of the app: the owner (signed request) or the node's operator."""
        app_id = f"{_owner(owner)}/{name}"
        caller = await ctx.auth.require(request)
        if not caller.local and (caller.address or "").lower() != app_id.split("/")[0]:
            raise Forbidden(
                "an app's logs are for its owner (or this node's operator)", hint="sign with the owner's key"
            )
        rep = svc.agent.replicas.get(app_id) if svc.agent else None
        if rep is None:
            raise NotHere(
                f"this node runs no replica of {app_id}", hint="`r1os app status` names the nodes that do"
            )
        lines = await rep.runtime.logs(rep.replica_id, tail)

        async def body() -> AsyncIterator[bytes]:
            for line in lines:
                yield (line.rstrip("\n") + "\n").encode()
            if follow:
                async for line in rep.runtime.follow(rep.replica_id):
                    yield (line.rstrip("\n") + "\n").encode()

        return StreamingResponse(body(), media_type="text/plain; charset=utf-8")


async def _forward(svc: DeeployService, body: bytes) -> JSONResponse:
    """Pass a request to the oracles, the leader first; the first one that answers decides."""
    oracles = svc.oracles_online()
    if not oracles:
        raise NoOracle(
            "no oracle is online to take the request", hint="check `r1os devnet status` or the node's peers"
        )
    last: Exception | None = None
    for oracle in oracles:
        url = svc.url_of(oracle)
        if not url:
            continue
        try:
            r = await svc.ctx.http.post(
                f"{url}/v1/apps/requests",
                content=body,
                headers={FORWARDED: "1", "content-type": "application/json"},
                timeout=httpx.Timeout(30.0, connect=3.0),
            )
        except httpx.HTTPError as exc:
            last = exc
            log.info("deeploy: oracle %s unreachable: %s", oracle, exc)
            continue
        if r.status_code >= 500 and r.status_code != 503:
            last = error_from_body(r.status_code, _json(r))
            continue
        return JSONResponse(_json(r), status_code=r.status_code)
    raise NoOracle(f"no oracle answered ({last})", hint="retry in a few seconds") from None


__all__ = ["app_view", "install_routes"]


def _json(r: httpx.Response) -> object:
    try:
        return r.json()
    except ValueError:
        return r.text
