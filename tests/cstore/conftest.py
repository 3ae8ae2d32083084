"""Shared by CSTORE's tests: one replica on its own, its routes in a bare app (no node, no broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from r1os.cstore import CStoreService
from r1os.node import install_error_handlers
from tests.conftest import lone_context


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[tuple[CStoreService, FastAPI]]:
    ctx = lone_context("cstore", tmp_path)
    svc = CStoreService(fsync=False, sync_interval=60)
    await svc.start(ctx)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(ctx.router)
    try:
        yield svc, app
    finally:
        await ctx.close()
        await svc.stop()
        await ctx.run_stop_callbacks()
        await ctx.http.aclose()


def client(app: FastAPI, host: str = "127.0.0.1", token: str | None = None) -> httpx.AsyncClient:
    """A client of the replica's routes; with `token`, the node's operator (`Authorization: Bearer`)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://n", headers=headers
    )


def operator_token(svc: CStoreService) -> str:
    """The node's API token, as its operator reads it: `<home>/api-token`."""
    return (svc.ctx.data_dir / "api-token").read_text().strip()


def refusal(r: httpx.Response, status: int, cause: str) -> dict[str, Any]:
    """The body of an error answer, checked for its shape, status and cause."""
    body = r.json()
    assert r.status_code == status, (r.status_code, body)
    assert set(body) == {"error", "cause", "hint"}, body
    assert body["cause"] == cause and isinstance(body["error"], str) and body["error"], body
    return body  # type: ignore[no-any-return]
