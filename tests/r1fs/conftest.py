"""An R1FS service mounted on a real FastAPI app, reached through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from r1os.devnet import Devnet
from r1os.devnet._state import DevnetState
from r1os.identity import NodeKey
from r1os.node import ServiceContext, install_error_handlers
from r1os.r1fs import R1fsService, R1fsSettings
from r1os.r1fs._client import _Credentials
from tests.conftest import lone_context


@dataclass
class Served:
    svc: R1fsService
    client: httpx.AsyncClient
    """Calls as the node's operator (its API token): what the API does, not who may ask."""
    data_dir: Path
    app: FastAPI

    async def call(
        self, key: NodeKey | None, method: str, url: str, *, streamed: bool = False, **kw: Any
    ) -> httpx.Response:
        """A request signed by `key` (None: anonymous), as R1FS's clients sign it; not the operator."""
        request = self.client.build_request(method, url, **kw)
        if request.headers["authorization"].startswith("Bearer "):  # the operator's, from the client
            del request.headers["authorization"]
        if key is not None:
            credentials = _Credentials(key, None)
            credentials.node = (self.svc.me, "test")
            credentials.sign(request, streamed=streamed)
        return await self.client.send(request)


async def stop(svc: R1fsService, ctx: ServiceContext) -> None:
    """Stop the service as a node does: its tasks, then `stop()`, then its stop callbacks."""
    await ctx.close()
    await svc.stop()
    await ctx.run_stop_callbacks()
    await ctx.http.aclose()


@asynccontextmanager
async def serve(tmp_path: Path, settings: R1fsSettings | None = None) -> AsyncIterator[Served]:
    """One node's R1FS alone (no peers, no CSTORE) on an app with the node's error handlers."""
    ctx = lone_context("r1fs", tmp_path)
    svc = R1fsService(settings or R1fsSettings(max_upload=4 * 1024 * 1024))
    await svc.start(ctx)
    app = FastAPI()
    install_error_handlers(app)  # the node's: every error answer in one shape
    app.include_router(ctx.router)
    operator = {"authorization": f"Bearer {ctx.auth.token}"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=operator) as client:
            yield Served(svc, client, tmp_path, app)
    finally:
        await stop(svc, ctx)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """What the HTTP API does with local data, max_upload 4 MiB."""
    async with serve(tmp_path) as s:
        yield s


@contextmanager
def devnet_with(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str], nodes: int
) -> Iterator[tuple[Devnet, DevnetState]]:
    """A devnet (1 oracle, no chain, 1 s heartbeats) whose node processes inherit `env`, set only while
    it runs (they read their R1FS settings from it)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        dn = Devnet(tmp_path_factory.mktemp(name))
        try:
            yield dn, dn.up(nodes=nodes, oracles=1, heartbeat=1.0, chain=False, timeout=90)
        finally:
            dn.down()
