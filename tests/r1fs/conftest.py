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
from r1os.node import NetworkMap, ServiceContext
from r1os.r1fs import R1fsService, R1fsSettings


@dataclass
class Served:
    svc: R1fsService
    client: httpx.AsyncClient
    data_dir: Path


async def _nothing(*_args: Any) -> None:
    return None


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """One node's R1FS alone (no peers, no CSTORE): what the HTTP API does with local data."""
    router = APIRouter()
    ctx = ServiceContext(
        name="r1fs",
        key=NodeKey.generate(),
        network="test",
        transport=None,  # type: ignore[arg-type]  # R1FS sends nothing through the broker
        router=router,
        data_dir=tmp_path,
        metrics=CollectorRegistry(),
        netmap=NetworkMap(),
        _publish=_nothing,
        _send=_nothing,
        _on=lambda _t, _h: None,
        _services={},
        url="http://test",
    )
    svc = R1fsService(R1fsSettings(max_upload=4 * 1024 * 1024))
    await svc.start(ctx)
    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Served(svc, client, tmp_path)
    await svc.stop()
