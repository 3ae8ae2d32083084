"""The node's HTTP API: health, identity, peers and metrics; services mount their own routers.

Every error answer, from any route of any service, has one shape (`r1os.errors.error_body`):
`{"error": message, "cause": machine_word, "hint": text or null}`. Services raise `R1osError`
subclasses (which carry `cause` and `status`); the handlers below turn those, FastAPI's own
`HTTPException`s, request validation failures and unexpected exceptions into that shape.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from r1os import __version__
from r1os.errors import STATUS_CAUSES, R1osError, error_body

if TYPE_CHECKING:
    from r1os.node._daemon import Node

log = logging.getLogger("r1os.node.http")


class ErrorAnswer(BaseModel):
    """The body of every error answer of a node."""

    error: str
    cause: str
    hint: str | None = None


#: Add to a route's `responses=` so /openapi.json documents its error answers.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorAnswer, "description": "refused: `cause` says why, `hint` what to do"},
    "5XX": {"model": ErrorAnswer, "description": "failed on the node"},
}


def error_response(exc: R1osError) -> JSONResponse:
    return JSONResponse(error_body(str(exc), exc.cause, exc.hint), status_code=exc.status)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of `app` in the one shape; a test app can call this too."""

    @app.exception_handler(R1osError)
    async def r1os_error(request: Request, exc: R1osError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s %s failed: %s (%s)", request.method, request.url.path, exc, exc.cause)
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        cause = STATUS_CAUSES.get(exc.status_code, "error")
        return JSONResponse(error_body(detail, cause), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return JSONResponse(
            error_body(message, "invalid_request", "see /openapi.json for this route's parameters"),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            error_body(f"internal error: {type(exc).__name__}", "internal", "see the node's log"),
            status_code=500,
        )


class HealthAnswer(BaseModel):
    status: str
    address: str
    uptime: float
    broker_connected: bool


class NodeInfo(BaseModel):
    address: str
    ai_address: str
    network: str
    version: str
    url: str
    oracle: bool
    uptime: float
    heartbeat_interval: float
    heartbeat_mode: Literal["broadcast", "oracle"]
    services: list[str]
    broker: str | None
    broker_connected: bool
    resources: dict[str, Any]
    wire: dict[str, Any]
    home: str
    pid: int


class PeerInfo(BaseModel):
    address: str
    status: str
    url: str | None
    oracle: bool
    version: str
    last_seen: float
    heartbeats: int
    services: list[str]
    resources: dict[str, Any]
    services_info: dict[str, dict[str, Any]]


class PeersAnswer(BaseModel):
    self: str
    online: int
    total: int
    peers: list[PeerInfo]


def create_app(node: Node) -> FastAPI:
    app = FastAPI(
        title="r1os node", version=__version__, docs_url="/docs", redoc_url=None, responses=ERROR_RESPONSES
    )
    install_error_handlers(app)

    @app.get("/v1/health")
    async def health() -> HealthAnswer:
        return HealthAnswer(
            status="ok",
            address=node.address,
            uptime=round(node.uptime, 3),
            broker_connected=node.transport.connected,
        )

    @app.get("/v1/node")
    async def node_info() -> NodeInfo:
        return NodeInfo.model_validate(node.info())

    @app.get("/v1/peers")
    async def peers() -> PeersAnswer:
        items = [
            PeerInfo(
                address=p.address,
                status=p.status,
                url=p.heartbeat.url,
                oracle=p.heartbeat.oracle,
                version=p.heartbeat.version,
                last_seen=p.last_seen,
                heartbeats=p.heartbeats,
                services=p.heartbeat.services,
                resources=p.heartbeat.resources,
                services_info=p.heartbeat.services_info,
            )
            for p in node.netmap.peers()
        ]
        return PeersAnswer(
            self=node.address,
            online=sum(1 for p in items if p.status == "online"),
            total=len(items),
            peers=items,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(node.metrics), media_type=CONTENT_TYPE_LATEST)

    return app
