"""An R1FS service mounted on a real FastAPI app, reached through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from r1os.node import ServiceContext, install_error_handlers
from r1os.r1fs import R1fsService, R1fsSettings
from tests.conftest import lone_context


@dataclass
class Served:
    svc: R1fsService
    client: httpx.AsyncClient
    data_dir: Path


async def stop(svc: R1fsService, ctx: ServiceContext) -> None:
    """Stop the service as a node does: its tasks, then `stop()`, then its stop callbacks."""
    await ctx.close()
    await svc.stop()
    await ctx.run_stop_callbacks()
    await ctx.http.aclose()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """One node's R1FS alone (no peers, no CSTORE): what the HTTP API does with local data."""
    ctx = lone_context("r1fs", tmp_path)
    svc = R1fsService(R1fsSettings(max_upload=4 * 1024 * 1024))
    await svc.start(ctx)
    app = FastAPI()
    install_error_handlers(app)  # the node's: every error answer in one shape
    app.include_router(ctx.router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Served(svc, client, tmp_path)
    await stop(svc, ctx)
