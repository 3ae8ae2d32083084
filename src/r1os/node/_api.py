"""The node's HTTP API: health, identity, peers and metrics; services mount their own routers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from r1os import __version__

if TYPE_CHECKING:
    from r1os.node._daemon import Node


def create_app(node: Node) -> FastAPI:
    app = FastAPI(title="r1os node", version=__version__, docs_url="/docs", redoc_url=None)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "address": node.address,
            "uptime": round(node.uptime, 3),
            "broker_connected": node.transport.connected,
        }

    @app.get("/v1/node")
    async def node_info() -> dict[str, Any]:
        return node.info()

    @app.get("/v1/peers")
    async def peers() -> dict[str, Any]:
        items = [
            {
                "address": p.address,
                "status": p.status,
                "url": p.heartbeat.url,
                "oracle": p.heartbeat.oracle,
                "version": p.heartbeat.version,
                "last_seen": p.last_seen,
                "heartbeats": p.heartbeats,
                "services": p.heartbeat.services,
                "resources": p.heartbeat.resources,
            }
            for p in node.netmap.peers()
        ]
        return {
            "self": node.address,
            "online": sum(1 for p in items if p["status"] == "online"),
            "total": len(items),
            "peers": items,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(node.metrics), media_type=CONTENT_TYPE_LATEST)

    return app
