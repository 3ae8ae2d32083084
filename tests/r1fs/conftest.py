"""An R1FS service mounted on a real FastAPI app, reached through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry

from r1os.identity import NodeKey
from r1os.node import NetworkMap, NodeConfig, ServiceContext
from r1os.node._api import install_error_handlers
from r1os.r1fs import R1fsService, R1fsSettings


@dataclass
class Served:
    svc: R1fsService
    client: httpx.AsyncClient
    data_dir: Path


async def _nothing(*_args: Any) -> None:
    return None


def alone(data_dir: Path, http: httpx.AsyncClient) -> ServiceContext:
    """The context a node gives R1FS, with no broker, no peers and no other service (so no CSTORE:
    providers and replication are off)."""
    return ServiceContext(
        name="r1fs",
        key=NodeKey.generate(),
        network="test",
        transport=None,  # type: ignore[arg-type]  # nothing is sent through a broker
        router=APIRouter(),
        data_dir=data_dir,
        metrics=CollectorRegistry(),
        netmap=NetworkMap(),
        config=NodeConfig(),
        http=http,
        _publish=_nothing,
        _send=_nothing,
        _on=lambda _t, _h: None,
        _services=[],
        url="http://test",
    )


async def stop(svc: R1fsService, ctx: ServiceContext) -> None:
    """Stop the service as a node does: its tasks, then `stop()`, then its stop callbacks."""
    await ctx.close()
    await svc.stop()
    await ctx.run_stop_callbacks()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """One node's R1FS alone (no peers, no CSTORE): what the HTTP API does with local data."""
    async with httpx.AsyncClient() as peers:
        ctx = alone(tmp_path, peers)
        svc = R1fsService(R1fsSettings(max_upload=4 * 1024 * 1024))
        await svc.start(ctx)
        app = FastAPI()
        install_error_handlers(app)  # the node's: every error answer in one shape
        app.include_router(ctx.router)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Served(svc, client, tmp_path)
        await stop(svc, ctx)
