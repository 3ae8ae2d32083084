"""An R1FS service mounted on a real FastAPI app, reached through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from r1os.r1fs import R1fsService, R1fsSettings
from tests.conftest import lone_context


@dataclass
class Served:
    svc: R1fsService
    client: httpx.AsyncClient
    data_dir: Path


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """One node's R1FS alone (no peers, no CSTORE): what the HTTP API does with local data."""
    ctx = lone_context("r1fs", tmp_path)
    svc = R1fsService(R1fsSettings(max_upload=4 * 1024 * 1024))
    await svc.start(ctx)
    app = FastAPI()
    app.include_router(ctx.router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Served(svc, client, tmp_path)
    await svc.stop()
